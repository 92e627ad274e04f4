//! Requests and tokens per minute (GCRA), per caller key and per provider account.
//!
//! Admission is decided by the shared state (`state/`) in one atomic step over the request cell
//! and the token cell — against Redis when configured, so every replica sees the same cells
//! (never a local copy that would let N replicas admit N × the limit). A key that also has a
//! budget gets its budget reservation in that same step ([`RateLimitLayer::with_budget`]). Tokens are estimated
//! before the call (input estimate plus the capped `max_tokens`) and reconciled with the
//! upstream's actual usage when the reply settles (streams included, at end or drop).
//!
//! - [`RateLimitLayer`] sits after auth: consumes `Principal`; a rejection is a 429 with
//!   `Retry-After` and OpenAI's `x-ratelimit-*` headers; admitted replies carry the same
//!   headers ([`Reply::headers`]).
//! - [`ProviderLimitLayer`] sits in each target's stack: a provider account over its own limit
//!   answers `RateLimited` at once, which the retry layer treats as "try the next target", so
//!   traffic spills over instead of collecting the provider's 429s.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either};
use http::{HeaderName, HeaderValue};
use tower::{Layer, Service};

use crate::ir::{
    Attempt, Error, ErrorKind, Operation, Reply, ReplyBody, Request, Settlement, Usage,
};
use crate::layer::auth::Keys;
use crate::layer::budget::{BudgetLayer, Prepaid, Reservation};
use crate::state::{Decision, Settle, SharedState, Take};

/// Output tokens assumed for a request without `max_tokens`, before its usage is known.
const DEFAULT_OUTPUT_ESTIMATE: u64 = 256;
/// The most output tokens charged up front per choice; the rest is reconciled afterwards, so a
/// large `max_tokens` does not lock a caller out of a small TPM allowance.
const MAX_OUTPUT_ESTIMATE: u64 = 1024;

/// Tokens a request is expected to use, before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenEstimate {
    /// Estimated input tokens.
    pub input: u64,
    /// Output tokens charged up front (capped).
    pub output: u64,
}

impl TokenEstimate {
    /// The estimate for an operation.
    pub fn of(op: &Operation) -> Self {
        match op {
            Operation::Chat(c) => {
                let per_choice = c
                    .max_tokens
                    .map_or(DEFAULT_OUTPUT_ESTIMATE, u64::from)
                    .min(MAX_OUTPUT_ESTIMATE);
                Self {
                    input: c.estimate_input_tokens(),
                    output: per_choice * u64::from(c.n.unwrap_or(1).max(1)),
                }
            }
            Operation::Embeddings(e) => Self {
                input: (e.input.to_string().len() as u64).div_ceil(4),
                output: 0,
            },
            Operation::CountTokens(_) | Operation::ListModels => Self::default(),
        }
    }

    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input + self.output
    }

    /// The usage to account for a settled reply: the upstream's when it reported one;
    /// otherwise the input estimate plus the output actually produced (streamed bytes / 4 for
    /// a stream — an aborted stream is charged for what it produced — or `json_output`).
    pub fn settle(&self, s: &Settlement, is_stream: bool, json_output: u64) -> Usage {
        s.usage.unwrap_or(Usage {
            input_tokens: self.input,
            output_tokens: if is_stream {
                s.streamed_bytes.div_ceil(4)
            } else {
                json_output
            },
            ..Usage::default()
        })
    }
}

/// Output tokens of a complete chat reply that carries no usage (text bytes / 4).
pub fn json_output_estimate(reply: &Reply) -> u64 {
    match &reply.body {
        ReplyBody::Chat(c) if c.usage.is_none() => {
            let bytes: usize = c
                .choices
                .iter()
                .map(|ch| {
                    ch.message.joined_text().len()
                        + ch.message
                            .tool_calls
                            .iter()
                            .map(|t| t.arguments.len())
                            .sum::<usize>()
                })
                .sum();
            (bytes as u64).div_ceil(4)
        }
        _ => 0,
    }
}

