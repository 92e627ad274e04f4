//! Usage: every request that decoded is counted once, when it settles — metrics, one log
//! line, and the GenAI attributes of its server span.
//!
//! [`UsageLayer`] sits right below the surface, so it sees every decoded request, rejections by
//! later layers included (unknown model, rate limits, budgets). It learns what those layers
//! decided through a [`Tap`] it puts in the request's extensions and [`TapLayer`] fills in just
//! above retry, where the principal and the plan are known. A reply is settled through
//! [`Reply::on_settle`]: at once for JSON, at the end of a stream, or when the caller hangs up
//! (then counted with status 499).

use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use futures_util::Stream;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::ir::{
    Error, ErrorKind, EventStream, FinishReason, Operation, Price, Reply, ReplyBody, Request, Role,
    Settlement, StreamEvent, Tap, Usage,
};
use crate::route::SharedRoutes;
use crate::telemetry::logs;
use crate::telemetry::metrics::{self, SeriesKey};
use crate::telemetry::trace::{int, ServerSpanRef, TraceIdHex};

static UNKNOWN: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(metrics::UNKNOWN));
static NONE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(metrics::NONE));
static DEFAULT_TEAM: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(metrics::DEFAULT_TEAM));
static DIRECT: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("direct"));

/// Records the route label and the principal into the request's [`Tap`]. Sits just above
/// retry, where every earlier layer has put what it decided into the extensions.
#[derive(Clone)]
pub struct TapLayer {
    routes: SharedRoutes,
}

impl TapLayer {
    /// A tap that bounds route labels by the live routing table.
    pub fn new(routes: SharedRoutes) -> Self {
        Self { routes }
    }
}

impl<S> Layer<S> for TapLayer {
    type Service = TapService<S>;
    fn layer(&self, inner: S) -> TapService<S> {
        TapService {
            inner,
            routes: self.routes.clone(),
        }
    }
}

/// See [`TapLayer`].
#[derive(Clone)]
pub struct TapService<S> {
    inner: S,
    routes: SharedRoutes,
}

impl<S: Service<Request>> Service<Request> for TapService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> S::Future {
        if let Some(tap) = &req.meta.tap {
            if let Some(plan) = &req.meta.plan {
                // Route names from config and the models providers list are bounded; any other
                // name a caller typed (`openai/whatever`, a glob match) is labelled `direct`,
                // its provider and model labels coming from the target that serves it.
                tap.set_route(|| {
                    let routes = self.routes.load();
                    let known = routes.models().iter().any(|m| *m.id == *plan.route);
                    if known {
                        plan.route.clone()
                    } else {
                        DIRECT.clone()
                    }
                });
            }
            if let Some(p) = &req.meta.principal {
                tap.set_principal(&p.team, &p.key_name);
            }
        }
        self.inner.call(req)
    }
}

/// Counts, logs and annotates every request once it settles.
#[derive(Clone)]
pub struct UsageLayer {
    log_content: bool,
}

impl UsageLayer {
    /// A usage layer; `log_content` adds prompts and completions to the log line. Replies
    /// are priced by the target that served them ([`crate::ir::ServedBy::price`]).
    pub fn new(log_content: bool) -> Self {
        Self { log_content }
    }
}

