//! Traces: OTLP export (gRPC or HTTP/protobuf), W3C trace-context propagation, the server span
//! of each request and the client span of each attempt, with the OpenTelemetry GenAI attribute
//! names.
//!
//! Off by default. On when an endpoint is configured (`telemetry.otlp_endpoint`) or set by the
//! standard variables `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
//! `OTEL_EXPORTER_OTLP_PROTOCOL` picks `grpc` or `http/protobuf` (the default), and
//! `OTEL_SERVICE_NAME` the service name. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//! keep it off. Config values win over the environment; `OTEL_TRACES_SAMPLER` and its argument
//! are the SDK's.
//!
//! Spans are made with the OpenTelemetry SDK directly, not through `tracing` and its bridge:
//! it cost about 28k more instructions per request (every poll entered and left the span
//! through the subscriber stack; every attribute was a separate dispatch). OTLP/HTTP export is
//! switchyard's own (`telemetry/otlp.rs`); gRPC export is `opentelemetry-otlp`'s.
//!
//! A request carries its server span in its extensions ([`ServerSpanRef`]); the usage layer
//! annotates it, and each attempt's span is made a child of it ([`Parent`]).
//! With tracing off, nothing is made: one relaxed atomic load per request.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Array, StringValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span as SdkSpan, SpanExporter as _};
use opentelemetry_sdk::Resource;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

pub use opentelemetry::KeyValue;

use super::export::{Flusher, QueueProcessor};
use super::otlp;
use crate::config::{OtlpProtocol, TelemetryConfig};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn tracer() -> Option<&'static SdkTracer> {
    if enabled() {
        TRACER.get()
    } else {
        None
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (default port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    HttpProtobuf,
}

/// Resolved trace export settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where to send spans. `None` lets the exporter read the standard variables.
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: Protocol,
    /// `service.name` of the resource.
    pub service_name: String,
}

