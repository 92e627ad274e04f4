//! Caller-facing APIs: decode the caller's HTTP request into IR, call the middle of the stack,
//! encode the reply (JSON or SSE) or the error in the caller's own format.
//!
//! This is the outermost IR boundary: below it everything is `ir::Request` → `ir::Reply`.
//! Errors are rendered in exactly one place per surface (`openai::error_response`,
//! `anthropic::error_response`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, Either};
use futures_util::FutureExt as _;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use tower::{Layer, Service, ServiceExt as _};

use crate::ir::{self, Error, ErrorKind, EventStream, Format, Meta, Reply};
use crate::wire;

pub mod anthropic;
pub mod openai;
pub mod request_id;

/// The response body type of the data plane: one box per response, at this boundary.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

// The reply headers switchyard adds, named once: a header inserted by a `&str` name is
// copied into a fresh allocation on every request.
const PROVIDER: HeaderName = HeaderName::from_static("x-switchyard-provider");
const MODEL: HeaderName = HeaderName::from_static("x-switchyard-model");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
const OVERHEAD_US: HeaderName = HeaderName::from_static("x-switchyard-overhead-us");
// The request headers it reads are matched by name in one pass ([`Wanted`]).

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// What a path and method ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    OpenAiChat,
    OpenAiEmbeddings,
    /// The model list, in the format of the SDK asking (Anthropic's sends `anthropic-version`).
    Models(Format),
    OpenAiModel(String),
    AnthropicMessages,
    AnthropicCountTokens,
    /// A path we do not serve, answered in the format its prefix suggests.
    NotFound(Format),
    MethodNotAllowed(Format, Method),
}

impl Endpoint {
    fn format(&self) -> Format {
        match self {
            Endpoint::AnthropicMessages | Endpoint::AnthropicCountTokens => Format::Anthropic,
            Endpoint::Models(f) | Endpoint::NotFound(f) | Endpoint::MethodNotAllowed(f, _) => *f,
            _ => Format::OpenAi,
        }
    }
}

/// The request headers the surface reads (each its first value), found in one pass over the
/// map: looked up one by one, six names were hashed and probed for on every request, most of
/// them absent.
#[derive(Default)]
struct Wanted<'a> {
    request_id: Option<&'a HeaderValue>,
    authorization: Option<&'a HeaderValue>,
    x_api_key: Option<&'a HeaderValue>,
    api_key: Option<&'a HeaderValue>,
    tags: Option<&'a HeaderValue>,
    anthropic_version: bool,
}

