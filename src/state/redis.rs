//! Redis-protocol shared state (Redis, Valkey): every replica decides against the same cells.
//!
//! Each operation is one atomic Lua script (one round trip: `EVALSHA` of the script loaded when
//! the connection was made, `EVAL` of its text after a `NOSCRIPT`) over one connection
//! (`state/resp.rs`), which pipelines concurrent requests. Time is the server's (`TIME`), so
//! replicas with skewed clocks still agree.
//!
//! Settlements nobody waits for ([`Settle`]: token refunds, spend once a reply is priced) are
//! written behind by one task: whatever queued up while the previous write was in flight goes
//! in one pipelined round trip, so under load they cost a fraction of a round trip each, and a
//! request never waits for them. Shutdown flushes the queue ([`State::flush`]).
//!
//! With `state.sync_ms`, a step is decided on this replica's copy of the shared numbers when
//! the copy is that fresh and the step leaves a tenth of every limit
//! ([`MemoryState::admit_on_copy`]); Redis then gets the same step, forced, written behind, and
//! the copy is refreshed by every step Redis decides. Refusals are always Redis's.
//!
//! When Redis does not answer within `state.timeout_ms` (the connection is then closed, and the
//! next step makes a new one), the operation is decided on a local
//! [`MemoryState`] instead: the sidecar keeps serving on local limits, logs the outage once, and
//! lowers [`super::backend_healthy`]. While down, one request per `state.retry_secs` probes
//! Redis; the first answer resumes shared accounting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use super::memory::MemoryState;
use super::resp::{self, Commands, Connection, Endpoint, Reply};
use super::{Counter, Decision, Reserved, Settle, State, StateError, Take};
use crate::config::StateConfig;
use crate::telemetry::metrics::{state_admissions as admissions, StateDecided as Decided};

