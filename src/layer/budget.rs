//! Spend budgets per caller key (USD per UTC day and per UTC month), and the spend record of
//! every key and team that `/spend` reports.
//!
//! Before the call the request's estimated cost (input estimate + capped output, at the public
//! model's price when it has one) is *reserved* against the budgets in one atomic step of the
//! shared state, so concurrent requests cannot all slip under a nearly spent budget. For a key
//! with rate limits too, the rate-limit layer above makes that reservation in the same step as
//! its admission ([`Prepaid`]): one round trip to Redis, and a request refused by either takes
//! nothing from the other. When the
//! reply settles — a JSON reply at once, a stream at its end or when the caller drops it — the
//! reservation is replaced by the actual cost of the model that served it (an aborted stream
//! is charged for what it produced); a failed call gives the reservation back.
//!
//! Consumes `Principal` and `Arc<KeyPolicy>`. Over budget: 429 `BudgetExceeded` naming the
//! budget and when it resets, with `Retry-After` until then.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::{BoxFuture, Either};
use tower::{Layer, Service};

use crate::cost::Prices;
use crate::ir::{Error, ErrorKind, Principal, Reply, Request};
use crate::layer::auth::{KeyPolicy, Keys};
use crate::layer::ratelimit::{json_output_estimate, TokenEstimate};
use crate::layer::{AfterCall, Then};
use crate::state::{Counter, Reserved, Settle, SharedState};
use crate::telemetry::logs::civil;

/// Spend is counted in nano-USD: integers, exact, and far from overflow (9.2 billion USD).
const NANO: f64 = 1e9;

fn nano(usd: f64) -> i64 {
    (usd * NANO).round() as i64
}

fn usd(nano: i64) -> f64 {
    nano as f64 / NANO
}

/// The UTC day and month a moment falls in, and when each ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    /// `YYYY-MM-DD`.
    pub day: Arc<str>,
    /// `YYYY-MM`.
    pub month: Arc<str>,
    /// Unix seconds of the next UTC midnight.
    pub day_ends: i64,
    /// Unix seconds of the first midnight of the next UTC month.
    pub month_ends: i64,
    now: i64,
}

/// Days since 1970-01-01 of a date (`days_from_civil`).
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

impl Windows {
    /// The windows of a Unix time.
    pub fn at(unix_secs: i64) -> Self {
        let today = unix_secs.div_euclid(86_400);
        let (y, m, d) = civil(today);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Self {
            day: format!("{y:04}-{m:02}-{d:02}").into(),
            month: format!("{y:04}-{m:02}").into(),
            day_ends: (today + 1) * 86_400,
            month_ends: days(ny, nm, 1) * 86_400,
            now: unix_secs,
        }
    }

    /// The windows of now (the day's strings are worked out once a day, not per request).
    pub fn now() -> Self {
        static TODAY: Mutex<Option<Windows>> = Mutex::new(None);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut today = TODAY.lock().unwrap_or_else(|e| e.into_inner());
        match &*today {
            Some(w) if (w.day_ends - 86_400..w.day_ends).contains(&secs) => Self {
                now: secs,
                ..w.clone()
            },
            _ => {
                let w = Self::at(secs);
                *today = Some(w.clone());
                w
            }
        }
    }

    fn until(&self, end: i64) -> Duration {
        Duration::from_secs((end - self.now).max(1) as u64)
    }
}

