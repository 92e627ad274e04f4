//! Loading: YAML → [`Config`], `${ENV}` and `file:` secret references resolved, then validated.
//! Every error names the field and, where the YAML parser knows it, the line.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::{Config, KeyConfig, ProviderKind, StateBackend};

/// Where `${VAR}` and `file:` references are looked up: the real environment and file system,
/// or a map in tests.
pub trait Strings {
    /// An environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// A file's contents.
    fn file(&self, path: &str) -> std::io::Result<String>;
}

/// The process environment and file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env;

impl Strings for Env {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// A secret value from config: written as `${ENV_VAR}`, `file:/path` or a literal, resolved at
/// load time. Its `Debug` and `Display` never show the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret {
    reference: String,
    value: String,
}

impl Secret {
    /// A secret with a known value (built-in defaults, tests).
    pub fn from_value(value: impl Into<String>) -> Self {
        let value = value.into();
        Self {
            reference: String::new(),
            value,
        }
    }

    /// The resolved value.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the value comes from, safe to show (`${OPENAI_API_KEY}`, `file:/run/key`), or
    /// `<literal>`.
    pub fn source(&self) -> &str {
        if self.reference.contains("${") || self.reference.starts_with("file:") {
            &self.reference
        } else {
            "<literal>"
        }
    }

    fn resolve(&mut self, strings: &dyn Strings) -> Result<(), String> {
        self.value = if let Some(path) = self.reference.strip_prefix("file:") {
            strings
                .file(path.trim())
                .map_err(|e| format!("cannot read secret file '{}': {e}", path.trim()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned()
        } else {
            interpolate(&self.reference, strings)?
        };
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.source())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let reference = String::deserialize(d)?;
        Ok(Self {
            reference,
            value: String::new(),
        })
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in `s`.
fn interpolate(s: &str, strings: &dyn Strings) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated '${{' in '{s}'"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (strings.var(name), default) {
            (Some(v), _) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            _ => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A config that could not be loaded; the message names the field and line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn at(line: u64, field: &str, msg: impl fmt::Display) -> ConfigError {
    if line > 0 {
        ConfigError(format!("line {line}: {field}: {msg}"))
    } else {
        ConfigError(format!("{field}: {msg}"))
    }
}

/// Loads and validates a config file.
pub fn load_file(path: &Path, strings: &dyn Strings) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    load_str(&text, strings).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
}

/// Loads and validates config text.
pub fn load_str(text: &str, strings: &dyn Strings) -> Result<Config, ConfigError> {
    let mut config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError(e.to_string()))?
    };
    let inline_keys = config.keys.len();
    load_keys_file(&mut config, strings)?;
    resolve_secrets(&mut config, strings)?;
    validate(&config)?;
    validate_limits(&config, inline_keys)?;
    Ok(config)
}

/// Appends the keys of `keys_file` (a YAML list shaped like `keys:`) to the config's.
fn load_keys_file(config: &mut Config, strings: &dyn Strings) -> Result<(), ConfigError> {
    let Some(path) = config.keys_file.as_deref() else {
        return Ok(());
    };
    let text = strings
        .file(path)
        .map_err(|e| at(0, "keys_file", format!("cannot read '{path}': {e}")))?;
    if text.trim().is_empty() {
        return Ok(());
    }
    let keys: Vec<KeyConfig> =
        serde_saphyr::from_str(&text).map_err(|e| at(0, "keys_file", format!("'{path}': {e}")))?;
    config.keys.extend(keys);
    Ok(())
}

