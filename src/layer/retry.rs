//! Retry and fallback across a request's [`Plan`]: when an attempt fails before any byte has
//! reached the caller, and the failure is one another attempt might not have (connect error,
//! timeout, 408/409/429, 5xx, Anthropic 529), the next target is tried — or the same one again
//! when the route allows more attempts than it has targets.
//!
//! Bounded three ways: the route's `max_attempts`; a retry budget (retries ≤ a fraction of
//! requests over a sliding window, plus a small floor) so an outage never multiplies load into
//! a retry storm; and a deadline for reaching the first byte. Moving to a different target is
//! immediate; trying a target again waits an exponential backoff with full jitter, or the
//! target's `Retry-After` when that is short. Unavailable targets (breaker open, drained) are
//! skipped, never waited on. When every target failed, a route's degradation targets get one
//! pass. For `hedge` routes the second target is sent the request when the first has not
//! answered within the hedge delay; the first reply wins and the other is cancelled.
//!
//! This is the bottom of the request-level stack: it consumes the `Plan` and calls each
//! target's own stack.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tower::{Service, ServiceExt};

use crate::config::RetryConfig;
use crate::ir::{Attempt, Error, ErrorKind, Plan, Reply, Request, Strategy, Target};

/// Retries ≤ `ratio` × requests (+ a floor) over a sliding window of one-second buckets.
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    floor_per_sec: u32,
    /// (second, requests, retries)
    buckets: Mutex<Vec<(u64, u64, u64)>>,
    epoch: Instant,
}

impl Budget {
    /// A budget over `window_secs`.
    pub fn new(ratio: f64, window_secs: u64, floor_per_sec: u32) -> Self {
        Self {
            ratio,
            floor_per_sec,
            buckets: Mutex::new(vec![(u64::MAX, 0, 0); window_secs.max(1) as usize]),
            epoch: Instant::now(),
        }
    }

    fn bucket<R>(
        &self,
        now: Instant,
        f: impl FnOnce(&mut [(u64, u64, u64)], usize, u64) -> R,
    ) -> Option<R> {
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        // The lock covers a few additions; never held across an await.
        let mut b = self.buckets.lock().ok()?;
        let n = b.len();
        let i = (sec % n as u64) as usize;
        if b[i].0 != sec {
            b[i] = (sec, 0, 0);
        }
        Some(f(&mut b, i, sec))
    }

    /// Counts a request.
    pub fn deposit(&self, now: Instant) {
        self.bucket(now, |b, i, _| b[i].1 += 1);
    }

    /// Takes one retry if the budget allows it.
    pub fn withdraw(&self, now: Instant) -> bool {
        let ratio = self.ratio;
        let floor = self.floor_per_sec as u64;
        self.bucket(now, |b, i, sec| {
            let n = b.len() as u64;
            let (reqs, retries) = b
                .iter()
                .filter(|x| x.0 != u64::MAX && x.0 + n > sec && x.0 <= sec)
                .fold((0, 0), |(r, t), x| (r + x.1, t + x.2));
            let allowed = (reqs as f64 * ratio) as u64 + floor * n;
            if retries < allowed {
                b[i].2 += 1;
                true
            } else {
                false
            }
        })
        .unwrap_or(true)
    }
}

/// The retry service (a leaf: its "inner" services are the plan's targets).
#[derive(Debug, Clone)]
pub struct Retry {
    cfg: Arc<RetryConfig>,
    budget: Arc<Budget>,
}

impl Retry {
    /// A retry service with its own budget.
    pub fn new(cfg: RetryConfig) -> Self {
        let budget = Budget::new(
            cfg.budget_ratio,
            cfg.budget_window_secs,
            cfg.min_retries_per_sec,
        );
        Self {
            cfg: Arc::new(cfg),
            budget: Arc::new(budget),
        }
    }
}

impl Service<Request> for Retry {
    type Response = Reply;
    type Error = Error;
    // One box per request at this boundary: the attempt loop is naturally `async`.
    type Future = BoxFuture<'static, Result<Reply, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let Some(plan) = req.meta.plan.take() else {
            return Box::pin(std::future::ready(Err(Error::new(
                ErrorKind::Internal,
                "request reached retry without a route",
            ))));
        };
        let attempts = Attempts::new(plan, Arc::new(req), self.cfg.clone(), self.budget.clone());
        Box::pin(attempts.run())
    }
}

