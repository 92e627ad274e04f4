//! Upstream providers: one module per wire format, each turning an IR [`Attempt`] into an HTTP
//! exchange with the provider and the reply back into IR.
//!
//! A [`Provider`] is built once per config generation and shared by every target that names
//! it; its pooled client lives as long as it does. [`Provider::service`] is the innermost
//! service of a target's stack.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, Uri};
use http_body_util::Full;

use crate::config::{BreakerConfig, ProviderConfig, ProviderKind};
use crate::ir::{Attempt, Error, ErrorKind, Reply, ReplyBody};
use crate::wire;

mod anthropic;
pub mod client;
mod gemini;
pub mod mock;
mod openai;

/// Timeouts of one provider.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Until the response head (and first event of a stream).
    pub first_byte: Duration,
    /// A whole non-streamed exchange.
    pub total: Duration,
    /// The longest gap between two stream events.
    pub idle: Duration,
}

/// An upstream provider account.
pub struct Provider {
    /// Name from config.
    pub name: Arc<str>,
    /// Wire kind.
    pub kind: ProviderKind,
    /// Circuit breaker settings for this provider's targets.
    pub breaker: BreakerConfig,
    offers: Vec<String>,
    adapter: Adapter,
}

enum Adapter {
    Http(Box<Http>),
    Mock(mock::Mock),
}

/// An upstream path (after the base URL): most are fixed, some name the model.
type Path = std::borrow::Cow<'static, str>;

/// What every HTTP provider holds: where, with which credentials, through which client.
struct Http {
    base_url: String,
    /// The URIs of the provider's fixed paths (its module's `FIXED_PATHS`), parsed once.
    fixed_uris: Vec<(&'static str, Uri)>,
    /// `Host` for a plain-`http` base URL, written once. That connection is always HTTP/1.1;
    /// over TLS (HTTP/2 possible, which carries `:authority` instead) the client sets it.
    host: Option<HeaderValue>,
    /// Auth and configured headers; values marked sensitive so no debug output shows them.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The key and configured header values, scrubbed from every upstream error message: an
    /// upstream (or a proxy before it) may echo the request's credentials back.
    secrets: Arc<[String]>,
    client: client::HttpClient,
    timeouts: Timeouts,
    api_version: Option<String>,
    stream_usage: bool,
    default_max_tokens: u32,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Model globs a provider offers when its config lists none: bare model names such as
/// `gpt-4o-mini` resolve through these.
fn default_offers(kind: ProviderKind) -> Vec<String> {
    let v: &[&str] = match kind {
        ProviderKind::Openai => &[
            "gpt-*",
            "o1*",
            "o3*",
            "o4*",
            "chatgpt-*",
            "text-embedding-*",
            "omni-moderation-*",
        ],
        ProviderKind::Anthropic => &["claude-*"],
        ProviderKind::Gemini => &["gemini-*", "text-embedding-004", "gemini-embedding-*"],
        ProviderKind::Mock => &["echo", "lorem", "embed"],
        ProviderKind::OpenaiCompatible | ProviderKind::AzureOpenai => &[],
    };
    v.iter().map(|s| s.to_string()).collect()
}

pub use crate::config::glob_match;

/// Replaces every occurrence of a secret in the caller-visible parts of an error.
fn redact(secrets: &[String], mut e: Error) -> Error {
    for secret in secrets {
        for text in [Some(&mut e.message), e.param.as_mut(), e.code.as_mut()]
            .into_iter()
            .flatten()
        {
            if text.contains(secret.as_str()) {
                *text = text.replace(secret.as_str(), "[redacted]");
            }
        }
    }
    e
}

/// The `Host` the HTTP/1.1 client would write for a plain-`http` base URL (`host`, or
/// `host:port` when the port is not 80); `None` for any other scheme.
fn plain_http_host(base_url: &str) -> Option<HeaderValue> {
    let uri: Uri = base_url.parse().ok()?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let host = uri.host()?;
    match uri.port() {
        Some(port) if port.as_u16() != 80 => {
            HeaderValue::from_str(&format!("{host}:{}", port.as_str())).ok()
        }
        _ => HeaderValue::from_str(host).ok(),
    }
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v)
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), Error> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Error::new(ErrorKind::Internal, format!("invalid header name {name}")))?;
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        Error::new(
            ErrorKind::Internal,
            format!("header {name} has a value that is not valid"),
        )
    })?;
    v.set_sensitive(true);
    Ok((n, v))
}

