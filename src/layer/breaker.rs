//! Circuit breaker, per target: opens on consecutive failures or on a failure ratio over a
//! sliding window; while open the target gets no traffic (its readiness fails at once, so the
//! retry layer skips it instead of waiting); after the cool-down a few half-open probes
//! decide. A 429 with `Retry-After` ejects the target until that time; a 429 without one is
//! flow control, not ill health, and counts as an answer (a provider throttling one request
//! in three must not have its circuit opened and all of its traffic refused).
//!
//! The state is published in the target's `TargetStats` for balancers, the admin plane and
//! metrics. The decision logic ([`Logic`]) takes the time as an argument, so it is tested
//! without sleeping.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tower::{Layer, Service};

use crate::config::BreakerConfig;
use crate::ir::{Attempt, CircuitState, Error, ErrorKind, Reply, ReplyBody, TargetStats};
use crate::layer::{AfterCall, Then};

/// What one attempt says about the target's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered (a caller error such as a 400 counts: the target is healthy).
    Success,
    /// The target failed in a way that says it is unhealthy.
    Failure,
    /// The target asked for no traffic until this long from now (429 `Retry-After`).
    Eject(Duration),
}

impl Outcome {
    /// Classifies an attempt's result.
    pub fn of(result: &Result<Reply, Error>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => match (e.kind, e.retry_after) {
                (ErrorKind::RateLimited, Some(d)) => Outcome::Eject(d),
                (ErrorKind::RateLimited, None) => Outcome::Success,
                _ if e.is_retryable() => Outcome::Failure,
                _ => Outcome::Success,
            },
        }
    }
}

/// One-second buckets of (successes, failures) over the window.
#[derive(Debug)]
struct Window {
    buckets: Vec<(u64, u32, u32)>,
}

impl Window {
    fn new(secs: u64) -> Self {
        Self {
            buckets: vec![(u64::MAX, 0, 0); secs.max(1) as usize],
        }
    }
    fn add(&mut self, sec: u64, ok: bool) {
        let n = self.buckets.len() as u64;
        let b = &mut self.buckets[(sec % n) as usize];
        if b.0 != sec {
            *b = (sec, 0, 0);
        }
        if ok {
            b.1 += 1;
        } else {
            b.2 += 1;
        }
    }
    fn totals(&self, sec: u64) -> (u32, u32) {
        let n = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.0 != u64::MAX && b.0 + n > sec && b.0 <= sec)
            .fold((0, 0), |(o, f), b| (o + b.1, f + b.2))
    }
    fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = (u64::MAX, 0, 0));
    }
}

/// The breaker's state machine.
#[derive(Debug)]
pub struct Logic {
    cfg: BreakerConfig,
    state: CircuitState,
    consecutive: u32,
    window: Window,
    open_until: Instant,
    probes_inflight: u32,
    probes_ok: u32,
    epoch: Instant,
}

impl Logic {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig, now: Instant) -> Self {
        Self {
            window: Window::new(cfg.window_secs),
            cfg,
            state: CircuitState::Closed,
            consecutive: 0,
            open_until: now,
            probes_inflight: 0,
            probes_ok: 0,
            epoch: now,
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Whether a request may be sent now; a half-open breaker admits up to its probe count
    /// (the admission is the reservation, released by [`Logic::record`]).
    pub fn admit(&mut self, now: Instant) -> Result<bool, Duration> {
        if self.state == CircuitState::Open {
            if now < self.open_until {
                return Err(self.open_until - now);
            }
            self.state = CircuitState::HalfOpen;
            self.probes_inflight = 0;
            self.probes_ok = 0;
        }
        if self.state == CircuitState::HalfOpen {
            if self.probes_inflight >= self.cfg.half_open_probes {
                return Err(Duration::ZERO);
            }
            self.probes_inflight += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// Records an attempt's outcome; `probe` is what [`Logic::admit`] returned for it.
    pub fn record(&mut self, outcome: Outcome, probe: bool, now: Instant) {
        if probe && self.state == CircuitState::HalfOpen {
            self.probes_inflight = self.probes_inflight.saturating_sub(1);
        }
        if let Outcome::Eject(d) = outcome {
            self.open(now, d.max(Duration::from_millis(1)));
            return;
        }
        let ok = outcome == Outcome::Success;
        match self.state {
            CircuitState::HalfOpen if probe => {
                if ok {
                    self.probes_ok += 1;
                    if self.probes_ok >= self.cfg.half_open_probes {
                        self.state = CircuitState::Closed;
                        self.consecutive = 0;
                        self.window.clear();
                    }
                } else {
                    self.open(now, Duration::from_secs_f64(self.cfg.cooldown_secs));
                }
            }
            // A reply from before the breaker opened says nothing new.
            CircuitState::Open | CircuitState::HalfOpen => {}
            CircuitState::Closed => {
                let sec = now.saturating_duration_since(self.epoch).as_secs();
                self.window.add(sec, ok);
                self.consecutive = if ok { 0 } else { self.consecutive + 1 };
                let (oks, fails) = self.window.totals(sec);
                let total = oks + fails;
                let ratio_tripped = total >= self.cfg.min_requests
                    && f64::from(fails) >= self.cfg.failure_ratio * f64::from(total);
                if self.consecutive >= self.cfg.consecutive_failures || ratio_tripped {
                    self.open(now, Duration::from_secs_f64(self.cfg.cooldown_secs));
                }
            }
        }
    }

    fn open(&mut self, now: Instant, for_: Duration) {
        self.state = CircuitState::Open;
        // Saturating: an ejection as long as a hostile upstream may ask for must not panic.
        self.open_until = now
            .checked_add(for_)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 60 * 60));
        self.consecutive = 0;
        self.probes_inflight = 0;
        self.probes_ok = 0;
        self.window.clear();
    }

    /// When an open breaker may be probed.
    pub fn open_until(&self) -> Instant {
        self.open_until
    }
}

struct Shared {
    logic: Mutex<Logic>,
    stats: Arc<TargetStats>,
    name: Arc<str>,
}

impl Shared {
    fn publish(&self, logic: &Logic) {
        self.stats.set_circuit(logic.state());
        if logic.state() == CircuitState::Open {
            self.stats.set_open_until(logic.open_until());
        }
    }

