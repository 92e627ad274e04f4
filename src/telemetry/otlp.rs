//! OTLP/HTTP with protobuf bodies: spans encoded straight from the SDK's span data into the
//! bytes of an `ExportTraceServiceRequest`, and POSTed to the collector.
//!
//! Why not `opentelemetry-otlp`'s HTTP exporter (the gRPC transport still is its exporter): it
//! first converts each span into `opentelemetry-proto`'s generated types (a `String` made for
//! every attribute key and value, through `Display`; the scopes grouped in a SipHash map) and
//! then has prost size and write them. That was ~23k instructions of a traced request (two
//! spans), more than the rest of tracing together; written in one pass, the export of that
//! request costs ~6.7k, ~4.7k of it the encoding (callgrind, `bench/instructions.sh`). The
//! bytes are the same: `encodes_what_opentelemetry_proto_encodes` compares them, decoded and
//! byte for byte, with the library's own conversion encoded by prost.
//!
//! Configuration is the standard one: the endpoint (config, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! as is, or `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, or `http://localhost:4318/v1/traces`)
//! and headers (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`:
//! `key=value` pairs apart by commas, values percent-decoded). `https` endpoints use rustls
//! with the webpki roots.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

/// The signal path of OTLP/HTTP traces.
const TRACES_PATH: &str = "/v1/traces";
/// A collector's reply is a small message; more is not read.
const MAX_REPLY: usize = 64 * 1024;

/// The trace endpoint: the configured one (given a base URL, the signal path is added), else
/// the standard variables read through `var`.
pub(crate) fn endpoint(configured: Option<&str>, var: &dyn Fn(&str) -> Option<String>) -> String {
    let var = |k: &str| {
        var(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(e) = configured {
        return with_signal_path(e);
    }
    // The signal's own variable is the full URL, used as it is.
    if let Some(e) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return e;
    }
    match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(base) => with_signal_path(&base),
        None => format!("http://localhost:4318{TRACES_PATH}"),
    }
}

fn with_signal_path(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

/// The export headers from the standard variables: `key=value,key2=value2`, values
/// percent-decoded; pairs without a key or a value, or not valid as HTTP, are left out.
pub(crate) fn headers(var: &dyn Fn(&str) -> Option<String>) -> http::HeaderMap {
    let raw = var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"))
        .unwrap_or_default();
    let mut out = http::HeaderMap::new();
    for pair in raw.split(',') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
        if k.is_empty() || v.is_empty() {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            out.append(k, v);
        }
    }
    out
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Exports spans over OTLP/HTTP (protobuf).
pub(crate) struct HttpExporter {
    client: HttpsClient,
    endpoint: http::Uri,
    headers: http::HeaderMap,
    timeout: Duration,
    resource: Resource,
}

impl std::fmt::Debug for HttpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers may carry a collector's credentials: never printed.
        f.debug_struct("HttpExporter")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl HttpExporter {
    /// An exporter to `endpoint`; each export waits at most `timeout`.
    pub(crate) fn new(
        endpoint: &str,
        headers: http::HeaderMap,
        timeout: Duration,
    ) -> Result<Self, String> {
        let endpoint: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("invalid OTLP endpoint: {e}"))?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            endpoint,
            headers,
            timeout,
            resource: Resource::builder_empty().build(),
        })
    }

    async fn send(&self, body: Vec<u8>) -> OTelSdkResult {
        let mut req = http::Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.endpoint.clone();
        let h = req.headers_mut();
        h.reserve(self.headers.len() + 1);
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        for (k, v) in &self.headers {
            h.append(k.clone(), v.clone());
        }
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| OTelSdkError::InternalFailure(format!("OTLP export failed: {e}")))?;
        let status = resp.status();
        // Read to the end, so that the connection is kept for the next export.
        let _ = Limited::new(resp.into_body(), MAX_REPLY).collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!(
                "the OTLP collector answered {status}"
            )))
        }
    }
}