impl Provider {
    /// Builds a provider from its (validated) config.
    pub fn from_config(cfg: &ProviderConfig) -> Result<Self, Error> {
        let name: Arc<str> = Arc::from(cfg.name.value.as_str());
        let offers = cfg
            .models
            .clone()
            .unwrap_or_else(|| default_offers(cfg.kind));
        if cfg.kind == ProviderKind::Mock {
            return Ok(Self {
                name,
                kind: cfg.kind,
                breaker: cfg.breaker.clone(),
                offers,
                adapter: Adapter::Mock(mock::Mock::default()),
            });
        }
        let base_url = cfg
            .base_url
            .as_deref()
            .or(cfg.kind.default_base_url())
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let key = cfg
            .api_key
            .as_ref()
            .map(|k| k.expose())
            .filter(|k| !k.is_empty());
        let mut headers = Vec::new();
        if let Some(key) = key {
            match cfg.kind {
                ProviderKind::AzureOpenai => headers.push(header("api-key", key)?),
                ProviderKind::Anthropic => headers.push(header("x-api-key", key)?),
                ProviderKind::Gemini => headers.push(header("x-goog-api-key", key)?),
                _ => headers.push(header("authorization", &format!("Bearer {key}"))?),
            }
        }
        if cfg.kind == ProviderKind::Anthropic {
            headers.push(header("anthropic-version", "2023-06-01")?);
        }
        let secrets: Arc<[String]> = key
            .into_iter()
            .chain(cfg.headers.values().map(|v| v.expose()))
            .filter(|s| s.len() >= 8)
            .map(str::to_owned)
            .collect();
        for (k, v) in &cfg.headers {
            // A configured header replaces a default one of the same name.
            let (n, v) = header(k, v.expose())?;
            headers.retain(|(existing, _)| existing != n);
            headers.push((n, v));
        }
        let fixed_paths = match cfg.kind {
            ProviderKind::Anthropic => anthropic::FIXED_PATHS,
            ProviderKind::Gemini | ProviderKind::AzureOpenai | ProviderKind::Mock => &[],
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => openai::FIXED_PATHS,
        };
        // A base URL that does not parse is reported by the first request, as before.
        let fixed_uris = fixed_paths
            .iter()
            .filter_map(|&p| Some((p, format!("{base_url}{p}").parse::<Uri>().ok()?)))
            .collect();
        Ok(Self {
            name,
            kind: cfg.kind,
            breaker: cfg.breaker.clone(),
            offers,
            adapter: Adapter::Http(Box::new(Http {
                // A `Host` from the config's headers is sent as configured, and alone.
                host: plain_http_host(&base_url)
                    .filter(|_| !headers.iter().any(|(n, _)| n == http::header::HOST)),
                fixed_uris,
                base_url,
                headers,
                secrets,
                client: client::build(secs(cfg.connect_timeout_secs))?,
                timeouts: Timeouts {
                    first_byte: secs(cfg.first_byte_timeout_secs),
                    total: secs(cfg.total_timeout_secs),
                    idle: secs(cfg.idle_timeout_secs),
                },
                api_version: cfg.api_version.clone(),
                stream_usage: cfg.stream_usage,
                default_max_tokens: cfg
                    .default_max_tokens
                    .unwrap_or(anthropic::DEFAULT_MAX_TOKENS),
            })),
        })
    }

