//! Traces end to end: the real `switchyard` binary, configured only by the standard
//! `OTEL_EXPORTER_OTLP_*` variables, exports to a real OTLP receiver on loopback (built from
//! the official protobuf definitions, `opentelemetry-proto`), over gRPC and over HTTP.
//!
//! A request with a caller `traceparent` takes a fallback (the first target answers 503, the
//! built-in mock serves): the test checks the server span continues the caller's trace, both
//! attempts are client spans under it, the failed upstream received a `traceparent` naming
//! its attempt span, the GenAI attributes, and that the log line carries the trace id.

mod obs_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use obs_support::{failing_upstream, fallback_config, send};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// Spans received, each with its resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;
/// The `x-collector-key` header (gRPC metadata) of each export received.
type Keys = Arc<Mutex<Vec<String>>>;

fn record(received: &Received, req: ExportTraceServiceRequest) {
    let mut out = received.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push((service.clone(), span));
            }
        }
    }
}

struct GrpcReceiver(Received, Keys);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(k) = req.metadata().get("x-collector-key") {
            self.1.lock().unwrap().push(k.to_str().unwrap().to_owned());
        }
        record(&self.0, req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver; returns its endpoint.
async fn grpc_receiver(received: Received, keys: Keys) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(GrpcReceiver(received, keys)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

/// An OTLP/HTTP (protobuf) receiver of `POST /v1/traces`; returns its base endpoint.
async fn http_receiver(received: Received, keys: Keys) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (received, keys) = (received.clone(), keys.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (received, keys) = (received.clone(), keys.clone());
                    async move {
                        let ok = req.uri().path() == "/v1/traces"
                            && req.headers()["content-type"] == "application/x-protobuf";
                        if let Some(k) = req.headers().get("x-collector-key") {
                            keys.lock().unwrap().push(k.to_str().unwrap().to_owned());
                        }
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if ok {
                            record(&received, ExportTraceServiceRequest::decode(body).unwrap());
                        }
                        let mut resp = http::Response::new(Full::new(Bytes::from(
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )));
                        resp.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        if !ok {
                            *resp.status_mut() = http::StatusCode::NOT_FOUND;
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// The switchyard binary, serving `config` with `env`; killed on drop. Its stderr (logs) is
/// collected in `log`.
struct Proxy {
    child: Child,
    data: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_proxy(config: &str, env: &[(&str, &str)]) -> Proxy {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-obs-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchyard.yaml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (data, admin) = loop {
        let line = lines
            .next()
            .expect("switchyard exited before serving")
            .unwrap();
        if let Some(rest) = line.split(" serving on http://").nth(1) {
            let (data, admin) = rest.split_once(" (admin http://").unwrap();
            break (
                data.parse().unwrap(),
                admin.trim_end_matches(')').parse().unwrap(),
            );
        }
    };
    let log = Arc::new(Mutex::new(String::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut l = l.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    Proxy {
        child,
        data,
        admin,
        log,
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn str_attr<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(span, key) {
        Some(Value::StringValue(s)) => s,
        other => panic!("span '{}': {key} is {other:?}", span.name),
    }
}

fn int_attr(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::IntValue(i)) => *i,
        other => panic!("span '{}': {key} is {other:?}", span.name),
    }
}

fn finish_reasons(span: &Span) -> Vec<String> {
    match attr(span, "gen_ai.response.finish_reasons") {
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .filter_map(|v| match v.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        other => panic!("span '{}': finish_reasons is {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until `pred` holds for the received spans.
async fn wait_for(received: &Received, what: &str, pred: impl Fn(&[(String, Span)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if pred(&received.lock().unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within 20 s; received: {:#?}",
            received
                .lock()
                .unwrap()
                .iter()
                .map(|(_, s)| &s.name)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn spans_across_a_fallback(protocol: &str) {
    let received: Received = Arc::default();
    let keys: Keys = Arc::default();
    let endpoint = match protocol {
        "grpc" => grpc_receiver(received.clone(), keys.clone()).await,
        _ => http_receiver(received.clone(), keys.clone()).await,
    };
    let (upstream, upstream_saw) = failing_upstream().await;
    let service = format!("switchyard-test-{}", protocol.replace('/', "-"));
    let proxy = start_proxy(
        &fallback_config(upstream),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", &service),
            // A collector's credentials, percent-encoded as the variable's format asks.
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k%3Dv1%2C2"),
        ],
    );

    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let (status, _, _) = send(
        proxy.data,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"chat","messages":[{"role":"user","content":"hello there"}]}"#,
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque-7"),
            ("x-request-id", "req-trace-1"),
            ("authorization", "Bearer sk-caller-secret-7f3a"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    // A streamed request, in a trace of its own.
    let (status, _, body) = send(
        proxy.data,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"mock/lorem","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("[DONE]"));

    wait_for(
        &received,
        "fallback trace (1 server + 2 client spans)",
        |spans| {
            spans
                .iter()
                .filter(|(_, s)| hex(&s.trace_id) == TRACE)
                .count()
                >= 3
        },
    )
    .await;
    wait_for(&received, "stream trace", |spans| {
        spans
            .iter()
            .any(|(_, s)| s.name == "chat mock/lorem" && s.kind == SpanKind::Server as i32)
    })
    .await;
    // Let a straggler batch arrive, then freeze the view.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = received.lock().unwrap().clone();
    assert!(all.iter().all(|(svc, _)| *svc == service), "service.name");
    let keys = keys.lock().unwrap().clone();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k == "k=v1,2"),
        "every export carries OTEL_EXPORTER_OTLP_HEADERS, decoded: {keys:?}"
    );

    let ours: Vec<&Span> = all
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == TRACE)
        .collect();
    let servers: Vec<&&Span> = ours
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 1, "one server span per request: {ours:#?}");
    let server = servers[0];
    assert_eq!(server.name, "chat chat");
    assert_eq!(
        hex(&server.parent_span_id),
        CALLER_SPAN,
        "the caller's traceparent is continued"
    );
    assert_eq!(str_attr(server, "gen_ai.operation.name"), "chat");
    assert_eq!(str_attr(server, "gen_ai.request.model"), "chat");
    assert_eq!(str_attr(server, "gen_ai.provider.name"), "mock");
    assert_eq!(str_attr(server, "gen_ai.response.model"), "echo");
    assert!(int_attr(server, "gen_ai.usage.input_tokens") > 0);
    assert!(int_attr(server, "gen_ai.usage.output_tokens") > 0);
    assert_eq!(finish_reasons(server), ["stop"]);
    assert_eq!(str_attr(server, "switchyard.route"), "chat");
    assert_eq!(str_attr(server, "switchyard.request_id"), "req-trace-1");
    assert_eq!(int_attr(server, "switchyard.attempts"), 2);
    assert_eq!(int_attr(server, "http.response.status_code"), 200);
    assert_eq!(str_attr(server, "http.request.method"), "POST");
    assert_eq!(str_attr(server, "url.path"), "/v1/chat/completions");
    // Only the attributes switchyard sets: not the `tracing` bridge's own (the callsite's target
    // and thread, busy/idle nanoseconds), which cost every span and mean nothing on a pool of
    // async workers.
    for s in &ours {
        for key in ["target", "thread.id", "thread.name", "busy_ns", "idle_ns"] {
            assert!(attr(s, key).is_none(), "{key} on span {:?}", s.name);
        }
    }

    let mut clients: Vec<&&Span> = ours
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    clients.sort_by_key(|s| int_attr(s, "switchyard.attempt"));
    assert_eq!(clients.len(), 2, "one client span per attempt: {ours:#?}");
    for c in &clients {
        assert_eq!(
            c.parent_span_id, server.span_id,
            "attempts are children of the request"
        );
        assert_eq!(c.name, "chat echo");
        assert_eq!(str_attr(c, "gen_ai.operation.name"), "chat");
        assert_eq!(str_attr(c, "gen_ai.request.model"), "echo");
    }
    let (failed, served) = (clients[0], clients[1]);
    assert_eq!(str_attr(failed, "gen_ai.provider.name"), "flaky");
    assert_eq!(str_attr(failed, "switchyard.provider"), "flaky");
    assert!(!str_attr(failed, "error.type").is_empty());
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(2),
        "a failed attempt has status ERROR"
    );
    assert_eq!(str_attr(served, "gen_ai.provider.name"), "mock");
    assert_eq!(str_attr(served, "gen_ai.response.model"), "echo");
    assert!(int_attr(served, "gen_ai.usage.output_tokens") > 0);
    assert_eq!(finish_reasons(served), ["stop"]);
    assert!(attr(served, "error.type").is_none());

    // The failing upstream was told which attempt called it.
    let saw = upstream_saw.lock().unwrap().clone();
    assert_eq!(saw.len(), 1);
    let tp = saw[0]
        .get("traceparent")
        .expect("traceparent sent upstream")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        tp,
        format!("00-{TRACE}-{}-01", hex(&failed.span_id)),
        "upstream traceparent names the attempt span"
    );
    assert_eq!(
        saw[0].get("tracestate").map(|v| v.to_str().unwrap()),
        Some("vendor=opaque-7"),
        "the caller's tracestate travels on upstream"
    );

    // The streamed request: its server span stays open to the end of the stream and carries
    // the stream's usage and finish reason, as does its attempt.
    let stream_server = all
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "chat mock/lorem" && s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(int_attr(stream_server, "gen_ai.usage.output_tokens"), 5);
    assert!(!finish_reasons(stream_server).is_empty());
    let stream_client = all
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.parent_span_id == stream_server.span_id)
        .expect("the stream's attempt span");
    assert_eq!(int_attr(stream_client, "gen_ai.usage.output_tokens"), 5);
    assert!(stream_client.end_time_unix_nano <= stream_server.end_time_unix_nano);

    // The request's log line names the trace.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = proxy.log.lock().unwrap().clone();
        let line = log.lines().find(|l| l.contains("\"req-trace-1\""));
        if let Some(line) = line {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["target"], "switchyard::access");
            assert_eq!(v["trace_id"], TRACE);
            assert_eq!(v["attempts"], 2);
            assert_eq!(v["route"], "chat");
            assert!(
                !log.contains("sk-caller-secret"),
                "a key in the log:\n{log}"
            );
            assert!(
                !log.contains("hello there"),
                "prompts are logged only when telemetry.log_content is on:\n{log}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line for the request:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_across_a_fallback_over_grpc() {
    spans_across_a_fallback("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_across_a_fallback_over_http() {
    spans_across_a_fallback("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_only_dropped_spans() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (upstream, _) = failing_upstream().await;
    for protocol in ["grpc", "http/protobuf"] {
        let proxy = start_proxy(
            &fallback_config(upstream),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ],
        );
        let started = Instant::now();
        for _ in 0..20 {
            let (status, _, _) = send(
                proxy.data,
                "POST",
                "/v1/chat/completions",
                r#"{"model":"mock/echo","messages":[{"role":"user","content":"hi"}]}"#,
                &[],
            )
            .await;
            assert_eq!(status, 200);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "requests are not held up by the collector ({protocol})"
        );
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            let (_, _, scrape) = send(proxy.admin, "GET", "/metrics", "", &[]).await;
            let dropped: f64 = scrape
                .lines()
                .find(|l| {
                    l.starts_with(r#"switchyard_trace_spans_dropped_total{reason="export_failed"}"#)
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0);
            if dropped >= 40.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{protocol}: spans of 20 requests not counted as dropped:\n{scrape}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