/// The request and token cells of one principal or provider account.
#[derive(Clone)]
pub struct Limiter {
    state: SharedState,
    /// What is limited, for messages: `key 'team-a'`, `provider 'primary'`.
    subject: String,
    rpm: Option<(String, u64)>,
    tpm: Option<(String, u64)>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("subject", &self.subject)
            .field("rpm", &self.rpm)
            .field("tpm", &self.tpm)
            .finish()
    }
}

/// What an admission took, to reconcile and to report.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Tokens charged up front.
    pub tokens: u64,
    /// `x-ratelimit-*` headers describing the cells after the take.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Limiter {
    /// Cells `{prefix:scope:name}:rpm` and `:tpm` (one hash tag: one Redis Cluster slot).
    /// `None` when neither limit is set.
    pub fn new(
        state: SharedState,
        prefix: &str,
        scope: &str,
        name: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> Option<Self> {
        if rpm.is_none() && tpm.is_none() {
            return None;
        }
        let cell = |what: &str| format!("{{{prefix}:{scope}:{name}}}:{what}");
        let subject = match scope {
            "p" => format!("provider '{name}'"),
            _ => format!("key '{name}'"),
        };
        Some(Self {
            state,
            subject,
            rpm: rpm.map(|l| (cell("rpm"), l)),
            tpm: tpm.map(|l| (cell("tpm"), l)),
        })
    }

    /// Takes one request and `tokens` tokens, or refuses with a 429 naming the limit.
    pub async fn admit(&self, tokens: u64) -> Result<Admitted, Error> {
        let (tokens, takes) = self.takes(tokens);
        let decisions = self.state.admit(takes).await;
        self.decide(tokens, &decisions)
    }

    /// [`Self::admit`] and a budget reservation in one step of the shared state (one round
    /// trip): both are made or neither. `Ok` only when both were; a refusal of the reservation
    /// is the budget's 429.
    pub async fn admit_reserving(
        &self,
        tokens: u64,
        reservation: &Reservation,
    ) -> Result<Admitted, Error> {
        let (tokens, takes) = self.takes(tokens);
        let (decisions, reserved) = self
            .state
            .admit_reserving(takes, reservation.counters.clone(), reservation.amount)
            .await;
        let admitted = self.decide(tokens, &decisions)?;
        reservation.refusal(&reserved).map_or(Ok(admitted), Err)
    }

    /// The takes of one request of `tokens` tokens, and the tokens charged.
    fn takes(&self, tokens: u64) -> (u64, Vec<Take>) {
        let mut tokens = tokens;
        let mut takes = Vec::with_capacity(2);
        if let Some((key, limit)) = &self.rpm {
            takes.push(Take {
                key: key.clone(),
                limit: *limit,
                cost: 1,
            });
        }
        if let Some((key, limit)) = &self.tpm {
            // A request larger than the whole allowance takes all of it rather than never
            // fitting; reconciliation charges the rest.
            tokens = tokens.min(*limit);
            takes.push(Take {
                key: key.clone(),
                limit: *limit,
                cost: tokens as i64,
            });
        }
        (tokens, takes)
    }

    /// The admission, or the 429 naming the limit, from the cells' decisions.
    fn decide(&self, tokens: u64, decisions: &[Decision]) -> Result<Admitted, Error> {
        let rpm = self.rpm.as_ref().and_then(|_| decisions.first().copied());
        let tpm = match (&self.tpm, self.rpm.is_some()) {
            (Some(_), true) => decisions.get(1).copied(),
            (Some(_), false) => decisions.first().copied(),
            (None, _) => None,
        };
        let headers = headers(self.rpm.as_ref().zip(rpm), self.tpm.as_ref().zip(tpm));
        if decisions.iter().all(|d| d.allowed) {
            return Ok(Admitted { tokens, headers });
        }
        let (what, limit, d) = match (rpm, tpm) {
            (Some(d), _) if !d.allowed => ("requests", self.rpm.as_ref().map_or(0, |r| r.1), d),
            (_, Some(d)) => ("tokens", self.tpm.as_ref().map_or(0, |t| t.1), d),
            _ => return Ok(Admitted { tokens, headers }),
        };
        let mut err = Error::new(
            ErrorKind::RateLimited,
            format!(
                "Rate limit reached for {} on {what} per minute: limit {limit}. Please try again in {}.",
                self.subject,
                human(d.retry_after).as_str()
            ),
        )
        .with_headers(headers.into_iter().collect());
        err.code = Some("rate_limit_exceeded".into());
        err.retry_after = Some(d.retry_after.max(Duration::from_millis(1)));
        Err(err)
    }

    /// Corrects the token cell once actual usage is known (a refund when the estimate was
    /// high), without waiting: settlement hooks are synchronous.
    pub fn reconcile(&self, charged: u64, actual: u64) {
        let Some((key, limit)) = &self.tpm else {
            return;
        };
        let delta = actual as i64 - charged as i64;
        if delta == 0 {
            return;
        }
        self.state.settle(Settle::Adjust(vec![Take {
            key: key.clone(),
            limit: *limit,
            cost: delta,
        }]));
    }

    /// Admits (with `reservation`, in the same step, when there is one), calls, and
    /// reconciles the token cell when the reply settles (or refunds the tokens when the call
    /// failed). `call` starts the inner service only once admitted, and is handed the
    /// reservation that was made.
    async fn around<F, Fut>(
        &self,
        estimate: TokenEstimate,
        is_stream: bool,
        reservation: Option<Reservation>,
        call: F,
    ) -> Result<Reply, Error>
    where
        F: FnOnce(Option<Reservation>) -> Fut,
        Fut: std::future::Future<Output = Result<Reply, Error>>,
    {
        let admitted = match &reservation {
            Some(r) => self.admit_reserving(estimate.total(), r).await?,
            None => self.admit(estimate.total()).await?,
        };
        match call(reservation).await {
            Err(e) => {
                self.reconcile(admitted.tokens, 0);
                Err(e)
            }
            Ok(mut reply) => {
                let json_output = json_output_estimate(&reply);
                reply.headers.extend(admitted.headers);
                let me = self.clone();
                Ok(reply.on_settle(move |s| {
                    let used = estimate.settle(s, is_stream, json_output).total();
                    me.reconcile(admitted.tokens, used);
                }))
            }
        }
    }
}

