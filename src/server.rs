//! Listeners, the admin plane, and graceful shutdown.
//!
//! The data plane serves HTTP/1.1 and h2c on one port; the admin plane answers `/healthz`,
//! `/readyz`, `/metrics` and `/config`. Shutdown stops accepting, fails readiness, and drains
//! in-flight requests and streams up to a grace limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::route::{Control, SharedRoutes};
use crate::stack;

/// How long in-flight requests may run after shutdown begins.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// A running switchyard: its bound addresses and the handle to stop it.
pub struct Running {
    /// Where the data plane listens.
    pub data_addr: SocketAddr,
    /// Where the admin plane listens.
    pub admin_addr: SocketAddr,
    /// The live routing table.
    pub routes: SharedRoutes,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to `grace`), and returns when done.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.tasks);
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), all).await;
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The stack could not be built from the config.
    #[error("{0}")]
    Build(String),
}

/// Binds both planes and starts serving in the background.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let stack = stack::build(config, Arc::new(Control::default()))
        .map_err(|e| StartError::Build(e.message))?;
    let data = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let admin = TcpListener::bind(config.admin)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.admin,
            source,
        })?;
    let data_addr = data.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        addr: config.admin,
        source,
    })?;
    let (stop, stopped) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(true));
    let admin_state = Arc::new(Admin {
        ready: ready.clone(),
        routes: stack.routes.clone(),
        spend: stack.spend.clone(),
        token: config
            .admin_token
            .as_ref()
            .map(|t| Arc::from(t.expose()))
            .filter(|t: &Arc<str>| !t.is_empty()),
    });
    let data_task = tokio::spawn(accept_loop(
        data,
        stack.service,
        stopped.clone(),
        DRAIN_GRACE,
    ));
    let admin_svc = tower::service_fn(move |req: http::Request<Incoming>| {
        let admin = admin_state.clone();
        async move {
            if req.method() == Method::GET && req.uri().path() == "/spend" {
                return Ok::<_, Infallible>(admin.spend().await);
            }
            Ok::<_, Infallible>(admin.handle(&req))
        }
    });
    let mut admin_stopped = stopped.clone();
    let ready_flag = ready.clone();
    let admin_task = tokio::spawn(async move {
        // Readiness fails as soon as shutdown begins, so the pod leaves its Service first.
        let flag = tokio::spawn(async move {
            let _ = admin_stopped.wait_for(|s| *s).await;
            ready_flag.store(false, Ordering::SeqCst);
        });
        accept_loop(admin, admin_svc, stopped, Duration::from_secs(1)).await;
        flag.abort();
    });
    Ok(Running {
        data_addr,
        admin_addr,
        routes: stack.routes,
        stop,
        tasks: vec![data_task, admin_task],
    })
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    service: S,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await.map(|_| ());
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service.clone()))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain grace expired with requests still in flight");
    }
}

struct Admin {
    ready: Arc<AtomicBool>,
    routes: SharedRoutes,
    spend: crate::layer::budget::SpendReport,
    /// Required (as `Authorization: Bearer`) by the operator endpoints that change state.
    token: Option<Arc<str>>,
}

impl Admin {
    /// `GET /spend`: spend and remaining budget per key and team (JSON).
    async fn spend(&self) -> http::Response<Full<Bytes>> {
        let body = self.spend.json().await.to_string();
        let mut r = http::Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }

    fn handle(&self, req: &http::Request<Incoming>) -> http::Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String, ct: &'static str| {
            let mut r = http::Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(ct),
            );
            r
        };
        if let Some(resp) = self.operator(req) {
            return resp;
        }
        if req.method() != Method::GET {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET\n".into(),
                "text/plain",
            );
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
            "/readyz" if self.ready.load(Ordering::SeqCst) => {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            }
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining\n".into(),
                "text/plain",
            ),
            "/metrics" => {
                let body = crate::telemetry::metrics::render();
                text(StatusCode::OK, body, "text/plain; version=0.0.4")
            }
            "/config" => {
                let routes = self.routes.load();
                let providers: Vec<serde_json::Value> = routes
                    .providers()
                    .iter()
                    .map(|p| serde_json::json!({"name": &*p.name, "kind": p.kind.as_str()}))
                    .collect();
                let models: Vec<serde_json::Value> = routes
                    .describe()
                    .into_iter()
                    .map(|(name, targets)| serde_json::json!({"name": name, "targets": targets}))
                    .collect();
                let body = serde_json::json!({"providers": providers, "models": models});
                text(StatusCode::OK, body.to_string(), "application/json")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
        }
    }
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs the mock provider alone as an upstream on `addr` (OpenAI format at `/v1/...`,
/// Anthropic format at `/v1/messages`) until a signal. Its admin plane (`admin`, ephemeral
/// when port 0) takes `POST /mock/faults?...` to inject faults at run time.
pub async fn serve_mock(
    addr: SocketAddr,
    admin: SocketAddr,
    faults: crate::provider::mock::Faults,
) -> Result<(), StartError> {
    let config = Config {
        listen: addr,
        admin,
        mock: Some(true),
        ..Config::default()
    };
    let running = start(&config).await?;
    if let Some(mock) = running
        .routes
        .load()
        .providers()
        .iter()
        .find_map(|p| p.as_mock())
    {
        mock.set_faults(faults);
    }
    eprintln!(
        "switchyard mock provider on http://{}/v1 (OpenAI and Anthropic formats; models echo, lorem, embed); faults: POST http://{}/mock/faults",
        running.data_addr, running.admin_addr
    );
    shutdown_signal().await;
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

fn json(status: StatusCode, body: serde_json::Value) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Operator control on the admin plane (manual failover), without a restart:
/// `GET /providers`, `GET /routes`, `POST|DELETE /providers/{name}/drain`,
/// `POST /routes/{name}/pin?target=provider/model`, `DELETE /routes/{name}/pin`.
/// Every change is logged as an audit event.
impl Admin {
    fn operator(&self, req: &http::Request<Incoming>) -> Option<http::Response<Full<Bytes>>> {
        let path = req.uri().path();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let routes = self.routes.load();
        let method = req.method();
        let mutating = method == Method::POST || method == Method::DELETE;
        if mutating
            && matches!(
                segs.as_slice(),
                ["providers", _, "drain"] | ["routes", _, "pin"]
            )
        {
            if let Some(token) = &self.token {
                let given = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                if given.map(str::as_bytes) != Some(token.as_bytes()) {
                    return Some(json(
                        StatusCode::UNAUTHORIZED,
                        serde_json::json!({"error": "operator endpoints need the admin token"}),
                    ));
                }
            }
        }
        let result = match (method, segs.as_slice()) {
            (&Method::GET, ["providers"]) => return Some(json(StatusCode::OK, providers_json(&routes))),
            (&Method::GET, ["routes"]) => return Some(json(StatusCode::OK, routes_json(&routes))),
            (m, ["providers", name, "drain"]) if m == Method::POST || m == Method::DELETE => {
                let on = m == Method::POST;
                routes.drain(name, on).map(|()| {
                    tracing::info!(target: "switchyard::audit", action = if on { "drain" } else { "undrain" }, provider = %name, "operator action");
                })
            }
            (&Method::POST, ["routes", name, "pin"]) => {
                let target = req
                    .uri()
                    .query()
                    .unwrap_or_default()
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("target="))
                    .map(|t| t.replace("%2F", "/").replace("%2f", "/"));
                match target {
                    None => Err(crate::ir::Error::invalid("give the target as ?target=provider/model")),
                    Some(t) => routes.pin(name, Some(&t)).map(|()| {
                        tracing::info!(target: "switchyard::audit", action = "pin", route = %name, pinned = %t, "operator action");
                    }),
                }
            }
            (m, ["mock", "faults"]) if m == Method::POST || m == Method::DELETE || m == Method::GET => {
                let Some(mock) = routes.providers().iter().find_map(|p| p.as_mock()) else {
                    return Some(json(StatusCode::NOT_FOUND, serde_json::json!({"error": "no mock provider"})));
                };
                if m == Method::GET {
                    return Some(json(StatusCode::OK, serde_json::json!(mock.faults())));
                }
                let faults = if m == Method::DELETE {
                    Ok(crate::provider::mock::Faults::default())
                } else {
                    parse_faults(req.uri().query().unwrap_or_default())
                };
                faults.map(|f| {
                    tracing::info!(target: "switchyard::audit", action = "mock_faults", faults = ?f, "operator action");
                    mock.set_faults(f);
                })
            }
            (&Method::DELETE, ["routes", name, "pin"]) => routes.pin(name, None).map(|()| {
                tracing::info!(target: "switchyard::audit", action = "unpin", route = %name, "operator action");
            }),
            _ => return None,
        };
        Some(match result {
            Ok(()) => json(StatusCode::OK, serde_json::json!({"ok": true})),
            Err(e) => json(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                serde_json::json!({"error": e.message}),
            ),
        })
    }
}

fn providers_json(routes: &crate::route::Routes) -> serde_json::Value {
    let targets = routes.targets();
    let drained = routes.drained();
    let list: Vec<serde_json::Value> = routes
        .providers()
        .iter()
        .map(|p| {
            let ts: Vec<serde_json::Value> = targets
                .iter()
                .filter(|t| t.provider == p.name)
                .map(|t| {
                    serde_json::json!({
                        "target": t.name(),
                        "circuit": t.stats.circuit().as_str(),
                        "available": t.is_available(),
                        "inflight": t.stats.inflight(),
                        "ewma_ttfb_ms": t.stats.ewma_ttfb_ns() as f64 / 1e6,
                    })
                })
                .collect();
            serde_json::json!({
                "name": &*p.name,
                "kind": p.kind.as_str(),
                "drained": drained.contains(&*p.name),
                "targets": ts,
            })
        })
        .collect();
    serde_json::json!({ "providers": list })
}

fn routes_json(routes: &crate::route::Routes) -> serde_json::Value {
    let pins = routes.pins();
    let list: Vec<serde_json::Value> = routes
        .plans()
        .map(|plan| {
            serde_json::json!({
                "name": &*plan.route,
                "strategy": format!("{:?}", plan.strategy).to_lowercase(),
                "max_attempts": plan.max_attempts,
                "targets": plan.targets.iter().map(|t| serde_json::json!({
                    "target": t.name(),
                    "weight": t.weight,
                    "tags": t.tags.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    "circuit": t.stats.circuit().as_str(),
                    "available": t.is_available(),
                })).collect::<Vec<_>>(),
                "degrade_to": plan.degrade.as_ref().map(|d| d.iter().map(|t| t.name()).collect::<Vec<_>>()),
                "pinned": pins.get(&*plan.route),
            })
        })
        .collect();
    serde_json::json!({ "routes": list })
}

/// `status=503&every=2&count=3&latency_ms=100&retry_after_secs=2&stall_after_events=3`
fn parse_faults(query: &str) -> Result<crate::provider::mock::Faults, crate::ir::Error> {
    let mut map = serde_json::Map::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let n: u64 = v
            .parse()
            .map_err(|_| crate::ir::Error::invalid(format!("fault '{k}' needs a number")))?;
        map.insert(k.to_owned(), serde_json::Value::from(n));
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| crate::ir::Error::invalid(format!("bad fault: {e}")))
}