impl Settings {
    /// Config first, then the standard OpenTelemetry variables read through `var`. `None` when
    /// tracing is off.
    pub fn resolve(cfg: &TelemetryConfig, var: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        let var = |k: &str| {
            var(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
        {
            return None;
        }
        let from_env = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        let endpoint = cfg.otlp_endpoint.clone().filter(|e| !e.trim().is_empty());
        if endpoint.is_none() && !from_env {
            return None;
        }
        let protocol = match cfg.otlp_protocol {
            Some(OtlpProtocol::Grpc) => Protocol::Grpc,
            Some(OtlpProtocol::HttpProtobuf) => Protocol::HttpProtobuf,
            None => match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .as_deref()
            {
                Some("grpc") => Protocol::Grpc,
                // http/json is not built in; protobuf is what every collector accepts.
                _ => Protocol::HttpProtobuf,
            },
        };
        let service_name = cfg
            .service_name
            .clone()
            .or_else(|| var("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "switchyard".to_owned());
        Some(Self {
            endpoint,
            protocol,
            service_name,
        })
    }
}

/// A running trace pipeline; flush it before the process exits.
pub struct Tracing {
    provider: SdkTracerProvider,
    flusher: Flusher,
}

impl Tracing {
    /// Starts the exporter (on a thread of its own); spans are made from then on. Once per
    /// process.
    pub fn start(settings: &Settings) -> Result<Self, String> {
        if TRACER.get().is_some() {
            return Err("trace export is already running".into());
        }
        let timeout = Duration::from_secs(5);
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let (endpoint, res) = (settings.endpoint.clone(), resource.clone());
        let (processor, flusher) = match settings.protocol {
            Protocol::Grpc => QueueProcessor::spawn(move || {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_timeout(timeout);
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
                }
                let mut exporter = b
                    .build()
                    .map_err(|e| format!("cannot set up OTLP trace export: {e}"))?;
                exporter.set_resource(&res);
                Ok(exporter)
            })?,
            Protocol::HttpProtobuf => QueueProcessor::spawn(move || {
                let var = |k: &str| std::env::var(k).ok();
                let mut exporter = otlp::HttpExporter::new(
                    &otlp::endpoint(endpoint.as_deref(), &var),
                    otlp::headers(&var),
                    timeout,
                )
                .map_err(|e| format!("cannot set up OTLP trace export: {e}"))?;
                exporter.set_resource(&res);
                Ok(exporter)
            })?,
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        TRACER
            .set(provider.tracer("switchyard"))
            .map_err(|_| "trace export is already running".to_owned())?;
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Self { provider, flusher })
    }

    /// Exports what is queued (waiting at most `limit`) and stops.
    pub async fn shutdown(self, limit: Duration) {
        self.flusher.flush(limit).await;
        ENABLED.store(false, Ordering::Relaxed);
        let _ = self.provider.shutdown();
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The W3C trace-context headers of `cx`, as the SDK's `TraceContextPropagator` writes them
/// (`traceparent` = `00-{trace id}-{span id}-{flags}`, only the sampled flag kept), except that
/// an empty `tracestate` is left out. Written by hand: the propagator's `format!` of the ids
/// cost ~2.9k instructions per attempt, this a tenth of that.
fn trace_context_headers(cx: &SpanContext) -> Vec<(http::HeaderName, http::HeaderValue)> {
    if !cx.is_valid() {
        return Vec::new();
    }
    let mut parent = [0u8; 55];
    parent[..3].copy_from_slice(b"00-");
    parent[35] = b'-';
    parent[52] = b'-';
    let flags = [(cx.trace_flags() & TraceFlags::SAMPLED).to_u8()];
    let hexed = hex::encode_to_slice(cx.trace_id().to_bytes(), &mut parent[3..35])
        .and_then(|()| hex::encode_to_slice(cx.span_id().to_bytes(), &mut parent[36..52]))
        .and_then(|()| hex::encode_to_slice(flags, &mut parent[53..55]));
    let mut out = Vec::with_capacity(2);
    if let (Ok(()), Ok(v)) = (hexed, http::HeaderValue::from_bytes(&parent)) {
        out.push((http::HeaderName::from_static("traceparent"), v));
    }
    if *cx.trace_state() != opentelemetry::trace::TraceState::NONE {
        let state = cx.trace_state().header();
        if let (false, Ok(v)) = (state.is_empty(), http::HeaderValue::try_from(state)) {
            out.push((http::HeaderName::from_static("tracestate"), v));
        }
    }
    out
}

/// `gen_ai.provider.name` of a provider kind (the semantic conventions' well-known values);
/// OpenAI-compatible servers and the mock go by their configured name.
pub fn gen_ai_provider(kind: crate::config::ProviderKind, name: &str) -> String {
    use crate::config::ProviderKind as K;
    match kind {
        K::Openai => "openai".into(),
        K::AzureOpenai => "azure.ai.openai".into(),
        K::Anthropic => "anthropic".into(),
        K::Gemini => "gcp.gemini".into(),
        K::OpenaiCompatible | K::Mock => name.into(),
    }
}

/// A token count as a span attribute (OTLP integers are signed).
pub fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A span being recorded. It ends, and is queued for export, when dropped.
pub struct Recording(SdkSpan);

impl Recording {
    /// Starts a span of `kind` under `parent` (a caller's remote context, or a span of ours),
    /// or `None` when tracing is off.
    fn start(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        parent: &opentelemetry::Context,
    ) -> Option<Self> {
        let t = tracer()?;
        let span = t
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(t, parent);
        Some(Self(span))
    }

    /// Starts the client span of an upstream attempt, a child of the request's span when
    /// there is one. `None` when tracing is off.
    pub fn client(
        parent: Option<&Parent>,
        name: String,
        attributes: Vec<KeyValue>,
    ) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let cx = match parent {
            Some(Parent(sc)) => opentelemetry::Context::new().with_remote_span_context(sc.clone()),
            None => opentelemetry::Context::new(),
        };
        Self::start(name, SpanKind::Client, attributes, &cx)
    }

    /// Sets an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.0.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed (status ERROR), with the error's kind as `error.type`.
    pub fn fail(&mut self, error_type: &'static str) {
        self.set("error.type", error_type);
        self.fail_status();
    }

    /// Sets the span's status to ERROR.
    pub fn fail_status(&mut self) {
        self.0.set_status(Status::error(""));
    }

    /// Renames the span.
    pub fn rename(&mut self, name: String) {
        self.0.update_name(name);
    }

    /// Sets `gen_ai.response.finish_reasons` (a string array).
    pub fn finish_reasons(&mut self, reasons: &[&'static str]) {
        if reasons.is_empty() {
            return;
        }
        let values: Vec<StringValue> = reasons.iter().map(|r| StringValue::from(*r)).collect();
        self.set(
            "gen_ai.response.finish_reasons",
            Value::Array(Array::String(values)),
        );
    }

    /// The W3C trace-context headers (`traceparent`, and `tracestate` when there is one) that
    /// continue this span in the upstream's trace.
    pub fn trace_headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        trace_context_headers(self.context())
    }

    fn context(&self) -> &SpanContext {
        self.0.span_context()
    }
}

/// The server span of a request, shared by the layer that made it and the usage layer that
/// annotates it and, for a stream, keeps it open to the end. It ends when the last handle
/// drops. Travels in the request's extensions until the usage layer takes it.
#[derive(Clone)]
pub struct ServerSpanRef {
    cx: SpanContext,
    span: Arc<Mutex<Recording>>,
}

/// A trace id in hex, on the stack (`hex::encode` built a `String` char by char: ~900
/// instructions per traced request).
pub struct TraceIdHex([u8; 32]);

impl TraceIdHex {
    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl ServerSpanRef {
    /// Annotates the span (one lock for any number of attributes).
    pub fn with(&self, f: impl FnOnce(&mut Recording)) {
        f(&mut self.span.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The trace id, in hex, when the span is sampled or continues a valid trace.
    pub fn trace_id(&self) -> Option<TraceIdHex> {
        let mut out = [0u8; 32];
        (self.cx.is_valid()
            && hex::encode_to_slice(self.cx.trace_id().to_bytes(), &mut out).is_ok())
        .then_some(TraceIdHex(out))
    }

    /// What an attempt's span needs to be this span's child.
    pub fn parent(&self) -> Parent {
        Parent(self.cx.clone())
    }
}

/// The parent of a request's attempt spans (the request's server span), in its extensions.
#[derive(Clone, Debug)]
pub struct Parent(SpanContext);

/// The span of one request, continuing the caller's W3C trace context. Sits above the surface
/// so that it covers decoding and encoding too; the usage layer fills its GenAI attributes and
/// keeps it open until a streamed reply ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSpanLayer;

impl<S> Layer<S> for ServerSpanLayer {
    type Service = ServerSpan<S>;
    fn layer(&self, inner: S) -> ServerSpan<S> {
        ServerSpan { inner }
    }
}

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// See [`ServerSpanLayer`].
#[derive(Debug, Clone)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for ServerSpan<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ServerSpanFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let span = if enabled() { server_span(&req) } else { None };
        if let Some(s) = &span {
            req.extensions_mut().insert(s.clone());
        }
        ServerSpanFuture {
            inner: self.inner.call(req),
            span,
        }
    }
}

fn server_span<B>(req: &http::Request<B>) -> Option<ServerSpanRef> {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
    let method = method_name(req.method());
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("url.path", req.uri().path().to_owned()),
    ];
    if let Some(id) = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new("switchyard.request_id", id.to_owned()));
    }
    let span = Recording::start(method, SpanKind::Server, attributes, &parent)?;
    Some(ServerSpanRef {
        cx: span.context().clone(),
        span: Arc::new(Mutex::new(span)),
    })
}

/// A method's name, without a copy for the standard ones.
fn method_name(m: &http::Method) -> Cow<'static, str> {
    use http::Method as M;
    Cow::Borrowed(match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        _ => return Cow::Owned(m.as_str().to_owned()),
    })
}