/// The attempts of one request.
struct Attempts {
    plan: Plan,
    request: Arc<Request>,
    cfg: Arc<RetryConfig>,
    budget: Arc<Budget>,
    /// When the request reached this layer.
    started: Instant,
    deadline: tokio::time::Instant,
    attempts: u32,
    upstream_time: Duration,
    failures: Vec<(String, Error)>,
    budget_exhausted: bool,
}

impl Attempts {
    fn new(plan: Plan, request: Arc<Request>, cfg: Arc<RetryConfig>, budget: Arc<Budget>) -> Self {
        let started = Instant::now();
        let deadline =
            tokio::time::Instant::from_std(started) + Duration::from_secs_f64(cfg.deadline_secs);
        Self {
            plan,
            request,
            cfg,
            budget,
            started,
            deadline,
            attempts: 0,
            upstream_time: Duration::ZERO,
            failures: Vec::new(),
            budget_exhausted: false,
        }
    }

    async fn run(mut self) -> Result<Reply, Error> {
        self.budget.deposit(self.started);
        let targets = self.plan.targets.clone();
        if let Some(reply) = self.pass(&targets, self.plan.max_attempts).await {
            return reply;
        }
        if let Some(degrade) = self.plan.degrade.clone() {
            if !self.budget_exhausted && !self.deadline_passed() {
                let n = self.attempts + degrade.len() as u32;
                if let Some(reply) = self.pass(&degrade, n).await {
                    return reply;
                }
            }
        }
        Err(self.summarise())
    }

    fn deadline_passed(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }

    /// Tries `targets` in order (cycling while attempts remain), returning the reply, or a
    /// final error that must not be retried; `None` when the pass is exhausted.
    async fn pass(
        &mut self,
        targets: &[Target],
        max_attempts: u32,
    ) -> Option<Result<Reply, Error>> {
        let hedge = self.plan.strategy == Strategy::Hedge;
        let mut round = 0u32;
        loop {
            let mut tried_any = false;
            let mut i = 0;
            while i < targets.len() {
                // One clock read for both checks.
                let now = Instant::now();
                if self.attempts >= max_attempts
                    || tokio::time::Instant::from_std(now) >= self.deadline
                {
                    return None;
                }
                let target = &targets[i];
                i += 1;
                if !target.stats.is_available_at(now) {
                    self.failures.push((target.name(), unavailable(target)));
                    continue;
                }
                if self.attempts > 0 {
                    if !self.budget.withdraw(Instant::now()) {
                        self.budget_exhausted = true;
                        return None;
                    }
                    if round > 0 && !self.wait_before_retry(round).await {
                        return None;
                    }
                }
                tried_any = true;
                let second = if hedge && self.attempts == 0 {
                    targets[i..]
                        .iter()
                        .position(|t| t.is_available())
                        .map(|p| i + p)
                } else {
                    None
                };
                let result = match second {
                    Some(j) => {
                        let (result, used_second) = self.hedged(target, &targets[j]).await;
                        if used_second {
                            // Both were tried: carry on after the hedge target.
                            i = j + 1;
                        }
                        result
                    }
                    None => self.attempt(target).await,
                };
                match result {
                    Ok(mut reply) => {
                        reply.attempts = self.attempts;
                        reply.upstream_time += self.upstream_time;
                        return Some(Ok(reply));
                    }
                    Err(e) => {
                        let retry = e.is_retryable();
                        self.failures.push((target.name(), e));
                        if !retry {
                            return Some(Err(self.summarise()));
                        }
                    }
                }
            }
            round += 1;
            if !tried_any {
                return None;
            }
        }
    }

    /// Before trying a target again: the last failure's short `Retry-After`, else an
    /// exponential backoff with full jitter. False when waiting would pass the deadline.
    async fn wait_before_retry(&mut self, round: u32) -> bool {
        let max_ra = Duration::from_secs(self.cfg.max_retry_after_secs);
        let wait = match self.failures.last().and_then(|(_, e)| e.retry_after) {
            Some(ra) if ra <= max_ra => ra,
            Some(_) => return false,
            None => backoff(&self.cfg, round, &mut fastrand::Rng::new()),
        };
        let until = tokio::time::Instant::now() + wait;
        if until >= self.deadline {
            return false;
        }
        tokio::time::sleep_until(until).await;
        true
    }

    async fn attempt(&mut self, target: &Target) -> Result<Reply, Error> {
        self.attempts += 1;
        let attempt = Attempt {
            request: self.request.clone(),
            served: target.served.clone(),
            number: self.attempts,
            trace_headers: Vec::new(),
        };
        let started = Instant::now();
        let result = call(target, attempt, self.deadline).await;
        let took = started.elapsed();
        match &result {
            Ok(_) => {
                target.stats.observe_ttfb(took);
                self.plan.latency.record(took);
            }
            Err(_) => self.upstream_time += took,
        }
        result
    }

