//! The Tower stack, top to bottom: the one place layers are ordered.
//!
//! ```text
//! layer                 inserts                        consumes
//! CatchPanic            -                              -
//! SetRequestId          x-request-id header            -
//! PropagateRequestId    x-request-id on the response   x-request-id header
//! ServerSpan            the request's span (current)   traceparent, tracestate headers
//! Surface (http → ir)   ir::Request{op, meta}          x-request-id header
//! Usage                 Arc<usage::Tap>                Tap, Reply (served_by, upstream_time,
//!                                                      GenAiProvider), settlement
//! Route                 ir::Plan in meta.extensions    op.model, ir::RequiredTags
//! Balance               reorders ir::Plan              ir::Plan, TargetStats
//! Tap                   route label, team in the Tap   ir::Plan, ir::Principal
//! Retry (leaf)          ir::Attempt per target         ir::Plan
//!   per target: AttemptTelemetry (client span, attempt metrics, circuit gauge from
//!               TargetStats; GenAiProvider in the reply) → Breaker (publishes TargetStats)
//!               → Provider adapter
//! ```

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use http::{HeaderValue, StatusCode};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::config::Config;
use crate::cost::Prices;
use crate::ir::{Error, ErrorKind, Format, Target, TargetStats};
use crate::layer::attempt_telemetry::AttemptTelemetryLayer;
use crate::layer::balance::BalanceLayer;
use crate::layer::breaker::BreakerLayer;
use crate::layer::retry::Retry;
use crate::layer::usage::{TapLayer, UsageLayer};
use crate::provider::Provider;
use crate::route::{Control, RouteLayer, Routes, SharedRoutes};
use crate::surface::{self, SurfaceLayer};
use crate::telemetry::trace::ServerSpanLayer;

/// Builds the stack of one target. Everything that is per (provider, model) — breaker,
/// provider limits, timeouts — is composed here, innermost last.
fn make_target(provider: &Arc<Provider>, model: &str) -> Target {
    let stats = Arc::new(TargetStats::default());
    let name: Arc<str> = Arc::from(format!("{}/{model}", provider.name));
    let service = ServiceBuilder::new()
        // Outermost: every attempt is counted and spanned, a breaker refusal included.
        .layer(AttemptTelemetryLayer::new(
            provider.name.clone(),
            provider.kind,
            Arc::from(model),
            stats.clone(),
        ))
        // Open circuits fail readiness at once, so retry skips the target without waiting.
        .layer(BreakerLayer::new(
            provider.breaker.clone(),
            stats.clone(),
            name,
        ))
        .service(provider.service());
    Target {
        provider: provider.name.clone(),
        model: Arc::from(model),
        service: BoxCloneSyncService::new(service),
        weight: 1,
        tags: Arc::from([]),
        price: prices().lookup(model).map(|p| (p.input + p.output) / 2.0),
        stats,
    }
}

fn prices() -> &'static Prices {
    static PRICES: OnceLock<Prices> = OnceLock::new();
    PRICES.get_or_init(Prices::builtin)
}

/// The providers a config asks for, the built-in mock included when enabled.
pub fn providers(config: &Config) -> Result<Vec<Arc<Provider>>, Error> {
    let mut out = Vec::new();
    for p in &config.providers {
        out.push(Arc::new(Provider::from_config(p)?));
    }
    let mock_on = config.mock.unwrap_or(config.providers.is_empty());
    if mock_on && !out.iter().any(|p| &*p.name == "mock") {
        out.push(Arc::new(Provider::mock()));
    }
    Ok(out)
}

/// Builds the routing table of a config generation; operator overrides in `control` carry
/// over from the previous one.
pub fn routes(config: &Config, control: Arc<Control>) -> Result<Routes, Error> {
    Ok(Routes::build(
        config,
        providers(config)?,
        &make_target,
        control,
    ))
}

/// Request ids: a per-process random prefix and a counter — unique, cheap, and sortable
/// within one sidecar's logs.
#[derive(Clone)]
struct MakeId {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl MakeId {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0)
            ^ std::process::id();
        Self {
            prefix: seed,
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("req_{:08x}{:010x}", self.prefix, n);
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> http::Response<surface::Body> {
    let err = Error::new(
        ErrorKind::Internal,
        "switchyard hit an internal error handling this request",
    );
    tracing::error!("request handler panicked");
    let mut resp = surface::error_response(Format::OpenAi, &err);
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}

/// The built data plane: the service hyper calls, and the routing table reloads swap.
pub struct Stack<S> {
    /// The HTTP service.
    pub service: S,
    /// The routing table, swapped whole on reload.
    pub routes: SharedRoutes,
}

/// Builds the data-plane stack for a validated config.
#[allow(clippy::type_complexity)]
pub fn build(
    config: &Config,
    control: Arc<Control>,
) -> Result<
    Stack<
        impl tower::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<
                    impl http_body::Body<
                            Data = bytes::Bytes,
                            Error = impl Into<tower_http::BoxError>,
                        > + Send
                        + 'static,
                >,
                Error = std::convert::Infallible,
                Future = impl Send,
            > + Clone
            + Send
            + 'static,
    >,
    Error,
> {
    let routes: SharedRoutes = Arc::new(ArcSwap::from_pointee(routes(config, control)?));
    let service = ServiceBuilder::new()
        // A bug in one request answers 500 in the caller's format instead of killing the
        // connection (and every stream multiplexed on it).
        .layer(CatchPanicLayer::custom(panic_response))
        // Every request has an id before anything logs it; a caller's own id is kept.
        .layer(SetRequestIdLayer::x_request_id(MakeId::new()))
        // ...and the caller sees it on the response.
        .layer(PropagateRequestIdLayer::x_request_id())
        // One span per request, continuing the caller's trace; above the surface so it
        // covers decoding and encoding.
        .layer(ServerSpanLayer)
        // Bytes become IR here, once; replies and errors go back in the caller's format.
        .layer(SurfaceLayer::new(config.max_body_bytes))
        // Right below the surface: every decoded request is counted once when it settles,
        // rejections by any later layer included.
        .layer(UsageLayer::new(
            Arc::new(prices().clone()),
            config.telemetry.log_content,
        ))
        // The model name becomes a plan of targets (unknown model: 404 before any work).
        .layer(RouteLayer::new(routes.clone(), Arc::new(make_target)))
        // The plan is put in the route's strategy order, unavailable targets left out.
        .layer(BalanceLayer)
        // Just above retry: tells the usage layer the route and principal once all are known.
        .layer(TapLayer::new(routes.clone()))
        // Attempts over the plan's targets, each through its own per-target stack.
        .service(Retry::new(config.retry.clone()));
    Ok(Stack { service, routes })
}
