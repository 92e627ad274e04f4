//! Model names → the targets that may serve them, and the layer that resolves them.
//!
//! A request names a model three ways, tried in this order:
//! 1. a route from config (`models: [{name: chat-default, targets: [...]}]`);
//! 2. `provider/model`, straight to one provider;
//! 3. a bare model name a provider offers (`gpt-4o-mini` → every provider whose `models`
//!    globs match, in config order).
//!
//! Anything else is a 404 that lists nothing secret. The table is built once per config
//! generation; each distinct target gets its stack (and so its breaker) once, shared by every
//! route that names it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::Either;
use tower::{Layer, Service};

use crate::config::{Config, StrategyConfig};
use crate::ir::{
    Error, ErrorKind, LatencyWindow, ModelInfo, Operation, Plan, Reply, ReplyBody, Request,
    RequiredTags, Strategy, Target,
};
use crate::provider::Provider;

/// Builds the stack for one target; supplied by `stack.rs`, which owns the per-target layers.
pub type MakeTarget<'a> = &'a dyn Fn(&Arc<Provider>, &str) -> Target;

/// Most targets built on demand (for `provider/model` and bare names) kept per generation:
/// model names come from callers, so the cache is bounded.
const DYNAMIC_TARGETS: usize = 1024;

/// Operator overrides that outlive config reloads: drained providers and pinned routes.
#[derive(Debug, Default)]
pub struct Control {
    drained: ArcSwap<HashSet<String>>,
    pins: ArcSwap<HashMap<String, String>>,
}

impl Control {
    /// Drained provider names.
    pub fn drained(&self) -> Arc<HashSet<String>> {
        self.drained.load_full()
    }
    /// Route → pinned `provider/model`.
    pub fn pins(&self) -> Arc<HashMap<String, String>> {
        self.pins.load_full()
    }
    fn set_drained(&self, provider: &str, on: bool) {
        self.drained.rcu(|d| {
            let mut d = (**d).clone();
            if on {
                d.insert(provider.to_owned());
            } else {
                d.remove(provider);
            }
            d
        });
    }
    fn set_pin(&self, route: &str, target: Option<&str>) {
        self.pins.rcu(|p| {
            let mut p = (**p).clone();
            match target {
                Some(t) => p.insert(route.to_owned(), t.to_owned()),
                None => p.remove(route),
            };
            p
        });
    }
}

/// The resolved routing table of one config generation.
pub struct Routes {
    routes: HashMap<String, Plan>,
    order: Vec<String>,
    providers: Vec<Arc<Provider>>,
    /// Targets built at load, keyed `provider/model`; every route naming one shares it (and
    /// so its breaker and latency figures).
    direct: HashMap<String, Target>,
    dynamic: RwLock<HashMap<String, Target>>,
    models: Vec<ModelInfo>,
    control: Arc<Control>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("routes", &self.order)
            .finish_non_exhaustive()
    }
}

fn strategy(s: StrategyConfig) -> Strategy {
    match s {
        StrategyConfig::Fallback => Strategy::Fallback,
        StrategyConfig::Weighted => Strategy::Weighted,
        StrategyConfig::LeastLatency => Strategy::LeastLatency,
        StrategyConfig::Cheapest => Strategy::Cheapest,
        StrategyConfig::Hedge => Strategy::Hedge,
    }
}

fn single(route: &str, targets: Vec<Target>) -> Plan {
    let n = targets.len() as u32;
    Plan {
        route: Arc::from(route),
        targets: targets.into(),
        strategy: Strategy::Fallback,
        max_attempts: n,
        hedge_after: None,
        degrade: None,
        latency: Arc::new(LatencyWindow::default()),
    }
}

