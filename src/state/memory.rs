//! In-process state: the default backend, and the fallback the Redis backend decides on while
//! Redis is unreachable.
//!
//! One map behind one mutex, held for a few map operations and never across an `.await`. The
//! clock is Tokio's, so tests drive it with `tokio::time::pause`.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::{self, BoxFuture};
use tokio::time::Instant;

use super::{gcra, Counter, Decision, Reserved, Settle, State, Take};

#[derive(Debug, Clone, Copy)]
struct Entry {
    value: i64,
    expires: Instant,
}

/// Counters and GCRA cells in this process.
#[derive(Debug)]
pub struct MemoryState {
    base: Instant,
    map: Mutex<Map>,
}

#[derive(Debug, Default)]
struct Map {
    /// Hashed with foldhash: the names are made from config (keys, teams, providers), never
    /// by a caller, and a request touches up to nine of them (SipHash cost ~4k instructions).
    entries: foldhash::HashMap<String, Entry>,
    /// When each key's number was last read from the shared backend (the Redis backend's
    /// copy, [`MemoryState::admit_on_copy`]); kept apart from `entries`, whose cells expire
    /// as soon as they are full again.
    read: foldhash::HashMap<String, Instant>,
    writes: u64,
}

impl Default for MemoryState {
    fn default() -> Self {
        Self::new()
    }
}

/// What a step decided on the Redis backend's copy must leave of a limit: a tenth of it
/// (at least one unit). Closer to the end of a limit, Redis decides.
fn headroom(limit: i64) -> i64 {
    (limit.max(0) + 9) / 10
}

/// Sweep expired entries every this many writes, so an idle key costs nothing for long.
const SWEEP_EVERY: u64 = 4096;

impl Map {
    fn live(&self, key: &str, now: Instant) -> Option<i64> {
        self.entries
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| e.value)
    }

    fn mark_read(&mut self, key: &str, now: Instant) {
        match self.read.get_mut(key) {
            Some(at) => *at = now,
            None => {
                self.read.insert(key.to_owned(), now);
            }
        }
    }

    fn put(&mut self, key: &str, value: i64, expires: Instant, now: Instant) {
        self.writes += 1;
        if self.writes % SWEEP_EVERY == 0 {
            self.entries.retain(|_, e| e.expires > now);
            self.read
                .retain(|_, at| now.duration_since(*at) < super::PERIOD);
        }
        match self.entries.get_mut(key) {
            Some(e) => *e = Entry { value, expires },
            None => {
                self.entries
                    .insert(key.to_owned(), Entry { value, expires });
            }
        }
    }
}