/// Admission: [`super::gcra`] over several cells and a reservation on spend counters, as one
/// all-or-nothing step (cells and counters of one principal share a hash tag, so one slot).
/// KEYS: the cells, then the counters. ARGV: force (0/1); the number of cells; limit and cost
/// per cell; the amount; per counter its ceiling ('' for none); per counter its TTL ms.
/// Returns per cell: allowed (0/1), remaining, reset_after µs, retry_after µs; then whether the
/// whole step was made (0/1) and the counters' values (after the add when made, else as found);
/// as one string of integers apart by spaces. As an array of integer replies it cost the
/// redis crate's parser about 800 instructions an element, and a keyed request's admission
/// and settlement carry ~20; as one bulk string, a keyed request with Redis limits and a
/// budget went 177.5k -> 161.3k instructions (bench/instructions.sh).
/// With no counters it is an admission (or a forced settlement); with no cells, a reservation.
/// The script is on a keyed request's path, so its time in Redis is latency: one `MGET` for
/// every key, a counter's TTL set only when it is made, and one `%d` format for the reply took
/// a key's admission (two cells, two counters) from ~19 to ~14 µs of Redis time per call
/// (`redis-benchmark -c 1 evalsha …`, `INFO commandstats`).
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = 60000000
local force = ARGV[1] == '1'
local n = tonumber(ARGV[2])
local m = #KEYS - n
local found = #KEYS > 0 and redis.call('MGET', unpack(KEYS)) or {}
local out, tats, olds, ok = {}, {}, {}, true
for i = 1, n do
  local limit = tonumber(ARGV[1 + 2 * i])
  local cost = tonumber(ARGV[2 + 2 * i])
  local interval = period / math.max(limit, 1)
  local tat = tonumber(found[i] or now)
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  if new_tat < now then new_tat = now end
  local allow_at = new_tat - period
  local allowed = force or now >= allow_at
  local after = tat
  if allowed then after = new_tat end
  local remaining = math.floor((now + period - after) / interval)
  if remaining < 0 then remaining = 0 end
  local retry = 0
  if not allowed then
    retry = math.ceil(allow_at - now)
    ok = false
  end
  tats[i] = new_tat
  olds[i] = tat
  out[#out + 1] = allowed and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(after - now)
  out[#out + 1] = retry
end
local base = 3 + 2 * n
local given = ARGV[base] or '0'
local amount = tonumber(given)
local vals = {}
for j = 1, m do
  vals[j] = tonumber(found[n + j] or '0')
  local lim = ARGV[base + j]
  if lim ~= '' then
    lim = tonumber(lim)
    if vals[j] >= lim or vals[j] + amount > lim then ok = false end
  end
end
if ok then
  for i = 1, n do
    local ttl = math.ceil((tats[i] - now) / 1000)
    if ttl > 0 then
      redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
    else
      redis.call('DEL', KEYS[i])
    end
  end
  -- A counter gets its TTL when it is made: its name holds its window, which ends before.
  for j = 1, m do
    if found[n + j] then
      vals[j] = redis.call('INCRBY', KEYS[n + j], given)
    else
      vals[j] = amount
      redis.call('SET', KEYS[n + j], given, 'PX', ARGV[base + m + j])
    end
  end
elseif not force then
  -- Nothing was taken: report the cells that had room as they are.
  for i = 1, n do
    if out[4 * i - 3] == 1 then
      local interval = period / math.max(tonumber(ARGV[1 + 2 * i]), 1)
      out[4 * i - 2] = math.max(math.floor((now + period - olds[i]) / interval), 0)
      out[4 * i - 1] = math.ceil(olds[i] - now)
    end
  end
end
out[#out + 1] = ok and 1 or 0
for j = 1, m do out[#out + 1] = vals[j] end
-- '%d', not tostring: Lua writes numbers past 1e14 (spend in nano-USD) with an exponent.
-- Every value here is whole; '%d' costs half what '%.0f' does, and one call formats them all.
return string.format('%d' .. string.rep(' %d', #out - 1), unpack(out))
"#;

/// Settlements held for the writer; past this many, more are applied to the local state
/// instead (Redis is then too slow to keep up, and the next write says so if it fails).
const QUEUE_MAX: usize = 65_536;

/// Adds an amount to counters whatever their ceilings ([`Settle::Add`]), in one reply.
/// KEYS: counters. ARGV: amount, then each counter's TTL ms. Returns the counters' values
/// after the add, as [`ADMIT`] does (the copy of `state.sync_ms` is refreshed from them).
const ADD: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('INCRBY', key, ARGV[1])
  redis.call('PEXPIRE', key, ARGV[1 + i])
end
if #out == 0 then return '' end
return string.format('%d' .. string.rep(' %d', #out - 1), unpack(out))
"#;

/// Shared state in Redis, with a local fallback.
pub struct RedisState {
    core: Arc<Core>,
}

/// What the request path and the write-behind task share.
struct Core {
    endpoint: Endpoint,
    /// The connection in use, made on first use and again after it breaks.
    link: Mutex<Option<Arc<Link>>>,
    /// Held while a connection is being made, so that only one is.
    connecting: tokio::sync::Mutex<()>,
    /// Decisions while Redis is unreachable; with `state.sync_ms`, also the copy of the
    /// shared numbers admissions are decided on ([`MemoryState::admit_on_copy`]), which then
    /// holds every settlement too.
    local: MemoryState,
    /// `state.sync_ms`: how fresh the copy must be for a step to be decided on it; `None`
    /// (0) when every admission is a step in Redis.
    copy: Option<Duration>,
    timeout: Duration,
    retry: Duration,
    healthy: AtomicBool,
    /// Milliseconds since `base` before which no request probes a Redis known to be down.
    next_probe_ms: AtomicU64,
    base: Instant,
    queue: Mutex<Queue>,
    /// Rung when the queue gets its first item, or on close.
    bell: Notify,
    /// Rung by the writer each time it finds the queue empty.
    idle: Notify,
}

/// A connection, and the names (SHA1) the server gave our scripts when it was made.
struct Link {
    conn: Connection,
    admit: String,
    add: String,
}

/// Which script a command runs.
#[derive(Clone, Copy)]
enum Script {
    Admit,
    Add,
}

/// Settlements waiting for the writer.
#[derive(Default)]
struct Queue {
    items: Vec<Settle>,
    /// A batch taken from `items` is being written.
    writing: bool,
    /// The state was dropped: the writer empties the queue and ends.
    closed: bool,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("healthy", &self.core.healthy)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// A lazily connected backend (must be called inside a Tokio runtime).
    pub fn connect(url: &str, config: &StateConfig) -> Result<Self, StateError> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| StateError("the Redis state needs a Tokio runtime".into()))?;
        // The URL may carry a password: the error never echoes it.
        let endpoint = Endpoint::parse(url)
            .map_err(|why| StateError(format!("state.url is not a usable Redis URL: {why}")))?;
        // Registers the gauge and the counters with the process's metrics.
        let _ = crate::telemetry::metrics::state_backend_up();
        let _ = admissions(Decided::Shared);
        let core = Arc::new(Core {
            endpoint,
            link: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
            local: MemoryState::new(),
            copy: (config.sync_ms > 0).then(|| Duration::from_millis(config.sync_ms)),
            timeout: Duration::from_millis(config.timeout_ms),
            retry: Duration::from_secs_f64(config.retry_secs),
            healthy: AtomicBool::new(true),
            next_probe_ms: AtomicU64::new(0),
            base: Instant::now(),
            queue: Mutex::default(),
            bell: Notify::new(),
            idle: Notify::new(),
        });
        rt.spawn(write_behind(core.clone()));
        Ok(Self { core })
    }
}

impl Core {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> Option<Arc<Link>> {
        let link = self.link.lock().unwrap_or_else(|e| e.into_inner());
        link.as_ref().filter(|l| !l.conn.is_closed()).cloned()
    }

    /// The connection in use, or a new one (loading the scripts on it).
    async fn link(&self) -> Result<Arc<Link>, resp::Error> {
        if let Some(link) = self.current() {
            return Ok(link);
        }
        let _one = self.connecting.lock().await;
        if let Some(link) = self.current() {
            return Ok(link);
        }
        let (conn, replies) = Connection::open(&self.endpoint, self.timeout, |c| {
            c.cmd("SCRIPT", 2).arg("LOAD").arg(ADMIT);
            c.cmd("SCRIPT", 2).arg("LOAD").arg(ADD);
        })
        .await?;
        let sha = |r: Option<&Reply>| match r {
            Some(Reply::Bytes(b)) => String::from_utf8(b.clone())
                .map_err(|_| resp::Error::Protocol("a script name that is not UTF-8")),
            Some(Reply::Error(e)) => Err(resp::Error::Refused(e.clone())),
            _ => Err(resp::Error::Protocol("no script name from SCRIPT LOAD")),
        };
        let link = Arc::new(Link {
            admit: sha(replies.first())?,
            add: sha(replies.get(1))?,
            conn,
        });
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
        Ok(link)
    }

    /// Closes `link` if it is still the one in use (the next step makes a new one).
    fn drop_link(&self, link: &Arc<Link>) {
        let mut current = self.link.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, link)) {
            *current = None;
        }
        link.conn.close();
    }

    /// Whether this request should ask Redis: always while healthy; while down, one request
    /// per retry interval.
    fn may_try(&self) -> bool {
        if self.healthy.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_probe_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(
                    next,
                    now + self.retry.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Redis answered: shared accounting resumes if it had stopped.
    fn answered(&self) {
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!("redis state backend answers again; shared limits resumed");
            super::set_backend_healthy(true);
        }
    }

    /// Redis did not answer (or answered with an error): local limits until it does.
    fn failed(&self, why: &dyn std::fmt::Display) {
        self.next_probe_ms.store(
            self.now_ms() + self.retry.as_millis() as u64,
            Ordering::Relaxed,
        );
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                error = %why,
                "redis state backend unreachable; serving on local limits until it returns"
            );
            super::set_backend_healthy(false);
        }
    }

    /// Sends the commands `build` packs (for the connection it is given) and returns one reply
    /// per command; `None` means "decide locally". The connection keeps the timeout (a
    /// request waiting longer fails, `state/resp.rs`); one that fails is closed.
    async fn call(&self, build: impl FnOnce(&mut Commands, &Link)) -> Option<Vec<Reply>> {
        if !self.may_try() {
            return None;
        }
        let link = match self.link().await {
            Ok(link) => link,
            Err(e) => {
                self.failed(&e);
                return None;
            }
        };
        let mut cmds = Commands::default();
        build(&mut cmds, &link);
        let sent = match link.conn.send(cmds) {
            Ok(reply) => reply.await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(replies) => {
                self.answered();
                Some(replies)
            }
            Err(e) => {
                self.drop_link(&link);
                self.failed(&e);
                None
            }
        }
    }

    /// Packs the start of one run of a script: `EVALSHA`, or `EVAL` with its text when the
    /// server forgot it; `args` more arguments follow (the key count, keys, then ARGV).
    fn script<'c>(
        cmds: &'c mut Commands,
        link: &Link,
        script: Script,
        eval: bool,
        args: usize,
    ) -> &'c mut Commands {
        let (text, sha) = match script {
            Script::Admit => (ADMIT, &link.admit),
            Script::Add => (ADD, &link.add),
        };
        if eval {
            cmds.cmd("EVAL", 1 + args).arg(text)
        } else {
            cmds.cmd("EVALSHA", 1 + args).arg(sha)
        }
    }

    /// Packs the [`ADMIT`] step over cells and counters.
    fn admit_cmd(
        cmds: &mut Commands,
        link: &Link,
        eval: bool,
        (takes, counters, amount, force): (&[Take], &[Counter], i64, bool),
    ) {
        let args = 4 + 3 * takes.len() + 3 * counters.len();
        Self::script(cmds, link, Script::Admit, eval, args).arg(takes.len() + counters.len());
        for t in takes {
            cmds.arg(&t.key);
        }
        for c in counters {
            cmds.arg(&c.key);
        }
        cmds.arg(if force { "1" } else { "0" }).arg(takes.len());
        for t in takes {
            cmds.arg(t.limit).arg(t.cost);
        }
        cmds.arg(amount);
        for c in counters {
            match c.limit {
                Some(l) => cmds.arg(l),
                None => cmds.arg(""),
            };
        }
        for c in counters {
            cmds.arg(c.ttl.as_millis().max(1) as u64);
        }
    }

    /// One all-or-nothing admission step in Redis (forced steps are settlements,
    /// [`Self::write`]); `None` means "decide locally".
    async fn admit_step(
        &self,
        takes: &[Take],
        counters: &[Counter],
        amount: i64,
    ) -> Option<(Vec<Decision>, Reserved)> {
        let step = (takes, counters, amount, false);
        let mut replies = self
            .call(|c, link| Self::admit_cmd(c, link, false, step))
            .await?;
        // Redis forgot the script (restarted, or SCRIPT FLUSH): once more, with its text.
        if replies.first().is_some_and(Reply::is_noscript) {
            replies = self
                .call(|c, link| Self::admit_cmd(c, link, true, step))
                .await?;
        }
        let reply = match replies.pop() {
            Some(Reply::Bytes(b)) => b,
            Some(Reply::Error(e)) => {
                self.failed(&e);
                return None;
            }
            _ => {
                self.failed(&"an admission reply that is not a string");
                return None;
            }
        };
        let flat = parse_ints(&reply)?;
        let cells = takes.len() * 4;
        if flat.len() != cells + 1 + counters.len() {
            return None;
        }
        let decisions = decisions(&flat[..cells]);
        let reserved = Reserved {
            allowed: flat[cells] == 1,
            values: flat[cells + 1..].to_vec(),
        };
        Some((decisions, reserved))
    }

    /// Waits (at most `limit`) until every queued settlement is written.
    async fn drain(&self, limit: Duration) {
        {
            let q = self.queue();
            if q.items.is_empty() && !q.writing {
                return;
            }
        }
        let drained = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                {
                    let q = self.queue();
                    if q.items.is_empty() && !q.writing {
                        return;
                    }
                }
                idle.await;
            }
        };
        // A writer gathering settlements ([`GATHER`]) writes them now.
        self.bell.notify_one();
        let _ = tokio::time::timeout(limit, drained).await;
    }

    /// Folds what Redis answered to a settlement into the copy admissions are decided on: a
    /// cell's state, or counters' values, with every replica's takes written so far. So a
    /// replica that keeps writing keeps its copy as fresh as its writes, and learns the
    /// other replicas' takes a few milliseconds after they reach Redis.
    fn refresh_copy(&self, change: &Settle, reply: &Reply) {
        let Reply::Bytes(b) = reply else { return };
        let Some(flat) = parse_ints(b) else { return };
        match change {
            Settle::Adjust(takes) if flat.len() == 4 * takes.len() + 1 => {
                let cells = decisions(&flat[..4 * takes.len()]);
                self.local.absorb(takes, &[], &cells, &[]);
            }
            Settle::Add(counters, _) if flat.len() == counters.len() => {
                self.local.absorb(&[], counters, &[], &flat);
            }
            _ => {}
        }
    }

    /// Settlements Redis did not take, kept by the local state instead (which already holds
    /// them when it is the copy admissions are decided on).
    fn settle_locally(&self, changes: Vec<Settle>) {
        if self.copy.is_none() {
            for change in changes {
                self.local.settle(change);
            }
        }
    }

    /// Queues a change for the writer. Past [`QUEUE_MAX`] it is left to the local state.
    fn enqueue(&self, change: Settle) {
        let mut q = self.queue();
        if q.items.len() >= QUEUE_MAX {
            drop(q);
            self.settle_locally(vec![change]);
            return;
        }
        let ring = q.items.is_empty() && !q.writing;
        q.items.push(change);
        drop(q);
        if ring {
            self.bell.notify_one();
        }
    }

    /// Packs the script step of one settlement.
    fn settle_cmd(cmds: &mut Commands, link: &Link, eval: bool, change: &Settle) {
        match change {
            Settle::Adjust(takes) => Self::admit_cmd(cmds, link, eval, (takes, &[], 0, true)),
            Settle::Add(counters, amount) => {
                Self::script(cmds, link, Script::Add, eval, 2 + 2 * counters.len())
                    .arg(counters.len());
                for c in counters {
                    cmds.arg(&c.key);
                }
                cmds.arg(*amount);
                for c in counters {
                    cmds.arg(c.ttl.as_millis().max(1) as u64);
                }
            }
        }
    }

    /// Writes a batch of settlements in one pipelined round trip, one script step each
    /// (falling back to the local state when Redis does not answer). Settlements of the same
    /// cell or counters are summed first ([`coalesce`]).
    async fn write(&self, batch: Vec<Settle>) {
        let batch = coalesce(batch);
        if batch.is_empty() {
            return;
        }
        let sent = self
            .call(|c, link| {
                for change in &batch {
                    Self::settle_cmd(c, link, false, change);
                }
            })
            .await;
        let Some(replies) = sent else {
            self.settle_locally(batch);
            return;
        };
        if self.copy.is_some() {
            for (change, reply) in batch.iter().zip(&replies) {
                self.refresh_copy(change, reply);
            }
        }
        // Redis forgot the scripts (restarted, or SCRIPT FLUSH): those steps again, with the
        // scripts' text. Nothing else in the batch runs twice.
        let lost: Vec<Settle> = batch
            .into_iter()
            .zip(&replies)
            .filter(|(_, r)| r.is_noscript())
            .map(|(change, _)| change)
            .collect();
        if lost.is_empty() {
            return;
        }
        let again = self
            .call(|c, link| {
                for change in &lost {
                    Self::settle_cmd(c, link, true, change);
                }
            })
            .await;
        if again.is_none() {
            self.settle_locally(lost);
        }
    }
}