impl<'a> Wanted<'a> {
    fn scan(headers: &'a http::HeaderMap) -> Self {
        let mut w = Self::default();
        for (name, value) in headers {
            let slot = match name.as_str() {
                "x-request-id" => &mut w.request_id,
                "authorization" => &mut w.authorization,
                "x-api-key" => &mut w.x_api_key,
                "api-key" => &mut w.api_key,
                "x-switchyard-tags" => &mut w.tags,
                "anthropic-version" => {
                    w.anthropic_version = true;
                    continue;
                }
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        w
    }
}

fn endpoint(method: &Method, path: &str, anthropic_sdk: bool) -> Endpoint {
    let path = path.trim_end_matches('/');
    // SDKs are pointed at `.../v1`; some callers omit the prefix.
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    let format = if rest.starts_with("/messages") || (anthropic_sdk && rest.starts_with("/models"))
    {
        Format::Anthropic
    } else {
        Format::OpenAi
    };
    let (want, ep) = match rest {
        "/chat/completions" => (Method::POST, Endpoint::OpenAiChat),
        "/embeddings" => (Method::POST, Endpoint::OpenAiEmbeddings),
        "/messages" => (Method::POST, Endpoint::AnthropicMessages),
        "/messages/count_tokens" => (Method::POST, Endpoint::AnthropicCountTokens),
        "/models" => (Method::GET, Endpoint::Models(format)),
        r if r.starts_with("/models/") && format == Format::OpenAi => (
            Method::GET,
            Endpoint::OpenAiModel(percent_decode(&r["/models/".len()..])),
        ),
        _ => return Endpoint::NotFound(format),
    };
    if method == want {
        ep
    } else {
        Endpoint::MethodNotAllowed(format, want)
    }
}

/// Decodes `%XX` escapes in a path segment (SDKs send `mock/echo` as `mock%2Fecho`); a
/// malformed escape is kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// Decodes caller APIs into IR for the inner service, and encodes its replies.
#[derive(Debug, Clone)]
pub struct SurfaceLayer {
    max_body_bytes: usize,
    body_timeout: Duration,
}

impl SurfaceLayer {
    /// A surface that refuses bodies over `max_body_bytes` with a 413, and bodies not received
    /// whole within `body_timeout` with a 408.
    pub fn new(max_body_bytes: usize, body_timeout: Duration) -> Self {
        Self {
            max_body_bytes,
            body_timeout,
        }
    }
}

impl<S> Layer<S> for SurfaceLayer {
    type Service = Surface<S>;
    fn layer(&self, inner: S) -> Surface<S> {
        Surface {
            inner: Arc::new(inner),
            max_body_bytes: self.max_body_bytes,
            body_timeout: self.body_timeout,
        }
    }
}

/// See [`SurfaceLayer`].
///
/// The stack below is shared by `Arc` and cloned once per request, here; hyper's glue clones
/// the whole service for every request too, and a stack held by value was cloned (and
/// dropped) twice, an atomic increment and decrement per `Arc` of every layer each time.
#[derive(Debug)]
pub struct Surface<S> {
    inner: Arc<S>,
    max_body_bytes: usize,
    body_timeout: Duration,
}

impl<S> Clone for Surface<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            max_body_bytes: self.max_body_bytes,
            body_timeout: self.body_timeout,
        }
    }
}

impl<S, B> Service<http::Request<B>> for Surface<S>
where
    S: Service<ir::Request, Response = Reply, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each request's own clone of the stack is polled ready in `handle`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = S::clone(&self.inner);
        let limits = (self.max_body_bytes, self.body_timeout);
        // On tokio's multi-thread scheduler the body is read by a task of its own. Read in
        // the connection's task, each poll of the body signals hyper's connection (the same
        // task) that more is wanted: a task woken while it runs is rescheduled as a yield,
        // and tokio wakes another worker thread to steal it — two futex wake-ups and a thread
        // switch per request. From its own task the same signal is an ordinary hand-over. On
        // the one-thread scheduler (`serve`'s default) nothing can steal the task, so the
        // body is read right here and the spawn is saved. Either way a slow body
        // (slowloris) is cut at `body_timeout`, and a caller that goes away ends the read
        // with its connection.
        let (parts, body) = req.into_parts();
        let collect = Limited::new(body, limits.0).collect();
        let read = if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread
        {
            // A body that came with its head (nearly every request) is collected here, with
            // no timer made for it.
            Either::Left(ir::ready_or_within(collect, limits.1).map(Ok))
        } else {
            Either::Right(tokio::spawn(tokio::time::timeout(limits.1, collect)))
        };
        // `handle`'s future is boxed as it is, not inside an `async` wrapper: a wrapper would
        // hold its arguments beside that future (~1 KiB more) and copy the future (~3 KiB)
        // into itself on the first poll.
        Box::pin(handle(inner, limits, parts, read).map(Ok))
    }
}

/// The request body read: collected, over the limit, or timed out.
type BodyResult = Result<
    Result<http_body_util::Collected<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    tokio::time::error::Elapsed,
>;