    /// The built-in mock provider, named `mock`.
    pub fn mock() -> Self {
        Self {
            name: Arc::from("mock"),
            kind: ProviderKind::Mock,
            breaker: BreakerConfig::default(),
            offers: default_offers(ProviderKind::Mock),
            adapter: Adapter::Mock(mock::Mock::default()),
        }
    }

    /// The in-process mock, when this is the mock provider (for fault control).
    pub fn as_mock(&self) -> Option<&mock::Mock> {
        match &self.adapter {
            Adapter::Mock(m) => Some(m),
            Adapter::Http(_) => None,
        }
    }

    /// Whether a bare model name resolves to this provider.
    pub fn offers(&self, model: &str) -> bool {
        self.offers.iter().any(|p| glob_match(p, model))
    }

    /// Concrete (non-glob) model names this provider lists.
    pub fn listed_models(&self) -> impl Iterator<Item = &str> {
        self.offers
            .iter()
            .filter(|m| !m.contains('*'))
            .map(String::as_str)
    }

    /// The innermost service of a target stack: sends attempts to this provider.
    pub fn service(self: &Arc<Self>) -> ProviderService {
        ProviderService {
            provider: self.clone(),
        }
    }

    async fn call(self: Arc<Self>, attempt: Attempt) -> Result<Reply, Error> {
        let started = Instant::now();
        let body = match &self.adapter {
            Adapter::Mock(m) => m.call(&attempt.request.op, &attempt.served.model).await,
            Adapter::Http(h) => self
                .call_http(h, &attempt, started)
                .await
                .map_err(|e| redact(&h.secrets, e)),
        }
        .map_err(|e| e.with_provider(self.name.clone()))?;
        let mut reply = Reply::local(body);
        reply.served_by = Some(attempt.served.clone());
        reply.attempts = 1;
        reply.upstream_time = started.elapsed();
        Ok(reply)
    }

    async fn call_http(
        &self,
        h: &Http,
        attempt: &Attempt,
        started: Instant,
    ) -> Result<ReplyBody, Error> {
        let op = &attempt.request.op;
        let model = &*attempt.served.model;
        let (path, body) = match self.kind {
            ProviderKind::Anthropic => anthropic::encode(h, op, model)?,
            ProviderKind::Gemini => gemini::encode(op, model)?,
            kind => openai::encode(kind, h, op, model)?,
        };
        let stream = op.is_stream();
        let uri = match h.fixed_uris.iter().find(|(p, _)| *p == path) {
            Some((_, uri)) => uri.clone(),
            None => format!("{}{}", h.base_url, path).parse().map_err(|_| {
                Error::new(ErrorKind::Internal, "could not build the upstream request")
            })?,
        };
        let mut req = http::Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.reserve(h.headers.len() + attempt.trace_headers.len() + 3);
        if let Some(host) = &h.host {
            headers.insert(http::header::HOST, host.clone());
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if stream {
            headers.insert(
                http::header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        for (k, v) in &h.headers {
            headers.append(k.clone(), v.clone());
        }
        for (k, v) in &attempt.trace_headers {
            headers.insert(k.clone(), v.clone());
        }
        let resp = client::send(&h.client, req, h.timeouts.first_byte).await?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = client::retry_after(resp.headers());
            let body = client::read_body(resp.into_body(), h.timeouts.first_byte)
                .await
                .unwrap_or_default();
            let mut err = match self.kind {
                ProviderKind::Anthropic => wire::anthropic::decode_error(status.as_u16(), &body),
                ProviderKind::Gemini => wire::gemini::decode_error(status.as_u16(), &body),
                _ => wire::openai::decode_error(status.as_u16(), &body),
            };
            err.retry_after = retry_after.or(err.retry_after);
            return Err(err);
        }
        // switchyard sends no `accept-encoding`; a compressed body would be decoded as garbage.
        if let Some(enc) = resp
            .headers()
            .get(http::header::CONTENT_ENCODING)
            .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            let enc: String = enc.to_str().unwrap_or("unknown").chars().take(32).collect();
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("upstream sent a {enc}-encoded reply that was not asked for"),
            ));
        }
        if stream {
            let decoder = match self.kind {
                ProviderKind::Anthropic => anthropic::stream_decoder(),
                ProviderKind::Gemini => gemini::stream_decoder(model),
                _ => openai::stream_decoder(
                    attempt.request.meta.surface == crate::ir::Format::OpenAi,
                ),
            };
            let mut events =
                client::UpstreamStream::new(resp.into_body(), decoder, h.timeouts.idle);
            // Wait for the first event here, so that a stream failing before its first byte
            // is an ordinary, retryable failure of this attempt rather than a broken reply.
            let left = h.timeouts.first_byte.saturating_sub(started.elapsed());
            let first = match tokio::time::timeout(left, events.next()).await {
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "no stream event from upstream in time",
                    ))
                }
                Ok(None) => {
                    return Err(Error::new(ErrorKind::Protocol, "upstream stream was empty"))
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(ev))) => ev,
            };
            let secrets = h.secrets.clone();
            let rest = futures_util::stream::once(async move { Ok(first) })
                .chain(events)
                .map(move |r| r.map_err(|e| redact(&secrets, e)));
            return Ok(ReplyBody::Stream(Box::pin(rest)));
        }
        let left = h.timeouts.total.saturating_sub(started.elapsed());
        let body = client::read_body(resp.into_body(), left).await?;
        match self.kind {
            ProviderKind::Anthropic => anthropic::decode(op, &body),
            ProviderKind::Gemini => gemini::decode(op, &body, model),
            _ => openai::decode(
                op,
                body,
                attempt.request.meta.surface == crate::ir::Format::OpenAi,
            ),
        }
    }
}

