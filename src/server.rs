//! Listeners, the admin plane, and graceful shutdown.
//!
//! The data plane serves HTTP/1.1 and h2c on one port; the admin plane answers `/healthz`,
//! `/readyz`, `/metrics` and `/config`. Shutdown stops accepting, fails readiness, and drains
//! in-flight requests and streams up to a grace limit.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::watch::{ConfigWatch, WatchError};
use crate::config::{Config, ConfigError};
use crate::route::{Control, SharedRoutes};
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
        // Spend and token settlements of the drained requests are written before exit.
        self.reloader.state.flush(Duration::from_secs(2)).await;
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
    control: Arc<Control>,
    /// Limits and spend: kept across reloads, so provider limits keep their cells.
    state: crate::state::SharedState,
    /// What needs a restart: (listen, admin, max_body_bytes) as started.
    fixed: (SocketAddr, SocketAddr, usize),
}

impl Reloader {
    /// Applies one loaded (or refused) version; counts `switchyard_config_reload_total`.
    pub fn apply(&self, next: Result<Config, ConfigError>) -> ReloadResult {
        let result = match next.map_err(|e| e.to_string()).and_then(|c| {
            let make = stack::target_maker(&c, &self.state);
            let routes =
                stack::routes_with(&c, self.control.clone(), &make).map_err(|e| e.message)?;
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
    // Operator overrides (drain, pin) live beside the routing table and survive reloads.
    let control = Arc::new(Control::default());
    let stack = stack::build(config, control.clone()).map_err(|e| StartError::Build(e.message))?;
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
        spend: stack.spend.clone(),
        token: config
            .admin_token
            .as_ref()
            .map(|t| Arc::from(t.expose()))
            .filter(|t: &Arc<str>| !t.is_empty()),
    });
    let header_timeout = Duration::from_secs_f64(config.header_read_timeout_secs);
    let data_task = tokio::spawn(accept_loop(
        data,
        stack.service,
        stopped.clone(),
        DRAIN_GRACE,
        header_timeout,
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
    let admin_task = tokio::spawn(accept_loop(
        admin,
        admin_svc,
        admin_stopped,
        Duration::from_secs(1),
        header_timeout,
    ));
    Ok(Running {
        data_addr,
        admin_addr,
        reloader: Reloader {
            routes: stack.routes.clone(),
            control,
            state: stack.state.clone(),
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

/// What a client sends first on an HTTP/2 prior-knowledge (h2c) connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The data plane's connection builders: one per protocol, and one that sniffs.
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
    sniff: auto::Builder<TokioExecutor>,
}

#[derive(Debug, PartialEq)]
enum Protocol {
    Http1,
    Http2,
}

/// The protocol of a connection from its first bytes, when they decide it: the whole h2c
/// preface is HTTP/2, anything that departs from it is HTTP/1, a part of it is undecided.
fn sniff(first: &[u8]) -> Option<Protocol> {
    if !H2_PREFACE.starts_with(first) {
        Some(Protocol::Http1)
    } else if first.len() == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    service: S,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
    header_timeout: Duration,
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper silently applies no header read timeout: a slowloris client
    // would hold a connection (and its task and fd) forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // Pings find dead h2 peers; hyper's defaults already cap concurrent streams (200) and
    // locally reset streams (rapid-reset).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    // The version is told from the peeked first bytes when they suffice (nearly always), and
    // the connection goes straight to a one-protocol builder. hyper-util's own sniffing reads
    // those bytes and hands them back to hyper first, and hyper's next read then doubles its
    // buffer: 16 KiB instead of 8 allocated per HTTP/1 connection (heaptrack), about 4 MiB
    // of RSS with 1,000 held streams (bench/streams.sh).
    let builders = Arc::new(Builders {
        http1: builder.clone().http1_only(),
        http2: builder.clone().http2_only(),
        sniff: builder,
    });
    let graceful = Arc::new(Drain::default());
    let conn_stopped = stopped.clone();
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
                let builders = builders.clone();
                let service = service.clone();
                let watcher = Drain::watcher(&graceful);
                let mut conn_stopped = conn_stopped.clone();
                tokio::spawn(async move {
                    // hyper's protocol detection reads the first bytes with no time limit, so
                    // a client that connects and sends nothing is cut here.
                    let mut first = [0u8; H2_PREFACE.len()];
                    let spoke = tokio::select! {
                        r = tokio::time::timeout(header_timeout, stream.peek(&mut first)) => {
                            match r {
                                Ok(Ok(n)) if n > 0 => Some(n),
                                _ => None,
                            }
                        }
                        _ = conn_stopped.wait_for(|s| *s) => None,
                    };
                    let Some(n) = spoke else {
                        return;
                    };
                    let builder = match sniff(&first[..n]) {
                        Some(Protocol::Http1) => &builders.http1,
                        Some(Protocol::Http2) => &builders.http2,
                        None => &builders.sniff,
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, Drain::shutdown(&graceful))
        .await
        .is_err()
    {
        tracing::warn!("drain grace expired with requests still in flight");
    }
}

/// Graceful shutdown of the data plane's connections: when it begins, each connection is told
/// to finish what is in flight and close; [`Drain::shutdown`] returns when all have.
///
/// hyper-util's `GracefulShutdown` does the same through a `watch` channel whose `changed()`
/// future every connection polls, registering its waker again, on every poll of the
/// connection (several per request: ~450 instructions of a small request's ~77k). Here a
/// connection registers its task's waker once, and on later polls only checks a flag and that
/// it still runs in the same task.
#[derive(Default)]
struct Drain {
    stopping: AtomicBool,
    conns: Mutex<DrainConns>,
    /// Notified when the last connection ends after shutdown has begun.
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct DrainConns {
    /// The waker of each live connection's task (by slot); `None` until first polled.
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
    live: usize,
}

impl Drain {
    /// A slot for one new connection.
    fn watcher(this: &Arc<Self>) -> DrainWatcher {
        let mut c = this.conns.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match c.free.pop() {
            Some(i) => i,
            None => {
                c.wakers.push(None);
                c.wakers.len() - 1
            }
        };
        c.live += 1;
        DrainWatcher {
            drain: this.clone(),
            slot,
        }
    }

    /// Tells every connection to finish and close; returns when all have.
    async fn shutdown(this: &Arc<Self>) {
        this.stopping.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = {
            let mut c = this.conns.lock().unwrap_or_else(|e| e.into_inner());
            c.wakers.iter_mut().filter_map(Option::take).collect()
        };
        wakers.into_iter().for_each(Waker::wake);
        loop {
            let idle = this.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if this.conns.lock().unwrap_or_else(|e| e.into_inner()).live == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// One connection's place in its [`Drain`]; frees it when dropped.
struct DrainWatcher {
    drain: Arc<Drain>,
    slot: usize,
}

impl DrainWatcher {
    fn watch<C: GracefulConnection>(self, conn: C) -> Watched<C> {
        Watched {
            conn,
            watcher: self,
            waker: None,
            shut: false,
        }
    }
}

impl Drop for DrainWatcher {
    fn drop(&mut self) {
        let mut c = self.drain.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.wakers[self.slot] = None;
        c.free.push(self.slot);
        c.live -= 1;
        if c.live == 0 && self.drain.stopping.load(Ordering::SeqCst) {
            self.drain.idle.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection under a [`Drain`].
    struct Watched<C> {
        #[pin]
        conn: C,
        watcher: DrainWatcher,
        // The waker registered for this connection (compared, not locked, on each poll).
        waker: Option<Waker>,
        shut: bool,
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.shut {
            let drain = &this.watcher.drain;
            let mut stopping = drain.stopping.load(Ordering::SeqCst);
            if !stopping && !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                let mut c = drain.conns.lock().unwrap_or_else(|e| e.into_inner());
                // Checked again under the lock: a shutdown that began before it was taken has
                // already woken (and cleared) every registered waker, this one not among them.
                stopping = drain.stopping.load(Ordering::SeqCst);
                if !stopping {
                    c.wakers[this.watcher.slot] = Some(cx.waker().clone());
                    *this.waker = Some(cx.waker().clone());
                }
            }
            if stopping {
                *this.shut = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.poll(cx)
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

/// Raises the soft limit on open files to the hard limit, as servers commonly do at start, and
/// logs the limit in force. Each held stream takes two descriptors (the caller's connection and
/// the upstream's), and container runtimes often start processes at a soft limit of 1,024
/// under a far higher hard limit: 1,000 streams would not fit.
pub fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(limit = n, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
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
                    let body = serde_json::json!({"faults": mock.faults(), "calls": mock.calls()});
                    return Some(json(StatusCode::OK, body));
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
                .filter(|t| t.served.provider == p.name)
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

/// `status=503&every=2&count=3&latency_ms=100&retry_after_secs=2&stall_after_events=3`,
/// `token_interval_ms=200`
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

#[cfg(test)]
mod tests {
    use super::{sniff, Protocol, H2_PREFACE};

    #[test]
    fn the_first_bytes_tell_the_protocol_when_they_can() {
        assert_eq!(sniff(b"POST /v1/chat"), Some(Protocol::Http1));
        assert_eq!(sniff(b"G"), Some(Protocol::Http1));
        assert_eq!(sniff(b"PRX"), Some(Protocol::Http1));
        assert_eq!(sniff(H2_PREFACE), Some(Protocol::Http2));
        // A part of the preface (a slow h2c client, or a lone "P" of POST): hyper-util decides.
        assert_eq!(sniff(b"P"), None);
        assert_eq!(sniff(&H2_PREFACE[..20]), None);
    }
}