/// `2026-11-25T00:00:00Z`.
fn rfc3339(unix_secs: i64) -> String {
    let (y, m, d) = civil(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Where spend is kept: one hash tag per key and per team.
#[derive(Debug, Clone)]
struct Ledger {
    state: SharedState,
    prefix: Arc<str>,
    /// The counter names of each key and team for the current day (per scope `k`/`t`): built
    /// once a day instead of formatted on every request.
    names: Arc<Mutex<NameCache>>,
}

/// Key or team name → its counter names, per scope (`k`, `t`). The names come from config,
/// so the cheap hash is safe.
type NameCache = foldhash::HashMap<Arc<str>, [Option<DayNames>; 2]>;

/// The day and month counter names of one key or team, valid until `day_ends`.
#[derive(Debug, Clone)]
struct DayNames {
    day_ends: i64,
    names: [String; 2],
}

/// Most names cached by one ledger (keys and teams come from config; a bound all the same).
const NAMES_MAX: usize = 10_000;

impl Ledger {
    fn new(state: SharedState, prefix: &str) -> Self {
        Self {
            state,
            prefix: Arc::from(prefix),
            names: Arc::default(),
        }
    }

    fn names(&self, scope: &str, name: &str, w: &Windows) -> [String; 2] {
        let slot = usize::from(scope != "k");
        let mut cache = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(n)) = cache.get(name).map(|e| &e[slot]) {
            if n.day_ends == w.day_ends {
                return n.names.clone();
            }
        }
        let p = &self.prefix;
        let names = [
            format!("{{{p}:{scope}:{name}}}:spend:d:{}", w.day),
            format!("{{{p}:{scope}:{name}}}:spend:m:{}", w.month),
        ];
        if cache.len() < NAMES_MAX || cache.contains_key(name) {
            cache.entry(Arc::from(name)).or_default()[slot] = Some(DayNames {
                day_ends: w.day_ends,
                names: names.clone(),
            });
        }
        names
    }

    fn counters(
        &self,
        scope: &str,
        name: &str,
        w: &Windows,
        limits: [Option<f64>; 2],
    ) -> Vec<Counter> {
        let [day, month] = self.names(scope, name, w);
        vec![
            Counter {
                key: day,
                limit: limits[0].map(nano),
                // Kept a little past the window, for /spend around midnight.
                ttl: Duration::from_secs(2 * 86_400),
            },
            Counter {
                key: month,
                limit: limits[1].map(nano),
                ttl: Duration::from_secs(32 * 86_400),
            },
        ]
    }

    /// Adds `amount` (may be negative) to a key's or team's spend without waiting
    /// (settlement hooks are synchronous); nothing to do for nothing spent.
    fn add_later(&self, scope: &str, name: &str, w: &Windows, amount: i64) {
        if amount != 0 {
            let counters = self.counters(scope, name, w, [None, None]);
            self.state.settle(Settle::Add(counters, amount));
        }
    }
}

/// Budgets and spend; see the module docs.
#[derive(Debug, Clone)]
pub struct BudgetLayer {
    ledger: Ledger,
    prices: Arc<Prices>,
}

impl BudgetLayer {
    /// A layer keeping spend in `state` under `prefix`, priced with `prices`.
    pub fn new(state: SharedState, prefix: &str, prices: Arc<Prices>) -> Self {
        Self {
            ledger: Ledger::new(state, prefix),
            prices,
        }
    }

    /// What `req` must reserve before the call: its estimated cost (of `estimate`, the
    /// request's [`TokenEstimate`]) against its key's day and month budgets. `None` when the
    /// operation names no model or the key has no budget.
    pub fn reservation(&self, req: &Request, estimate: TokenEstimate) -> Option<Reservation> {
        let model = req.op.model()?;
        let policy = req.meta.extensions.get::<Arc<KeyPolicy>>()?;
        let limits = [policy.budget_usd_per_day, policy.budget_usd_per_month];
        if limits.iter().all(Option::is_none) {
            return None;
        }
        let key = policy.principal.key_name.clone();
        let w = Windows::now();
        let counters = self.ledger.counters("k", &key, &w, limits);
        let amount = self.prices.usd(model, &usage_of(estimate)).map_or(0, nano);
        Some(Reservation {
            counters,
            amount,
            limits,
            windows: w,
            key,
        })
    }
}

/// A request's reservation against its key's budgets ([`BudgetLayer::reservation`]).
#[derive(Debug, Clone)]
pub struct Reservation {
    /// The key's day and month spend counters, with the budgets as ceilings.
    pub counters: Vec<Counter>,
    /// The estimated cost, in nano-USD.
    pub amount: i64,
    limits: [Option<f64>; 2],
    windows: Windows,
    key: Arc<str>,
}

impl Reservation {
    /// The 429 to answer when the step that was to make the reservation did not (`None` when
    /// it did). It names the budget without room for the amount.
    pub fn refusal(&self, outcome: &Reserved) -> Option<Error> {
        if outcome.allowed {
            return None;
        }
        let names = ["budget_usd_per_day", "budget_usd_per_month"];
        let w = &self.windows;
        let ends = [w.day_ends, w.month_ends];
        let spent = |i: usize| outcome.values.get(i).copied().unwrap_or(0);
        let full = |i: usize| {
            self.limits[i].is_some_and(|l| spent(i) >= nano(l) || spent(i) + self.amount > nano(l))
        };
        // A step refused by its other part (a rate limit) is answered before this is asked;
        // should no budget be short all the same, the first one set is named.
        let i = (0..2)
            .find(|&i| full(i))
            .or_else(|| (0..2).find(|&i| self.limits[i].is_some()))?;
        let limit = self.limits[i]?;
        Some(over_budget(
            &self.key,
            names[i],
            limit,
            spent(i),
            w,
            ends[i],
        ))
    }
}

/// In a request's extensions: its [`Reservation`] was already made, together with the
/// rate-limit admission in one step of the shared state (one round trip instead of two). The
/// budget layer then settles it instead of reserving again.
#[derive(Debug, Clone)]
pub struct Prepaid(pub Reservation);

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;
    fn layer(&self, inner: S) -> Budget<S> {
        Budget {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`BudgetLayer`].
#[derive(Debug, Clone)]
pub struct Budget<S> {
    inner: S,
    layer: BudgetLayer,
}

fn over_budget(key: &str, which: &str, limit: f64, spent: i64, w: &Windows, ends: i64) -> Error {
    let mut e = Error::new(
        ErrorKind::BudgetExceeded,
        format!(
            "Budget exceeded: key '{key}' has spent ${:.4} of its {which} of ${limit:.2}; it resets at {} (UTC).",
            usd(spent),
            rfc3339(ends)
        ),
    );
    e.code = Some("budget_exceeded".into());
    e.retry_after = Some(w.until(ends));
    e
}

impl<S> Service<Request> for Budget<S>
where
    S: Service<Request, Response = Reply, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = Error;
    type Future = Either<
        S::Future,
        Either<Then<S::Future, Settler>, BoxFuture<'static, Result<Reply, Error>>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let Some(public_model) = req.op.model().map(str::to_owned) else {
            return Either::Left(self.inner.call(req));
        };
        let principal = req
            .meta
            .principal
            .clone()
            .unwrap_or_else(Principal::anonymous);
        let prepaid = req.meta.extensions.remove::<Prepaid>();
        let estimate = TokenEstimate::of(&req.op);
        let mut settle = Settler {
            layer: self.layer.clone(),
            principal,
            public_model,
            estimate,
            is_stream: req.op.is_stream(),
            windows: None,
            reserved: 0,
        };
        let reservation = match prepaid {
            Some(Prepaid(r)) => {
                (settle.windows, settle.reserved) = (Some(r.windows), r.amount);
                None
            }
            None => self.layer.reservation(&req, estimate),
        };
        let Some(mut r) = reservation else {
            // Nothing to wait for before the call (no budget, or reserved above with the
            // rate limits): a named future, not a boxed `async` block.
            if settle.windows.is_none() {
                settle.windows = Some(Windows::now());
            }
            return Either::Right(Either::Left(Then::new(self.inner.call(req), settle)));
        };
        let mut inner = crate::layer::take_ready(&mut self.inner);
        Either::Right(Either::Right(Box::pin(async move {
            // The counters go to the state; the rest answers a refusal.
            let counters = std::mem::take(&mut r.counters);
            let outcome = settle.layer.ledger.state.reserve(counters, r.amount).await;
            if let Some(e) = r.refusal(&outcome) {
                return Err(e);
            }
            (settle.windows, settle.reserved) = (Some(r.windows), r.amount);
            settle.after(inner.call(req).await)
        })))
    }
}

