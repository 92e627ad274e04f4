//! Shared counters behind one trait: rate-limit cells (GCRA) and spend counters.
//!
//! [`memory::MemoryState`] keeps them in this process (the default: one sidecar on a laptop
//! needs no Redis). [`redis::RedisState`] keeps them in a Redis-protocol server so that every
//! replica of a deployment decides against the same numbers: admission is an atomic Lua step on
//! the server, not a local copy (a fleet deciding on local copies alone admits limit ×
//! replicas). `state.sync_ms` trades a little of that for latency: a replica admits on its copy
//! while the copy was read from Redis within that many milliseconds and a tenth of every limit
//! is left, and Redis decides the rest, every refusal included.
//! When Redis is unreachable it decides on its own local state, says so once in the log and in
//! [`backend_healthy`], and goes back to Redis when it answers again.
//!
//! All limits here are per minute. Keys are written by callers (layers) with a Redis Cluster
//! hash tag per principal, so the keys one step touches share a slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::{StateBackend, StateConfig};

pub mod memory;
pub mod redis;
mod resp;

/// The window every rate limit is expressed over.
pub const PERIOD: Duration = Duration::from_secs(60);
const PERIOD_US: u64 = 60_000_000;

/// One GCRA cell to take from: `cost` units of a `limit`-per-minute allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// The cell's key (already prefixed).
    pub key: String,
    /// Units per minute; also the burst (a whole minute's allowance may be taken at once).
    pub limit: u64,
    /// Units taken; negative when a [`Settle::Adjust`] gives back an over-estimate.
    pub cost: i64,
}

/// The outcome of one [`Take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether this cell had room.
    pub allowed: bool,
    /// Units left right now (after the take, when every take of the step was allowed).
    pub remaining: u64,
    /// Until the cell is full again.
    pub reset_after: Duration,
    /// When denied: until the cost would fit.
    pub retry_after: Duration,
}

/// One spend (or other) counter and its optional ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// The counter's key (already prefixed).
    pub key: String,
    /// Refuse when the counter is at or over this, or the amount would take it over.
    pub limit: Option<i64>,
    /// How long the counter is kept: from when a reservation makes it, and again from each
    /// settled change ([`Settle::Add`]).
    pub ttl: Duration,
}

/// The outcome of [`State::reserve`] (and of the reservation in [`State::admit_reserving`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Whether the amount was added (every ceiling had room, and every take of a combined
    /// step fitted).
    pub allowed: bool,
    /// The counters' values: after the add when allowed, as found when not.
    pub values: Vec<i64>,
}

/// A change nobody waits for: settling a request once its actual usage is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Unconditional GCRA takes (reconciling an estimate with actual usage; a refund when a
    /// cost is negative).
    Adjust(Vec<Take>),
    /// Adds an amount (may be negative) to counters, whatever their ceilings.
    Add(Vec<Counter>, i64),
}

/// A failure to reach the shared state (the caller falls back to local state).
#[derive(Debug, thiserror::Error)]
#[error("state backend: {0}")]
pub struct StateError(pub String);

/// The shared-state operations limits and budgets need. Each call is atomic as a whole.
pub trait State: Send + Sync + 'static {
    /// All-or-nothing GCRA: when every take fits, all are taken; otherwise none is.
    fn admit(&self, takes: Vec<Take>) -> BoxFuture<'_, Vec<Decision>>;
    /// All-or-nothing: adds `amount` to every counter when no ceiling would be crossed.
    fn reserve(&self, counters: Vec<Counter>, amount: i64) -> BoxFuture<'_, Reserved>;
    /// [`State::admit`] and [`State::reserve`] as one atomic step (one round trip to a shared
    /// backend): the takes are taken and the amount added only when every take fits *and* no
    /// ceiling would be crossed; otherwise nothing changes. [`Reserved::allowed`] says whether
    /// the whole step was made; which part refused is in the decisions and the values.
    fn admit_reserving(
        &self,
        takes: Vec<Take>,
        counters: Vec<Counter>,
        amount: i64,
    ) -> BoxFuture<'_, (Vec<Decision>, Reserved)>;
    /// Current values of counters (0 when absent).
    fn get(&self, keys: Vec<String>) -> BoxFuture<'_, Vec<i64>>;
    /// Applies a settlement without making anyone wait: at once where that costs nothing
    /// (memory); otherwise queued and written behind, batched with the others queued meanwhile.
    fn settle(&self, change: Settle);
    /// Waits (at most `limit`) until every queued settlement is written.
    fn flush(&self, limit: Duration) -> BoxFuture<'_, ()>;
    /// `memory` or `redis`.
    fn backend(&self) -> &'static str;
    /// Whether decisions are being made on the shared backend right now.
    fn healthy(&self) -> bool;
}

impl std::fmt::Debug for dyn State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "State({})", self.backend())
    }
}

/// The state of one stack, shared by its layers.
pub type SharedState = Arc<dyn State>;