impl SpanExporter for HttpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = encode(&self.resource, &batch);
        match tokio::time::timeout(self.timeout, self.send(body)).await {
            Ok(r) => r,
            Err(_) => Err(OTelSdkError::Timeout(self.timeout)),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

/// An `ExportTraceServiceRequest` (opentelemetry/proto/collector/trace/v1) of `spans` from
/// `resource`, grouped by instrumentation scope in the order the scopes first appear.
pub(crate) fn encode(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
    let mut pb = Pb(Vec::with_capacity(256 + spans.len() * 512));
    let mut scopes: Vec<&InstrumentationScope> = Vec::new();
    for s in spans {
        if !scopes.contains(&&s.instrumentation_scope) {
            scopes.push(&s.instrumentation_scope);
        }
    }
    // ExportTraceServiceRequest.resource_spans = 1
    pb.message(1, |pb| {
        // ResourceSpans.resource = 1
        pb.message(1, |pb| {
            for (k, v) in resource.iter() {
                pb.message(1, |pb| key_value(pb, k.as_str(), v));
            }
        });
        for scope in &scopes {
            // ResourceSpans.scope_spans = 2
            pb.message(2, |pb| {
                pb.message(1, |pb| {
                    pb.string(1, scope.name());
                    pb.string(2, scope.version().unwrap_or_default());
                    attributes(pb, 3, scope.attributes());
                });
                for s in spans.iter().filter(|s| s.instrumentation_scope == **scope) {
                    pb.message(2, |pb| span(pb, s));
                }
                pb.string(3, scope.schema_url().unwrap_or_default());
            });
        }
        pb.string(3, resource.schema_url().unwrap_or_default());
    });
    pb.0
}

/// opentelemetry/proto/trace/v1 `Span`.
fn span(pb: &mut Pb, s: &SpanData) {
    let cx = &s.span_context;
    pb.bytes(1, &cx.trace_id().to_bytes());
    pb.bytes(2, &cx.span_id().to_bytes());
    pb.string(3, &cx.trace_state().header());
    if s.parent_span_id != SpanId::INVALID {
        pb.bytes(4, &s.parent_span_id.to_bytes());
    }
    pb.string(5, &s.name);
    pb.uint(
        6,
        match s.span_kind {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        },
    );
    pb.fixed64(7, nanos(s.start_time));
    pb.fixed64(8, nanos(s.end_time));
    attributes(pb, 9, &s.attributes);
    pb.uint(10, s.dropped_attributes_count.into());
    for e in &s.events.events {
        pb.message(11, |pb| {
            pb.fixed64(1, nanos(e.timestamp));
            pb.string(2, &e.name);
            attributes(pb, 3, &e.attributes);
            pb.uint(4, e.dropped_attributes_count.into());
        });
    }
    pb.uint(12, s.events.dropped_count.into());
    for l in &s.links.links {
        pb.message(13, |pb| {
            let lc = &l.span_context;
            pb.bytes(1, &lc.trace_id().to_bytes());
            pb.bytes(2, &lc.span_id().to_bytes());
            pb.string(3, &lc.trace_state().header());
            attributes(pb, 4, &l.attributes);
            pb.uint(5, l.dropped_attributes_count.into());
            pb.fixed32(6, flags(lc.is_remote(), lc.trace_flags().to_u8()));
        });
    }
    pb.uint(14, s.links.dropped_count.into());
    pb.message(15, |pb| match &s.status {
        Status::Unset => {}
        Status::Ok => pb.uint(3, 1),
        Status::Error { description } => {
            pb.string(2, description);
            pb.uint(3, 2);
        }
    });
    pb.fixed32(16, flags(s.parent_span_is_remote, cx.trace_flags().to_u8()));
}

/// `Span.flags`: the W3C trace flags, and whether the parent is known to be remote.
fn flags(parent_is_remote: bool, trace_flags: u8) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(trace_flags) | HAS_IS_REMOTE | if parent_is_remote { IS_REMOTE } else { 0 }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn attributes<'a>(pb: &mut Pb, field: u32, kvs: impl IntoIterator<Item = &'a KeyValue>) {
    for kv in kvs {
        pb.message(field, |pb| key_value(pb, kv.key.as_str(), &kv.value));
    }
}

/// common/v1 `KeyValue`.
fn key_value(pb: &mut Pb, key: &str, value: &Value) {
    pb.string(1, key);
    pb.message(2, |pb| any_value(pb, value));
}