impl<S> Layer<S> for UsageLayer {
    type Service = UsageService<S>;
    fn layer(&self, inner: S) -> UsageService<S> {
        UsageService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`UsageLayer`].
#[derive(Clone)]
pub struct UsageService<S> {
    inner: S,
    layer: UsageLayer,
}

impl<S> Service<Request> for UsageService<S>
where
    S: Service<Request, Response = Reply, Error = Error>,
{
    type Response = Reply;
    type Error = Error;
    type Future = UsageFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let tap = Arc::new(Tap::default());
        req.meta.tap = Some(tap.clone());
        let op = req.op.name();
        // The server span, taken from the request: attempts below need only its context.
        let span = req.meta.extensions.remove::<ServerSpanRef>();
        if let Some(span) = &span {
            req.meta.extensions.insert(span.parent());
            let model = req.op.model().unwrap_or_default();
            span.with(|s| {
                s.set("gen_ai.operation.name", op);
                s.set("gen_ai.request.model", model.to_owned());
                // GenAI convention: `{operation} {request model}`.
                s.rename(if model.is_empty() {
                    op.to_owned()
                } else {
                    format!("{op} {model}")
                });
            });
        }
        let stream = req.op.is_stream();
        let estimated_input = match &req.op {
            // Only needed if a stream is cut before the upstream reports usage.
            Operation::Chat(c) if stream => c.estimate_input_tokens(),
            _ => 0,
        };
        let prompt = self.layer.log_content.then(|| prompt_text(&req.op));
        metrics::inflight().inc();
        let rec = Recorder {
            tap,
            span,
            received_at: req.meta.received_at,
            request_id: req.meta.request_id.clone(),
            operation: op,
            stream,
            estimated_input,
            prompt,
            log_content: self.layer.log_content,
            done: false,
        };
        UsageFuture {
            inner: self.inner.call(req),
            rec: Some(rec),
        }
    }
}

pin_project! {
    /// The response future of [`UsageService`].
    pub struct UsageFuture<F> {
        #[pin]
        inner: F,
        rec: Option<Recorder>,
    }
}

impl<F> std::future::Future for UsageFuture<F>
where
    F: std::future::Future<Output = Result<Reply, Error>>,
{
    type Output = Result<Reply, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(rec) = this.rec.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(match result {
            Ok(reply) => Ok(rec.on_reply(reply)),
            Err(e) => {
                rec.on_error(&e);
                Err(e)
            }
        })
    }
}

/// What a stream showed on its way to the caller (only watched when a span or the content
/// log needs it).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) finish: Vec<&'static str>,
    pub(crate) model: Option<String>,
    pub(crate) text: Option<String>,
}

/// Wraps a stream so that its finish reasons, model and (optionally) text are recorded.
pub(crate) fn watch(stream: EventStream, keep_text: bool) -> (EventStream, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen {
        text: keep_text.then(String::new),
        ..Seen::default()
    }));
    let watched = Watched {
        inner: stream,
        seen: seen.clone(),
    };
    (Box::pin(watched), seen)
}

struct Watched {
    inner: EventStream,
    seen: Arc<Mutex<Seen>>,
}

impl Stream for Watched {
    type Item = Result<StreamEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(self.inner.as_mut().poll_next(cx));
        if let Some(Ok(ev)) = &item {
            // Held for a field update, never across an await.
            if let Ok(mut seen) = self.seen.lock() {
                ev.for_each(|ev| match ev {
                    StreamEvent::Start { model, .. } => seen.model = Some(model.clone()),
                    StreamEvent::Finish { reason, .. } => seen.finish.push(finish_str(reason)),
                    StreamEvent::TextDelta { text, .. } => {
                        if let Some(t) = &mut seen.text {
                            t.push_str(text);
                        }
                    }
                    _ => {}
                });
            }
        }
        Poll::Ready(item)
    }
}

/// The semantic conventions' finish reason names.
pub(crate) fn finish_str(r: &FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(_) => "other",
    }
}

fn prompt_text(op: &Operation) -> String {
    match op {
        Operation::Chat(c) | Operation::CountTokens(c) => {
            let mut out = String::new();
            for m in &c.messages {
                if !out.is_empty() {
                    out.push('\n');
                }
                let role = match m.role {
                    Role::System => "system",
                    Role::Developer => "developer",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::Tool => "tool",
                };
                out.push_str(role);
                out.push_str(": ");
                out.push_str(&m.joined_text());
            }
            out
        }
        Operation::Embeddings(e) => e.input.to_string(),
        Operation::ListModels => String::new(),
    }
}

/// One request's bookkeeping, from call to settlement. Dropped unsettled (the caller went
/// away before the reply head) it records the request as cancelled.
pub struct Recorder {
    tap: Arc<Tap>,
    span: Option<ServerSpanRef>,
    received_at: Instant,
    request_id: Arc<str>,
    operation: &'static str,
    stream: bool,
    estimated_input: u64,
    prompt: Option<String>,
    log_content: bool,
    done: bool,
}

