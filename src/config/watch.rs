//! Watching the config file and the secret files it references, for hot reload.
//!
//! Kubernetes updates a mounted ConfigMap or Secret by writing a new timestamped directory and
//! swapping the `..data` symlink; the file the config names (`switchyard.yaml` →
//! `..data/switchyard.yaml`) never sees an event of its own. So the *parent directories* are
//! watched, any write in them wakes the watcher, and a change is decided by content: the
//! config file and every `file:` secret it mentions are read and compared with what was last
//! loaded. Directories are watched again after every wake-up (a replaced directory loses its
//! inotify watch), and a slow poll catches whatever the notifier missed (inotify limits,
//! network file systems).
//!
//! Only events naming a watched file, or Kubernetes' `..data` / `..<timestamp>` entries, wake
//! the watcher: a directory shared with files that change all the time (a log written beside
//! the config) would otherwise wake it on every write and keep it from ever seeing quiet.
//! Events arrive in bursts (a swap is several renames); a change is read once the directory
//! has been quiet for the debounce interval, or after [`DEBOUNCE_MAX`] of a burst that does
//! not end.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{load_file, Config, ConfigError, Env};

/// How long the watched directories must be quiet before a change is read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest a burst of events delays reading a change.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// How often the files are compared even without an event.
pub const POLL: Duration = Duration::from_secs(10);

/// Errors setting up the watcher.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: String,
    source: notify::Error,
}

/// Watches one config file and its secret files; yields each new version, loaded and
/// validated.
pub struct ConfigWatch {
    path: PathBuf,
    watcher: RecommendedWatcher,
    events: mpsc::Receiver<()>,
    dirs: BTreeSet<PathBuf>,
    /// File names whose events matter (the config's and its secret files').
    names: Arc<RwLock<HashSet<OsString>>>,
    seen: u64,
    debounce: Duration,
    poll: Duration,
}

impl ConfigWatch {
    /// Starts watching `path`, taking its current contents as already loaded.
    pub fn new(path: PathBuf) -> Result<Self, WatchError> {
        let (tx, events) = mpsc::channel(1);
        let names: Arc<RwLock<HashSet<OsString>>> = Arc::default();
        let watched = names.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Our own reads would otherwise wake us up forever.
            let noise = matches!(
                event.kind,
                EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write)
            );
            if !noise && concerns(&event.paths, &watched) {
                // One pending wake-up is enough: the reader compares contents anyway.
                let _ = tx.try_send(());
            }
        })
        .map_err(|source| WatchError {
            path: path.display().to_string(),
            source,
        })?;
        let mut watch = Self {
            seen: fingerprint(&path),
            path,
            watcher,
            events,
            dirs: BTreeSet::new(),
            names,
            debounce: DEBOUNCE,
            poll: POLL,
        };
        watch.rewatch(true)?;
        Ok(watch)
    }

    /// Sets the debounce and poll intervals (tests use short ones).
    pub fn with_intervals(mut self, debounce: Duration, poll: Duration) -> Self {
        self.debounce = debounce;
        self.poll = poll;
        self
    }

    /// Waits until the config or one of its secret files has new contents, then loads it.
    /// `Err` is a new version that does not load: the caller keeps the old one.
    pub async fn changed(&mut self) -> Result<Config, ConfigError> {
        loop {
            let woken = tokio::time::timeout(self.poll, self.events.recv()).await;
            if let Ok(Some(())) = woken {
                // Wait for the burst to end: quiet for one debounce interval (bounded).
                let give_up = tokio::time::Instant::now() + DEBOUNCE_MAX.max(self.debounce);
                while tokio::time::Instant::now() < give_up {
                    match tokio::time::timeout(self.debounce, self.events.recv()).await {
                        Ok(Some(())) => {}
                        _ => break,
                    }
                }
            }
            let _ = self.rewatch(false);
            let now = fingerprint(&self.path);
            if now == self.seen {
                continue;
            }
            self.seen = now;
            let loaded = load_file(&self.path, &Env);
            // A new version may mention secret files in new directories.
            let _ = self.rewatch(false);
            return loaded;
        }
    }

    /// Watches the directories of the config file and its secret files, again: a directory
    /// replaced since (or one that did not exist yet) is picked up.
    fn rewatch(&mut self, strict: bool) -> Result<(), WatchError> {
        let mut dirs = BTreeSet::new();
        let files = files(&self.path);
        if let Ok(mut names) = self.names.write() {
            *names = files
                .iter()
                .filter_map(|f| f.file_name().map(OsString::from))
                .collect();
        }
        for file in files {
            if let Some(dir) = file.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                dirs.insert(dir.to_path_buf());
            }
        }
        for old in self.dirs.difference(&dirs) {
            let _ = self.watcher.unwatch(old);
        }
        for dir in &dirs {
            let _ = self.watcher.unwatch(dir);
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {}
                // The config's own directory must exist at start; a secret directory may
                // appear later, and the poll covers it until then.
                Err(source) if strict && Some(dir.as_path()) == self.path.parent() => {
                    return Err(WatchError {
                        path: dir.display().to_string(),
                        source,
                    })
                }
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch"),
            }
        }
        self.dirs = dirs;
        Ok(())
    }
}