    /// Sends to `first`; if it has not answered within the hedge delay, also to `second`.
    /// The first success wins and the other is dropped (cancelling it). Returns whether the
    /// second target was used.
    async fn hedged(&mut self, first: &Target, second: &Target) -> (Result<Reply, Error>, bool) {
        let delay = self
            .plan
            .hedge_after
            .or_else(|| self.plan.latency.quantile(0.9))
            .unwrap_or(Duration::from_secs(1));
        let started = Instant::now();
        self.attempts += 1;
        let a = call(first, self.next_attempt(first), self.deadline);
        tokio::pin!(a);
        tokio::select! {
            r = &mut a => {
                let took = started.elapsed();
                if r.is_ok() {
                    first.stats.observe_ttfb(took);
                    self.plan.latency.record(took);
                } else {
                    self.upstream_time += took;
                }
                return (r, false);
            }
            _ = tokio::time::sleep(delay) => {}
        }
        if !self.budget.withdraw(Instant::now()) {
            self.budget_exhausted = true;
            let r = a.await;
            return (r, false);
        }
        self.attempts += 1;
        let hedge_started = Instant::now();
        let b = call(second, self.next_attempt(second), self.deadline);
        tokio::pin!(b);
        let (r, used_second) = tokio::select! {
            r = &mut a => (r, false),
            r = &mut b => (r, true),
        };
        let (winner, winner_started) = if used_second {
            (second, hedge_started)
        } else {
            (first, started)
        };
        match r {
            Ok(reply) => {
                let took = winner_started.elapsed();
                winner.stats.observe_ttfb(took);
                self.plan.latency.record(took);
                (Ok(reply), used_second)
            }
            Err(e) => {
                // The one that finished failed; the other may still succeed.
                let loser_name = winner.name();
                self.failures.push((loser_name, e));
                let r = if used_second { a.await } else { b.await };
                self.upstream_time += started.elapsed();
                (r, true)
            }
        }
    }

    fn next_attempt(&self, target: &Target) -> Attempt {
        Attempt {
            request: self.request.clone(),
            served: target.served.clone(),
            number: self.attempts,
            trace_headers: Vec::new(),
        }
    }

    /// One error for the caller: the last failure's status (a 429 keeps its `Retry-After`),
    /// with every attempt listed when there were several.
    fn summarise(&self) -> Error {
        let Some((_, last)) = self.failures.last() else {
            return Error::new(
                ErrorKind::Unavailable,
                format!("model '{}' has no available target: every target is drained or has its circuit open", self.plan.route),
            );
        };
        if self.failures.len() == 1 && !self.budget_exhausted {
            return last.clone();
        }
        let mut msg = format!("all {} attempts failed:", self.failures.len());
        for (target, e) in &self.failures {
            let _ = write!(msg, " {target}: {} ({});", e.kind.as_str(), e.status);
        }
        if self.budget_exhausted {
            msg.push_str(" retry budget exhausted;");
        }
        let _ = write!(msg, " last error: {}", last.message);
        Error {
            message: msg,
            ..last.clone()
        }
    }
}

/// One attempt through the target's stack: readiness first (an open breaker fails it at
/// once), bounded by the request's deadline.
async fn call(
    target: &Target,
    attempt: Attempt,
    deadline: tokio::time::Instant,
) -> Result<Reply, Error> {
    let _inflight = target.stats.start();
    let fut = target.service.clone().oneshot(attempt);
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            "no upstream answered before the request deadline",
        )),
    }
}

fn unavailable(target: &Target) -> Error {
    let why = if target.stats.is_drained() {
        "drained by an operator"
    } else {
        "circuit open"
    };
    let mut e = Error::new(
        ErrorKind::Unavailable,
        format!("{} is unavailable: {why}", target.name()),
    );
    e.provider = Some(target.served.provider.clone());
    e
}

/// Full-jitter exponential backoff for retry `round` (1-based).
pub fn backoff(cfg: &RetryConfig, round: u32, rng: &mut fastrand::Rng) -> Duration {
    let cap = cfg.backoff_max_ms.max(1);
    let exp = cfg
        .backoff_base_ms
        .saturating_mul(1u64 << round.min(20))
        .min(cap);
    Duration::from_millis(rng.u64(0..=exp))
}

#[cfg(test)]
mod tests;