pin_project! {
    /// The response future of [`ServerSpan`]: holds the span until the response head is
    /// ready (a streamed reply's usage layer holds it longer).
    pub struct ServerSpanFuture<F> {
        #[pin]
        inner: F,
        span: Option<ServerSpanRef>,
    }
}

impl<F: std::future::Future> std::future::Future for ServerSpanFuture<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.span.take();
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the SDK's propagator writes for `cx`, empty values left out.
    fn propagated(cx: &SpanContext) -> Vec<(String, String)> {
        struct Collect(Vec<(String, String)>);
        impl opentelemetry::propagation::Injector for Collect {
            fn set(&mut self, key: &str, value: String) {
                if !value.is_empty() {
                    self.0.push((key.to_owned(), value));
                }
            }
        }
        let parent = opentelemetry::Context::new().with_remote_span_context(cx.clone());
        let mut out = Collect(Vec::new());
        TraceContextPropagator::new().inject_context(&parent, &mut out);
        out.0
    }

    #[test]
    fn trace_context_headers_are_the_propagators() {
        use opentelemetry::trace::{SpanId, TraceId, TraceState};
        let state = TraceState::from_key_value([("vendor", "opaque-7"), ("other", "x")]).unwrap();
        let cases = [
            (
                0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
                0xb7ad_6b71_6920_3331,
                1,
                TraceState::NONE,
            ),
            (1, 0x00f0_0000_0000_0001, 0, TraceState::NONE),
            (u128::MAX, u64::MAX, 0xff, state),
            (
                0x10,
                0x20,
                1,
                TraceState::from_key_value::<[(&str, &str); 0], _, _>([]).unwrap(),
            ),
            (0, 0x20, 1, TraceState::NONE), // invalid: no headers
        ];
        for (trace, span, flags, state) in cases {
            let cx = SpanContext::new(
                TraceId::from(trace),
                SpanId::from(span),
                TraceFlags::new(flags),
                true,
                state,
            );
            let ours: Vec<(String, String)> = trace_context_headers(&cx)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            assert_eq!(ours, propagated(&cx), "{trace:x} {span:x} {flags:x}");
        }
    }

    fn resolve(cfg: &TelemetryConfig, env: &[(&str, &str)]) -> Option<Settings> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(cfg, &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(resolve(&TelemetryConfig::default(), &[]), None);
        assert_eq!(
            resolve(
                &TelemetryConfig::default(),
                &[
                    ("OTEL_SERVICE_NAME", "x"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                ]
            ),
            None
        );
    }

    #[test]
    fn the_standard_variables_turn_it_on() {
        let s = resolve(
            &TelemetryConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_SERVICE_NAME", "sidecar"),
            ],
        )
        .unwrap();
        // The exporter reads the endpoint variable itself (adding /v1/traces for HTTP).
        assert_eq!(s.endpoint, None);
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.service_name, "sidecar");
        assert!(resolve(
            &TelemetryConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ]
        )
        .is_none());
    }

    #[test]
    fn config_wins_over_the_environment() {
        let cfg = TelemetryConfig {
            otlp_endpoint: Some("http://collector:4318".into()),
            otlp_protocol: Some(OtlpProtocol::HttpProtobuf),
            service_name: Some("from-config".into()),
            log_content: false,
        };
        let s = resolve(
            &cfg,
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_SERVICE_NAME", "from-env"),
            ],
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.service_name, "from-config");
    }

    #[test]
    fn without_tracing_no_span_is_made() {
        assert!(Recording::client(None, "chat m".into(), Vec::new()).is_none());
        let req = http::Request::new(());
        let mut svc = ServerSpanLayer.layer(tower::service_fn(|r: http::Request<()>| async move {
            Ok::<_, std::convert::Infallible>(r.extensions().get::<ServerSpanRef>().is_some())
        }));
        let saw_span = futures_util::FutureExt::now_or_never(svc.call(req))
            .unwrap()
            .unwrap();
        assert!(!saw_span);
    }
}
