//! Traces: OTLP export (gRPC or HTTP/protobuf), W3C trace-context propagation, the server span
//! of each request, and the OpenTelemetry GenAI attribute names.
//!
//! Off by default. On when an endpoint is configured (`telemetry.otlp_endpoint`) or set by the
//! standard variables `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
//! `OTEL_EXPORTER_OTLP_PROTOCOL` picks `grpc` or `http/protobuf` (the default), and
//! `OTEL_SERVICE_NAME` the service name. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//! keep it off. Config values win over the environment.
//!
//! Spans are `tracing` spans of target [`TARGET`]; only the OpenTelemetry layer listens to them,
//! so with tracing off they are disabled callsites and cost a relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Array, StringValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::export::{Flusher, QueueProcessor};
use crate::config::{OtlpProtocol, TelemetryConfig};

/// The `tracing` target of every span exported as OpenTelemetry.
pub const TARGET: &str = "switchyard::otel";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
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
    /// Starts the exporter (on the current Tokio runtime) and returns the tracer to hand to
    /// the `tracing` layer.
    pub fn start(settings: &Settings) -> Result<(Self, SdkTracer), String> {
        let timeout = Duration::from_secs(5);
        let exporter = match settings.protocol {
            Protocol::Grpc => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_timeout(timeout);
                if let Some(e) = &settings.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build()
            }
            Protocol::HttpProtobuf => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(timeout);
                if let Some(e) = &settings.endpoint {
                    // As with OTEL_EXPORTER_OTLP_ENDPOINT: a base URL gets the signal path.
                    let e = e.trim_end_matches('/');
                    let url = if e.ends_with("/v1/traces") {
                        e.to_owned()
                    } else {
                        format!("{e}/v1/traces")
                    };
                    b = b.with_endpoint(url);
                }
                b.build()
            }
        }
        .map_err(|e| format!("cannot set up OTLP trace export: {e}"))?;
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let mut exporter = exporter;
        opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
        let (processor, flusher) = QueueProcessor::spawn(exporter);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("switchyard");
        ENABLED.store(true, Ordering::Relaxed);
        Ok((Self { provider, flusher }, tracer))
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

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Adds `traceparent` (and `tracestate`) of the current span to an upstream request.
pub fn inject(headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
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

/// A token count as a span attribute: `tracing-opentelemetry` exports `u64` fields as strings,
/// `i64` as integers.
pub fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Renames a span that may have started already (`otel.name` only applies before the start).
pub fn set_name(span: &Span, name: String) {
    use opentelemetry::trace::TraceContextExt as _;
    if !span.is_disabled() {
        span.context().span().update_name(name);
    }
}

/// Sets `gen_ai.response.finish_reasons` (a string array, which `tracing` fields cannot carry).
pub fn set_finish_reasons(span: &Span, reasons: &[&'static str]) {
    if reasons.is_empty() || span.is_disabled() {
        return;
    }
    let values: Vec<StringValue> = reasons.iter().map(|r| StringValue::from(*r)).collect();
    span.set_attribute(
        "gen_ai.response.finish_reasons",
        Value::Array(Array::String(values)),
    );
}

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
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.method().as_str();
        // Everything known now is given at creation: one dispatch instead of one per field.
        // Field values are read only when the span is enabled.
        let span = tracing::info_span!(
            target: TARGET,
            "request",
            otel.name = method,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            url.path = req.uri().path(),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            switchyard.request_id = req
                .headers()
                .get(X_REQUEST_ID)
                .and_then(|v| v.to_str().ok()),
            switchyard.route = tracing::field::Empty,
            switchyard.attempts = tracing::field::Empty,
            gen_ai.operation.name = tracing::field::Empty,
            gen_ai.request.model = tracing::field::Empty,
            gen_ai.provider.name = tracing::field::Empty,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
            let _ = span.set_parent(parent);
        }
        self.inner.call(req).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn without_tracing_nothing_is_injected() {
        let mut h = http::HeaderMap::new();
        inject(&mut h);
        assert!(h.is_empty());
    }
}