/// common/v1 `AnyValue`: a oneof, so a default value (0, "", false) is written too.
fn any_value(pb: &mut Pb, v: &Value) {
    match v {
        Value::String(s) => pb.len_field(1, s.as_str().as_bytes()),
        Value::Bool(b) => {
            pb.key(2, VARINT);
            pb.varint(u64::from(*b));
        }
        Value::I64(i) => {
            pb.key(3, VARINT);
            pb.varint(*i as u64);
        }
        Value::F64(f) => {
            pb.key(4, I64);
            pb.0.extend_from_slice(&f.to_le_bytes());
        }
        Value::Array(a) => pb.message(5, |pb| match a {
            Array::Bool(v) => array(pb, v.iter().map(|b| Value::Bool(*b))),
            Array::I64(v) => array(pb, v.iter().map(|i| Value::I64(*i))),
            Array::F64(v) => array(pb, v.iter().map(|f| Value::F64(*f))),
            Array::String(v) => {
                for s in v {
                    pb.message(1, |pb| pb.len_field(1, s.as_str().as_bytes()));
                }
            }
            _ => {}
        }),
        // A kind of value this encoder does not know (the enum is non-exhaustive): sent empty.
        _ => {}
    }
}

fn array(pb: &mut Pb, values: impl Iterator<Item = Value>) {
    for v in values {
        pb.message(1, |pb| any_value(pb, &v));
    }
}

const VARINT: u32 = 0;
const I64: u32 = 1;
const LEN: u32 = 2;
const I32: u32 = 5;

/// A protobuf writer. Scalar fields at their default value are left out, as proto3 (and
/// prost) do; nested messages are always written. Fields go in field-number order, as prost
/// writes them (the tests compare bytes).
struct Pb(Vec<u8>);