/// The innermost per-target service: one provider call per attempt.
#[derive(Clone)]
pub struct ProviderService {
    provider: Arc<Provider>,
}

impl tower::Service<Attempt> for ProviderService {
    type Response = Reply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Reply, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        // Boxed as it is: an `async` wrapper would copy the call's future into itself.
        Box::pin(self.provider.clone().call(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::{glob_match, plain_http_host, Adapter, Provider};

    /// The `Host` switchyard writes itself, for each provider of `yaml`.
    fn written_hosts(yaml: &str) -> Vec<Option<String>> {
        let cfg = crate::config::load_str(yaml, &crate::config::Env).unwrap();
        cfg.providers
            .iter()
            .map(|p| match Provider::from_config(p).unwrap().adapter {
                Adapter::Http(h) => h.host.map(|v| v.to_str().unwrap().to_owned()),
                Adapter::Mock(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_configured_host_header_is_not_doubled() {
        let hosts = written_hosts(
            "providers:
  - {name: plain, kind: openai_compatible, base_url: \"http://127.0.0.1:9101/v1\"}
  - name: routed
    kind: openai_compatible
    base_url: http://127.0.0.1:9101/v1
    headers: {Host: llm.internal}
",
        );
        assert_eq!(hosts, [Some("127.0.0.1:9101".to_owned()), None]);
    }

    #[test]
    fn host_is_written_once_only_for_plain_http() {
        let host = |u: &str| plain_http_host(u).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            host("http://127.0.0.1:9101/v1").as_deref(),
            Some("127.0.0.1:9101")
        );
        assert_eq!(host("http://vllm.svc/v1").as_deref(), Some("vllm.svc"));
        assert_eq!(host("http://vllm.svc:80").as_deref(), Some("vllm.svc"));
        assert_eq!(host("http://[::1]:8000/v1").as_deref(), Some("[::1]:8000"));
        assert_eq!(host("https://api.openai.com/v1"), None);
        assert_eq!(host("not a url"), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("gpt-*", "gpt-4o-mini"));
        assert!(glob_match("gpt-*", "gpt-"));
        assert!(!glob_match("gpt-*", "claude-3"));
        assert!(glob_match("*-mini", "gpt-4o-mini"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("echo", "echo"));
        assert!(!glob_match("echo", "echo2"));
    }
}