/// Keys, limits, budgets, prices and the state backend.
fn validate_limits(config: &Config, inline_keys: usize) -> Result<(), ConfigError> {
    let file = config.keys_file.as_deref().unwrap_or_default();
    let mut names = HashSet::new();
    let mut digests = HashSet::new();
    for (i, k) in config.keys.iter().enumerate() {
        let line = k.name.referenced.line();
        let field = |f: &str| {
            if i < inline_keys {
                format!("keys[{i}].{f}")
            } else {
                format!("keys_file '{file}': [{}].{f}", i - inline_keys)
            }
        };
        let name = k.name.value.as_str();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(at(
                line,
                &field("name"),
                format!("'{name}' must be non-empty, without spaces"),
            ));
        }
        if !names.insert(name) {
            return Err(at(
                line,
                &field("name"),
                format!("key '{name}' is defined twice"),
            ));
        }
        let digest = match (&k.key, &k.key_sha256) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(at(
                    line,
                    &field("key"),
                    "give exactly one of key, key_sha256",
                ))
            }
            (Some(s), None) if s.expose().is_empty() => {
                return Err(at(
                    line,
                    &field("key"),
                    format!("{} resolved to an empty value", s.source()),
                ))
            }
            (Some(s), None) => s.expose().to_owned(),
            (None, Some(h)) => {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(at(
                        line,
                        &field("key_sha256"),
                        "must be 64 hex digits (the SHA-256 of the key)",
                    ));
                }
                h.to_ascii_lowercase()
            }
        };
        // Comparing resolved keys with hex digests would miss a key given both ways; a
        // duplicate among either kind is still a mistake worth refusing.
        if !digests.insert(digest) {
            return Err(at(
                line,
                &field("key"),
                "the same key is given to two names",
            ));
        }
        if k.team.as_deref().is_some_and(str::is_empty) {
            return Err(at(line, &field("team"), "must not be empty"));
        }
        for (f, v) in [("rpm", k.rpm), ("tpm", k.tpm)] {
            if v == Some(0) {
                return Err(at(
                    line,
                    &field(f),
                    "must be at least 1 (omit it for no limit)",
                ));
            }
        }
        for (f, v) in [
            ("budget_usd_per_day", k.budget_usd_per_day),
            ("budget_usd_per_month", k.budget_usd_per_month),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(at(line, &field(f), "must be a number of USD, 0 or more"));
            }
        }
    }
    for (i, p) in config.providers.iter().enumerate() {
        for (f, v) in [("rpm", p.rpm), ("tpm", p.tpm)] {
            if v == Some(0) {
                return Err(at(
                    p.name.referenced.line(),
                    &format!("providers[{i}].{f}"),
                    "must be at least 1 (omit it for no limit)",
                ));
            }
        }
    }
    for (model, p) in &config.prices {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(ok(p.input)
            && ok(p.output)
            && p.cached_input.is_none_or(ok)
            && p.cache_write.is_none_or(ok))
        {
            return Err(at(
                0,
                &format!("prices.{model}"),
                "prices must be USD per million tokens, 0 or more",
            ));
        }
    }
    let st = &config.state;
    match (st.backend, &st.url) {
        (StateBackend::Redis, None) => {
            return Err(at(0, "state.url", "required for backend redis"))
        }
        (StateBackend::Redis, Some(url)) => {
            let v = url.expose();
            if !(v.starts_with("redis://")
                || v.starts_with("redis+unix://")
                || v.starts_with("unix://"))
            {
                return Err(at(
                    0,
                    "state.url",
                    format!("{} must be a redis:// or unix:// URL", url.source()),
                ));
            }
        }
        _ => {}
    }
    if st.prefix.is_empty() || st.prefix.contains(['{', '}', ' ']) {
        return Err(at(
            0,
            "state.prefix",
            "must be non-empty, without braces or spaces",
        ));
    }
    if st.timeout_ms == 0 {
        return Err(at(0, "state.timeout_ms", "must be at least 1"));
    }
    if !(st.retry_secs.is_finite() && st.retry_secs > 0.0) {
        return Err(at(
            0,
            "state.retry_secs",
            "must be a positive number of seconds",
        ));
    }
    if st.sync_ms > 60_000 {
        return Err(at(
            0,
            "state.sync_ms",
            "must be at most 60000 (a minute, the window of every limit)",
        ));
    }
    Ok(())
}