    fn record(&self, outcome: Outcome, probe: bool) {
        // Never held across an await: a few comparisons under the lock.
        if let Ok(mut l) = self.logic.lock() {
            let before = l.state();
            l.record(outcome, probe, Instant::now());
            if l.state() != before {
                tracing::warn!(target_name = %self.name, from = before.as_str(), to = l.state().as_str(), "circuit breaker changed state");
            }
            self.publish(&l);
        }
    }
}

/// Wraps a target's service with its breaker.
#[derive(Clone)]
pub struct BreakerLayer {
    shared: Arc<Shared>,
}

impl BreakerLayer {
    /// A breaker publishing into `stats`.
    pub fn new(cfg: BreakerConfig, stats: Arc<TargetStats>, name: Arc<str>) -> Self {
        Self {
            shared: Arc::new(Shared {
                logic: Mutex::new(Logic::new(cfg, Instant::now())),
                stats,
                name,
            }),
        }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;
    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            shared: self.shared.clone(),
            admitted: None,
        }
    }
}

/// See [`BreakerLayer`].
pub struct Breaker<S> {
    inner: S,
    shared: Arc<Shared>,
    /// The admission `poll_ready` reserved (`Some(probe?)`), consumed by `call`.
    admitted: Option<bool>,
}

impl<S: Clone> Clone for Breaker<S> {
    fn clone(&self) -> Self {
        // A clone has not been polled: it reserves nothing.
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            admitted: None,
        }
    }
}

fn circuit_open(name: &str, wait: Duration) -> Error {
    let mut e = Error::new(
        ErrorKind::Unavailable,
        format!(
            "circuit open for {name}: no traffic for {:.1}s",
            wait.as_secs_f64()
        ),
    );
    e.code = Some("circuit_open".into());
    e
}