impl MemoryState {
    /// An empty state.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            map: Mutex::new(Map::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters for limits; keep serving.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self, now: Instant) -> u64 {
        // Offset so that an empty cell's tat (== now) is never 0.
        now.duration_since(self.base).as_micros() as u64 + super::PERIOD_US
    }

    /// GCRA over the takes, all-or-nothing (or forced). Synchronous: the fallback path of the
    /// Redis backend uses it too.
    pub fn step(&self, takes: &[Take], force: bool) -> Vec<Decision> {
        self.admit_now(takes, &[], 0, force).0
    }

    /// See [`State::reserve`].
    pub fn reserve_now(&self, counters: &[Counter], amount: i64) -> Reserved {
        self.admit_now(&[], counters, amount, false).1
    }

    /// See [`State::admit_reserving`]: the takes (GCRA, forced or all-or-nothing) and the
    /// reservation of `amount` on `counters` under one lock, both made or neither.
    pub fn admit_now(
        &self,
        takes: &[Take],
        counters: &[Counter],
        amount: i64,
        force: bool,
    ) -> (Vec<Decision>, Reserved) {
        let now = Instant::now();
        let mut map = self.lock();
        self.decide(&mut map, now, (takes, counters, amount), force, false)
            .unwrap_or_default()
    }

    /// The Redis backend's admission on this replica's copy of the shared numbers: the step
    /// is made here, as [`MemoryState::admit_now`] would, only when every key's number was
    /// read from Redis within `fresh` ([`MemoryState::absorb`]) and the step leaves at least a
    /// tenth of every limit (at least one unit); otherwise nothing changes and the answer is
    /// `None` (Redis decides). So a refusal, and every step near the end of a limit, is always
    /// Redis's.
    pub fn admit_on_copy(
        &self,
        takes: &[Take],
        counters: &[Counter],
        amount: i64,
        fresh: Duration,
    ) -> Option<(Vec<Decision>, Reserved)> {
        let now = Instant::now();
        let mut map = self.lock();
        let read = |key: &str| {
            map.read
                .get(key)
                .is_some_and(|at| now.saturating_duration_since(*at) < fresh)
        };
        let keys = takes
            .iter()
            .map(|t| &t.key)
            .chain(counters.iter().map(|c| &c.key));
        if !keys.into_iter().all(|k| read(k)) {
            return None;
        }
        self.decide(&mut map, now, (takes, counters, amount), false, true)
    }

    /// Folds what a Redis step answered into the copy: each cell's and counter's number
    /// becomes the larger of the copy's and Redis's (Redis's holds the other replicas' takes;
    /// the copy may hold this replica's takes still queued for Redis), and counts as read
    /// now. `decisions` are per take and `values` per counter, as [`State::admit_reserving`]
    /// answers.
    pub fn absorb(
        &self,
        takes: &[Take],
        counters: &[Counter],
        decisions: &[Decision],
        values: &[i64],
    ) {
        let now = Instant::now();
        let now_us = self.now_us(now);
        let mut map = self.lock();
        for (t, d) in takes.iter().zip(decisions) {
            // Until the cell is full again: its tat is that far from now.
            let tat = now_us + d.reset_after.as_micros() as u64;
            let copy = map.live(&t.key, now).map_or(0, |v| v as u64);
            if tat > copy && !d.reset_after.is_zero() {
                map.put(&t.key, tat as i64, now + d.reset_after, now);
            }
            map.mark_read(&t.key, now);
        }
        for (c, &v) in counters.iter().zip(values) {
            if map.live(&c.key, now).is_none_or(|copy| v > copy) {
                map.put(&c.key, v, now + c.ttl, now);
            }
            map.mark_read(&c.key, now);
        }
    }

    /// One step under the lock: GCRA over the takes and the reservation on the counters,
    /// both made or neither. With `need_headroom`, a step that would be refused or leave less
    /// than [`headroom`] of any limit is not made and the answer is `None`.
    fn decide(
        &self,
        map: &mut Map,
        now: Instant,
        (takes, counters, amount): (&[Take], &[Counter], i64),
        force: bool,
        need_headroom: bool,
    ) -> Option<(Vec<Decision>, Reserved)> {
        let now_us = self.now_us(now);
        let mut decisions = Vec::with_capacity(takes.len());
        let mut tats = Vec::with_capacity(takes.len());
        for t in takes {
            let tat = map.live(&t.key, now).map(|v| v as u64);
            let (d, new_tat) = gcra(tat, now_us, t.limit, t.cost, force);
            decisions.push(d);
            tats.push(new_tat);
        }
        let mut values: Vec<i64> = counters
            .iter()
            .map(|c| map.live(&c.key, now).unwrap_or(0))
            .collect();
        let room = !counters
            .iter()
            .zip(&values)
            .any(|(c, v)| c.limit.is_some_and(|l| *v >= l || v + amount > l));
        let allowed = room && decisions.iter().all(|d| d.allowed);
        if need_headroom {
            let cells = takes
                .iter()
                .zip(&decisions)
                .all(|(t, d)| d.remaining >= headroom(t.limit as i64) as u64);
            let ceilings = counters.iter().zip(&values).all(|(c, v)| {
                c.limit
                    .is_none_or(|l| v.saturating_add(amount) <= l - headroom(l))
            });
            if !(allowed && cells && ceilings) {
                return None;
            }
        }
        if allowed {
            for (t, tat) in takes.iter().zip(tats) {
                let ttl = std::time::Duration::from_micros(tat.saturating_sub(now_us));
                map.put(&t.key, tat as i64, now + ttl, now);
            }
            for (c, v) in counters.iter().zip(values.iter_mut()) {
                *v += amount;
                map.put(&c.key, *v, now + c.ttl, now);
            }
        } else {
            // Nothing was taken: report the cells that had room as they are.
            for (t, d) in takes.iter().zip(decisions.iter_mut()) {
                if d.allowed && !force {
                    let tat = map.live(&t.key, now).map(|v| v as u64);
                    *d = gcra(tat, now_us, t.limit, 0, false).0;
                }
            }
        }
        Some((decisions, Reserved { allowed, values }))
    }

    /// Adds `amount` to every counter, ignoring ceilings ([`Settle::Add`]).
    pub fn add_now(&self, counters: &[Counter], amount: i64) {
        let now = Instant::now();
        let mut map = self.lock();
        for c in counters {
            let v = map.live(&c.key, now).unwrap_or(0).saturating_add(amount);
            map.put(&c.key, v, now + c.ttl, now);
        }
    }

    /// Applies a settlement at once ([`State::settle`]; also the Redis backend's copy, which
    /// holds every settlement as it is queued for Redis).
    pub fn apply(&self, change: &Settle) {
        match change {
            Settle::Adjust(takes) => {
                self.step(takes, true);
            }
            Settle::Add(counters, amount) => self.add_now(counters, *amount),
        }
    }

    /// See [`State::get`].
    pub fn get_now(&self, keys: &[String]) -> Vec<i64> {
        let now = Instant::now();
        let map = self.lock();
        keys.iter().map(|k| map.live(k, now).unwrap_or(0)).collect()
    }
}