fn resolve_secrets(config: &mut Config, strings: &dyn Strings) -> Result<(), ConfigError> {
    if let Some(url) = &mut config.state.url {
        url.resolve(strings).map_err(|e| at(0, "state.url", e))?;
    }
    for (i, k) in config.keys.iter_mut().enumerate() {
        let line = k.name.referenced.line();
        if let Some(key) = &mut k.key {
            key.resolve(strings)
                .map_err(|e| at(line, &format!("keys[{i}].key"), e))?;
        }
    }
    if let Some(t) = &mut config.admin_token {
        t.resolve(strings).map_err(|e| at(0, "admin_token", e))?;
    }
    for (i, p) in config.providers.iter_mut().enumerate() {
        let line = p.name.referenced.line();
        if let Some(k) = &mut p.api_key {
            k.resolve(strings)
                .map_err(|e| at(line, &format!("providers[{i}].api_key"), e))?;
        }
        for (h, v) in &mut p.headers {
            v.resolve(strings)
                .map_err(|e| at(line, &format!("providers[{i}].headers.{h}"), e))?;
        }
    }
    Ok(())
}

/// Longest duration any `*_secs` option may name: a year. `Duration::from_secs_f64` panics on
/// NaN, infinite and huge values, and an `Instant` plus a huge duration overflows.
const MAX_SECS: f64 = 365.0 * 24.0 * 60.0 * 60.0;
const SECONDS: &str = "must be a positive number of seconds, at most a year";

fn seconds_ok(v: f64) -> bool {
    v.is_finite() && v > 0.0 && v <= MAX_SECS
}

