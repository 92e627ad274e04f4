//! The Tower stack, top to bottom: the one place layers are ordered.
//!
//! ```text
//! layer                 inserts                        consumes
//! CatchPanic            -                              -
//! RequestId             x-request-id header (and on    x-request-id header
//!                       the response)
//! ServerSpan            the request's span (current)   traceparent, tracestate headers
//! Surface (http → ir)   ir::Request{op, meta},         x-request-id header,
//!                       meta.caller_key                Reply.headers, Error.headers
//! Usage                 meta.tap (ir::Tap)             meta.tap, Reply (served_by,
//!                                                      upstream_time), settlement
//! Auth                  meta.principal, Arc<KeyPolicy> meta.caller_key, op.model
//! Tap                   team in the Tap                ir::Principal
//! RateLimit             Reply.headers (x-ratelimit),   Principal (key rpm/tpm),
//!                       budget::Prepaid                Arc<KeyPolicy>
//! Budget                - (spend settles on_settle)    Principal, Arc<KeyPolicy>,
//!                                                      budget::Prepaid
//! Route                 meta.plan (ir::Plan)           op.model, ir::RequiredTags
//! Balance               reorders ir::Plan              ir::Plan, TargetStats
//! Tap                   route label in the Tap         ir::Plan
//! Retry (leaf)          ir::Attempt per target         ir::Plan
//!   per target: AttemptTelemetry (client span, attempt metrics, circuit gauge from
//!               TargetStats)
//!               → ProviderLimit (provider rpm/tpm; over it → RateLimited → next target)
//!               → Breaker (publishes TargetStats) → Provider adapter
//! ```
//!
//! Limits and spend live in one [`SharedState`] per stack (memory, or Redis shared by every
//! replica), created here and handed to the layers that need it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::StatusCode;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Config;
use crate::cost::Prices;
use crate::ir::{Error, ErrorKind, Format, ServedBy, Target, TargetStats};
use crate::layer::attempt_telemetry::AttemptTelemetryLayer;
use crate::layer::auth::{AuthLayer, Keys};
use crate::layer::balance::BalanceLayer;
use crate::layer::breaker::BreakerLayer;
use crate::layer::budget::{BudgetLayer, SpendReport};
use crate::layer::ratelimit::{ProviderLimitLayer, RateLimitLayer};
use crate::layer::retry::Retry;
use crate::layer::usage::{TapLayer, UsageLayer};
use crate::provider::Provider;
use crate::route::{Control, RouteLayer, Routes, SharedMakeTarget, SharedRoutes};
use crate::state::{self, SharedState};
use crate::surface::request_id::RequestIdLayer;
use crate::surface::{self, SurfaceLayer};
use crate::telemetry::trace::{self, ServerSpanLayer};

/// Builds the stack of one target. Everything that is per (provider, model) — breaker,
/// provider limits, timeouts — is composed here, innermost last.
fn make_target(
    provider: &Arc<Provider>,
    model: &str,
    limit: &ProviderLimitLayer,
    prices: &Prices,
) -> Target {
    let stats = Arc::new(TargetStats::default());
    let name: Arc<str> = Arc::from(format!("{}/{model}", provider.name));
    let served = Arc::new(ServedBy::new(
        provider.name.clone(),
        Arc::from(model),
        prices.lookup(model),
        Arc::from(trace::gen_ai_provider(provider.kind, &provider.name)),
    ));
    let service = ServiceBuilder::new()
        // Outermost: every attempt is counted and spanned, a limit or breaker refusal included.
        .layer(AttemptTelemetryLayer::new(served.clone(), stats.clone()))
        // The provider account's own rpm/tpm, shared by all its targets: over it, the attempt
        // moves to the next target instead of collecting the provider's 429. Above the
        // breaker, so our own refusals never trip it and a tripped target is not charged.
        .layer(limit.clone())
        // Open circuits fail readiness at once, so retry skips the target without waiting.
        .layer(BreakerLayer::new(
            provider.breaker.clone(),
            stats.clone(),
            name,
        ))
        .service(provider.service());
    Target {
        served,
        service: BoxCloneSyncService::new(service),
        weight: 1,
        tags: Arc::from([]),
        stats,
    }
}