/// OpenAI's duration style for `x-ratelimit-reset-*`: `1m30s`, `6s`, `120ms`.
fn human(d: Duration) -> Human {
    // By hand into a stack buffer, not `write!` into a `String`: two of these are made for
    // every admitted request, and a header value made from a `String` allocates twice.
    let mut out = Human {
        buf: [0; Human::CAP],
        len: 0,
    };
    let ms = d.as_millis();
    if ms < 1000 {
        out.part(ms.max(1) as u64, b"ms");
        return out;
    }
    let secs = d.as_secs_f64().ceil() as u64;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        out.part(h, b"h");
    }
    if h > 0 || m > 0 {
        out.part(m, b"m");
    }
    out.part(s, b"s");
    out
}

/// A [`human`] duration: ASCII digits and unit letters.
struct Human {
    buf: [u8; Human::CAP],
    len: usize,
}

impl Human {
    /// The longest is `{u64::MAX / 3600}h59m59s`: 23 bytes.
    const CAP: usize = 32;

    fn part(&mut self, n: u64, unit: &[u8]) {
        for b in itoa::Buffer::new().format(n).as_bytes().iter().chain(unit) {
            self.buf[self.len] = *b;
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    fn header(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(&self.buf[..self.len]).ok()
    }
}

type Cell<'a> = Option<(&'a (String, u64), Decision)>;

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, as OpenAI names them.
const HEADER_NAMES: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

fn headers(rpm: Cell<'_>, tpm: Cell<'_>) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = Vec::with_capacity(6);
    for (cell, [limit_name, remaining_name, reset_name]) in [rpm, tpm].into_iter().zip(HEADER_NAMES)
    {
        let Some(((_, limit), d)) = cell else {
            continue;
        };
        h.push((limit_name, crate::ir::decimal_header(*limit)));
        h.push((remaining_name, crate::ir::decimal_header(d.remaining)));
        if let Some(v) = human(d.reset_after).header() {
            h.push((reset_name, v));
        }
    }
    h
}