impl Routes {
    /// Builds the table from a validated config and its providers.
    pub fn build(
        config: &Config,
        providers: Vec<Arc<Provider>>,
        make: MakeTarget<'_>,
        control: Arc<Control>,
    ) -> Self {
        let by_name: HashMap<&str, &Arc<Provider>> =
            providers.iter().map(|p| (&*p.name, p)).collect();
        let mut direct: HashMap<String, Target> = HashMap::new();
        let mut base = |provider: &Arc<Provider>, model: &str| -> Target {
            let key = format!("{}/{model}", provider.name);
            direct
                .entry(key)
                .or_insert_with(|| make(provider, model))
                .clone()
        };
        let mut routes = HashMap::new();
        let mut order = Vec::new();
        let mut models = Vec::new();
        for m in &config.models {
            let targets: Vec<Target> = m
                .targets
                .iter()
                .filter_map(|t| {
                    let (p, model) = t.value.target().split_once('/')?;
                    let mut target = base(by_name.get(p)?, model);
                    target.weight = t.value.weight();
                    target.tags = t
                        .value
                        .tags()
                        .iter()
                        .map(|s| Arc::from(s.as_str()))
                        .collect();
                    Some(target)
                })
                .collect();
            let name = m.name.value.clone();
            models.push(ModelInfo {
                id: name.clone(),
                owned_by: "switchyard".into(),
            });
            let n = targets.len() as u32;
            let plan = Plan {
                route: Arc::from(name.as_str()),
                targets: targets.into(),
                strategy: strategy(m.strategy),
                max_attempts: m.max_attempts.unwrap_or(n).max(1),
                hedge_after: m.hedge_after_ms.map(Duration::from_millis),
                degrade: None,
                latency: Arc::new(LatencyWindow::default()),
            };
            order.push(name.clone());
            routes.insert(name, plan);
        }
        for m in &config.models {
            if let Some(fb) = &m.fallback_model {
                let targets = routes.get(fb.value.as_str()).map(|p| p.targets.clone());
                if let Some(plan) = routes.get_mut(m.name.value.as_str()) {
                    plan.degrade = targets;
                }
            }
        }
        for p in &providers {
            for m in p.listed_models() {
                base(p, m);
                models.push(ModelInfo {
                    id: format!("{}/{m}", p.name),
                    owned_by: p.name.to_string(),
                });
            }
        }
        let drained = control.drained();
        for t in direct.values() {
            t.stats.set_drained(drained.contains(&*t.served.provider));
        }
        Self {
            routes,
            order,
            providers,
            direct,
            dynamic: RwLock::new(HashMap::new()),
            models,
            control,
        }
    }

    /// A target outside any route, shared across requests (bounded cache).
    fn target(&self, p: &Arc<Provider>, m: &str, make: MakeTarget<'_>) -> Target {
        let key = format!("{}/{m}", p.name);
        if let Some(t) = self.direct.get(&key) {
            return t.clone();
        }
        if let Some(t) = self.dynamic.read().ok().and_then(|d| d.get(&key).cloned()) {
            return t;
        }
        let t = make(p, m);
        t.stats
            .set_drained(self.control.drained().contains(&*p.name));
        if let Ok(mut d) = self.dynamic.write() {
            if d.len() < DYNAMIC_TARGETS {
                d.entry(key).or_insert_with(|| t.clone());
            }
        }
        t
    }

    /// The targets for a model name, best first, with operator pins applied and required
    /// tags filtered.
    pub fn resolve(
        &self,
        model: &str,
        tags: Option<&RequiredTags>,
        make: MakeTarget<'_>,
    ) -> Result<Plan, Error> {
        let mut plan = self.plan(model, make).ok_or_else(|| unknown_model(model))?;
        if let Some(pinned) = self.control.pins().get(&*plan.route) {
            if let Some(t) = plan.targets.iter().find(|t| t.name() == *pinned) {
                plan.targets = vec![t.clone()].into();
                plan.degrade = None;
            }
        }
        if let Some(RequiredTags(want)) = tags {
            let keep = |t: &Target| want.iter().all(|w| t.tags.iter().any(|h| **h == **w));
            let targets: Vec<Target> = plan.targets.iter().filter(|t| keep(t)).cloned().collect();
            if targets.is_empty() {
                return Err(Error::invalid(format!(
                    "no target of model '{model}' has the tags {}",
                    want.join(", ")
                ))
                .with_param("x-switchyard-tags"));
            }
            plan.targets = targets.into();
            plan.degrade = plan.degrade.map(|d| {
                d.iter()
                    .filter(|t| keep(t))
                    .cloned()
                    .collect::<Vec<_>>()
                    .into()
            });
        }
        Ok(plan)
    }

    fn plan(&self, model: &str, make: MakeTarget<'_>) -> Option<Plan> {
        if let Some(plan) = self.routes.get(model) {
            return Some(plan.clone());
        }
        if let Some((pname, m)) = model.split_once('/') {
            if let Some(p) = self.providers.iter().find(|p| &*p.name == pname) {
                if !m.is_empty() {
                    return Some(single(model, vec![self.target(p, m, make)]));
                }
            }
        }
        let targets: Vec<Target> = self
            .providers
            .iter()
            .filter(|p| p.offers(model))
            .map(|p| self.target(p, model, make))
            .collect();
        (!targets.is_empty()).then(|| single(model, targets))
    }

    /// Public models: routes, then each provider's listed models as `provider/model`.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Routes and their targets, in config order.
    pub fn describe(&self) -> Vec<(String, Vec<String>)> {
        self.order
            .iter()
            .filter_map(|name| {
                let plan = self.routes.get(name)?;
                Some((
                    name.clone(),
                    plan.targets.iter().map(Target::name).collect(),
                ))
            })
            .collect()
    }

    /// Every route's plan, in config order.
    pub fn plans(&self) -> impl Iterator<Item = &Plan> {
        self.order.iter().filter_map(|n| self.routes.get(n))
    }