/// The target builder of a config generation: one provider-limit cell per provider account
/// (in `state`), and the config's prices.
pub fn target_maker(config: &Config, state: &SharedState) -> SharedMakeTarget {
    let prefix = &config.state.prefix;
    let limits: HashMap<String, ProviderLimitLayer> = config
        .providers
        .iter()
        .map(|p| {
            let name = p.name.value.clone();
            let l = ProviderLimitLayer::new(state.clone(), prefix, &name, p.rpm, p.tpm);
            (name, l)
        })
        .collect();
    let none = ProviderLimitLayer::new(state.clone(), prefix, "", None, None);
    let prices = Prices::from_config(&config.prices);
    Arc::new(move |provider: &Arc<Provider>, model: &str| {
        let limit = limits.get(&*provider.name).unwrap_or(&none);
        make_target(provider, model, limit, &prices)
    })
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
/// over from the previous one. Provider limits are kept in process here (`switchyard check`);
/// a serving stack uses [`routes_with`] over its own state.
pub fn routes(config: &Config, control: Arc<Control>) -> Result<Routes, Error> {
    let local: SharedState = Arc::new(state::memory::MemoryState::new());
    routes_with(config, control, &target_maker(config, &local))
}

/// Builds the routing table of a config generation with a given target builder (from
/// [`target_maker`] over the stack's [`Stack::state`]).
pub fn routes_with(
    config: &Config,
    control: Arc<Control>,
    make: &SharedMakeTarget,
) -> Result<Routes, Error> {
    Ok(Routes::build(config, providers(config)?, &**make, control))
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
    /// Where limits and spend live (reloads rebuild routes with [`target_maker`] over it).
    pub state: SharedState,
    /// The admin plane's `/spend` report.
    pub spend: SpendReport,
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
    let state = state::build(&config.state).map_err(|e| Error::new(ErrorKind::Internal, e.0))?;
    let prefix = config.state.prefix.as_str();
    let keys = Arc::new(Keys::from_config(&config.keys));
    let make = target_maker(config, &state);
    let prices = Arc::new(Prices::from_config(&config.prices));
    let routes: SharedRoutes =
        Arc::new(ArcSwap::from_pointee(routes_with(config, control, &make)?));
    let budget = BudgetLayer::new(state.clone(), prefix, prices.clone());
    let service = ServiceBuilder::new()
        // A bug in one request answers 500 in the caller's format instead of killing the
        // connection (and every stream multiplexed on it).
        .layer(CatchPanicLayer::custom(panic_response))
        // Every request has an id before anything logs it (a caller's own id is kept), and
        // the caller sees it on the response.
        .layer(RequestIdLayer::default())
        // One span per request, continuing the caller's trace; above the surface so it
        // covers decoding and encoding.
        .layer(ServerSpanLayer)
        // Bytes become IR here, once; replies and errors go back in the caller's format.
        .layer(SurfaceLayer::new(
            config.max_body_bytes,
            std::time::Duration::from_secs_f64(config.body_read_timeout_secs),
        ))
        // Right below the surface: every decoded request is counted once when it settles,
        // rejections by any later layer included.
        .layer(UsageLayer::new(config.telemetry.log_content))
        // Who is calling, before anything is spent on them (401/403 in the caller's format).
        .layer(AuthLayer::new(keys.clone()))
        // Tells the usage layer the caller's team, so a rate-limit or budget refusal below is
        // counted for it.
        .layer(TapLayer::new(routes.clone()))
        // Per-key rpm/tpm against the shared state, in one step with the budget reservation
        // below (one Redis round trip): a request refused by either takes nothing.
        .layer(RateLimitLayer::new(state.clone(), prefix, &keys).with_budget(budget.clone()))
        // Spend: reserved before (above, for a key with limits), debited with the actual cost
        // when the reply settles.
        .layer(budget)
        // The model name becomes a plan of targets (unknown model: 404 before any work).
        .layer(RouteLayer::new(routes.clone(), make))
        // The plan is put in the route's strategy order, unavailable targets left out.
        .layer(BalanceLayer)
        // Just above retry: tells the usage layer the route once the plan is final.
        .layer(TapLayer::new(routes.clone()))
        // Attempts over the plan's targets, each through its own per-target stack.
        .service(Retry::new(config.retry.clone()));
    let spend = SpendReport::new(state.clone(), prefix, keys);
    Ok(Stack {
        service,
        routes,
        state,
        spend,
    })
}
