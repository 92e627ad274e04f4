//! The configuration: schema (this file), loading and secret references (`load.rs`).
//!
//! Every field has a sidecar-right default, so an empty file (or no file) is a valid config.
//! Structs deny unknown fields: a typo is an error that names the line, not a silently ignored
//! setting. Config reads no other module of ours.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;
use serde_saphyr::Spanned;

mod load;
pub mod watch;

pub use load::{load_file, load_str, ConfigError, Env, Secret, Strings};

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data-plane listen address. Loopback by default: in a pod only the app may call it.
    pub listen: SocketAddr,
    /// Admin-plane listen address (`/metrics`, `/healthz`, `/readyz`, `/config`).
    pub admin: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers (slowloris guard; also bounds how long an
    /// idle keep-alive connection is held).
    pub header_read_timeout_secs: f64,
    /// Time a client has to send a whole request body once its headers are in (408 after).
    pub body_read_timeout_secs: f64,
    /// Whether the built-in mock provider is served (as provider `mock`). Defaults to on when
    /// the config has no providers, off otherwise.
    pub mock: Option<bool>,
    /// Upstream providers.
    pub providers: Vec<ProviderConfig>,
    /// Public model routes.
    pub models: Vec<ModelConfig>,
    /// Where limits and spend are kept: this process (default) or Redis, shared by replicas.
    pub state: StateConfig,
    /// Caller keys. None configured: auth is off and every caller is `anonymous`.
    pub keys: Vec<KeyConfig>,
    /// A YAML file with more caller keys (a list shaped like `keys`), e.g. a mounted Secret.
    pub keys_file: Option<String>,
    /// Per-model price overrides (USD per million tokens), over the shipped table.
    pub prices: BTreeMap<String, PriceConfig>,
    /// Retry policy.
    pub retry: RetryConfig,
    /// When set, the admin plane's operator endpoints (drain, pin) require
    /// `Authorization: Bearer <token>`. Set it whenever the admin port is reachable from
    /// outside the pod.
    pub admin_token: Option<Secret>,
    /// Traces and request logs.
    pub telemetry: TelemetryConfig,
}

/// Traces and request logs. Trace export is off unless an endpoint is set here or in the
/// standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable; these fields win over the variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP collector endpoint for traces (`http://collector:4318` for HTTP,
    /// `http://collector:4317` for gRPC).
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (default: `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`).
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `service.name` of the spans (default: `OTEL_SERVICE_NAME`, else `switchyard`).
    pub service_name: Option<String>,
    /// Whether request log lines include prompts and completions. Off: they may hold
    /// personal data. Keys and credentials are never logged either way.
    pub log_content: bool,
}

/// The OTLP transports switchyard speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9464)),
            max_body_bytes: 32 * 1024 * 1024,
            header_read_timeout_secs: 30.0,
            body_read_timeout_secs: 60.0,
            mock: None,
            providers: Vec::new(),
            models: Vec::new(),
            state: StateConfig::default(),
            keys: Vec::new(),
            keys_file: None,
            prices: BTreeMap::new(),
            retry: RetryConfig::default(),
            admin_token: None,
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// Which store keeps rate-limit and spend state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    /// In this process: right for one sidecar; replicas do not share limits.
    #[default]
    Memory,
    /// A Redis-protocol server (Redis, Valkey) shared by every replica.
    Redis,
}

/// `state:` — the shared-state backend.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// `memory` (default) or `redis`.
    pub backend: StateBackend,
    /// `redis://[user:password@]host:port[/db]`; a secret reference (it may hold a password).
    pub url: Option<Secret>,
    /// Prefix of every key switchyard writes, so deployments can share one server.
    pub prefix: String,
    /// Longest wait for one Redis call before the request is decided on local state.
    pub timeout_ms: u64,
    /// While Redis is unreachable, how often one request probes it again.
    pub retry_secs: f64,
    /// 0 (the default): every keyed admission is one atomic step in Redis. More: a replica
    /// admits on its own copy of a key's shared numbers while the copy was read from Redis
    /// less than this many milliseconds ago and the request leaves at least a tenth of every
    /// limit, and writes its takes behind; otherwise (a stale copy, near a limit, a refusal)
    /// Redis decides as with 0. No round trip on most requests, for the chance that the fleet
    /// admits a little past a limit: what the other replicas took since the copy was read.
    pub sync_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory,
            url: None,
            prefix: "switchyard".into(),
            timeout_ms: 100,
            retry_secs: 1.0,
            sync_ms: 0,
        }
    }
}

/// One caller key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Unique name: the principal in logs, metrics and `/spend`.
    pub name: Spanned<String>,
    /// The key itself (`${ENV}`, `file:` or literal); hashed at load, never kept in clear.
    #[serde(default)]
    pub key: Option<Secret>,
    /// Or the hex SHA-256 of the key, so the config holds no usable secret.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// The team the key belongs to (default `default`).
    #[serde(default)]
    pub team: Option<String>,
    /// Globs over public model names the key may use; default all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Spend limit per UTC day, USD.
    #[serde(default)]
    pub budget_usd_per_day: Option<f64>,
    /// Spend limit per UTC calendar month, USD.
    #[serde(default)]
    pub budget_usd_per_month: Option<f64>,
}

