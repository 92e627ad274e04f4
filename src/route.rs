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

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use futures_util::future::Either;
use tower::{Layer, Service};

use crate::config::Config;
use crate::ir::{Error, ErrorKind, ModelInfo, Operation, Plan, Reply, ReplyBody, Request, Target};
use crate::provider::Provider;

/// Builds the stack for one target; supplied by `stack.rs`, which owns the per-target layers.
pub type MakeTarget<'a> = &'a dyn Fn(&Arc<Provider>, &str) -> Target;

/// The resolved routing table of one config generation.
pub struct Routes {
    routes: HashMap<String, Plan>,
    providers: Vec<Arc<Provider>>,
    /// Targets built so far, keyed `provider/model`, for direct and bare-name requests.
    direct: HashMap<String, Target>,
    models: Vec<ModelInfo>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Routes {
    /// Builds the table from a validated config and its providers.
    pub fn build(config: &Config, providers: Vec<Arc<Provider>>, make: MakeTarget<'_>) -> Self {
        let by_name: HashMap<&str, &Arc<Provider>> =
            providers.iter().map(|p| (&*p.name, p)).collect();
        let mut direct: HashMap<String, Target> = HashMap::new();
        let mut target = |provider: &Arc<Provider>, model: &str| -> Target {
            let key = format!("{}/{model}", provider.name);
            direct
                .entry(key)
                .or_insert_with(|| make(provider, model))
                .clone()
        };
        let mut routes = HashMap::new();
        let mut models = Vec::new();
        for m in &config.models {
            let targets: Vec<Target> = m
                .targets
                .iter()
                .filter_map(|t| {
                    let (p, model) = t.value.split_once('/')?;
                    Some(target(by_name.get(p)?, model))
                })
                .collect();
            let name = m.name.value.clone();
            models.push(ModelInfo {
                id: name.clone(),
                owned_by: "switchyard".into(),
            });
            routes.insert(
                name.clone(),
                Plan {
                    route: Arc::from(name.as_str()),
                    targets: targets.into(),
                },
            );
        }
        for p in &providers {
            for m in p.listed_models() {
                target(p, m);
                models.push(ModelInfo {
                    id: format!("{}/{m}", p.name),
                    owned_by: p.name.to_string(),
                });
            }
        }
        Self {
            routes,
            providers,
            direct,
            models,
        }
    }

    /// The targets for a model name, best first.
    pub fn resolve(&self, model: &str, make: MakeTarget<'_>) -> Option<Plan> {
        if let Some(plan) = self.routes.get(model) {
            return Some(plan.clone());
        }
        let one = |p: &Arc<Provider>, m: &str| -> Target {
            match self.direct.get(&format!("{}/{m}", p.name)) {
                Some(t) => t.clone(),
                None => make(p, m),
            }
        };
        if let Some((pname, m)) = model.split_once('/') {
            if let Some(p) = self.providers.iter().find(|p| &*p.name == pname) {
                if !m.is_empty() {
                    return Some(Plan {
                        route: Arc::from(model),
                        targets: vec![one(p, m)].into(),
                    });
                }
            }
        }
        let targets: Vec<Target> = self
            .providers
            .iter()
            .filter(|p| p.offers(model))
            .map(|p| one(p, model))
            .collect();
        (!targets.is_empty()).then(|| Plan {
            route: Arc::from(model),
            targets: targets.into(),
        })
    }

    /// Public models: routes, then each provider's listed models as `provider/model`.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Routes and their targets, for `switchyard check` and the admin plane.
    pub fn describe(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = self
            .routes
            .iter()
            .map(|(name, plan)| {
                (
                    name.clone(),
                    plan.targets.iter().map(|t| format!("{t:?}")).collect(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The providers of this generation.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
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
        let Some(plan) = routes.resolve(model, &*self.layer.make) else {
            return Either::Left(std::future::ready(Err(unknown_model(model))));
        };
        if let Operation::CountTokens(chat) = &req.op {
            // No upstream call is needed to estimate; the model is still checked above.
            let n = chat.estimate_input_tokens();
            return Either::Left(std::future::ready(Ok(Reply::local(ReplyBody::TokenCount(
                n,
            )))));
        }
        req.meta.extensions.insert(plan);
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
