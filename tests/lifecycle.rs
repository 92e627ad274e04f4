//! Hot reload and graceful shutdown, as Kubernetes drives them: a ConfigMap or Secret update
//! swaps a `..data` symlink in the mounted directory; SIGTERM arrives while streams are open.

mod upstream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::json;
use switchyard::config::watch::ConfigWatch;
use switchyard::config::{self, Env};
use switchyard::server;
use upstream::{eventually, get, post, WORDS};

/// A directory laid out as the kubelet mounts a ConfigMap or Secret: each file is a symlink
/// `name -> ..data/name`, `..data` a symlink to a timestamped directory; an update writes a new
/// directory and renames a fresh symlink over `..data` (one atomic step).
struct Mount {
    dir: PathBuf,
    version: u32,
}

impl Mount {
    fn new(dir: &Path, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut m = Mount {
            dir: dir.to_path_buf(),
            version: 0,
        };
        m.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        m
    }

    fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let old = self.dir.join(format!("..2026_11_23_{}", self.version - 1));
        let new = self.dir.join(format!("..2026_11_23_{}", self.version));
        std::fs::create_dir(&new).unwrap();
        for (name, text) in files {
            std::fs::write(new.join(name), text).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(new.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(old);
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn config_text(base_url: &str, secret: &Path, models: &[(&str, &str)]) -> String {
    let mut text = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nproviders:\n  - name: up\n    kind: openai_compatible\n    base_url: {base_url}\n    api_key: file:{}\nmodels:\n",
        secret.display()
    );
    for (name, target) in models {
        text.push_str(&format!("  - name: {name}\n    targets: [{target}]\n"));
    }
    text
}

/// Starts switchyard on the config at `path`, watching it for the kubelet's updates.
async fn start_watched(path: PathBuf) -> server::Running {
    let cfg = config::load_file(&path, &Env).unwrap();
    let running = server::start(&cfg).await.unwrap();
    let watch = ConfigWatch::new(path)
        .unwrap()
        .with_intervals(Duration::from_millis(20), Duration::from_secs(1));
    running.watch_with(watch, |_| {});
    running
}

fn reloads(metrics: &str, result: &str) -> u64 {
    let series = format!("switchyard_config_reload_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

async fn chat(addr: std::net::SocketAddr, model: &str) -> u16 {
    let resp = post(
        addr,
        "/v1/chat/completions",
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// The reload counters are the process's, and tests run in parallel: the tests that reload
/// take turns, so that one's reloads are not counted in the other's assertions.
static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn configmap_and_secret_swaps_reload_and_a_bad_version_is_refused() {
    let _turn = RELOADING.lock().await;
    let up = upstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut secrets = Mount::new(&tmp.path().join("secrets"), &[("api-key", "key-1\n")]);
    let key = secrets.file("api-key");
    let mut cm = Mount::new(
        &tmp.path().join("config"),
        &[(
            "switchyard.yaml",
            &config_text(&up.base_url(), &key, &[("alpha", "up/gpt-up")]),
        )],
    );
    let running = start_watched(cm.file("switchyard.yaml")).await;
    let (data, admin) = (running.data_addr, running.admin_addr);
    let metric = |result: &'static str| async move {
        let (_, m) = get(admin, "/metrics").await.unwrap();
        reloads(&m, result)
    };
    let (ok0, bad0) = (metric("success").await, metric("rolled_back").await);

    assert_eq!(chat(data, "alpha").await, 200);
    assert_eq!(up.auth_seen(), vec!["Bearer key-1"]);

    // A ConfigMap update: the new route appears without a restart.
    cm.update(&[(
        "switchyard.yaml",
        &config_text(&up.base_url(), &key, &[("beta", "up/gpt-up")]),
    )]);
    let config = eventually("the new routes on /config", || async {
        get(admin, "/config")
            .await
            .filter(|(_, body)| body.contains("\"beta\""))
    })
    .await;
    assert!(!config.1.contains("\"alpha\""), "{}", config.1);
    assert_eq!(chat(data, "beta").await, 200);
    assert_eq!(chat(data, "alpha").await, 404);
    assert_eq!(metric("success").await, ok0 + 1);

    // A bad version (a target naming no provider): refused, counted, the old keeps serving.
    cm.update(&[(
        "switchyard.yaml",
        &config_text(&up.base_url(), &key, &[("gamma", "nope/gpt-up")]),
    )]);
    eventually("the refusal to be counted", || async {
        (metric("rolled_back").await > bad0).then_some(())
    })
    .await;
    let (_, config) = get(admin, "/config").await.unwrap();
    assert!(
        config.contains("\"beta\"") && !config.contains("gamma"),
        "{config}"
    );
    assert_eq!(chat(data, "beta").await, 200);
    assert_eq!(get(admin, "/readyz").await.unwrap().0, 200);

    // Fixed again, then the Secret rotates: the next call carries the new key.
    cm.update(&[(
        "switchyard.yaml",
        &config_text(&up.base_url(), &key, &[("gamma", "up/gpt-up")]),
    )]);
    eventually("the fixed version", || async {
        get(admin, "/config")
            .await
            .filter(|(_, body)| body.contains("\"gamma\""))
    })
    .await;
    secrets.update(&[("api-key", "key-2\n")]);
    eventually("the rotated key upstream", || async {
        assert_eq!(chat(data, "gamma").await, 200);
        up.auth_seen()
            .contains(&"Bearer key-2".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(metric("rolled_back").await, bad0 + 1);
    running.shutdown(Duration::from_secs(5)).await;
}

/// `switchyard_cost_usd_total` of route `route`, summed over its series.
fn cost_of(metrics: &str, route: &str) -> f64 {
    let label = format!("route=\"{route}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_cost_usd_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A `prices:` change is part of the reloaded config: the replies after it are priced by it.
/// (The price is resolved with each target when the routing table is built.)
#[tokio::test]
async fn a_reloaded_price_prices_the_replies_after_it() {
    let _turn = RELOADING.lock().await;
    let up = upstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let secrets = Mount::new(&tmp.path().join("secrets"), &[("api-key", "key-1\n")]);
    let key = secrets.file("api-key");
    // USD per million tokens; the test upstream reports 3 + 3 tokens per reply.
    let priced = |per_million: f64| {
        config_text(&up.base_url(), &key, &[("priced", "up/gpt-priced")])
            + &format!("prices:\n  gpt-priced: {{input: {per_million}, output: {per_million}}}\n")
    };
    let mut cm = Mount::new(
        &tmp.path().join("config"),
        &[("switchyard.yaml", &priced(1_000_000.0))],
    );
    let running = start_watched(cm.file("switchyard.yaml")).await;
    let (data, admin) = (running.data_addr, running.admin_addr);
    let metrics = || async move { get(admin, "/metrics").await.unwrap().1 };

    assert_eq!(chat(data, "priced").await, 200);
    assert_eq!(cost_of(&metrics().await, "priced"), 6.0);

    let ok0 = reloads(&metrics().await, "success");
    cm.update(&[("switchyard.yaml", &priced(2_000_000.0))]);
    eventually("the new prices to load", || async {
        (reloads(&metrics().await, "success") > ok0).then_some(())
    })
    .await;
    assert_eq!(chat(data, "priced").await, 200);
    assert_eq!(cost_of(&metrics().await, "priced"), 6.0 + 12.0);
    running.shutdown(Duration::from_secs(5)).await;
}

/// A file written all the time beside the config (a log in the same directory) neither wakes
/// the watcher on every write nor keeps it from seeing the config change.
#[tokio::test]
async fn a_busy_config_directory_does_not_starve_reloads() {
    let _turn = RELOADING.lock().await;
    let up = upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("api-key");
    std::fs::write(&key, "key-1\n").unwrap();
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(
        &path,
        config_text(&up.base_url(), &key, &[("alpha", "up/gpt-up")]),
    )
    .unwrap();
    let cfg = config::load_file(&path, &Env).unwrap();
    let running = server::start(&cfg).await.unwrap();
    let watch = ConfigWatch::new(path.clone())
        .unwrap()
        .with_intervals(Duration::from_millis(50), Duration::from_secs(3600));
    running.watch_with(watch, |_| {});
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), dir.path().join("app.log"));
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut f = std::fs::File::create(log).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = writeln!(f, "a log line");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::fs::write(
        &path,
        config_text(&up.base_url(), &key, &[("beta", "up/gpt-up")]),
    )
    .unwrap();
    let admin = running.admin_addr;
    eventually("the new route while the directory is busy", || async {
        get(admin, "/config")
            .await
            .filter(|(_, body)| body.contains("\"beta\""))
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    running.shutdown(Duration::from_secs(5)).await;
}

/// Starts a streamed chat and reads until its first word arrived.
async fn open_stream(data: std::net::SocketAddr) -> (hyper::body::Incoming, String) {
    let resp = post(
        data,
        "/v1/chat/completions",
        json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = String::new();
    while !seen.contains(WORDS[0]) {
        let frame = body.frame().await.expect("stream ended early").unwrap();
        if let Ok(d) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&d));
        }
    }
    (body, seen)
}

async fn finish_stream(mut body: hyper::body::Incoming, mut seen: String) -> String {
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.expect("stream broke").into_data() {
            seen.push_str(&String::from_utf8_lossy(&d));
        }
    }
    seen
}

fn assert_complete(stream: &str) {
    for w in WORDS {
        assert!(stream.contains(w), "missing {w}: {stream}");
    }
    assert!(stream.trim_end().ends_with("data: [DONE]"), "{stream}");
}

/// Lets the held stream finish (opening the upstream's gate), checks it arrived whole, and
/// waits for the shutdown that was waiting on it to return.
async fn let_the_stream_finish_then_drain(
    up: &upstream::Upstream,
    body: hyper::body::Incoming,
    seen: String,
    drained: tokio::task::JoinHandle<()>,
) {
    up.open_gate();
    assert_complete(&finish_stream(body, seen).await);
    tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .expect("shutdown returns once the stream is done")
        .unwrap();
}

/// An upstream, and switchyard in process with the route `slow` to it.
async fn start_with_slow_route() -> (upstream::Upstream, server::Running, tempfile::TempDir) {
    let up = upstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    std::fs::write(&key, "k").unwrap();
    let cfg = config::load_str(
        &config_text(&up.base_url(), &key, &[("slow", "up/gpt-up")]),
        &Env,
    )
    .unwrap();
    let running = server::start(&cfg).await.unwrap();
    (up, running, tmp)
}

#[tokio::test]
async fn shutdown_fails_readiness_refuses_new_connections_and_finishes_streams() {
    let (up, running, _tmp) = start_with_slow_route().await;
    let (data, admin) = (running.data_addr, running.admin_addr);
    assert_eq!(get(admin, "/readyz").await.unwrap().0, 200);

    let (body, seen) = open_stream(data).await;
    let drained = tokio::spawn(running.shutdown(Duration::from_secs(30)));

    // Readiness fails and the admin plane still answers while the stream drains...
    eventually("/readyz to fail", || async {
        get(admin, "/readyz").await.filter(|(s, _)| *s == 503)
    })
    .await;
    // ...and new connections to the data plane are refused.
    eventually("the data plane to refuse connections", || async {
        tokio::net::TcpStream::connect(data).await.err().map(|_| ())
    })
    .await;
    assert!(
        !drained.is_finished(),
        "shutdown must wait for the open stream"
    );

    let_the_stream_finish_then_drain(&up, body, seen, drained).await;
}

/// An idle keep-alive connection does not hold shutdown up: it is closed at once, while an
/// open stream on another connection is still let finish.
#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (up, running, _tmp) = start_with_slow_route().await;
    let data = running.data_addr;

    // One request answered on a keep-alive connection, which then stays open and idle.
    let mut idle = tokio::net::TcpStream::connect(data).await.unwrap();
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nhost: switchyard\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );

    let (body, stream_seen) = open_stream(data).await;
    let drained = tokio::spawn(running.shutdown(Duration::from_secs(60)));

    // The idle connection is closed by the server (its body, if any, read first).
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle connection was not closed on shutdown"
    );
    assert!(
        !drained.is_finished(),
        "shutdown must still wait for the open stream"
    );

    let_the_stream_finish_then_drain(&up, body, stream_seen, drained).await;
}

/// The real binary: SIGTERM while a stream is open → it finishes, the process exits 0.
#[tokio::test]
async fn sigterm_drains_the_stream_and_exits_zero() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let up = upstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    std::fs::write(&key, "k").unwrap();
    let path = tmp.path().join("switchyard.yaml");
    std::fs::write(
        &path,
        config_text(&up.base_url(), &key, &[("slow", "up/gpt-up")]),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // "switchyard 0.1.0 serving on http://ADDR (admin http://ADDR)"
    let (data, admin) = loop {
        let line = lines.next_line().await.unwrap().expect("switchyard exited");
        if let Some(rest) = line.split_once("serving on http://").map(|(_, r)| r) {
            let (d, a) = rest.split_once(" (admin http://").unwrap();
            break (
                d.parse::<std::net::SocketAddr>().unwrap(),
                a.trim_end_matches(')')
                    .parse::<std::net::SocketAddr>()
                    .unwrap(),
            );
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let (body, seen) = open_stream(data).await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually("/readyz to fail", || async {
        get(admin, "/readyz").await.filter(|(s, _)| *s == 503)
    })
    .await;
    up.open_gate();
    assert_complete(&finish_stream(body, seen).await);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("switchyard exits once drained")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