/// Builds the configured backend. Redis connects lazily: a sidecar starts (and serves on local
/// state) even when Redis is not up yet.
pub fn build(config: &StateConfig) -> Result<SharedState, StateError> {
    match (config.backend, &config.url) {
        (StateBackend::Redis, Some(url)) => {
            Ok(Arc::new(redis::RedisState::connect(url.expose(), config)?))
        }
        (StateBackend::Redis, None) => Err(StateError("state.url is required for redis".into())),
        (StateBackend::Memory, _) => Ok(Arc::new(memory::MemoryState::new())),
    }
}

/// How many shared-state backends of this process are unreachable right now.
static BACKENDS_DOWN: AtomicUsize = AtomicUsize::new(0);

/// Whether every shared-state backend of the process answers (always true for `memory`).
/// Also exported as the `switchyard_state_backend_up` gauge.
pub fn backend_healthy() -> bool {
    BACKENDS_DOWN.load(Ordering::Relaxed) == 0
}

/// Records one backend going down (`false`) or coming back (`true`).
pub(crate) fn set_backend_healthy(up: bool) {
    let down = if up {
        BACKENDS_DOWN.fetch_sub(1, Ordering::Relaxed) - 1
    } else {
        BACKENDS_DOWN.fetch_add(1, Ordering::Relaxed) + 1
    };
    crate::telemetry::metrics::state_backend_up().set(i64::from(down == 0));
}

/// One GCRA step for one cell, in microseconds: the cell's stored theoretical arrival time
/// (`tat`, `None` when empty), the clock, and the take. Returns the decision and the `tat` to
/// store when the step commits. The Lua script in `redis.rs` is this function, line for line.
///
/// Emission interval `I = 60 s / limit`; a take of `c` units moves `tat` by `c × I`, and is
/// allowed when the new `tat` is no more than one period ahead of now: a full cell holds
/// exactly `limit` units.
pub fn gcra(tat: Option<u64>, now: u64, limit: u64, cost: i64, force: bool) -> (Decision, u64) {
    let interval = PERIOD_US as f64 / limit.max(1) as f64;
    let tat = tat.unwrap_or(now).max(now) as f64;
    let now_f = now as f64;
    let new_tat = (tat + cost as f64 * interval).max(now_f);
    let allow_at = new_tat - PERIOD_US as f64;
    let allowed = force || now_f >= allow_at;
    let after = if allowed { new_tat } else { tat };
    let remaining = ((now_f + PERIOD_US as f64 - after) / interval)
        .floor()
        .max(0.0) as u64;
    let us = |v: f64| Duration::from_micros(v.max(0.0).ceil() as u64);
    (
        Decision {
            allowed,
            remaining,
            reset_after: us(after - now_f),
            retry_after: if allowed {
                Duration::ZERO
            } else {
                us(allow_at - now_f)
            },
        },
        new_tat as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn a_full_cell_holds_exactly_the_limit() {
        let now = 1_000 * S;
        let mut tat = None;
        for i in 0..10 {
            let (d, t) = gcra(tat, now, 10, 1, false);
            assert!(d.allowed, "take {i}");
            assert_eq!(d.remaining, 9 - i);
            tat = Some(t);
        }
        let (d, _) = gcra(tat, now, 10, 1, false);
        assert!(!d.allowed);
        // One unit comes back every 6 s.
        assert_eq!(d.retry_after, Duration::from_secs(6));
        assert_eq!(d.reset_after, Duration::from_secs(60));
    }

    #[test]
    fn one_microsecond_early_is_refused_and_on_time_is_admitted() {
        let now = 1_000 * S;
        let (_, tat) = gcra(None, now, 10, 10, false);
        assert!(!gcra(Some(tat), now + 6 * S - 1, 10, 1, false).0.allowed);
        let (d, _) = gcra(Some(tat), now + 6 * S, 10, 1, false);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn a_take_larger_than_the_limit_never_fits() {
        let (d, _) = gcra(None, 5 * S, 100, 101, false);
        assert!(!d.allowed);
        assert!(d.retry_after > Duration::ZERO);
        assert!(gcra(None, 5 * S, 100, 100, false).0.allowed);
    }

    #[test]
    fn an_idle_cell_refills_but_not_past_the_limit() {
        let now = 1_000 * S;
        let (_, tat) = gcra(None, now, 60, 60, false);
        let (d, _) = gcra(Some(tat), now + 3600 * S, 60, 1, false);
        assert_eq!(d.remaining, 59);
    }

    #[test]
    fn refunds_give_back_and_clamp_at_full() {
        let now = 1_000 * S;
        let (_, tat) = gcra(None, now, 1000, 900, false);
        let (d, tat2) = gcra(Some(tat), now, 1000, -400, true);
        assert_eq!(d.remaining, 500);
        let (d, _) = gcra(Some(tat2), now, 1000, -10_000, true);
        assert_eq!(d.remaining, 1000);
    }

    #[test]
    fn forced_takes_go_into_debt() {
        let now = 1_000 * S;
        let (d, tat) = gcra(None, now, 10, 15, true);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        // 5 units of debt plus one to take: 36 s.
        let (d, _) = gcra(Some(tat), now, 10, 1, false);
        assert_eq!(d.retry_after, Duration::from_secs(36));
    }
}