/// Per-key limits; see the module docs.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiters: Arc<HashMap<Arc<str>, Limiter>>,
    budget: Option<BudgetLayer>,
}

impl RateLimitLayer {
    /// Limiters for every key with an `rpm` or `tpm`.
    pub fn new(state: SharedState, prefix: &str, keys: &Keys) -> Self {
        let limiters = keys
            .policies()
            .filter_map(|p| {
                let name = p.principal.key_name.clone();
                Limiter::new(state.clone(), prefix, "k", &name, p.rpm, p.tpm).map(|l| (name, l))
            })
            .collect();
        Self {
            limiters: Arc::new(limiters),
            budget: None,
        }
    }

    /// Makes the budget reservation of `budget` (the layer right below) in the same step of
    /// the shared state as the admission: one round trip to Redis instead of two, and a
    /// request refused by either takes nothing from the other.
    pub fn with_budget(mut self, budget: BudgetLayer) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiters: self.limiters.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiters: Arc<HashMap<Arc<str>, Limiter>>,
    budget: Option<BudgetLayer>,
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Reply, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Reply, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let limiter = req
            .meta
            .principal
            .as_ref()
            .and_then(|p| self.limiters.get(&p.key_name))
            .filter(|_| req.op.model().is_some())
            .cloned();
        let Some(limiter) = limiter else {
            return Either::Left(self.inner.call(req));
        };
        // Call the clone that was polled ready; leave a fresh one behind.
        let mut inner = crate::layer::take_ready(&mut self.inner);
        let budget = self.budget.clone();
        Either::Right(Box::pin(async move {
            // What the limiter needs of the operation, taken before it moves on (a clone of
            // the whole operation would copy the prompt).
            let (estimate, is_stream) = (TokenEstimate::of(&req.op), req.op.is_stream());
            // With a budget to reserve too, both go to the shared state in one step; the
            // budget layer below then finds its reservation made.
            let reservation = budget.as_ref().and_then(|b| b.reservation(&req, estimate));
            limiter
                .around(estimate, is_stream, reservation, |made| {
                    if let Some(r) = made {
                        req.meta.extensions.insert(Prepaid(r));
                    }
                    inner.call(req)
                })
                .await
        }))
    }
}

/// A provider account's own limits, around a target's provider service.
#[derive(Clone, Debug)]
pub struct ProviderLimitLayer {
    limiter: Option<Limiter>,
}