/// What a request's spend settles with once its reply is known.
pub struct Settler {
    layer: BudgetLayer,
    principal: Principal,
    public_model: String,
    estimate: TokenEstimate,
    is_stream: bool,
    windows: Option<Windows>,
    /// Nano-USD reserved before the call.
    reserved: i64,
}

impl AfterCall for Settler {
    /// Refunds the reservation of a failed call; debits a reply's actual cost when it settles.
    fn after(self, result: Result<Reply, Error>) -> Result<Reply, Error> {
        let Settler {
            layer,
            principal,
            public_model,
            estimate,
            is_stream,
            windows,
            reserved,
        } = self;
        let w = windows.unwrap_or_else(Windows::now);
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                layer
                    .ledger
                    .add_later("k", &principal.key_name, &w, -reserved);
                return Err(e);
            }
        };
        let json_output = json_output_estimate(&reply);
        // Priced by the target that served it; by the name the caller asked for when that
        // target's model has no price.
        let served_price = reply.served_by.as_ref().and_then(|s| s.price);
        Ok(reply.on_settle(move |s| {
            let used = estimate.settle(s, is_stream, json_output);
            let cost = served_price
                .map(|p| p.usd(&used))
                .or_else(|| layer.prices.usd(&public_model, &used))
                .map_or(0, nano);
            let ledger = &layer.ledger;
            ledger.add_later("k", &principal.key_name, &w, cost - reserved);
            ledger.add_later("t", &principal.team, &w, cost);
        }))
    }
}