/// `v` as a protobuf varint: the bytes, and how many of them are used (for a length
/// written in front of what follows it).
fn varint_bytes(mut v: u64) -> ([u8; 10], usize) {
    let (mut b, mut n) = ([0u8; 10], 0);
    while v >= 0x80 {
        b[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    b[n] = v as u8;
    (b, n + 1)
}

impl Pb {
    // Byte by byte, not through `varint` and a copy: most are one byte (keys, short
    // lengths), and the copy cost several times the push (bench/instructions.sh).
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    fn len_field(&mut self, field: u32, b: &[u8]) {
        self.key(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        if !b.is_empty() {
            self.len_field(field, b);
        }
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v);
        }
    }

    fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, I64);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn fixed32(&mut self, field: u32, v: u32) {
        if v != 0 {
            self.key(field, I32);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A nested message written by `f`, its length before it. One byte is kept for the
    /// length (most attributes are shorter than 128 bytes); a longer message is moved up in
    /// place to make room for the rest (no second buffer).
    fn message(&mut self, field: u32, f: impl FnOnce(&mut Self)) {
        self.key(field, LEN);
        let at = self.0.len();
        self.0.push(0);
        f(self);
        let end = self.0.len();
        let len = end - at - 1;
        if len < 0x80 {
            self.0[at] = len as u8;
            return;
        }
        let (prefix, n) = varint_bytes(len as u64);
        self.0.resize(end + n - 1, 0);
        self.0.copy_within(at + 1..end, at + n);
        self.0[at..at + n].copy_from_slice(&prefix[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Event, Link, SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;
    use std::borrow::Cow;

    fn context(trace: u128, span: u64, sampled: bool, remote: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            remote,
            if state.is_empty() {
                TraceState::default()
            } else {
                state.parse::<TraceState>().unwrap()
            },
        )
    }

    fn span_data(i: u64, scope: &InstrumentationScope) -> SpanData {
        let long = "x".repeat(300 + i as usize);
        let mut events = SpanEvents::default();
        if i % 2 == 0 {
            events.events.push(Event::new(
                "retry",
                UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + i),
                vec![KeyValue::new("attempt", i as i64)],
                1,
            ));
            events.dropped_count = 2;
        }
        let mut links = SpanLinks::default();
        if i % 3 == 0 {
            links.links.push(Link::new(
                context(7, 9, true, true, "k=v"),
                vec![KeyValue::new("why", "fan-in")],
                3,
            ));
            links.dropped_count = 1;
        }
        SpanData {
            span_context: context(
                0x0af7651916cd43dd8448eb211c80319c + u128::from(i),
                0xb7ad6b7169203331 + i,
                i != 4,
                false,
                if i == 1 {
                    "vendor=opaque-7,other=1"
                } else {
                    ""
                },
            ),
            parent_span_id: if i % 2 == 1 {
                SpanId::from(0x00f067aa0ba902b7)
            } else {
                SpanId::INVALID
            },
            parent_span_is_remote: i == 1,
            span_kind: [
                SpanKind::Server,
                SpanKind::Client,
                SpanKind::Internal,
                SpanKind::Producer,
                SpanKind::Consumer,
            ][i as usize % 5]
                .clone(),
            name: Cow::Owned(format!("chat model-{i}")),
            start_time: UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789 + i),
            end_time: UNIX_EPOCH + Duration::from_nanos(1_764_000_000_223_456_789 + i),
            attributes: vec![
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.request.model", format!("model-{i}")),
                KeyValue::new("empty", ""),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("negative", -42_i64),
                KeyValue::new("big", i64::MAX),
                KeyValue::new("ratio", 0.25_f64),
                KeyValue::new("nothing", 0.0_f64),
                KeyValue::new("yes", true),
                KeyValue::new("no", false),
                KeyValue::new("long", long),
                KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    Value::Array(Array::String(vec!["stop".into(), "length".into()])),
                ),
                KeyValue::new("ints", Value::Array(Array::I64(vec![0, 1, -1]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![false, true]))),
                KeyValue::new("none", Value::Array(Array::String(Vec::new()))),
            ],
            dropped_attributes_count: i as u32,
            events,
            links,
            status: match i % 3 {
                0 => Status::Unset,
                1 => Status::error("upstream 503"),
                _ => Status::Ok,
            },
            instrumentation_scope: scope.clone(),
        }
    }

    #[test]
    fn encodes_what_opentelemetry_proto_encodes() {
        let ours = InstrumentationScope::builder("switchyard").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", 5_i64)])
            .build();
        // Two scopes, interleaved: each gets one ScopeSpans, in the order it first appears.
        let spans: Vec<SpanData> = (0..7)
            .map(|i| span_data(i, if i % 3 == 2 { &other } else { &ours }))
            .collect();
        for resource in [
            Resource::builder()
                .with_service_name("switchyard-test")
                .with_attribute(KeyValue::new("deployment.environment", "ci"))
                .build(),
            Resource::builder_empty()
                .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
                .build(),
        ] {
            let bytes = encode(&resource, &spans);
            let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            let expected = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(
                    spans.clone(),
                    &ResourceAttributesWithSchema::from(&resource),
                ),
            };
            assert_eq!(decoded, expected);
            // And the same bytes as prost writes them for that message.
            assert_eq!(bytes, expected.encode_to_vec());
        }
    }

    #[test]
    fn lengths_of_every_size_are_written_whole() {
        for n in [0usize, 1, 126, 127, 128, 129, 16_383, 16_384, 70_000] {
            let mut pb = Pb(Vec::new());
            let body = || (0..n).map(|i| (i * 7 % 251) as u8);
            pb.message(1, |pb| pb.0.extend(body()));
            let mut want = Pb(Vec::new());
            want.key(1, LEN);
            want.varint(n as u64);
            want.0.extend(body());
            assert_eq!(pb.0, want.0, "{n} bytes");
        }
    }

    #[test]
    fn the_endpoint_and_headers_follow_the_standard_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = env(&[]);
        assert_eq!(endpoint(None, &none), "http://localhost:4318/v1/traces");
        assert_eq!(
            endpoint(Some("http://c:4318/"), &none),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            endpoint(Some("http://c:4318/v1/traces"), &none),
            "http://c:4318/v1/traces"
        );
        let base = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")]);
        assert_eq!(endpoint(None, &base), "https://collector:4318/v1/traces");
        // The signal's own variable is the whole URL, and wins over the base one.
        let signal = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9999/custom"),
        ]);
        assert_eq!(endpoint(None, &signal), "http://t:9999/custom");
        // Config wins over both.
        assert_eq!(
            endpoint(Some("http://cfg:1"), &signal),
            "http://cfg:1/v1/traces"
        );

        let h = headers(&env(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=secret%20value, x-tenant = a ,=novalue,nokey=,broken",
        )]));
        assert_eq!(h.len(), 2);
        assert_eq!(h["api-key"], "secret value");
        assert_eq!(h["x-tenant"], "a");
        let h = headers(&env(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
        ]));
        assert_eq!(h.len(), 1);
        assert_eq!(h["b"], "2");
    }
}