    /// Every target built so far (routes' and on-demand ones).
    pub fn targets(&self) -> Vec<Target> {
        let mut out: Vec<Target> = self.direct.values().cloned().collect();
        if let Ok(d) = self.dynamic.read() {
            out.extend(d.values().cloned());
        }
        out.sort_by_key(Target::name);
        out
    }

    /// Drained provider names.
    pub fn drained(&self) -> Arc<HashSet<String>> {
        self.control.drained()
    }

    /// Route → pinned target.
    pub fn pins(&self) -> Arc<HashMap<String, String>> {
        self.control.pins()
    }

    /// The providers of this generation.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// Drains (or undrains) a provider: no new traffic; in-flight requests finish. Survives
    /// reloads. Errors when no such provider exists.
    pub fn drain(&self, provider: &str, on: bool) -> Result<(), Error> {
        if !self.providers.iter().any(|p| &*p.name == provider) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no provider '{provider}'"),
            ));
        }
        self.control.set_drained(provider, on);
        for t in self.targets() {
            if &*t.served.provider == provider {
                t.stats.set_drained(on);
            }
        }
        Ok(())
    }

    /// Pins a route to one of its targets (or unpins it with `None`). Survives reloads.
    pub fn pin(&self, route: &str, target: Option<&str>) -> Result<(), Error> {
        let plan = self
            .routes
            .get(route)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no route '{route}'")))?;
        if let Some(t) = target {
            if !plan.targets.iter().any(|x| x.name() == t) {
                return Err(Error::invalid(format!(
                    "route '{route}' has no target '{t}'"
                )));
            }
        }
        self.control.set_pin(route, target);
        Ok(())
    }
}

/// A target builder shared by the route layer.
pub type SharedMakeTarget = Arc<dyn Fn(&Arc<Provider>, &str) -> Target + Send + Sync>;

/// The routing table as the data plane sees it: swapped whole on config reload.
pub type SharedRoutes = Arc<ArcSwap<Routes>>;

/// Resolves the request's model into a [`Plan`]; answers `ListModels` and `CountTokens`
/// itself.
#[derive(Clone)]
pub struct RouteLayer {
    routes: SharedRoutes,
    make: SharedMakeTarget,
}

impl RouteLayer {
    /// A layer over a shared table; `make` builds targets for names not prebuilt.
    pub fn new(routes: SharedRoutes, make: SharedMakeTarget) -> Self {
        Self { routes, make }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;
    fn layer(&self, inner: S) -> Route<S> {
        Route {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`RouteLayer`].
#[derive(Clone)]
pub struct Route<S> {
    inner: S,
    layer: RouteLayer,
}

/// The model is not served here: a 404 in the caller's format, naming only the model.
fn unknown_model(model: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("The model '{model}' does not exist or is not served by this gateway"),
    )
    .with_param("model")
}

impl<S> Service<Request> for Route<S>
where
    S: Service<Request, Response = Reply, Error = Error>,
{
    type Response = Reply;
    type Error = Error;
    type Future = Either<std::future::Ready<Result<Reply, Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let routes = self.layer.routes.load();
        let model = match &req.op {
            Operation::ListModels => {
                let models = routes.models().to_vec();
                return Either::Left(std::future::ready(Ok(Reply::local(ReplyBody::Models(
                    models,
                )))));
            }
            op => op.model().unwrap_or_default(),
        };
        let tags = req.meta.extensions.get::<RequiredTags>();
        let plan = match routes.resolve(model, tags, &*self.layer.make) {
            Ok(plan) => plan,
            Err(e) => return Either::Left(std::future::ready(Err(e))),
        };
        if let Operation::CountTokens(chat) = &req.op {
            // No upstream call is needed to estimate; the model is still checked above.
            let n = chat.estimate_input_tokens();
            return Either::Left(std::future::ready(Ok(Reply::local(ReplyBody::TokenCount(
                n,
            )))));
        }
        req.meta.plan = Some(plan);
        Either::Right(self.inner.call(req))
    }
}

/// A human-readable summary of what a config serves: providers, routes and their targets.
pub fn describe_text(config: &Config, routes: &Routes) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "providers:");
    for p in routes.providers() {
        let key = config
            .providers
            .iter()
            .find(|c| c.name.value == *p.name)
            .and_then(|c| c.api_key.as_ref())
            .map(|k| format!(" key={}", k.source()))
            .unwrap_or_default();
        let _ = writeln!(out, "  {} ({}){key}", p.name, p.kind);
    }
    let _ = writeln!(out, "models:");
    for (name, targets) in routes.describe() {
        let _ = writeln!(out, "  {name} -> {}", targets.join(", "));
    }
    for p in routes.providers() {
        for m in p.listed_models() {
            let _ = writeln!(out, "  {}/{m}", p.name);
        }
    }
    out
}