async fn handle<S>(
    mut inner: S,
    (max, body_timeout): (usize, Duration),
    parts: http::request::Parts,
    body: impl std::future::Future<Output = Result<BodyResult, tokio::task::JoinError>>,
) -> http::Response<Body>
where
    S: Service<ir::Request, Response = Reply, Error = Error>,
{
    let received_at = Instant::now();
    let wanted = Wanted::scan(&parts.headers);
    let request_id: Arc<str> = wanted
        .request_id
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .into();
    let ep = endpoint(&parts.method, parts.uri.path(), wanted.anthropic_version);
    let format = ep.format();
    // The read ends at `body_timeout` (a slowloris body), or over the size limit.
    let read = match body.await {
        Ok(r) => r,
        Err(_) => {
            return error_response(format, &Error::invalid("could not read the request body"))
        }
    };
    let bytes = match read {
        Err(_) => {
            let err = Error::new(
                ErrorKind::Timeout,
                format!(
                    "request body not received within {}s",
                    body_timeout.as_secs_f64()
                ),
            )
            .with_status(408);
            return error_response(format, &err);
        }
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!("request body exceeds {max} bytes"),
                )
            } else {
                Error::invalid("could not read the request body")
            };
            return error_response(format, &err);
        }
    };
    let op = match &ep {
        Endpoint::OpenAiChat => openai::decode_chat(bytes),
        Endpoint::OpenAiEmbeddings => openai::decode_embeddings(&bytes),
        Endpoint::AnthropicMessages => anthropic::decode_messages(&bytes),
        Endpoint::AnthropicCountTokens => anthropic::decode_count_tokens(&bytes),
        Endpoint::Models(_) | Endpoint::OpenAiModel(_) => Ok(ir::Operation::ListModels),
        Endpoint::NotFound(_) => Err(Error::new(
            ErrorKind::NotFound,
            format!("no endpoint {} {}", parts.method, parts.uri.path()),
        )),
        Endpoint::MethodNotAllowed(_, want) => Err(Error::new(
            ErrorKind::MethodNotAllowed,
            format!(
                "{} {} is not allowed; use {want}",
                parts.method,
                parts.uri.path()
            ),
        )),
    };
    let op = match op {
        Ok(op) => op,
        Err(e) => return error_response(format, &e),
    };
    let mut meta = Meta::received(request_id, format, received_at);
    // What the layers above attached (the request's trace span) travels on with it.
    meta.extensions = parts.extensions;
    meta.caller_key = caller_key(&wanted);
    if let Some(tags) = wanted.tags.and_then(|v| v.to_str().ok()) {
        let tags: Vec<String> = tags
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if !tags.is_empty() {
            meta.extensions.insert(ir::RequiredTags(tags));
        }
    }
    // What the encoder needs of the request, kept before the request moves on: the stream
    // options for an OpenAI caller, the model name an Anthropic stream echoes.
    let stream_opts = openai::StreamOptions::from_op(&op);
    let public_model = if format == Format::Anthropic {
        op.model().unwrap_or_default().to_owned()
    } else {
        String::new()
    };
    // The inner stack never fails readiness as a whole: per-target readiness is decided
    // below, where an unready target is skipped. Errors surface per request.
    let result = match inner.ready().await {
        Ok(inner) => inner.call(ir::Request { op, meta }).await,
        Err(e) => Err(e),
    };
    match result {
        Err(e) => error_response(format, &e),
        Ok(reply) => {
            let mut resp = match (&ep, reply.body) {
                (Endpoint::OpenAiModel(id), ir::ReplyBody::Models(models)) => {
                    match models.iter().find(|m| &m.id == id) {
                        Some(m) => json_response(StatusCode::OK, openai::encode_model(m)),
                        None => {
                            return error_response(
                                format,
                                &Error::new(
                                    ErrorKind::NotFound,
                                    format!("The model '{id}' does not exist or is not served by this gateway"),
                                ),
                            )
                        }
                    }
                }
                (_, body) if format == Format::Anthropic => {
                    anthropic::encode_reply(body, &public_model)
                }
                (_, body) => openai::encode_reply(body, stream_opts),
            };
            add_reply_headers(&mut resp, &reply.served_by, reply.attempts);
            if !reply.headers.is_empty() {
                let headers = resp.headers_mut();
                headers.reserve(reply.headers.len());
                for (k, v) in reply.headers {
                    headers.insert(k, v);
                }
            }
            let overhead = received_at
                .elapsed()
                .saturating_sub(reply.upstream_time)
                .as_micros();
            resp.headers_mut()
                .insert(OVERHEAD_US, ir::decimal_header(overhead as u64));
            resp
        }
    }
}