/// A price override, USD per million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Uncached input.
    pub input: f64,
    /// Output.
    pub output: f64,
    /// Input read from a prompt cache (default: `input`).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Input written to a prompt cache (default: `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
}

/// The wire format and conventions of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// api.openai.com.
    Openai,
    /// Any OpenAI-compatible server (Groq, Mistral, DeepSeek, vLLM, Ollama, ...): `base_url`
    /// required.
    OpenaiCompatible,
    /// Azure OpenAI: `base_url` is the resource endpoint, target models are deployment names.
    AzureOpenai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google AI Gemini API.
    Gemini,
    /// The built-in mock provider.
    Mock,
}

impl ProviderKind {
    /// The name used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai_compatible",
            ProviderKind::AzureOpenai => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mock => "mock",
        }
    }

    /// The provider's public endpoint, when it has one.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            _ => None,
        }
    }
}

/// One upstream provider account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name, used in targets (`name/model`).
    pub name: Spanned<String>,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL (the part before `/chat/completions`, `/messages`, `/models/...`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// API key: `${ENV_VAR}`, `file:/path`, or a literal. Never logged.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Extra headers sent upstream (values may use `${ENV}` / `file:` too).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Azure `api-version` query parameter.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Anthropic `max_tokens` when the caller gave none.
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
    /// Models this provider offers: exact names or globs (`gpt-*`). A bare model name in a
    /// request resolves to the first provider offering it. Defaults per kind.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// TCP (and TLS) connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: f64,
    /// Time allowed until the upstream's response headers (and, for streams, first event).
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout_secs: f64,
    /// Time allowed for a whole non-streamed exchange.
    #[serde(default = "default_total_timeout")]
    pub total_timeout_secs: f64,
    /// Whether streamed requests ask this upstream for a usage chunk
    /// (`stream_options.include_usage`). Turn off only for servers that reject the field.
    #[serde(default = "yes")]
    pub stream_usage: bool,
    /// The provider account's own requests-per-minute limit: traffic over it spills to the
    /// next target instead of collecting 429s.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// The provider account's own tokens-per-minute limit.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Longest gap allowed between two events of a stream.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: f64,
    /// Circuit breaker of each of this provider's targets.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

fn default_connect_timeout() -> f64 {
    5.0
}
fn default_first_byte_timeout() -> f64 {
    60.0
}
fn default_total_timeout() -> f64 {
    600.0
}
fn default_idle_timeout() -> f64 {
    60.0
}
fn yes() -> bool {
    true
}

/// A public model route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The public name callers use.
    pub name: Spanned<String>,
    /// Targets, `provider/model` or `{target: provider/model, weight: 3, tags: [..]}`.
    pub targets: Vec<Spanned<TargetConfig>>,
    /// How targets are chosen.
    #[serde(default)]
    pub strategy: StrategyConfig,
    /// Most attempts per request, same-target retries included. Default: one per target.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// For `hedge`: wait this long before the second request. Default: the route's observed
    /// p90 time to first byte (and 1 s until there are enough samples).
    #[serde(default)]
    pub hedge_after_ms: Option<u64>,
    /// Degradation: another route (e.g. a cheaper model) used only when every target of this
    /// one failed or is unavailable.
    #[serde(default)]
    pub fallback_model: Option<Spanned<String>>,
}

/// One target of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TargetConfig {
    /// `provider/model`.
    Name(String),
    /// With a weight and tags.
    Full {
        /// `provider/model`.
        target: String,
        /// Relative share for `weighted`.
        #[serde(default = "one")]
        weight: u32,
        /// Labels requests can require (`x-switchyard-tags`).
        #[serde(default)]
        tags: Vec<String>,
    },
}

fn one() -> u32 {
    1
}

impl TargetConfig {
    /// `provider/model`.
    pub fn target(&self) -> &str {
        match self {
            TargetConfig::Name(t) | TargetConfig::Full { target: t, .. } => t,
        }
    }
    /// Weight (1 unless given).
    pub fn weight(&self) -> u32 {
        match self {
            TargetConfig::Name(_) => 1,
            TargetConfig::Full { weight, .. } => *weight,
        }
    }
    /// Tags.
    pub fn tags(&self) -> &[String] {
        match self {
            TargetConfig::Name(_) => &[],
            TargetConfig::Full { tags, .. } => tags,
        }
    }
}

/// Route strategies (see `ir::Strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyConfig {
    /// In order.
    #[default]
    Fallback,
    /// By weight.
    Weighted,
    /// Power of two choices over peak-EWMA latency.
    LeastLatency,
    /// Lowest price first.
    Cheapest,
    /// Second request after the hedge delay; first reply wins.
    Hedge,
}