impl State for MemoryState {
    fn admit(&self, takes: Vec<Take>) -> BoxFuture<'_, Vec<Decision>> {
        Box::pin(future::ready(self.step(&takes, false)))
    }

    fn reserve(&self, counters: Vec<Counter>, amount: i64) -> BoxFuture<'_, Reserved> {
        Box::pin(future::ready(self.reserve_now(&counters, amount)))
    }

    fn admit_reserving(
        &self,
        takes: Vec<Take>,
        counters: Vec<Counter>,
        amount: i64,
    ) -> BoxFuture<'_, (Vec<Decision>, Reserved)> {
        Box::pin(future::ready(
            self.admit_now(&takes, &counters, amount, false),
        ))
    }

    fn get(&self, keys: Vec<String>) -> BoxFuture<'_, Vec<i64>> {
        Box::pin(future::ready(self.get_now(&keys)))
    }

    fn settle(&self, change: Settle) {
        self.apply(&change);
    }

    fn flush(&self, _: Duration) -> BoxFuture<'_, ()> {
        Box::pin(future::ready(()))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn take(key: &str, limit: u64, cost: i64) -> Take {
        Take {
            key: key.into(),
            limit,
            cost,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refused_steps_take_nothing_from_any_cell() {
        let s = MemoryState::new();
        assert!(s.step(&[take("r", 5, 1), take("t", 100, 90)], false)[1].allowed);
        // The token cell is short: the request cell must not be charged either.
        let d = s.step(&[take("r", 5, 1), take("t", 100, 20)], false);
        assert!(d[0].allowed && !d[1].allowed);
        let d = s.step(&[take("r", 5, 1)], false);
        assert_eq!(d[0].remaining, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_combined_step_takes_and_reserves_both_or_neither() {
        let s = MemoryState::new();
        let spend = |limit| Counter {
            key: "spend".into(),
            limit: Some(limit),
            ttl: Duration::from_secs(60),
        };
        // Both fit: the cell is charged and the amount added.
        let (d, r) = s.admit_now(&[take("r", 2, 1)], &[spend(100)], 60, false);
        assert!(d[0].allowed && r.allowed);
        assert_eq!((d[0].remaining, r.values.clone()), (1, vec![60]));
        // The ceiling refuses: the cell is not charged either (its room reported as it is).
        let (d, r) = s.admit_now(&[take("r", 2, 1)], &[spend(100)], 50, false);
        assert!(d[0].allowed && !r.allowed);
        assert_eq!((d[0].remaining, r.values), (1, vec![60]));
        // The cell refuses: nothing is added.
        s.step(&[take("r", 2, 1)], false);
        let (d, r) = s.admit_now(&[take("r", 2, 1)], &[spend(100)], 10, false);
        assert!(!d[0].allowed && !r.allowed);
        assert_eq!(s.get_now(&["spend".into()]), vec![60]);
    }

    #[tokio::test(start_paused = true)]
    async fn cells_refill_with_the_clock() {
        let s = MemoryState::new();
        for _ in 0..2 {
            assert!(s.step(&[take("r", 2, 1)], false)[0].allowed);
        }
        let d = s.step(&[take("r", 2, 1)], false);
        assert!(!d[0].allowed);
        assert_eq!(d[0].retry_after, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(30) - Duration::from_micros(1)).await;
        assert!(!s.step(&[take("r", 2, 1)], false)[0].allowed);
        tokio::time::advance(Duration::from_micros(1)).await;
        assert!(s.step(&[take("r", 2, 1)], false)[0].allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn counters_respect_ceilings_and_expire() {
        let s = MemoryState::new();
        let c = |limit| Counter {
            key: "spend".into(),
            limit,
            ttl: Duration::from_secs(10),
        };
        assert!(s.reserve_now(&[c(Some(100))], 60).allowed);
        let r = s.reserve_now(&[c(Some(100))], 50);
        assert!(!r.allowed);
        assert_eq!(r.values, vec![60]);
        // Unconditional adjustments may cross the ceiling (actual cost above the estimate)...
        assert_eq!(s.reserve_now(&[c(None)], 45).values, vec![105]);
        // ...after which even a zero reservation is refused.
        assert!(!s.reserve_now(&[c(Some(100))], 0).allowed);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(s.get_now(&["spend".into()]), vec![0]);
    }
}