/// One settlement per cell (an [`Settle::Adjust`] of one take) and per set of counters (an
/// [`Settle::Add`]), their amounts summed, in the order each first appears; what sums to
/// nothing is left out. Under load a key's requests settle while the previous write is in
/// flight, so a batch holds many settlements of the same few keys: each is a script run in
/// Redis, which runs one at a time and admissions wait behind. Summed, a cell's refunds are
/// applied as one (an over-refund is clamped once, not step by step); counters add exactly.
fn coalesce(batch: Vec<Settle>) -> Vec<Settle> {
    use std::collections::HashMap;
    let changes = |change: &Settle| match change {
        Settle::Adjust(t) => t.iter().any(|t| t.cost != 0),
        Settle::Add(c, n) => !c.is_empty() && *n != 0,
    };
    if batch.len() < 2 {
        return batch.into_iter().filter(changes).collect();
    }
    // Which earlier settlement each one is summed into (itself when it is the first). The
    // first of each key are looked up in a list while they are few (a request's own two
    // settlements, a few keys' under load: SipHash on their names cost more than the
    // comparisons), in a map past that.
    let into: Vec<usize> = {
        const FEW: usize = 32;
        let mut few: Vec<((bool, &str), usize)> = Vec::new();
        let mut many: HashMap<(bool, &str), usize> = HashMap::new();
        let same = |a: &Settle, b: &Settle| match (a, b) {
            (Settle::Adjust(a), Settle::Adjust(b)) => {
                a[0].key == b[0].key && a[0].limit == b[0].limit
            }
            (Settle::Add(a, _), Settle::Add(b, _)) => a == b,
            _ => false,
        };
        batch
            .iter()
            .enumerate()
            .map(|(i, change)| {
                let key = match change {
                    Settle::Adjust(t) if t.len() == 1 => (false, t[0].key.as_str()),
                    Settle::Add(c, _) if !c.is_empty() => (true, c[0].key.as_str()),
                    _ => return i,
                };
                let found = if many.is_empty() {
                    few.iter().find(|(k, _)| *k == key).map(|&(_, at)| at)
                } else {
                    many.get(&key).copied()
                };
                match found {
                    Some(at) if same(&batch[at], change) => at,
                    Some(_) => i,
                    None if many.is_empty() && few.len() < FEW => {
                        few.push((key, i));
                        i
                    }
                    None => {
                        if many.is_empty() {
                            many.extend(few.drain(..));
                        }
                        many.insert(key, i);
                        i
                    }
                }
            })
            .collect()
    };
    if into.iter().enumerate().all(|(i, &to)| to == i) {
        let mut batch = batch;
        batch.retain(changes);
        return batch;
    }
    let mut slots: Vec<Option<Settle>> = batch.into_iter().map(Some).collect();
    for (i, &to) in into.iter().enumerate() {
        if to == i {
            continue;
        }
        match (slots[i].take(), &mut slots[to]) {
            (Some(Settle::Adjust(t)), Some(Settle::Adjust(sum))) => sum[0].cost += t[0].cost,
            (Some(Settle::Add(_, n)), Some(Settle::Add(_, sum))) => *sum += n,
            (change, _) => slots[i] = change,
        }
    }
    slots.into_iter().flatten().filter(changes).collect()
}