fn usage_of(e: TokenEstimate) -> crate::ir::Usage {
    crate::ir::Usage {
        input_tokens: e.input,
        output_tokens: e.output,
        ..Default::default()
    }
}

/// The `/spend` report: spend and remaining budget per key and per team, this UTC day and
/// month.
#[derive(Debug, Clone)]
pub struct SpendReport {
    ledger: Ledger,
    keys: Arc<Keys>,
}

impl SpendReport {
    /// A report over the configured keys (or `anonymous` when auth is off).
    pub fn new(state: SharedState, prefix: &str, keys: Arc<Keys>) -> Self {
        Self {
            ledger: Ledger::new(state, prefix),
            keys,
        }
    }

    /// The report as JSON.
    pub async fn json(&self) -> serde_json::Value {
        use serde_json::json;
        // Settlements still queued for the shared state count: the report reads its own writes.
        self.ledger.state.flush(Duration::from_secs(1)).await;
        let w = Windows::now();
        let anonymous = Arc::new(KeyPolicy {
            principal: Principal::anonymous(),
            models: None,
            rpm: None,
            tpm: None,
            budget_usd_per_day: None,
            budget_usd_per_month: None,
        });
        let policies: Vec<Arc<KeyPolicy>> = if self.keys.is_empty() {
            vec![anonymous]
        } else {
            self.keys.policies().cloned().collect()
        };
        let mut teams: Vec<Arc<str>> = policies.iter().map(|p| p.principal.team.clone()).collect();
        teams.sort();
        teams.dedup();
        let mut names = Vec::new();
        for p in &policies {
            names.extend(
                self.ledger
                    .counters("k", &p.principal.key_name, &w, [None, None])
                    .into_iter()
                    .map(|c| c.key),
            );
        }
        for t in &teams {
            names.extend(
                self.ledger
                    .counters("t", t, &w, [None, None])
                    .into_iter()
                    .map(|c| c.key),
            );
        }
        let values = self.ledger.state.get(names).await;
        let value = |i: usize| values.get(i).copied().map_or(0.0, usd);
        let remaining = |limit: Option<f64>, spent: f64| limit.map(|l| (l - spent).max(0.0));
        let keys: Vec<_> = policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (day, month) = (value(2 * i), value(2 * i + 1));
                json!({
                    "name": &*p.principal.key_name,
                    "team": &*p.principal.team,
                    "spent_usd_today": day,
                    "spent_usd_this_month": month,
                    "budget_usd_per_day": p.budget_usd_per_day,
                    "budget_usd_per_month": p.budget_usd_per_month,
                    "remaining_usd_today": remaining(p.budget_usd_per_day, day),
                    "remaining_usd_this_month": remaining(p.budget_usd_per_month, month),
                })
            })
            .collect();
        let base = 2 * policies.len();
        let teams: Vec<_> = teams
            .iter()
            .enumerate()
            .map(|(i, t)| {
                json!({
                    "name": &**t,
                    "spent_usd_today": value(base + 2 * i),
                    "spent_usd_this_month": value(base + 2 * i + 1),
                })
            })
            .collect();
        json!({
            "backend": self.ledger.state.backend(),
            "backend_healthy": self.ledger.state.healthy(),
            "day": &*w.day,
            "month": &*w.month,
            "day_resets_at": rfc3339(w.day_ends),
            "month_resets_at": rfc3339(w.month_ends),
            "keys": keys,
            "teams": teams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PriceConfig;
    use crate::ir::{
        ChatReply, ChatRequest, Format, Message, Meta, Operation, Price, ReplyBody, Role, ServedBy,
        StreamEvent, Usage,
    };
    use crate::state::memory::MemoryState;
    use futures_util::StreamExt;
    use tower::ServiceExt;

    #[test]
    fn windows_and_resets() {
        // 2024-02-29T23:59:59Z: a leap day, the last second of its day and month.
        let w = Windows::at(1_709_251_199);
        assert_eq!((&*w.day, &*w.month), ("2024-02-29", "2024-02"));
        assert_eq!(rfc3339(w.day_ends), "2024-03-01T00:00:00Z");
        assert_eq!(rfc3339(w.month_ends), "2024-03-01T00:00:00Z");
        assert_eq!(w.until(w.day_ends), Duration::from_secs(1));
        let w = Windows::at(1_735_689_600 - 1); // 2024-12-31T23:59:59Z
        assert_eq!(rfc3339(w.month_ends), "2025-01-01T00:00:00Z");
        for d in [-1, 0, 59, 11_016, 20_000] {
            let (y, m, dd) = civil(d);
            assert_eq!(days(y, m, dd), d);
        }
    }

    /// Prices of $1 per input token and $2 per output token for model `m`, so costs are
    /// token counts.
    fn layer(state: &SharedState) -> BudgetLayer {
        let mut o = std::collections::BTreeMap::new();
        o.insert(
            "m".to_string(),
            PriceConfig {
                input: 1e6,
                output: 2e6,
                cached_input: None,
                cache_write: None,
            },
        );
        BudgetLayer::new(state.clone(), "t", Arc::new(Prices::from_config(&o)))
    }

    fn request(stream: bool, policy: &Arc<KeyPolicy>) -> Request {
        let mut c = ChatRequest::new("m", Format::OpenAi);
        c.messages.push(Message::text(Role::User, "abcd"));
        c.max_tokens = Some(10);
        c.stream = stream;
        let mut meta = Meta::new(Arc::from("r"), Format::OpenAi);
        meta.principal = Some(policy.principal.clone());
        meta.extensions.insert(policy.clone());
        Request {
            op: Operation::Chat(Box::new(c)),
            meta,
        }
    }

    fn policy(day: Option<f64>) -> Arc<KeyPolicy> {
        Arc::new(KeyPolicy {
            principal: Principal {
                key_name: Arc::from("a"),
                team: Arc::from("x"),
            },
            models: None,
            rpm: None,
            tpm: None,
            budget_usd_per_day: day,
            budget_usd_per_month: None,
        })
    }

    /// Served by target `p/m`, priced like `m` in [`layer`].
    fn served(r: Reply) -> Reply {
        served_at(r, Some(per_token(1.0, 2.0)))
    }

    fn served_at(mut r: Reply, price: Option<Price>) -> Reply {
        r.served_by = Some(Arc::new(ServedBy::new(
            Arc::from("p"),
            Arc::from("m"),
            price,
            Arc::from("p"),
        )));
        r
    }

    fn per_token(input: f64, output: f64) -> Price {
        Price {
            input: input * 1e6,
            output: output * 1e6,
            cached_input: None,
            cache_write: None,
        }
    }

    fn chat_reply(input_tokens: u64, output_tokens: u64) -> Reply {
        Reply::local(ReplyBody::Chat(ChatReply {
            id: "x".into(),
            model: "m".into(),
            created: 0,
            choices: vec![],
            usage: Some(Usage {
                input_tokens,
                output_tokens,
                ..Usage::default()
            }),
        }))
    }

    async fn spent(state: &SharedState, scope: &str, name: &str) -> f64 {
        let w = Windows::now();
        let key = format!("{{t:{scope}:{name}}}:spend:d:{}", w.day);
        usd(state.get(vec![key]).await[0])
    }

    async fn settle() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn json_replies_are_debited_their_actual_cost() {
        let state: SharedState = Arc::new(MemoryState::new());
        let p = policy(Some(1000.0));
        let svc = layer(&state).layer(tower::service_fn(|_: Request| async {
            Ok::<_, Error>(served(chat_reply(5, 7)))
        }));
        svc.oneshot(request(false, &p)).await.unwrap();
        settle().await;
        assert_eq!(spent(&state, "k", "a").await, 5.0 + 14.0);
        assert_eq!(spent(&state, "t", "x").await, 19.0);
    }

    /// The price of the target that served a reply wins over the table's price of the name
    /// the caller asked for; that one counts only when the target's model has no price.
    #[tokio::test]
    async fn replies_are_priced_by_the_target_that_served_them() {
        let state: SharedState = Arc::new(MemoryState::new());
        let p = policy(None);
        let target_price = layer(&state).layer(tower::service_fn(|_: Request| async {
            Ok::<_, Error>(served_at(chat_reply(5, 7), Some(per_token(3.0, 3.0))))
        }));
        target_price.oneshot(request(false, &p)).await.unwrap();
        settle().await;
        assert_eq!(spent(&state, "t", "x").await, 36.0);
        let unpriced = layer(&state).layer(tower::service_fn(|_: Request| async {
            Ok::<_, Error>(served_at(chat_reply(5, 7), None))
        }));
        unpriced.oneshot(request(false, &p)).await.unwrap();
        settle().await;
        assert_eq!(spent(&state, "t", "x").await, 36.0 + 19.0);
    }

    fn stream(events: Vec<StreamEvent>) -> Reply {
        served(Reply::local(ReplyBody::Stream(Box::pin(
            futures_util::stream::iter(events.into_iter().map(Ok)),
        ))))
    }

    #[tokio::test]
    async fn streams_are_debited_at_their_end_and_aborted_ones_for_what_they_produced() {
        let state: SharedState = Arc::new(MemoryState::new());
        let p = policy(Some(1000.0));
        let usage = Usage {
            input_tokens: 6,
            output_tokens: 4,
            ..Usage::default()
        };
        let l = layer(&state);
        let svc = l.layer(tower::service_fn(move |_: Request| async move {
            Ok::<_, Error>(stream(vec![
                StreamEvent::TextDelta {
                    choice: 0,
                    text: "0123456789abcdef".into(),
                },
                StreamEvent::Usage(usage),
            ]))
        }));
        let reply = svc.clone().oneshot(request(true, &p)).await.unwrap();
        // Reserved while streaming: the estimate (8 input at $1 + 10 output at $2).
        settle().await;
        assert_eq!(spent(&state, "k", "a").await, 28.0);
        let ReplyBody::Stream(mut s) = reply.body else {
            panic!()
        };
        while s.next().await.is_some() {}
        drop(s);
        settle().await;
        assert_eq!(spent(&state, "k", "a").await, 6.0 + 8.0);
        // The caller hangs up after the first delta: 16 bytes = 4 output tokens, input
        // estimated at 8.
        let reply = svc.oneshot(request(true, &p)).await.unwrap();
        let ReplyBody::Stream(mut s) = reply.body else {
            panic!()
        };
        s.next().await;
        drop(s);
        settle().await;
        assert_eq!(spent(&state, "k", "a").await, 14.0 + 8.0 + 8.0);
        assert_eq!(spent(&state, "t", "x").await, 30.0);
    }

    #[tokio::test]
    async fn over_budget_is_refused_naming_the_budget_and_its_reset() {
        let state: SharedState = Arc::new(MemoryState::new());
        let p = policy(Some(30.0));
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c = calls.clone();
        let svc = layer(&state).layer(tower::service_fn(move |_: Request| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err::<Reply, _>(Error::new(ErrorKind::Timeout, "slow")) }
        }));
        // A failed call gives its reservation back.
        svc.clone().oneshot(request(false, &p)).await.unwrap_err();
        settle().await;
        assert_eq!(spent(&state, "k", "a").await, 0.0);
        // Spend 25 elsewhere: the next estimate (28) no longer fits.
        let w = Windows::now();
        state
            .reserve(
                vec![Counter {
                    key: format!("{{t:k:a}}:spend:d:{}", w.day),
                    limit: None,
                    ttl: Duration::from_secs(60),
                }],
                nano(25.0),
            )
            .await;
        let e = svc.oneshot(request(false, &p)).await.unwrap_err();
        assert_eq!((e.kind, e.status), (ErrorKind::BudgetExceeded, 429));
        assert!(
            e.message.contains("budget_usd_per_day of $30.00"),
            "{}",
            e.message
        );
        assert!(e.message.contains("T00:00:00Z"), "{}", e.message);
        assert!(e.retry_after.unwrap() <= Duration::from_secs(86_400));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