/// Retry policy shared by every route.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries may be at most this fraction of requests over the window (0.2 = 20%), so an
    /// outage never multiplies load into a retry storm.
    pub budget_ratio: f64,
    /// The budget's sliding window.
    pub budget_window_secs: u64,
    /// Retries always allowed per second regardless of the ratio (low-traffic sidecars).
    pub min_retries_per_sec: u32,
    /// First backoff before retrying a target already tried (full jitter).
    pub backoff_base_ms: u64,
    /// Backoff cap.
    pub backoff_max_ms: u64,
    /// A `Retry-After` up to this long is waited out when the same target is retried;
    /// longer ones eject the target instead.
    pub max_retry_after_secs: u64,
    /// Time allowed for all attempts of a request until its first byte.
    pub deadline_secs: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            budget_ratio: 0.2,
            budget_window_secs: 10,
            min_retries_per_sec: 5,
            backoff_base_ms: 50,
            backoff_max_ms: 2000,
            max_retry_after_secs: 5,
            deadline_secs: 120.0,
        }
    }
}

/// Circuit breaker settings of a provider's targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open after this many consecutive failures.
    pub consecutive_failures: u32,
    /// ...or when this fraction of the window's requests failed...
    pub failure_ratio: f64,
    /// ...once the window holds at least this many requests.
    pub min_requests: u32,
    /// The sliding window.
    pub window_secs: u64,
    /// How long an open breaker stays open before probing.
    pub cooldown_secs: f64,
    /// Successful probes needed to close again.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window_secs: 10,
            cooldown_secs: 5.0,
            half_open_probes: 2,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Providers switched on by an API key in the environment when no config file is given:
/// (key variable, provider name, kind, base URL, model globs).
type EnvProvider = (
    &'static str,
    &'static str,
    ProviderKind,
    Option<&'static str>,
    &'static [&'static str],
);

const ENV_PROVIDERS: &[EnvProvider] = &[
    ("OPENAI_API_KEY", "openai", ProviderKind::Openai, None, &[]),
    (
        "ANTHROPIC_API_KEY",
        "anthropic",
        ProviderKind::Anthropic,
        None,
        &[],
    ),
    ("GEMINI_API_KEY", "gemini", ProviderKind::Gemini, None, &[]),
    (
        "MISTRAL_API_KEY",
        "mistral",
        ProviderKind::OpenaiCompatible,
        Some("https://api.mistral.ai/v1"),
        &[
            "mistral-*",
            "open-mistral-*",
            "codestral-*",
            "ministral-*",
            "pixtral-*",
            "magistral-*",
        ],
    ),
    (
        "GROQ_API_KEY",
        "groq",
        ProviderKind::OpenaiCompatible,
        Some("https://api.groq.com/openai/v1"),
        &[],
    ),
    (
        "DEEPSEEK_API_KEY",
        "deepseek",
        ProviderKind::OpenaiCompatible,
        Some("https://api.deepseek.com/v1"),
        &["deepseek-*"],
    ),
    (
        "XAI_API_KEY",
        "xai",
        ProviderKind::OpenaiCompatible,
        Some("https://api.x.ai/v1"),
        &["grok-*"],
    ),
    (
        "TOGETHER_API_KEY",
        "together",
        ProviderKind::OpenaiCompatible,
        Some("https://api.together.xyz/v1"),
        &[],
    ),
    (
        "FIREWORKS_API_KEY",
        "fireworks",
        ProviderKind::OpenaiCompatible,
        Some("https://api.fireworks.ai/inference/v1"),
        &[],
    ),
    (
        "OPENROUTER_API_KEY",
        "openrouter",
        ProviderKind::OpenaiCompatible,
        Some("https://openrouter.ai/api/v1"),
        &[],
    ),
];

impl Config {
    /// The built-in defaults of `switchyard serve` without a config file: the mock provider,
    /// plus every provider whose API key is in the environment.
    pub fn builtin(strings: &dyn Strings) -> Config {
        let mut config = Config {
            mock: Some(true),
            ..Config::default()
        };
        for (var, name, kind, base_url, models) in ENV_PROVIDERS {
            let Some(key) = strings.var(var).filter(|k| !k.trim().is_empty()) else {
                continue;
            };
            config.providers.push(ProviderConfig {
                name: Spanned::new(
                    name.to_string(),
                    serde_saphyr::Location::UNKNOWN,
                    serde_saphyr::Location::UNKNOWN,
                ),
                kind: *kind,
                base_url: base_url.map(str::to_owned),
                api_key: Some(Secret::from_value(key.trim())),
                headers: BTreeMap::new(),
                api_version: None,
                default_max_tokens: None,
                models: (!models.is_empty())
                    .then(|| models.iter().map(|m| m.to_string()).collect()),
                connect_timeout_secs: default_connect_timeout(),
                first_byte_timeout_secs: default_first_byte_timeout(),
                total_timeout_secs: default_total_timeout(),
                stream_usage: true,
                rpm: None,
                tpm: None,
                idle_timeout_secs: default_idle_timeout(),
                breaker: BreakerConfig::default(),
            });
        }
        config
    }
}

/// Model-name globs (provider `models`, key `models`): `*` matches any run of characters;
/// everything else literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            if !tail.contains('*') {
                return rest.len() >= tail.len() && rest.ends_with(tail);
            }
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob_match(tail, &rest[i..]))
        }
    }
}