/// How long the writer lets settlements gather after the first one queues on an idle queue.
///
/// Redis runs one script at a time, and a keyed request's admission waits behind whatever is
/// running. Written at once, a request's settlements (a refund to its token cell, spend to the
/// key's and the team's counters: three script runs, ~40 µs of Redis time) reach Redis just
/// as the same caller's next request asks for admission, which then waits for them. Gathered
/// for a moment, the settlements of the requests made meanwhile are summed ([`coalesce`]) into
/// those same three runs. Nothing is lost by the wait: spend is reserved at admission, and a
/// settlement only corrects an estimate, a few milliseconds later. Under load the writer is
/// never idle and does not wait; a flush or the state's drop cuts the wait short.
const GATHER: Duration = Duration::from_millis(2);

/// The write-behind task: one batch at a time, whatever queued meanwhile next.
async fn write_behind(core: Arc<Core>) {
    loop {
        let (batch, closed) = {
            let mut q = core.queue();
            q.writing = !q.items.is_empty();
            (std::mem::take(&mut q.items), q.closed)
        };
        if !batch.is_empty() {
            core.write(batch).await;
            continue;
        }
        core.idle.notify_waiters();
        if closed {
            return;
        }
        core.bell.notified().await;
        // Rung again (a flush, or the drop) while gathering: write now.
        let _ = tokio::time::timeout(GATHER, core.bell.notified()).await;
    }
}