/// The caller's key: `Authorization: Bearer` (OpenAI SDKs, current Anthropic SDKs),
/// `x-api-key` (Anthropic) or `api-key` (Azure-style clients).
fn caller_key(headers: &Wanted<'_>) -> Option<ir::CallerKey> {
    fn str(v: Option<&HeaderValue>) -> Option<&str> {
        v.and_then(|v| v.to_str().ok())
    }
    let bearer = str(headers.authorization).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    });
    bearer
        .or_else(|| str(headers.x_api_key))
        .or_else(|| str(headers.api_key))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| ir::CallerKey(Arc::from(k)))
}

fn add_reply_headers(
    resp: &mut http::Response<Body>,
    served_by: &Option<Arc<ir::ServedBy>>,
    attempts: u32,
) {
    if let Some(s) = served_by {
        let h = resp.headers_mut();
        let [provider, model] = &s.headers;
        if let Some(v) = provider {
            h.insert(PROVIDER, v.clone());
        }
        if let Some(v) = model {
            h.insert(MODEL, v.clone());
        }
        // Attempts are few: their values are static (no allocation per reply).
        const COUNTS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        let n = COUNTS
            .get(attempts as usize)
            .map(|c| HeaderValue::from_static(c));
        h.insert(ATTEMPTS, n.unwrap_or_else(|| HeaderValue::from(attempts)));
    }
}

/// A reply kept in an upstream's bytes, decoded for a caller of another format.
fn decode_raw(r: &ir::RawReply) -> Result<ir::ChatReply, Error> {
    match r.format {
        Format::Anthropic => wire::anthropic::decode_reply(&r.body),
        Format::Gemini => wire::gemini::decode_reply(&r.body, &r.model),
        _ => wire::openai::decode_chat_reply(&r.body),
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> http::Response<Body> {
    let mut resp = http::Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An error in the caller's format, with its status and `Retry-After`.
pub fn error_response(format: Format, err: &Error) -> http::Response<Body> {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match format {
        Format::Anthropic => wire::anthropic::encode_error(err),
        _ => wire::openai::encode_error(err),
    };
    let mut resp = json_response(status, body);
    if let Some(h) = &err.headers {
        resp.headers_mut().extend((**h).clone());
    }
    if let Some(ra) = err.retry_after {
        let secs = ra.as_secs() + u64::from(ra.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(p) = err
        .provider
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        resp.headers_mut().insert(PROVIDER, p);
    }
    resp
}

/// An IR event stream written as SSE in a caller's format, one frame per event as it arrives.
pub struct SseBody {
    events: EventStream,
    encoder: Box<dyn wire::StreamEncoder>,
    buf: BytesMut,
    done: bool,
}

impl SseBody {
    /// Wraps a stream with the caller format's encoder.
    pub fn new(events: EventStream, encoder: Box<dyn wire::StreamEncoder>) -> Self {
        Self {
            events,
            encoder,
            buf: BytesMut::with_capacity(512),
            done: false,
        }
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // Events that are already available go out together in one frame (one write);
        // nothing waits for more: as soon as the stream has nothing ready, what we have is
        // sent.
        const COALESCE_BYTES: usize = 16 * 1024;
        let this = &mut *self;
        loop {
            if this.done || this.buf.len() >= COALESCE_BYTES {
                break;
            }
            match this.events.as_mut().poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(ev))) => this.encoder.event(&ev, &mut this.buf),
                Poll::Ready(Some(Err(e))) => {
                    this.encoder.error(&e, &mut this.buf);
                    this.done = true;
                }
                Poll::Ready(None) => {
                    this.encoder.finish(&mut this.buf);
                    this.done = true;
                }
            }
        }
        if !this.buf.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))));
        }
        if this.done {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// A streamed (SSE) response.
pub fn sse_response(
    events: EventStream,
    encoder: Box<dyn wire::StreamEncoder>,
) -> http::Response<Body> {
    let mut resp = http::Response::new(SseBody::new(events, encoder).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("mock%2Fecho"), "mock/echo");
        assert_eq!(percent_decode("a%2fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(
            percent_decode("%ff"),
            "%ff",
            "invalid UTF-8 is kept as written"
        );
    }
}
