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
use crate::route::SharedRoutes;
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
    let stack = stack::build(config).map_err(|e| StartError::Build(e.message))?;
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

/// Runs the mock provider alone as an OpenAI-format upstream on `addr` until a signal.
pub async fn serve_mock(addr: SocketAddr) -> Result<(), StartError> {
    let config = Config {
        listen: addr,
        // The mock has no admin plane of its own; an ephemeral port keeps 9464 free.
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        mock: Some(true),
        ..Config::default()
    };
    let running = start(&config).await?;
    eprintln!(
        "switchyard mock provider (OpenAI format) on http://{}/v1 — models: echo, lorem, embed",
        running.data_addr
    );
    shutdown_signal().await;
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