impl Drop for RedisState {
    fn drop(&mut self) {
        self.core.queue().closed = true;
        self.core.bell.notify_one();
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // A backend dropped (config reload, shutdown) while down no longer counts as down.
        if !self.healthy.load(Ordering::Relaxed) {
            super::set_backend_healthy(true);
        }
    }
}

impl State for RedisState {
    fn admit(&self, takes: Vec<Take>) -> BoxFuture<'_, Vec<Decision>> {
        Box::pin(async move { self.admit_reserving(takes, Vec::new(), 0).await.0 })
    }

    fn reserve(&self, counters: Vec<Counter>, amount: i64) -> BoxFuture<'_, Reserved> {
        Box::pin(async move { self.admit_reserving(Vec::new(), counters, amount).await.1 })
    }

    fn admit_reserving(
        &self,
        takes: Vec<Take>,
        counters: Vec<Counter>,
        amount: i64,
    ) -> BoxFuture<'_, (Vec<Decision>, Reserved)> {
        Box::pin(async move {
            let core = &self.core;
            if let Some(fresh) = core.copy.filter(|_| core.healthy.load(Ordering::Relaxed)) {
                if let Some(step) = core.local.admit_on_copy(&takes, &counters, amount, fresh) {
                    // Made on the copy: Redis gets the same step, forced, behind.
                    if !counters.is_empty() && amount != 0 {
                        core.enqueue(Settle::Add(counters, amount));
                    }
                    // One settlement per cell, so the writer sums each cell's ([`coalesce`]).
                    for take in takes {
                        core.enqueue(Settle::Adjust(vec![take]));
                    }
                    admissions(Decided::Copy).inc();
                    return step;
                }
            }
            if core.copy.is_some() {
                // This replica's takes made on the copy reach Redis before the step does, or
                // Redis would decide without them.
                core.drain(core.timeout).await;
            }
            match core.admit_step(&takes, &counters, amount).await {
                Some(step) => {
                    if core.copy.is_some() {
                        core.local
                            .absorb(&takes, &counters, &step.0, &step.1.values);
                    }
                    admissions(Decided::Shared).inc();
                    step
                }
                None => {
                    admissions(Decided::Local).inc();
                    core.local.admit_now(&takes, &counters, amount, false)
                }
            }
        })
    }

    fn get(&self, keys: Vec<String>) -> BoxFuture<'_, Vec<i64>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Vec::new();
            }
            let core = &self.core;
            let replies = core
                .call(|c, _| {
                    c.cmd("MGET", keys.len());
                    for k in &keys {
                        c.arg(k);
                    }
                })
                .await;
            let value = |r: &Reply| match r {
                Reply::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
                _ => Some(0),
            };
            match replies.as_deref() {
                Some([Reply::Array(items)]) if items.len() == keys.len() => {
                    match items.iter().map(value).collect::<Option<Vec<i64>>>() {
                        Some(v) => v,
                        None => core.local.get_now(&keys),
                    }
                }
                _ => core.local.get_now(&keys),
            }
        })
    }

    fn settle(&self, change: Settle) {
        let core = &self.core;
        if core.copy.is_some() {
            // The copy admissions are decided on holds every change at once.
            core.local.apply(&change);
        }
        core.enqueue(change);
    }

    fn flush(&self, limit: Duration) -> BoxFuture<'_, ()> {
        Box::pin(self.core.drain(limit))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn healthy(&self) -> bool {
        self.core.healthy.load(Ordering::Relaxed)
    }
}

