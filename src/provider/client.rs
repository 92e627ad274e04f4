//! The pooled upstream HTTP client, and the pieces every HTTP provider shares: sending with
//! timeouts, reading bounded bodies, and turning an SSE body into an IR event stream.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body::Body as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::ir::{Error, ErrorKind, StreamEvent};
use crate::{sse, wire};

/// One pooled client per provider: keep-alive, HTTP/2 by ALPN where the provider offers it,
/// rustls with webpki roots, `TCP_NODELAY`.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest non-streamed upstream reply read into memory.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Builds a client with the given connect timeout.
pub fn build(connect_timeout: Duration) -> Result<HttpClient, Error> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|e| Error::new(ErrorKind::Internal, format!("TLS setup failed: {e}")))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https))
}

/// Sends a request and waits for the response head, bounded by `first_byte`.
pub async fn send(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    first_byte: Duration,
) -> Result<http::Response<Incoming>, Error> {
    match tokio::time::timeout(first_byte, client.request(req)).await {
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "no response from upstream within {}s",
                first_byte.as_secs_f64()
            ),
        )),
        Ok(Err(e)) => Err(classify_client_error(&e)),
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Connect failures are distinguished from failures after the request was sent: the caller
/// sees which, and no URL (which could embed a key) is included.
fn classify_client_error(e: &hyper_util::client::legacy::Error) -> Error {
    if e.is_connect() {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        let mut detail = String::from("connection failed");
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                detail = format!("connection failed: {}", io.kind());
                break;
            }
            source = s.source();
        }
        if detail.contains("TimedOut") {
            return Error::new(ErrorKind::Timeout, "timed out connecting to upstream");
        }
        Error::new(ErrorKind::Connect, detail)
    } else {
        Error::new(
            ErrorKind::Connect,
            "upstream connection failed before a response",
        )
    }
}

/// Reads a whole body, bounded in size and by `deadline`.
pub async fn read_body(body: Incoming, deadline: Duration) -> Result<Bytes, Error> {
    let collect = Limited::new(body, MAX_REPLY_BYTES).collect();
    match crate::ir::ready_or_within(collect, deadline).await {
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            "upstream reply not complete in time",
        )),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(Error::new(ErrorKind::Protocol, "upstream reply too large"))
            } else {
                Err(Error::new(
                    ErrorKind::Connect,
                    "upstream connection lost while reading the reply",
                ))
            }
        }
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

pub use crate::ir::MAX_RETRY_AFTER;

/// Parses `Retry-After` (seconds or an HTTP date is not needed by any provider we speak to)
/// and OpenAI's `retry-after-ms`, capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    let secs = number("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| number(http::header::RETRY_AFTER.as_str()))?;
    Some(Duration::from_secs_f64(
        secs.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// An upstream SSE body decoded into IR events as bytes arrive.
pub struct UpstreamStream {
    body: Incoming,
    parser: sse::Parser,
    decoder: Box<dyn wire::StreamDecoder>,
    pending: VecDeque<StreamEvent>,
    scratch: Vec<StreamEvent>,
    finished: bool,
    idle: Duration,
    /// Fires when no bytes arrived for `idle`; reset on every frame.
    idle_timer: Pin<Box<tokio::time::Sleep>>,
}

impl UpstreamStream {
    /// Wraps a 2xx streaming body.
    pub fn new(body: Incoming, decoder: Box<dyn wire::StreamDecoder>, idle: Duration) -> Self {
        Self {
            body,
            parser: sse::Parser::default(),
            decoder,
            pending: VecDeque::new(),
            scratch: Vec::new(),
            finished: false,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<StreamEvent, Error>>> {
        self.finished = true;
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for UpstreamStream {
    type Item = Result<StreamEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(ev) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            // Drain every complete event already buffered before reading more.
            match this.parser.next_event_ref() {
                Err(e) => {
                    return this.fail(Error::new(
                        ErrorKind::Protocol,
                        format!("upstream stream: {e}"),
                    ))
                }
                Ok(Some(ev)) => {
                    if let Err(e) = this.decoder.event(ev, &mut this.scratch) {
                        return this.fail(e);
                    }
                    this.pending.extend(this.scratch.drain(..));
                    if this.decoder.is_done() && this.pending.is_empty() {
                        this.finished = true;
                    }
                    continue;
                }
                Ok(None) => {}
            }
            let frame = match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    ready!(this.idle_timer.as_mut().poll(cx));
                    return this.fail(Error::new(
                        ErrorKind::Timeout,
                        format!("upstream stream idle for {}s", this.idle.as_secs_f64()),
                    ));
                }
            };
            match frame {
                Some(Ok(frame)) => {
                    let deadline = tokio::time::Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(deadline);
                    if let Some(data) = frame.data_ref() {
                        this.parser.push(data);
                    }
                }
                Some(Err(_)) => {
                    return this.fail(Error::new(
                        ErrorKind::Connect,
                        "upstream connection lost mid-stream",
                    ))
                }
                None => {
                    this.finished = true;
                    if !this.decoder.is_done() {
                        return this.fail(Error::new(
                            ErrorKind::Protocol,
                            "upstream stream ended before it was complete",
                        ));
                    }
                }
            }
        }
    }
}
