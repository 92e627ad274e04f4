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

use crate::config::watch::{ConfigWatch, WatchError};
use crate::config::{Config, ConfigError};
use crate::route::SharedRoutes;
use crate::stack;
use crate::telemetry::metrics::{self, ReloadResult};

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
    reloader: Reloader,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    admin_stop: watch::Sender<bool>,
    data_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
}

impl Running {
    /// Fails readiness, stops accepting, drains in-flight requests and streams (up to
    /// `grace`), and returns when done. The admin plane answers (`/readyz` 503, `/metrics`)
    /// until the data plane has drained.
    pub async fn shutdown(self, grace: Duration) {
        // Readiness first: the pod leaves its Service's endpoints before anything is refused.
        self.ready.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), self.data_task).await;
        let _ = self.admin_stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.admin_task).await;
    }

    /// What applies new config generations to this server.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Watches the config file at `path` (and its secret files) and applies each new version
    /// until shutdown; `adjust` re-applies command-line overrides to every new version.
    pub fn watch_config(
        &self,
        path: std::path::PathBuf,
        adjust: impl Fn(&mut Config) + Send + 'static,
    ) -> Result<(), WatchError> {
        self.watch_with(ConfigWatch::new(path)?, adjust);
        Ok(())
    }

    /// [`Running::watch_config`] with a watcher built by the caller (tests: short intervals).
    pub fn watch_with(
        &self,
        mut watch: ConfigWatch,
        adjust: impl Fn(&mut Config) + Send + 'static,
    ) {
        let reloader = self.reloader();
        let mut stopped = self.stop.subscribe();
        metrics::config_reloads();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = watch.changed() => next,
                    _ = stopped.wait_for(|s| *s) => break,
                };
                reloader.apply(next.map(|mut c| {
                    adjust(&mut c);
                    c
                }));
            }
        });
    }
}

/// Applies config generations: the new routing table is built first and swapped whole;
/// requests in flight keep the table they started with.
#[derive(Clone)]
pub struct Reloader {
    routes: SharedRoutes,
    /// What needs a restart: (listen, admin, max_body_bytes) as started.
    fixed: (SocketAddr, SocketAddr, usize),
}

impl Reloader {
    /// Applies one loaded (or refused) version; counts `switchyard_config_reload_total`.
    pub fn apply(&self, next: Result<Config, ConfigError>) -> ReloadResult {
        let result = match next.map_err(|e| e.to_string()).and_then(|c| {
            let routes = stack::routes(&c).map_err(|e| e.message)?;
            Ok((c, routes))
        }) {
            Ok((config, routes)) => {
                let fixed = (config.listen, config.admin, config.max_body_bytes);
                if fixed != self.fixed {
                    tracing::warn!(
                        "listen, admin and max_body_bytes change only on restart; keeping {:?}",
                        self.fixed
                    );
                }
                self.routes.store(Arc::new(routes));
                tracing::info!(
                    providers = config.providers.len(),
                    models = config.models.len(),
                    "config reloaded"
                );
                ReloadResult::Success
            }
            Err(e) => {
                tracing::error!(error = %e, "new config refused; the previous one keeps serving");
                ReloadResult::RolledBack
            }
        };
        metrics::config_reload(result);
        result
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
    let (admin_stop, admin_stopped) = watch::channel(false);
    // Ready from here on: a config is loaded (an invalid one never gets this far).
    let ready = Arc::new(AtomicBool::new(true));
    let admin_state = Arc::new(Admin {
        ready: ready.clone(),
        routes: stack.routes.clone(),
    });
    let data_task = tokio::spawn(accept_loop(
        data,
        stack.service,
        stopped.clone(),
        DRAIN_GRACE,
    ));
    let admin_svc = tower::service_fn(move |req: http::Request<Incoming>| {
        let admin = admin_state.clone();
        async move { Ok::<_, Infallible>(admin.handle(&req)) }
    });
    let admin_task = tokio::spawn(accept_loop(
        admin,
        admin_svc,
        admin_stopped,
        Duration::from_secs(1),
    ));
    Ok(Running {
        data_addr,
        admin_addr,
        reloader: Reloader {
            routes: stack.routes.clone(),
            fixed: (config.listen, config.admin, config.max_body_bytes),
        },
        routes: stack.routes,
        ready,
        stop,
        admin_stop,
        data_task,
        admin_task,
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
}

impl Admin {
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
    Signals::new().recv().await
}

/// SIGTERM and Ctrl-C, registered when created: a signal that arrives before anyone waits is
/// kept, not lost to the default action (which would kill the process undrained).
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Registers the handlers now.
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.term) => {}
                _ = next(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
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