/// The cells' part of an [`ADMIT`] reply: four integers per cell.
fn decisions(flat: &[i64]) -> Vec<Decision> {
    let us = |v: i64| Duration::from_micros(v.max(0) as u64);
    flat.chunks_exact(4)
        .map(|c| Decision {
            allowed: c[0] == 1,
            remaining: c[1].max(0) as u64,
            reset_after: us(c[2]),
            retry_after: us(c[3]),
        })
        .collect()
}

/// The admission script's reply: integers separated by single spaces, as `str::parse::<i64>`
/// reads each (an optional sign, then digits, in range); `None` for anything else. By hand:
/// `split(' ')` and `parse` cost ~130 instructions a number, a dozen numbers per keyed request.
fn parse_ints(b: &[u8]) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(16);
    for part in b.split(|&c| c == b' ') {
        let (neg, digits) = match part {
            [b'-', rest @ ..] => (true, rest),
            [b'+', rest @ ..] => (false, rest),
            _ => (false, part),
        };
        if digits.is_empty() {
            return None;
        }
        let mut v: i64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            let d = i64::from(d - b'0');
            v = v.checked_mul(10)?;
            v = if neg {
                v.checked_sub(d)?
            } else {
                v.checked_add(d)?
            };
        }
        out.push(v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{coalesce, parse_ints};
    use crate::state::{Counter, Settle, Take};
    use std::time::Duration;

    #[test]
    fn settlements_of_one_cell_or_counter_set_are_summed_in_first_seen_order() {
        let adjust = |key: &str, limit: u64, cost: i64| {
            Settle::Adjust(vec![Take {
                key: key.into(),
                limit,
                cost,
            }])
        };
        let counters = |keys: &[&str]| {
            keys.iter()
                .map(|k| Counter {
                    key: (*k).into(),
                    limit: None,
                    ttl: Duration::from_secs(60),
                })
                .collect::<Vec<_>>()
        };
        let add = |keys: &[&str], n: i64| Settle::Add(counters(keys), n);
        let batch = vec![
            adjust("tpm:a", 100, -5),
            add(&["day:a", "month:a"], 7),
            adjust("tpm:b", 100, 3),
            adjust("tpm:a", 100, -2),
            add(&["day:a", "month:a"], 11),
            // The same cell under another limit (a reload between): kept apart.
            adjust("tpm:a", 200, 4),
            // Counters that start alike but are another set: kept apart.
            add(&["day:a"], 1),
            adjust("tpm:b", 100, -3),
            add(&["day:c", "month:c"], 0),
        ];
        assert_eq!(
            coalesce(batch),
            vec![
                adjust("tpm:a", 100, -7),
                add(&["day:a", "month:a"], 18),
                adjust("tpm:a", 200, 4),
                add(&["day:a"], 1),
            ]
        );
        // Past the few a list holds, the same through a map.
        let keys: Vec<String> = (0..40).map(|i| format!("tpm:{i}")).collect();
        let twice = keys
            .iter()
            .chain(&keys)
            .map(|k| adjust(k, 100, 2))
            .collect();
        let summed: Vec<Settle> = keys.iter().map(|k| adjust(k, 100, 4)).collect();
        assert_eq!(coalesce(twice), summed);
        assert_eq!(coalesce(vec![add(&["x"], 0)]), vec![]);
        assert_eq!(coalesce(vec![add(&["x"], 2)]), vec![add(&["x"], 2)]);
    }

    #[test]
    fn admission_replies_parse_as_str_parse_reads_them() {
        for text in [
            "1 0 5 -3",
            "0",
            "9223372036854775807 -9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "+7 -0",
            "",
            " ",
            "1  2",
            "1 ",
            "- 1",
            "1a",
            "1.5",
            "٣",
        ] {
            let std: Option<Vec<i64>> = text
                .split(' ')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok();
            assert_eq!(parse_ints(text.as_bytes()), std, "{text:?}");
        }
    }
}