fn validate(config: &Config) -> Result<(), ConfigError> {
    if config.max_body_bytes == 0 {
        return Err(at(0, "max_body_bytes", "must be greater than 0"));
    }
    for (field, v) in [
        ("header_read_timeout_secs", config.header_read_timeout_secs),
        ("body_read_timeout_secs", config.body_read_timeout_secs),
        ("retry.deadline_secs", config.retry.deadline_secs),
    ] {
        if !seconds_ok(v) {
            return Err(at(0, field, SECONDS));
        }
    }
    let mut names = HashSet::new();
    for (i, p) in config.providers.iter().enumerate() {
        let line = p.name.referenced.line();
        let field = |f: &str| format!("providers[{i}].{f}");
        let name = p.name.value.as_str();
        if name.is_empty() || name.contains('/') || name.contains(char::is_whitespace) {
            return Err(at(
                line,
                &field("name"),
                format!("'{name}' must be non-empty, without '/' or spaces"),
            ));
        }
        if !names.insert(name) {
            return Err(at(
                line,
                &field("name"),
                format!("provider '{name}' is defined twice"),
            ));
        }
        match (&p.base_url, p.kind.default_base_url()) {
            (None, None) if p.kind != ProviderKind::Mock => {
                return Err(at(
                    line,
                    &field("base_url"),
                    format!("required for kind {}", p.kind),
                ))
            }
            (Some(url), _) => {
                let uri: http::Uri = url.parse().map_err(|e| {
                    at(
                        line,
                        &field("base_url"),
                        format!("'{url}' is not a URL: {e}"),
                    )
                })?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(at(
                        line,
                        &field("base_url"),
                        format!("'{url}' must be an http:// or https:// URL"),
                    ));
                }
            }
            _ => {}
        }
        let needs_key = matches!(
            p.kind,
            ProviderKind::Openai
                | ProviderKind::AzureOpenai
                | ProviderKind::Anthropic
                | ProviderKind::Gemini
        );
        match &p.api_key {
            None if needs_key => {
                return Err(at(
                    line,
                    &field("api_key"),
                    format!("required for kind {}", p.kind),
                ))
            }
            Some(k) if needs_key && k.expose().is_empty() => {
                return Err(at(
                    line,
                    &field("api_key"),
                    format!("{} resolved to an empty value", k.source()),
                ))
            }
            _ => {}
        }
        if p.kind == ProviderKind::AzureOpenai && p.api_version.is_none() {
            return Err(at(
                line,
                &field("api_version"),
                "required for kind azure_openai",
            ));
        }
        for (f, v) in [
            ("connect_timeout_secs", p.connect_timeout_secs),
            ("first_byte_timeout_secs", p.first_byte_timeout_secs),
            ("total_timeout_secs", p.total_timeout_secs),
            ("idle_timeout_secs", p.idle_timeout_secs),
            ("breaker.cooldown_secs", p.breaker.cooldown_secs),
        ] {
            if !seconds_ok(v) {
                return Err(at(line, &field(f), format!("{v}: {SECONDS}")));
            }
        }
        for h in p.headers.keys() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(at(
                    line,
                    &field(&format!("headers.{h}")),
                    "not a valid header name",
                ));
            }
        }
    }
    let mut routes = HashSet::new();
    for (i, m) in config.models.iter().enumerate() {
        let line = m.name.referenced.line();
        if m.name.value.is_empty() {
            return Err(at(line, &format!("models[{i}].name"), "must not be empty"));
        }
        if !routes.insert(m.name.value.as_str()) {
            return Err(at(
                line,
                &format!("models[{i}].name"),
                format!("model '{}' is defined twice", m.name.value),
            ));
        }
        if m.targets.is_empty() {
            return Err(at(
                line,
                &format!("models[{i}].targets"),
                "needs at least one target",
            ));
        }
        for (j, t) in m.targets.iter().enumerate() {
            let tline = t.referenced.line();
            let field = format!("models[{i}].targets[{j}]");
            let name = t.value.target();
            let Some((provider, model)) = name.split_once('/') else {
                return Err(at(
                    tline,
                    &field,
                    format!("'{name}' must be written provider/model"),
                ));
            };
            if model.is_empty() {
                return Err(at(tline, &field, format!("'{name}' names no model")));
            }
            if t.value.weight() == 0 && m.strategy == super::StrategyConfig::Weighted {
                return Err(at(tline, &format!("{field}.weight"), "must be at least 1"));
            }
            let known =
                names.contains(provider) || (provider == "mock" && config.mock != Some(false));
            if !known {
                let mut list: Vec<&str> = names.iter().copied().collect();
                list.sort_unstable();
                return Err(at(
                    tline,
                    &field,
                    format!(
                        "unknown provider '{provider}' (defined: {})",
                        list.join(", ")
                    ),
                ));
            }
        }
        if m.max_attempts == Some(0) {
            return Err(at(
                line,
                &format!("models[{i}].max_attempts"),
                "must be at least 1",
            ));
        }
    }
    for (i, m) in config.models.iter().enumerate() {
        if let Some(fb) = &m.fallback_model {
            if !routes.contains(fb.value.as_str()) || fb.value == m.name.value {
                return Err(at(
                    fb.referenced.line(),
                    &format!("models[{i}].fallback_model"),
                    format!("'{}' must name another model route of this file", fb.value),
                ));
            }
        }
    }
    let r = &config.retry;
    if !(0.0..=10.0).contains(&r.budget_ratio)
        || r.budget_window_secs == 0
        || r.deadline_secs <= 0.0
    {
        return Err(at(
            0,
            "retry",
            "budget_ratio must be within 0..=10, budget_window_secs and deadline_secs positive",
        ));
    }
    for (i, p) in config.providers.iter().enumerate() {
        let b = &p.breaker;
        if b.consecutive_failures == 0
            || !(0.0..=1.0).contains(&b.failure_ratio)
            || b.window_secs == 0
            || b.cooldown_secs <= 0.0
            || b.half_open_probes == 0
        {
            return Err(at(
                p.name.referenced.line(),
                &format!("providers[{i}].breaker"),
                "consecutive_failures, window_secs, cooldown_secs and half_open_probes must be positive; failure_ratio within 0..=1",
            ));
        }
        if !(p.idle_timeout_secs.is_finite() && p.idle_timeout_secs > 0.0) {
            return Err(at(
                p.name.referenced.line(),
                &format!("providers[{i}].idle_timeout_secs"),
                "must be a positive number of seconds",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<&'static str, &'static str>);
    impl Strings for Map {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
        fn file(&self, path: &str) -> std::io::Result<String> {
            self.0
                .get(path)
                .map(|s| s.to_string())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        }
    }

    fn strings() -> Map {
        Map(HashMap::from([
            ("PRIMARY_KEY", "sk-primary"),
            ("/var/run/secrets/openai/key", "sk-backup\n"),
        ]))
    }

    const README_CONFIG: &str = "\
listen: 127.0.0.1:4000        # data plane
admin: 127.0.0.1:9464         # /metrics /healthz /readyz
providers:
  - name: primary
    kind: openai_compatible
    base_url: http://127.0.0.1:9001/v1
    api_key: ${PRIMARY_KEY}
  - name: backup
    kind: openai
    api_key: file:/var/run/secrets/openai/key
models:
  - name: chat-default
    targets: [primary/gpt-4o-mini, backup/gpt-4o-mini]
";

    #[test]
    fn readme_config_loads_with_secrets_resolved() {
        let c = load_str(README_CONFIG, &strings()).unwrap();
        assert_eq!(c.providers.len(), 2);
        assert_eq!(
            c.providers[0].api_key.as_ref().unwrap().expose(),
            "sk-primary"
        );
        assert_eq!(
            c.providers[1].api_key.as_ref().unwrap().expose(),
            "sk-backup"
        );
        assert_eq!(c.models[0].targets[1].value.target(), "backup/gpt-4o-mini");
        assert_eq!(c.providers[0].first_byte_timeout_secs, 60.0);
    }

    #[test]
    fn secrets_never_print() {
        let c = load_str(README_CONFIG, &strings()).unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("sk-primary") && !dbg.contains("sk-backup"),
            "{dbg}"
        );
        assert!(dbg.contains("${PRIMARY_KEY}"));
    }

    #[test]
    fn empty_config_is_valid() {
        let c = load_str("", &strings()).unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert!(c.providers.is_empty());
    }

    fn err(text: &str) -> String {
        load_str(text, &strings()).unwrap_err().to_string()
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let e = err(
            "listen: 127.0.0.1:4000\nproviders:\n  - name: a\n    kind: openai\n    api_kye: x\n",
        );
        assert!(e.contains("api_kye") && e.contains('5'), "{e}");
    }

    #[test]
    fn unknown_provider_in_target_names_line() {
        let e = err("providers:\n  - name: a\n    kind: openai_compatible\n    base_url: http://x\nmodels:\n  - name: m\n    targets:\n      - a/x\n      - b/y\n");
        assert!(e.starts_with("line 9: models[0].targets[1]"), "{e}");
        assert!(e.contains("unknown provider 'b'"), "{e}");
    }

    #[test]
    fn missing_env_var_is_refused() {
        let e = err("providers:\n  - name: a\n    kind: openai\n    api_key: ${NOPE}\n");
        assert!(e.contains("line 2") && e.contains("NOPE is not set"), "{e}");
    }

    #[test]
    fn missing_base_url_and_key_are_refused() {
        assert!(
            err("providers:\n  - name: a\n    kind: openai_compatible\n")
                .contains("base_url: required")
        );
        assert!(err("providers:\n  - name: a\n    kind: anthropic\n").contains("api_key: required"));
        assert!(err(
            "providers:\n  - name: a\n    kind: openai_compatible\n    base_url: ftp://x\n"
        )
        .contains("http://"));
    }

    #[test]
    fn duplicates_are_refused() {
        let e = err("providers:\n  - {name: a, kind: mock}\n  - {name: a, kind: mock}\n");
        assert!(e.contains("defined twice"), "{e}");
    }

    #[test]
    fn interpolation_defaults_and_embedding() {
        let s = strings();
        assert_eq!(
            interpolate("Bearer ${PRIMARY_KEY}", &s).unwrap(),
            "Bearer sk-primary"
        );
        assert_eq!(interpolate("${UNSET:-fallback}", &s).unwrap(), "fallback");
        assert!(interpolate("${UNTERMINATED", &s).is_err());
    }

    #[test]
    fn keys_state_and_prices_load() {
        let s = Map(HashMap::from([
            ("TEAM_A_KEY", "sk-a"),
            (
                "/run/keys.yaml",
                "- name: file-key\n  key_sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\n  rpm: 5\n",
            ),
        ]));
        let c = load_str(
            "state:\n  backend: redis\n  url: redis://127.0.0.1:6379\nkeys_file: /run/keys.yaml\nkeys:\n  - name: team-a\n    key: ${TEAM_A_KEY}\n    team: search\n    models: [\"chat-*\"]\n    rpm: 60\n    tpm: 100000\n    budget_usd_per_day: 5\nproviders:\n  - {name: p, kind: mock, rpm: 500, tpm: 200000}\nprices:\n  my-model: {input: 1, output: 2, cached_input: 0.5}\n",
            &s,
        )
        .unwrap();
        assert_eq!(c.state.backend, crate::config::StateBackend::Redis);
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.keys[0].key.as_ref().unwrap().expose(), "sk-a");
        assert_eq!(c.keys[1].name.value, "file-key");
        assert_eq!(c.providers[0].rpm, Some(500));
        assert_eq!(c.prices["my-model"].cached_input, Some(0.5));
        assert!(!format!("{c:?}").contains("sk-a"));
    }

    #[test]
    fn bad_keys_and_state_name_the_field() {
        let e = err("keys:\n  - name: a\n    key: x\n    key_sha256: ab\n");
        assert!(
            e.contains("line 2") && e.contains("keys[0].key") && e.contains("exactly one"),
            "{e}"
        );
        let e = err("keys:\n  - name: a\n    key_sha256: abc\n");
        assert!(
            e.contains("keys[0].key_sha256") && e.contains("64 hex"),
            "{e}"
        );
        let e = err("keys:\n  - {name: a, key: x}\n  - {name: b, key: x}\n");
        assert!(e.contains("line 3") && e.contains("same key"), "{e}");
        let e = err("keys:\n  - {name: a, key: x, rpm: 0}\n");
        assert!(e.contains("keys[0].rpm"), "{e}");
        let e = err("keys:\n  - {name: a, key: x, budget_usd_per_day: -1}\n");
        assert!(e.contains("budget_usd_per_day"), "{e}");
        let e = err("keys:\n  - {name: a, key: x, rmp: 3}\n");
        assert!(e.contains("rmp"), "{e}");
        let e = err("state:\n  backend: redis\n");
        assert!(e.contains("state.url: required"), "{e}");
        let e = err("state:\n  backend: redis\n  url: http://x\n");
        assert!(e.contains("state.url") && e.contains("redis://"), "{e}");
        let e = err("state:\n  backend: etcd\n");
        assert!(e.contains("etcd"), "{e}");
        let e = err("state:\n  sync_ms: 60001\n");
        assert!(e.contains("state.sync_ms") && e.contains("60000"), "{e}");
        let e = err("providers:\n  - {name: p, kind: mock, tpm: 0}\n");
        assert!(e.contains("providers[0].tpm"), "{e}");
        let e = err("prices:\n  m: {input: -1, output: 1}\n");
        assert!(e.contains("prices.m"), "{e}");
        let e = err("keys_file: /nope.yaml\n");
        assert!(e.contains("keys_file") && e.contains("/nope.yaml"), "{e}");
    }
}
