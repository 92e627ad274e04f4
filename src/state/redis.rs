//! Redis-protocol shared state (Redis, Valkey): every replica decides against the same cells.
//!
//! Each operation is one atomic Lua script (one round trip, `EVALSHA` with a reload on
//! `NOSCRIPT`) over one multiplexed connection, which pipelines concurrent requests. Time is
//! the server's (`TIME`), so replicas with skewed clocks still agree.
//!
//! When Redis does not answer within `state.timeout_ms`, the operation is decided on a local
//! [`MemoryState`] instead: the sidecar keeps serving on local limits, logs the outage once, and
//! lowers [`super::backend_healthy`]. While down, one request per `state.retry_secs` probes
//! Redis; the first answer resumes shared accounting.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};

use super::memory::MemoryState;
use super::{Counter, Decision, Reserved, State, StateError, Take};
use crate::config::StateConfig;

/// [`super::gcra`] as a script over several cells, all-or-nothing unless forced.
/// KEYS: cells. ARGV: force (0/1), then limit and cost per cell.
/// Returns per cell: allowed (0/1), remaining, reset_after µs, retry_after µs.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = 60000000
local force = ARGV[1] == '1'
local out, tats, olds, ok = {}, {}, {}, true
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local cost = tonumber(ARGV[2 * i + 1])
  local interval = period / math.max(limit, 1)
  local tat = tonumber(redis.call('GET', key) or now)
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
if ok then
  for i, key in ipairs(KEYS) do
    local ttl = math.ceil((tats[i] - now) / 1000)
    if ttl > 0 then
      redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', ttl)
    else
      redis.call('DEL', key)
    end
  end
else
  -- Nothing was taken: report the cells that had room as they are.
  for i, key in ipairs(KEYS) do
    if out[4 * i - 3] == 1 and not force then
      local interval = period / math.max(tonumber(ARGV[2 * i]), 1)
      out[4 * i - 2] = math.max(math.floor((now + period - olds[i]) / interval), 0)
      out[4 * i - 1] = math.ceil(olds[i] - now)
    end
  end
end
return out
"#;

/// Counters with optional ceilings, all-or-nothing.
/// KEYS: counters. ARGV: amount, then per counter its ceiling ('' for none), then its TTL ms.
/// Returns: allowed (0/1), then the values.
const RESERVE: &str = r#"
local amount = tonumber(ARGV[1])
local n = #KEYS
local vals = {}
for i = 1, n do vals[i] = tonumber(redis.call('GET', KEYS[i]) or '0') end
for i = 1, n do
  local lim = ARGV[1 + i]
  if lim ~= '' then
    lim = tonumber(lim)
    if vals[i] >= lim or vals[i] + amount > lim then
      table.insert(vals, 1, 0)
      return vals
    end
  end
end
for i = 1, n do
  vals[i] = redis.call('INCRBY', KEYS[i], amount)
  redis.call('PEXPIRE', KEYS[i], ARGV[1 + n + i])
end
table.insert(vals, 1, 1)
return vals
"#;

/// Shared state in Redis, with a local fallback.
pub struct RedisState {
    conn: ConnectionManager,
    local: MemoryState,
    timeout: Duration,
    retry: Duration,
    healthy: AtomicBool,
    /// Milliseconds since `base` before which no request probes a Redis known to be down.
    next_probe_ms: AtomicU64,
    base: Instant,
    gcra: Script,
    reserve: Script,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("healthy", &self.healthy)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// A lazily connected backend (must be called inside a Tokio runtime).
    pub fn connect(url: &str, config: &StateConfig) -> Result<Self, StateError> {
        // The URL may carry a password: never echo it.
        let client = redis::Client::open(url).map_err(|e| {
            StateError(format!(
                "state.url is not a usable Redis URL ({:?})",
                e.kind()
            ))
        })?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let cm = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, cm)
            .map_err(|e| StateError(format!("cannot set up the Redis connection: {e}")))?;
        // Registers the gauge with the process's metrics.
        let _ = crate::telemetry::metrics::state_backend_up();
        Ok(Self {
            conn,
            local: MemoryState::new(),
            timeout,
            retry: Duration::from_secs_f64(config.retry_secs),
            healthy: AtomicBool::new(true),
            next_probe_ms: AtomicU64::new(0),
            base: Instant::now(),
            gcra: Script::new(GCRA),
            reserve: Script::new(RESERVE),
        })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
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

    /// Runs one Redis step within the timeout; `None` means "decide locally".
    async fn shared<T>(&self, step: impl Future<Output = RedisResult<T>>) -> Option<T> {
        if !self.may_try() {
            return None;
        }
        let why = match tokio::time::timeout(self.timeout, step).await {
            Ok(Ok(v)) => {
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("redis state backend answers again; shared limits resumed");
                    super::set_backend_healthy(true);
                }
                return Some(v);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
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
        None
    }

    async fn gcra_step(&self, takes: &[Take], force: bool) -> Option<Vec<Decision>> {
        let mut inv = self.gcra.prepare_invoke();
        inv.arg(if force { "1" } else { "0" });
        for t in takes {
            inv.key(&t.key).arg(t.limit).arg(t.cost);
        }
        let mut conn = self.conn.clone();
        let flat: Vec<i64> = self.shared(inv.invoke_async(&mut conn)).await?;
        if flat.len() != takes.len() * 4 {
            return None;
        }
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        Some(
            flat.chunks_exact(4)
                .map(|c| Decision {
                    allowed: c[0] == 1,
                    remaining: c[1].max(0) as u64,
                    reset_after: us(c[2]),
                    retry_after: us(c[3]),
                })
                .collect(),
        )
    }
}

impl Drop for RedisState {
    fn drop(&mut self) {
        // A backend dropped (config reload, shutdown) while down no longer counts as down.
        if !self.healthy.load(Ordering::Relaxed) {
            super::set_backend_healthy(true);
        }
    }
}

impl State for RedisState {
    fn admit(&self, takes: Vec<Take>) -> BoxFuture<'_, Vec<Decision>> {
        Box::pin(async move {
            match self.gcra_step(&takes, false).await {
                Some(d) => d,
                None => self.local.step(&takes, false),
            }
        })
    }

    fn adjust(&self, takes: Vec<Take>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.gcra_step(&takes, true).await.is_none() {
                self.local.step(&takes, true);
            }
        })
    }

    fn reserve(&self, counters: Vec<Counter>, amount: i64) -> BoxFuture<'_, Reserved> {
        Box::pin(async move {
            let mut inv = self.reserve.prepare_invoke();
            inv.arg(amount);
            for c in &counters {
                inv.key(&c.key);
                match c.limit {
                    Some(l) => inv.arg(l),
                    None => inv.arg(""),
                };
            }
            for c in &counters {
                inv.arg(c.ttl.as_millis().max(1) as u64);
            }
            let mut conn = self.conn.clone();
            match self.shared(inv.invoke_async::<Vec<i64>>(&mut conn)).await {
                Some(v) if v.len() == counters.len() + 1 => Reserved {
                    allowed: v[0] == 1,
                    values: v[1..].to_vec(),
                },
                _ => self.local.reserve_now(&counters, amount),
            }
        })
    }

    fn get(&self, keys: Vec<String>) -> BoxFuture<'_, Vec<i64>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Vec::new();
            }
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("MGET");
            cmd.arg(&keys);
            match self
                .shared(cmd.query_async::<Vec<Option<i64>>>(&mut conn))
                .await
            {
                Some(v) => v.into_iter().map(|v| v.unwrap_or(0)).collect(),
                None => self.local.get_now(&keys),
            }
        })
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