impl ProviderLimitLayer {
    /// Limits for provider `name`; a no-op without `rpm`/`tpm`.
    pub fn new(
        state: SharedState,
        prefix: &str,
        name: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> Self {
        Self {
            limiter: Limiter::new(state, prefix, "p", name, rpm, tpm),
        }
    }
}

impl<S> Layer<S> for ProviderLimitLayer {
    type Service = ProviderLimit<S>;
    fn layer(&self, inner: S) -> ProviderLimit<S> {
        ProviderLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// See [`ProviderLimitLayer`].
#[derive(Clone, Debug)]
pub struct ProviderLimit<S> {
    inner: S,
    limiter: Option<Limiter>,
}

impl<S> Service<Attempt> for ProviderLimit<S>
where
    S: Service<Attempt, Response = Reply, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Reply, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let Some(limiter) = self.limiter.clone() else {
            return Either::Left(self.inner.call(attempt));
        };
        let mut inner = crate::layer::take_ready(&mut self.inner);
        Either::Right(Box::pin(async move {
            let request = attempt.request.clone();
            // The caller never sees these headers: a refusal here only moves the attempt on.
            let result = limiter
                .around(
                    TokenEstimate::of(&request.op),
                    request.op.is_stream(),
                    None,
                    |_| inner.call(attempt),
                )
                .await;
            result.map_err(|mut e| {
                if e.kind == ErrorKind::RateLimited && e.provider.is_none() {
                    e.headers = None;
                }
                e
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{ChatRequest, Format, Message, Meta, Role, ServedBy, StreamEvent};
    use crate::state::memory::MemoryState;
    use futures_util::StreamExt;
    use tower::ServiceExt;

    fn chat(text: &str, max_tokens: Option<u32>, stream: bool) -> Operation {
        let mut c = ChatRequest::new("m", Format::OpenAi);
        c.messages.push(Message::text(Role::User, text));
        c.max_tokens = max_tokens;
        c.stream = stream;
        Operation::Chat(Box::new(c))
    }

    #[test]
    fn estimates_cap_output_and_count_choices() {
        let e = TokenEstimate::of(&chat("abcdefgh", Some(100_000), false));
        assert_eq!(e.output, MAX_OUTPUT_ESTIMATE);
        assert_eq!(e.input, 3 + 4 + 2);
        let Operation::Chat(mut c) = chat("x", Some(10), false) else {
            unreachable!()
        };
        c.n = Some(3);
        assert_eq!(TokenEstimate::of(&Operation::Chat(c)).output, 30);
    }

    #[test]
    fn reset_durations_read_like_openai() {
        assert_eq!(human(Duration::from_millis(120)).as_str(), "120ms");
        assert_eq!(human(Duration::from_secs(6)).as_str(), "6s");
        assert_eq!(human(Duration::from_millis(90_500)).as_str(), "1m31s");
        assert_eq!(human(Duration::from_secs(60)).as_str(), "1m0s");
        assert_eq!(human(Duration::from_millis(3_600_001)).as_str(), "1h0m1s");
        assert_eq!(human(Duration::ZERO).as_str(), "1ms");
        assert_eq!(human(Duration::MAX).as_str(), "5124095576030431h0m15s");
        assert_eq!(
            human(Duration::from_secs(90)).header(),
            Some(HeaderValue::from_static("1m30s"))
        );
    }

    fn header<'a>(h: &'a [(HeaderName, HeaderValue)], name: &str) -> &'a str {
        let found = h.iter().find(|(k, _)| k == name);
        found.map_or("", |(_, v)| v.to_str().unwrap())
    }

    fn limiter(state: &SharedState, rpm: Option<u64>, tpm: Option<u64>) -> Limiter {
        Limiter::new(state.clone(), "t", "k", "a", rpm, tpm).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn rejections_carry_retry_after_and_headers() {
        let state: SharedState = Arc::new(MemoryState::new());
        let l = limiter(&state, Some(2), Some(1000));
        let a = l.admit(10).await.unwrap();
        assert_eq!(header(&a.headers, "x-ratelimit-remaining-requests"), "1");
        assert_eq!(header(&a.headers, "x-ratelimit-remaining-tokens"), "990");
        l.admit(10).await.unwrap();
        let e = l.admit(10).await.unwrap_err();
        assert_eq!((e.kind, e.status), (ErrorKind::RateLimited, 429));
        assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
        let h = e.headers.unwrap();
        assert_eq!(h["x-ratelimit-limit-requests"], "2");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert_eq!(h["x-ratelimit-reset-requests"], "1m0s");
        // The refused request took no tokens, and says so.
        assert_eq!(h["x-ratelimit-remaining-tokens"], "980");
        tokio::time::advance(Duration::from_secs(30)).await;
        let a = l.admit(0).await.unwrap();
        assert_eq!(header(&a.headers, "x-ratelimit-remaining-requests"), "0");
        assert_eq!(header(&a.headers, "x-ratelimit-remaining-tokens"), "1000");
    }

    async fn drain(reply: Reply, n: usize) {
        let ReplyBody::Stream(mut s) = reply.body else {
            panic!("not a stream")
        };
        for _ in 0..n {
            s.next().await;
        }
    }

    fn stream_reply(text: &'static str, usage: Option<Usage>) -> Reply {
        let mut events = vec![Ok(StreamEvent::TextDelta {
            choice: 0,
            text: text.into(),
        })];
        if let Some(u) = usage {
            events.push(Ok(StreamEvent::Usage(u)));
        }
        Reply::local(ReplyBody::Stream(Box::pin(futures_util::stream::iter(
            events,
        ))))
    }

    async fn tokens_left(state: &SharedState) -> u64 {
        let d = state
            .admit(vec![Take {
                key: "{t:k:a}:tpm".into(),
                limit: 10_000,
                cost: 0,
            }])
            .await;
        d[0].remaining
    }

    #[tokio::test(start_paused = true)]
    async fn streams_reconcile_tokens_at_end_and_on_abort() {
        let state: SharedState = Arc::new(MemoryState::new());
        let l = limiter(&state, None, Some(10_000));
        let op = chat("abcd", Some(500), true);
        // Finished stream with usage: the cell ends charged with the reported total.
        let usage = Usage {
            input_tokens: 7,
            output_tokens: 93,
            ..Usage::default()
        };
        let reply = l
            .around(TokenEstimate::of(&op), op.is_stream(), None, |_| async {
                Ok(stream_reply("hi", Some(usage)))
            })
            .await
            .unwrap();
        assert_eq!(tokens_left(&state).await, 10_000 - (8 + 500));
        drain(reply, 3).await;
        tokio::task::yield_now().await;
        assert_eq!(tokens_left(&state).await, 10_000 - 100);
        // Aborted after 40 bytes with no usage: input estimate + 10 output tokens.
        let reply = l
            .around(TokenEstimate::of(&op), op.is_stream(), None, |_| async {
                Ok(stream_reply(
                    "0123456789012345678901234567890123456789",
                    None,
                ))
            })
            .await
            .unwrap();
        drain(reply, 1).await;
        tokio::task::yield_now().await;
        assert_eq!(tokens_left(&state).await, 10_000 - 100 - (8 + 10));
        // A failed call gives its tokens back.
        let e = l
            .around(TokenEstimate::of(&op), op.is_stream(), None, |_| async {
                Err(Error::new(ErrorKind::Timeout, "slow"))
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        tokio::task::yield_now().await;
        assert_eq!(tokens_left(&state).await, 10_000 - 118);
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_over_its_limit_is_a_retryable_refusal() {
        let state: SharedState = Arc::new(MemoryState::new());
        let layer = ProviderLimitLayer::new(state, "t", "primary", Some(1), None);
        let svc = layer.layer(tower::service_fn(|_: Attempt| async {
            Ok::<_, Error>(Reply::local(ReplyBody::TokenCount(1)))
        }));
        let attempt = Attempt {
            request: Arc::new(Request {
                op: chat("x", None, false),
                meta: Meta::new(Arc::from("r"), Format::OpenAi),
            }),
            served: Arc::new(ServedBy::new(
                Arc::from("primary"),
                Arc::from("m"),
                None,
                Arc::from("openai"),
            )),
            number: 1,
            trace_headers: Vec::new(),
        };
        svc.clone().oneshot(attempt.clone()).await.unwrap();
        let e = svc.oneshot(attempt).await.unwrap_err();
        assert!(e.is_retryable());
        assert!(e.message.contains("provider 'primary'"), "{}", e.message);
    }
}