impl<S> Service<Attempt> for Breaker<S>
where
    S: Service<Attempt, Response = Reply, Error = Error> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = Error;
    type Future = Then<S::Future, Record>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.admitted.is_none() {
            let admit = match self.shared.logic.lock() {
                Ok(mut l) => {
                    let a = l.admit(Instant::now());
                    self.shared.publish(&l);
                    a
                }
                Err(_) => Ok(false),
            };
            match admit {
                Ok(probe) => self.admitted = Some(probe),
                Err(wait) => return Poll::Ready(Err(circuit_open(&self.shared.name, wait))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let record = Record {
            probe: self.admitted.take().unwrap_or(false),
            shared: self.shared.clone(),
        };
        Then::new(self.inner.call(attempt), record)
    }
}

/// Records an attempt's outcome with its breaker when the attempt ends.
pub struct Record {
    shared: Arc<Shared>,
    probe: bool,
}

impl AfterCall for Record {
    fn after(self, result: Result<Reply, Error>) -> Result<Reply, Error> {
        self.shared.record(Outcome::of(&result), self.probe);
        match result {
            // A stream that fails after its first event still says the target is sick.
            Ok(reply) if matches!(reply.body, ReplyBody::Stream(_)) => {
                let shared = self.shared;
                Ok(reply.on_settle(move |s| {
                    if let Some(kind) = s.error {
                        if Error::new(kind, "").is_retryable() {
                            shared.record(Outcome::Failure, false);
                        }
                    }
                }))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_requests: 10,
            window_secs: 10,
            cooldown_secs: 5.0,
            half_open_probes: 2,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_refuses_until_cooldown() {
        let t0 = Instant::now();
        let mut b = Logic::new(cfg(), t0);
        for _ in 0..2 {
            assert_eq!(b.admit(t0), Ok(false));
            b.record(Outcome::Failure, false, t0);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        b.record(Outcome::Failure, false, t0);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.admit(t0 + Duration::from_secs(4)).is_err());
        assert_eq!(
            b.admit(t0 + Duration::from_secs(5)),
            Ok(true),
            "first probe"
        );
        assert_eq!(b.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let t0 = Instant::now();
        let mut b = Logic::new(cfg(), t0);
        for outcome in [
            Outcome::Failure,
            Outcome::Failure,
            Outcome::Success,
            Outcome::Failure,
            Outcome::Failure,
        ] {
            b.record(outcome, false, t0);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn opens_on_failure_ratio_once_the_window_has_enough_requests() {
        let t0 = Instant::now();
        let mut b = Logic::new(cfg(), t0);
        // Alternate so the consecutive rule never fires: 5 failures in 10 requests = 50%.
        for i in 0..9 {
            let o = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            b.record(o, false, t0 + Duration::from_millis(i * 100));
        }
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "9 requests: below min_requests"
        );
        b.record(Outcome::Success, false, t0 + Duration::from_secs(1));
        assert_eq!(b.state(), CircuitState::Open, "10 requests, 5 failed");
    }

    #[test]
    fn old_failures_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Logic::new(cfg(), t0);
        for _ in 0..4 {
            b.record(Outcome::Failure, false, t0);
            b.record(Outcome::Success, false, t0);
        }
        // Twenty seconds later the window has forgotten them: 1 failure in 3 is no trip.
        let later = t0 + Duration::from_secs(20);
        for _ in 0..2 {
            b.record(Outcome::Success, false, later);
        }
        b.record(Outcome::Failure, false, later);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn half_open_probes_close_or_reopen() {
        let t0 = Instant::now();
        let mut b = Logic::new(cfg(), t0);
        for _ in 0..3 {
            b.record(Outcome::Failure, false, t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Ok(true));
        assert_eq!(b.admit(t1), Ok(true));
        assert!(b.admit(t1).is_err(), "only two probes at a time");
        b.record(Outcome::Success, true, t1);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.record(Outcome::Success, true, t1);
        assert_eq!(b.state(), CircuitState::Closed);

        for _ in 0..3 {
            b.record(Outcome::Failure, false, t1);
        }
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(b.admit(t2), Ok(true));
        b.record(Outcome::Failure, true, t2);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(
            b.admit(t2 + Duration::from_secs(4)).is_err(),
            "a failed probe restarts the cool-down"
        );
    }

    #[test]
    fn a_429_without_retry_after_is_not_a_failure() {
        let mut limited = Error::new(ErrorKind::RateLimited, "slow down");
        assert_eq!(Outcome::of(&Err(limited.clone())), Outcome::Success);
        limited.retry_after = Some(Duration::from_secs(1));
        assert_eq!(
            Outcome::of(&Err(limited)),
            Outcome::Eject(Duration::from_secs(1))
        );
        // One in three throttled, for long: the circuit stays closed.
        let t0 = Instant::now();
        let mut b = Logic::new(cfg(), t0);
        let throttled = Outcome::of(&Err(Error::new(ErrorKind::RateLimited, "429")));
        for i in 0..300u64 {
            let now = t0 + Duration::from_millis(10 * i);
            let o = if i % 3 == 0 {
                throttled
            } else {
                Outcome::Success
            };
            b.record(o, false, now);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn retry_after_ejects_for_exactly_that_long() {
        let t0 = Instant::now();
        let mut b = Logic::new(cfg(), t0);
        b.record(Outcome::Eject(Duration::from_secs(30)), false, t0);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.admit(t0 + Duration::from_secs(29)).is_err());
        assert_eq!(b.admit(t0 + Duration::from_secs(30)), Ok(true));
    }

    #[test]
    fn an_ejection_past_the_end_of_time_saturates() {
        let t0 = Instant::now();
        let mut b = Logic::new(cfg(), t0);
        b.record(Outcome::Eject(Duration::MAX), false, t0);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.admit(t0 + Duration::from_secs(3600)).is_err());
    }

    #[test]
    fn caller_errors_do_not_count_against_the_target() {
        let bad_request: Result<Reply, Error> = Err(Error::invalid("bad"));
        assert_eq!(Outcome::of(&bad_request), Outcome::Success);
        let timeout: Result<Reply, Error> = Err(Error::new(ErrorKind::Timeout, "t"));
        assert_eq!(Outcome::of(&timeout), Outcome::Failure);
        let mut limited = Error::new(ErrorKind::RateLimited, "slow down");
        limited.retry_after = Some(Duration::from_secs(2));
        assert_eq!(
            Outcome::of(&Err(limited)),
            Outcome::Eject(Duration::from_secs(2))
        );
    }
}