/// Whether an event's paths touch a watched file: one of `names`, a Kubernetes atomic-writer
/// entry (`..data`, `..2026_11_23_...`), or no file at all (the directory itself).
fn concerns(paths: &[PathBuf], names: &RwLock<HashSet<OsString>>) -> bool {
    let names = names.read().unwrap_or_else(|e| e.into_inner());
    paths.is_empty()
        || paths.iter().any(|p| match p.file_name() {
            None => true,
            Some(n) => n.as_encoded_bytes().starts_with(b"..") || names.contains(n),
        })
}

/// The config file and every `file:` secret path its text mentions (comments included: a
/// superset costs one more directory watch at most).
fn files(config: &Path) -> Vec<PathBuf> {
    let mut out = vec![config.to_path_buf()];
    if let Ok(text) = std::fs::read_to_string(config) {
        out.extend(secret_paths(&text).into_iter().map(PathBuf::from));
    }
    out
}

fn secret_paths(text: &str) -> Vec<&str> {
    text.match_indices("file:")
        .filter_map(|(i, _)| {
            let rest = text[i + 5..].trim_start();
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ']' | '}'))
                .unwrap_or(rest.len());
            let path = &rest[..end];
            path.starts_with('/').then_some(path)
        })
        .collect()
}

/// A hash of the contents of the config and its secret files (absent files count too).
fn fingerprint(config: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    for file in files(config) {
        file.hash(&mut h);
        std::fs::read(&file).ok().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_about_watched_files_matter() {
        let names = RwLock::new(HashSet::from([
            OsString::from("switchyard.yaml"),
            OsString::from("openai-key"),
        ]));
        let p = |s: &str| vec![PathBuf::from(s)];
        assert!(concerns(&p("/etc/sy/switchyard.yaml"), &names));
        assert!(concerns(&p("/etc/secret/openai-key"), &names));
        assert!(concerns(&p("/etc/sy/..data"), &names));
        assert!(concerns(&p("/etc/sy/..2026_11_23_14_00_00.123"), &names));
        assert!(concerns(&[], &names));
        assert!(!concerns(&p("/etc/sy/switchyard.log"), &names));
        assert!(!concerns(&p("/etc/sy/.switchyard.yaml.swp"), &names));
        assert!(concerns(
            &[
                PathBuf::from("/tmp/x.tmp"),
                PathBuf::from("/tmp/switchyard.yaml")
            ],
            &names
        ));
    }

    #[test]
    fn secret_paths_are_found_in_any_yaml_style() {
        let text = "providers:\n  - {name: a, kind: openai, api_key: 'file:/run/a/key'}\n  - name: b\n    api_key: file: /run/b/key\n    headers: {x: \"file:/run/c/h\"}\n# api_key: file:relative\n";
        assert_eq!(
            secret_paths(text),
            vec!["/run/a/key", "/run/b/key", "/run/c/h"]
        );
    }
}