/// How a request ended, as the recorder saw it.
struct Outcome<'a> {
    status: u16,
    provider: Option<Arc<str>>,
    model: Option<Arc<str>>,
    price: Option<Price>,
    gen_ai_provider: Option<Arc<str>>,
    attempts: u32,
    usage: Option<Usage>,
    usage_estimated: bool,
    first_event_at: Option<Instant>,
    ended_at: Instant,
    error: Option<ErrorKind>,
    local: bool,
    response_model: Option<&'a str>,
    finish: &'a [&'static str],
    completion: Option<&'a str>,
}

impl Recorder {
    fn on_reply(self, mut reply: Reply) -> Reply {
        let now = Instant::now();
        metrics::overhead().observe(
            now.saturating_duration_since(self.received_at)
                .saturating_sub(reply.upstream_time)
                .as_secs_f64(),
        );
        let served = reply.served_by.clone();
        let attempts = reply.attempts;
        let gen_ai = served.as_ref().map(|s| s.gen_ai_provider.clone());
        let watch_stream = self.span.is_some() || self.log_content;
        let mut seen = None;
        let mut json: Option<(String, Vec<&'static str>, Option<String>)> = None;
        match &mut reply.body {
            ReplyBody::Stream(s) if watch_stream => {
                let inner = std::mem::replace(s, Box::pin(futures_util::stream::empty()));
                let (w, sn) = watch(inner, self.log_content);
                *s = w;
                seen = Some(sn);
            }
            ReplyBody::Chat(c) if watch_stream => {
                let finish = c
                    .choices
                    .iter()
                    .filter_map(|ch| ch.finish_reason.as_ref().map(finish_str))
                    .collect();
                let text = self.log_content.then(|| {
                    c.choices
                        .iter()
                        .map(|ch| ch.message.joined_text())
                        .collect::<Vec<_>>()
                        .join("\n")
                });
                json = Some((c.model.clone(), finish, text));
            }
            ReplyBody::Embeddings(e) if watch_stream => {
                json = Some((e.model.clone(), Vec::new(), None));
            }
            _ => {}
        }
        reply.on_settle(move |s: &Settlement| {
            let status = match (s.completed, s.error) {
                (true, _) => 200,
                (false, Some(kind)) => kind.default_status(),
                // The caller hung up mid-stream (nginx's 499).
                (false, None) => 499,
            };
            let (usage, estimated) = match s.usage {
                Some(u) => (Some(u), false),
                None if self.stream && s.streamed_bytes > 0 => (
                    Some(Usage {
                        input_tokens: self.estimated_input,
                        output_tokens: s.streamed_bytes.div_ceil(4),
                        ..Usage::default()
                    }),
                    true,
                ),
                None => (None, false),
            };
            let seen = seen.as_ref().and_then(|s| s.lock().ok());
            let (response_model, finish, completion) = match (&json, &seen) {
                (Some((m, f, t)), _) => (Some(m.as_str()), f.as_slice(), t.as_deref()),
                (None, Some(s)) => (s.model.as_deref(), s.finish.as_slice(), s.text.as_deref()),
                (None, None) => (None, &[][..], None),
            };
            self.finish(Outcome {
                status,
                provider: served.as_ref().map(|s| s.provider.clone()),
                model: served.as_ref().map(|s| s.model.clone()),
                price: served.as_ref().and_then(|s| s.price),
                gen_ai_provider: gen_ai,
                attempts,
                usage,
                usage_estimated: estimated,
                first_event_at: s.first_event_at,
                ended_at: s.ended_at,
                error: s.error,
                local: served.is_none(),
                response_model,
                finish,
                completion,
            });
        })
    }

    fn on_error(self, e: &Error) {
        let now = Instant::now();
        if e.provider.is_none() {
            // Answered by switchyard itself: all of the time was ours.
            metrics::overhead().observe(
                now.saturating_duration_since(self.received_at)
                    .as_secs_f64(),
            );
        }
        self.finish(Outcome {
            status: e.status,
            provider: e.provider.clone(),
            model: None,
            price: None,
            gen_ai_provider: None,
            attempts: 0,
            usage: None,
            usage_estimated: false,
            first_event_at: None,
            ended_at: now,
            error: Some(e.kind),
            local: e.provider.is_none(),
            response_model: None,
            finish: &[],
            completion: None,
        });
    }

    fn finish(mut self, o: Outcome<'_>) {
        self.done = true;
        self.record(&o);
    }

    fn record(&self, o: &Outcome<'_>) {
        metrics::inflight().dec();
        let tapped = self.tap.take();
        let route = tapped.route.unwrap_or_else(|| UNKNOWN.clone());
        let team = tapped.team.unwrap_or_else(|| DEFAULT_TEAM.clone());
        let key = SeriesKey {
            route,
            provider: o.provider.clone().unwrap_or_else(|| NONE.clone()),
            model: o.model.clone().unwrap_or_else(|| NONE.clone()),
            team,
            class: metrics::status_class(o.status),
        };
        let series = metrics::series(&key);
        series.requests.inc();
        let total = o.ended_at.saturating_duration_since(self.received_at);
        series.duration.observe(total.as_secs_f64());
        let ttft = o
            .first_event_at
            .filter(|_| self.stream)
            .map(|t| t.saturating_duration_since(self.received_at));
        if let Some(t) = ttft {
            series.ttft.observe(t.as_secs_f64());
        }
        let mut cost = None;
        if let Some(u) = &o.usage {
            series.input_tokens.inc_by(u.input_tokens);
            series.output_tokens.inc_by(u.output_tokens);
            series.cached_tokens.inc_by(u.cached_input_tokens);
            cost = o.price.map(|p| p.usd(u));
            if let Some(c) = cost.filter(|c| *c > 0.0) {
                series.cost.inc_by(c);
            }
        }
        if o.error == Some(ErrorKind::RateLimited) && o.local {
            metrics::ratelimit_rejected(&key.team);
        }
        let trace_id = self.span.as_ref().and_then(ServerSpanRef::trace_id);
        logs::access(&logs::AccessLine {
            request_id: &self.request_id,
            operation: self.operation,
            route: &key.route,
            provider: &key.provider,
            model: &key.model,
            team: &key.team,
            key: tapped.key.as_deref(),
            attempts: o.attempts,
            status: o.status,
            error: o.error.map(ErrorKind::as_str),
            stream: self.stream,
            latency_ms: total.as_secs_f64() * 1000.0,
            ttft_ms: ttft.map(|t| t.as_secs_f64() * 1000.0),
            input_tokens: o.usage.map(|u| u.input_tokens),
            output_tokens: o.usage.map(|u| u.output_tokens),
            cached_tokens: o.usage.map(|u| u.cached_input_tokens),
            usage_estimated: o.usage_estimated,
            cost_usd: cost,
            trace_id: trace_id.as_ref().map(TraceIdHex::as_str),
            prompt: self.prompt.as_deref(),
            completion: o.completion,
        });
        let Some(span) = &self.span else {
            return;
        };
        span.with(|s| {
            s.set("switchyard.route", key.route.clone());
            s.set("switchyard.attempts", i64::from(o.attempts));
            s.set("http.response.status_code", i64::from(o.status));
            if let Some(p) = &o.gen_ai_provider {
                s.set("gen_ai.provider.name", p.clone());
            }
            if let Some(m) = o.response_model {
                s.set("gen_ai.response.model", m.to_owned());
            }
            if let Some(u) = &o.usage {
                s.set("gen_ai.usage.input_tokens", int(u.input_tokens));
                s.set("gen_ai.usage.output_tokens", int(u.output_tokens));
            }
            s.finish_reasons(o.finish);
            if let Some(kind) = o.error {
                s.set("error.type", kind.as_str());
            } else if o.status == 499 {
                s.set("error.type", "cancelled");
            }
            if o.status >= 500 {
                s.fail_status();
            }
        });
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            // The caller went away before the reply head: nothing was served.
            self.record(&Outcome {
                status: 499,
                provider: None,
                model: None,
                price: None,
                gen_ai_provider: None,
                attempts: 0,
                usage: None,
                usage_estimated: false,
                first_event_at: None,
                ended_at: Instant::now(),
                error: None,
                local: false,
                response_model: None,
                finish: &[],
                completion: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ir::{Format, Meta, Plan, Principal};
    use arc_swap::ArcSwap;
    use tower::util::MapRequestLayer;
    use tower::ServiceExt;

    fn request(model: &str) -> Request {
        Request {
            op: Operation::Chat(Box::new(crate::ir::ChatRequest::new(model, Format::OpenAi))),
            meta: Meta::new(Arc::from("req-test"), Format::OpenAi),
        }
    }

    fn team(name: &'static str) -> MapRequestLayer<impl Fn(Request) -> Request + Clone> {
        MapRequestLayer::new(move |mut r: Request| {
            r.meta.principal = Some(Principal {
                key_name: Arc::from("k"),
                team: Arc::from(name),
            });
            r
        })
    }

    fn routes() -> SharedRoutes {
        let config = Config::default();
        Arc::new(ArcSwap::from_pointee(
            crate::stack::routes(&config, Default::default()).unwrap(),
        ))
    }

    fn usage() -> UsageLayer {
        UsageLayer::new(false)
    }

    #[tokio::test]
    async fn a_local_rate_limit_is_counted_for_the_callers_team() {
        let svc = tower::ServiceBuilder::new()
            .layer(usage())
            .layer(team("t-ratelimited"))
            .layer(TapLayer::new(routes()))
            .service(tower::service_fn(|_: Request| async {
                Err::<Reply, _>(Error::new(ErrorKind::RateLimited, "slow down"))
            }));
        let err = svc.oneshot(request("mock/echo")).await.unwrap_err();
        assert_eq!(err.status, 429);
        let text = metrics::render();
        assert!(
            text.contains(r#"switchyard_ratelimit_rejections_total{key_team="t-ratelimited"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"switchyard_requests_total{key_team="t-ratelimited",model="none",provider="none",route="unknown",status_class="4xx"} 1"#
        ));
    }

    #[tokio::test]
    async fn an_upstream_429_is_not_a_local_rejection() {
        let svc = tower::ServiceBuilder::new()
            .layer(usage())
            .layer(team("t-upstream429"))
            .service(tower::service_fn(|_: Request| async {
                Err::<Reply, _>(
                    Error::new(ErrorKind::RateLimited, "upstream says slow down")
                        .with_provider(Arc::from("p")),
                )
            }));
        let _ = svc.oneshot(request("mock/echo")).await;
        let text = metrics::render();
        assert!(
            !text.contains(r#"switchyard_ratelimit_rejections_total{key_team="t-upstream429"}"#)
        );
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_before_the_reply_is_counted_as_499() {
        let svc = tower::ServiceBuilder::new()
            .layer(usage())
            .layer(team("t-hangup"))
            .layer(TapLayer::new(routes()))
            .service(tower::service_fn(|_: Request| {
                std::future::pending::<Result<Reply, Error>>()
            }));
        let fut = svc.oneshot(request("mock/echo"));
        // Polled once (the request is in flight), then dropped.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), fut).await;
        let text = metrics::render();
        assert!(
            text.contains(
                r#"switchyard_requests_total{key_team="t-hangup",model="none",provider="none",route="unknown",status_class="4xx"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn route_labels_are_bounded_by_the_routing_table() {
        let tap = Arc::new(Tap::default());
        let mut req = request("x");
        req.meta.tap = Some(tap.clone());
        req.meta.plan = Some(Plan {
            route: Arc::from("mock/some-model-a-caller-made-up"),
            targets: Vec::new().into(),
            strategy: Default::default(),
            max_attempts: 1,
            hedge_after: None,
            degrade: None,
            latency: Default::default(),
        });
        let mut svc = TapLayer::new(routes()).layer(tower::service_fn(|_: Request| async {
            Ok::<_, Error>(Reply::local(ReplyBody::TokenCount(0)))
        }));
        drop(svc.call(req));
        assert_eq!(tap.get().route.as_deref(), Some("direct"));
    }
}
