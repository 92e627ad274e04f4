//! Limits and budgets shared through the real Redis at 127.0.0.1:6379 by two switchyard
//! instances, and what happens when Redis goes away and comes back.
//!
//! Each test writes under its own key prefix. Without Redis these tests skip — except under
//! CI (`CI` set), where a missing Redis is a failure.

mod admin;
mod common;
mod limits_budget;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{gateway, Gateway};

const REDIS: &str = "127.0.0.1:6379";

/// Whether a Redis answers PING at `addr`.
async fn redis_up(addr: &str) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"+PONG\r\n"
    )
}

/// `true` when the test should run; panics under CI when Redis is missing.
async fn need_redis() -> bool {
    if redis_up(REDIS).await {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("Redis is not running on {REDIS}, and CI is set: these tests must run");
    }
    eprintln!("skipping: no Redis on {REDIS} (start one: redis-server --port 6379 --save '')");
    false
}

fn prefix(test: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sytest-{test}-{}-{n}", std::process::id())
}

fn config(url: &str, prefix: &str, extra: &str) -> String {
    format!(
        "
listen: 127.0.0.1:0
admin: 127.0.0.1:0
state:
  backend: redis
  url: {url}
  prefix: {prefix}
  timeout_ms: 200
  retry_secs: 0.2
keys:
  - name: shared
    key: sk-shared
    team: t
{extra}
prices:
  echo: {{input: 1000000, output: 0}}
"
    )
}

async fn call(g: &Gateway) -> common::Resp {
    g.post(
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-shared")],
        &json!({"model": "echo", "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await
}

async fn spend(addr: SocketAddr) -> Value {
    admin::get_json(addr, "/spend").await
}

#[tokio::test]
async fn two_instances_together_admit_no_more_than_the_keys_rpm() {
    if !need_redis().await {
        return;
    }
    let cfg = config(&format!("redis://{REDIS}"), &prefix("rpm"), "    rpm: 5");
    let (a, b) = (gateway(&cfg).await, gateway(&cfg).await);
    let mut ok = 0;
    let mut refused = 0;
    for i in 0..20 {
        let r = call(if i % 2 == 0 { &a } else { &b }).await;
        match r.status.as_u16() {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert!(r.header("retry-after").is_some());
                assert_eq!(r.header("x-ratelimit-limit-requests"), Some("5"));
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    // 5 per minute with a burst of 5: the whole run takes well under the 12 s one more
    // request needs.
    assert_eq!((ok, refused), (5, 15));
    // Concurrently, too: the Lua step is atomic.
    let cfg = config(
        &format!("redis://{REDIS}"),
        &prefix("rpm-conc"),
        "    rpm: 7",
    );
    let (a, b) = (gateway(&cfg).await, gateway(&cfg).await);
    let calls = (0..30).map(|i| {
        let g = if i % 2 == 0 { &a } else { &b };
        call(g)
    });
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(spend(a.running.admin_addr).await["backend_healthy"], true);
}

#[tokio::test]
async fn a_budget_spent_through_one_instance_is_refused_by_the_other() {
    if !need_redis().await {
        return;
    }
    // Each request costs $9 ("hello" ≈ 9 input tokens at $1 a token).
    let cfg = config(
        &format!("redis://{REDIS}"),
        &prefix("budget"),
        "    budget_usd_per_day: 40",
    );
    let (a, b) = (gateway(&cfg).await, gateway(&cfg).await);
    for _ in 0..4 {
        assert_eq!(call(&a).await.status, 200);
    }
    let r = call(&b).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "insufficient_quota");
    let s = spend(b.running.admin_addr).await;
    assert_eq!(s["backend"], "redis");
    assert_eq!(s["keys"][0]["spent_usd_today"], 36.0, "{s}");
    assert_eq!(s["keys"][0]["remaining_usd_today"], 4.0);
    // The team has no budget, so nothing was reserved for it at admission: its spend comes
    // with the settlements, written behind (a few milliseconds after each reply).
    let mut s = s;
    for _ in 0..500 {
        if s["teams"][0]["spent_usd_today"] == 36.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        s = spend(b.running.admin_addr).await;
    }
    assert_eq!(s["teams"][0]["spent_usd_today"], 36.0, "{s}");
}

#[tokio::test]
async fn a_key_with_rpm_and_a_budget_is_charged_in_one_redis_step() {
    if !need_redis().await {
        return;
    }
    let extra = "    rpm: 3\n    budget_usd_per_day: 30";
    let g = gateway(&config(&format!("redis://{REDIS}"), &prefix("both"), extra)).await;
    limits_budget::taken_together_or_not_at_all(&g, "sk-shared").await;
}

#[tokio::test]
async fn an_unreachable_redis_leaves_each_instance_on_local_limits() {
    // Nothing listens on this port: connections are refused at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        &format!("redis://127.0.0.1:{port}"),
        &prefix("down"),
        "    rpm: 3",
    );
    let (a, b) = (gateway(&cfg).await, gateway(&cfg).await);
    for g in [&a, &b] {
        for _ in 0..3 {
            let r = call(g).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        // Local limits still hold per instance.
        assert_eq!(call(g).await.status, 429);
        let s = spend(g.running.admin_addr).await;
        assert_eq!(s["backend_healthy"], false);
        assert_eq!(s["keys"][0]["spent_usd_today"], 27.0);
    }
    // Process-wide: at least these two backends are down.
    assert!(!switchyard::state::backend_healthy());
}

/// A `redis-server` of our own on a free loopback port, killed when dropped.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child, port })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` of our own on a free loopback port, answering, and its address; `None`
/// (the test skips) without a Redis to test against or a `redis-server` binary, either of
/// which fails under CI.
async fn own_redis() -> Option<(OwnRedis, String)> {
    if !need_redis().await {
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(redis) = OwnRedis::start(port) else {
        if std::env::var_os("CI").is_some() {
            panic!("redis-server cannot be started, and CI is set");
        }
        eprintln!("skipping: no redis-server binary");
        return None;
    };
    let addr = format!("127.0.0.1:{port}");
    wait_until_up(&addr).await;
    Some((redis, addr))
}

async fn wait_until_up(addr: &str) {
    for _ in 0..100 {
        if redis_up(addr).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server on {addr} did not come up");
}

#[tokio::test]
async fn redis_stopped_mid_run_then_back_resumes_shared_accounting() {
    let Some((mut redis, addr)) = own_redis().await else {
        return;
    };
    let cfg = config(&format!("redis://{addr}"), &prefix("kill"), "    rpm: 4");
    let (a, b) = (gateway(&cfg).await, gateway(&cfg).await);
    // Shared: 2 + 2 use the key's 4, and both instances see it.
    for g in [&a, &b, &a, &b] {
        assert_eq!(call(g).await.status, 200);
    }
    assert_eq!(call(&a).await.status, 429);
    assert_eq!(call(&b).await.status, 429);

    redis.stop();
    // Both keep serving, each on its own local cells (fresh: 4 each).
    for g in [&a, &b] {
        for _ in 0..4 {
            let r = call(g).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert_eq!(call(g).await.status, 429);
        assert_eq!(spend(g.running.admin_addr).await["backend_healthy"], false);
    }

    // Redis returns (empty: it keeps nothing on disk): after the probe interval the next
    // request goes to Redis again and the instances share one cell once more.
    let _redis = OwnRedis::start(redis.port).expect("redis-server restarts");
    wait_until_up(&addr).await;
    let mut statuses = Vec::new();
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let g = if i % 2 == 0 { &a } else { &b };
        let _ = call(g).await;
        if spend(a.running.admin_addr).await["backend_healthy"] == true
            && spend(b.running.admin_addr).await["backend_healthy"] == true
        {
            break;
        }
    }
    for g in [&a, &b] {
        assert_eq!(spend(g.running.admin_addr).await["backend_healthy"], true);
    }
    // The shared cell now counts both instances' requests together again: at most 4 pass.
    for i in 0..10 {
        statuses.push(call(if i % 2 == 0 { &a } else { &b }).await.status.as_u16());
    }
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(passed <= 4, "{statuses:?}");
}

/// Sends one command to Redis in RESP and returns the first reply line.
async fn redis_cmd(args: &[&str]) -> String {
    let mut s = tokio::net::TcpStream::connect(REDIS).await.unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn redis_state() -> switchyard::state::redis::RedisState {
    redis_state_with_sync(0)
}

/// A Redis state on the machine's Redis with `state.sync_ms` set.
fn redis_state_with_sync(sync_ms: u64) -> switchyard::state::redis::RedisState {
    let cfg = switchyard::config::StateConfig {
        timeout_ms: 2000,
        sync_ms,
        ..Default::default()
    };
    switchyard::state::redis::RedisState::connect(&format!("redis://{REDIS}"), &cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_are_written_behind_and_flush_waits_for_every_one() {
    use switchyard::state::{Counter, Settle, State};
    if !need_redis().await {
        return;
    }
    let p = prefix("behind");
    let state = std::sync::Arc::new(redis_state());
    let counters = |i: usize| {
        vec![
            Counter {
                key: format!("{{{p}}}:a"),
                limit: Some(1),
                ttl: Duration::from_secs(60),
            },
            Counter {
                key: format!("{{{p}}}:b{}", i % 2),
                limit: None,
                ttl: Duration::from_secs(60),
            },
        ]
    };
    // From many tasks at once, as settlement hooks run: ceilings are ignored (settled spend is
    // owed whatever the budget), negative amounts subtract.
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (state, c) = (state.clone(), counters(i));
        tasks.push(tokio::spawn(async move {
            state.settle(Settle::Add(c, if i % 4 == 3 { -1 } else { 3 }));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    state.flush(Duration::from_secs(10)).await;
    let keys = vec![
        format!("{{{p}}}:a"),
        format!("{{{p}}}:b0"),
        format!("{{{p}}}:b1"),
    ];
    // 300 × 3 − 100 × 1 on `a`; `b0` has the even i (all +3), `b1` the odd ones.
    assert_eq!(state.get(keys.clone()).await, vec![800, 600, 200]);
    let ttl = redis_cmd(&["PTTL", &keys[0]]).await;
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "PTTL {ttl}");
    assert!(state.healthy());
}

#[tokio::test]
async fn a_reserved_counter_is_made_with_its_ttl_and_added_to_exactly() {
    use switchyard::state::{Counter, State};
    if !need_redis().await {
        return;
    }
    let p = prefix("made");
    let key = format!("{{{p}}}:spend");
    let counter = || Counter {
        key: key.clone(),
        limit: None,
        ttl: Duration::from_secs(60),
    };
    let pttl = || async {
        let t = redis_cmd(&["PTTL", &key]).await;
        t.trim().trim_start_matches(':').parse::<i64>().unwrap()
    };
    let state = redis_state();
    // Made by the reservation: a large amount exactly, with the counter's TTL.
    let big = 2_000_000_000_000_003;
    let (_, r) = state.admit_reserving(vec![], vec![counter()], big).await;
    assert!(r.allowed);
    assert_eq!(r.values, vec![big]);
    assert!(redis_cmd(&["GET", &key]).await.contains("2000000000000003"));
    let ttl = pttl().await;
    assert!(ttl > 50_000 && ttl <= 60_000, "PTTL {ttl}");
    // Added to: the value grows, and the TTL it was made with stands.
    let (_, r) = state.admit_reserving(vec![], vec![counter()], 7).await;
    assert_eq!(r.values, vec![big + 7]);
    let ttl = pttl().await;
    assert!(ttl > 50_000 && ttl <= 60_000, "PTTL {ttl}");
    assert!(state.healthy());
}

#[tokio::test]
async fn batched_settlements_survive_redis_forgetting_its_scripts() {
    use switchyard::state::{Counter, Settle, State, Take};
    if !need_redis().await {
        return;
    }
    let p = prefix("noscript");
    let spend = Counter {
        key: format!("{{{p}}}:spend"),
        limit: None,
        ttl: Duration::from_secs(60),
    };
    let state = redis_state();
    let cell = |cost: i64| Take {
        key: format!("{{{p}}}:tpm"),
        limit: 60,
        cost,
    };
    // Loads the script on the server, then makes the server forget it (as a restart would).
    assert!(state.admit(vec![cell(1)]).await[0].allowed);
    assert_eq!(redis_cmd(&["SCRIPT", "FLUSH"]).await.trim(), "+OK");
    // The reply used 59 more tokens than admitted: the cell is now full for a minute.
    state.settle(Settle::Adjust(vec![cell(59)]));
    state.settle(Settle::Add(vec![spend.clone()], 7));
    state.flush(Duration::from_secs(10)).await;
    assert_eq!(state.get(vec![spend.key]).await, vec![7]);
    let d = state.admit(vec![cell(1)]).await;
    assert!(!d[0].allowed, "{d:?}");
    assert!(d[0].retry_after > Duration::from_millis(500), "{d:?}");
}

/// The admission step's reply carries every integer exactly: spend counters in nano-USD pass
/// 1e14 (where Lua would write an exponent), and a refund can leave one below zero. Neither
/// value exists in the local fallback, so this answer can only have come from Redis.
#[tokio::test]
async fn the_admission_reply_carries_large_and_negative_counters_exactly() {
    use switchyard::state::{Counter, State, Take};
    if !need_redis().await {
        return;
    }
    let p = prefix("reply");
    let big = format!("{{{p}}}:big");
    let low = format!("{{{p}}}:low");
    assert!(redis_cmd(&["SET", &big, "5000000000000000"])
        .await
        .starts_with("+OK"));
    assert!(redis_cmd(&["SET", &low, "-12"]).await.starts_with("+OK"));
    let counter = |key: &str, limit: Option<i64>| Counter {
        key: key.to_owned(),
        limit,
        ttl: Duration::from_secs(60),
    };
    let state = redis_state();
    let take = Take {
        key: format!("{{{p}}}:rpm"),
        limit: 600,
        cost: 1,
    };
    let (decisions, reserved) = state
        .admit_reserving(
            vec![take],
            vec![
                counter(&big, Some(6_000_000_000_000_000)),
                counter(&low, None),
            ],
            7,
        )
        .await;
    assert_eq!(decisions.len(), 1);
    assert!(decisions[0].allowed);
    assert_eq!(decisions[0].remaining, 599);
    assert!(reserved.allowed);
    assert_eq!(reserved.values, vec![5_000_000_000_000_007, -5]);
    // Over the ceiling: nothing is taken, and the values come back as found.
    let (_, refused) = state
        .admit_reserving(
            vec![],
            vec![
                counter(&big, Some(5_000_000_000_000_007)),
                counter(&low, None),
            ],
            1,
        )
        .await;
    assert!(!refused.allowed);
    assert_eq!(refused.values, vec![5_000_000_000_000_007, -5]);
    assert!(state.healthy());
}

/// A server that accepts connections and never answers (a hung or black-holed Redis) —
/// `answer_setup`: it first answers the connection's set-up (the two `SCRIPT LOAD`s), then
/// nothing. Each step gives up after the timeout and is decided on local limits; the state
/// says it is down, and no request waits for Redis while it is.
async fn a_silent_redis_is_given_up_after_the_timeout(answer_setup: bool) {
    use switchyard::state::{State, Take};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut first = true;
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    if std::mem::take(&mut first) && answer_setup {
                        let sha = format!("$40\r\n{}\r\n", "a".repeat(40));
                        s.write_all(format!("{sha}{sha}").as_bytes()).await.unwrap();
                    }
                }
            });
        }
    });
    let cfg = switchyard::config::StateConfig {
        timeout_ms: 100,
        retry_secs: 60.0,
        ..Default::default()
    };
    let state =
        switchyard::state::redis::RedisState::connect(&format!("redis://{addr}"), &cfg).unwrap();
    let take = || Take {
        key: "{silent}:rpm".into(),
        limit: 2,
        cost: 1,
    };
    // Bounded, so that a hang fails this test instead of stalling the suite.
    let admit =
        |state| tokio::time::timeout(Duration::from_secs(10), State::admit(state, vec![take()]));
    let first = admit(&state).await.expect("the step gave Redis up");
    assert!(first[0].allowed);
    assert!(!state.healthy());
    // Down now: decided locally at once, and the local cell holds the limit.
    assert!(admit(&state).await.unwrap()[0].allowed);
    assert!(!admit(&state).await.unwrap()[0].allowed);
}

#[tokio::test]
async fn a_redis_that_never_answers_is_given_up_after_the_timeout() {
    a_silent_redis_is_given_up_after_the_timeout(false).await;
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_given_up_after_the_timeout() {
    a_silent_redis_is_given_up_after_the_timeout(true).await;
}

/// The tests of `state.sync_ms` read `switchyard_state_admissions_total{decided="copy"}`, which
/// is the process's: under `cargo test` (tests on threads of one process) they take turns.
static COPY_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// With `state.sync_ms` a replica admits on its copy of the shared numbers while it is fresh
/// and a tenth of the limit is left; Redis still gets every take (written behind), the copy
/// holds this replica's settlements at once and the other replicas' takes from each step
/// Redis decides, and the end of the limit is Redis's: together the replicas admit exactly
/// the limit.
#[tokio::test]
async fn on_a_fresh_copy_a_replica_admits_without_redis_and_the_end_of_a_limit_stays_exact() {
    use switchyard::state::{Counter, Settle, State, Take};
    use switchyard::telemetry::metrics::{state_admissions, StateDecided};
    if !need_redis().await {
        return;
    }
    let _turn = COPY_TESTS.lock().await;
    let p = prefix("copy");
    let cell = |cost: i64| Take {
        key: format!("{{{p}}}:rpm"),
        limit: 100,
        cost,
    };
    let budget = || Counter {
        key: format!("{{{p}}}:spend"),
        limit: Some(1_000_000),
        ttl: Duration::from_secs(60),
    };
    let a = redis_state_with_sync(60_000);
    let b = redis_state();
    let on_copy = || state_admissions(StateDecided::Copy).get();
    let copied_before = on_copy();

    // The first step reads the numbers from Redis; the next 20 are made on the copy.
    for i in 0..21 {
        let (d, r) = a.admit_reserving(vec![cell(1)], vec![budget()], 10).await;
        assert!(r.allowed && d[0].allowed, "step {i}: {d:?} {r:?}");
        assert_eq!(d[0].remaining, 99 - i);
    }
    assert_eq!(on_copy() - copied_before, 20);
    // Written behind: Redis holds all 21, as the exact replica sees.
    a.flush(Duration::from_secs(10)).await;
    assert_eq!(b.admit(vec![cell(1)]).await[0].remaining, 78);
    // A settlement is on the copy at once (30 more tokens than admitted, say).
    a.settle(Settle::Adjust(vec![cell(30)]));

    // 21 + 1 + 30 are taken: 48 more fit. The copy admits while a tenth is left, Redis the
    // rest, and refuses the 49th.
    let mut more = 0;
    let refused = loop {
        let (d, r) = a.admit_reserving(vec![cell(1)], vec![budget()], 10).await;
        if !r.allowed {
            break d;
        }
        more += 1;
        assert!(more <= 48, "admitted past the limit: {d:?}");
    };
    assert_eq!(more, 48);
    assert!(!refused[0].allowed && refused[0].retry_after > Duration::ZERO);
    assert!(
        on_copy() - copied_before >= 20 + 30,
        "{}",
        on_copy() - copied_before
    );
    a.flush(Duration::from_secs(10)).await;
    assert!(!b.admit(vec![cell(1)]).await[0].allowed);
    assert_eq!(b.get(vec![budget().key]).await, vec![(21 + 48) * 10]);
    assert!(a.healthy() && b.healthy());
}

/// A replica deciding on its copy learns the other replicas' takes from its own writes: each
/// settlement Redis takes answers with the cell's or counters' numbers as every replica has
/// written them, without a step in Redis on the request path.
#[tokio::test]
async fn a_replicas_own_writes_bring_the_other_replicas_takes_into_its_copy() {
    use switchyard::state::{Counter, State, Take};
    if !need_redis().await {
        return;
    }
    let _turn = COPY_TESTS.lock().await;
    let p = prefix("learn");
    let cell = || Take {
        key: format!("{{{p}}}:rpm"),
        limit: 1000,
        cost: 1,
    };
    let spend = || Counter {
        key: format!("{{{p}}}:spend"),
        limit: None,
        ttl: Duration::from_secs(60),
    };
    let (a, b) = (redis_state_with_sync(60_000), redis_state_with_sync(60_000));
    // One admission of one unit and 5 of spend: the cell's remaining, the spend after.
    async fn step(s: &impl State, cell: Take, spend: Counter) -> (u64, i64) {
        let (d, r) = s.admit_reserving(vec![cell], vec![spend], 5).await;
        assert!(r.allowed && d[0].allowed, "{d:?} {r:?}");
        (d[0].remaining, r.values[0])
    }
    // Each reads the numbers from Redis once; then B takes 100 more on its copy.
    assert_eq!(step(&a, cell(), spend()).await, (999, 5));
    assert_eq!(step(&b, cell(), spend()).await, (998, 10));
    for _ in 0..100 {
        step(&b, cell(), spend()).await;
    }
    b.flush(Duration::from_secs(10)).await;
    // A's copy has not seen them: this step is made on it.
    assert_eq!(step(&a, cell(), spend()).await, (998, 10));
    // A's write of that step answers with all 103 takes and 515 of spend.
    a.flush(Duration::from_secs(10)).await;
    assert_eq!(step(&a, cell(), spend()).await, (1000 - 104, 520));
    assert!(a.healthy() && b.healthy());
}

/// With `state.sync_ms`, the copy is also what a replica decides on while Redis is away: the
/// takes made before the outage still count, so the key gets its limit once, not once more.
#[tokio::test]
async fn through_an_outage_a_replica_keeps_deciding_on_its_copy() {
    use switchyard::state::{State, Take};
    let Some((mut redis, addr)) = own_redis().await else {
        return;
    };
    let cfg = switchyard::config::StateConfig {
        timeout_ms: 200,
        retry_secs: 0.2,
        sync_ms: 60_000,
        ..Default::default()
    };
    let state =
        switchyard::state::redis::RedisState::connect(&format!("redis://{addr}"), &cfg).unwrap();
    let key = format!("{{{}}}:rpm", prefix("outage"));
    let cell = || Take {
        key: key.clone(),
        limit: 10,
        cost: 1,
    };
    for i in 0..5 {
        assert!(state.admit(vec![cell()]).await[0].allowed, "take {i}");
    }
    state.flush(Duration::from_secs(10)).await;
    assert!(state.healthy());

    redis.stop();
    // Five more fit, whether on the copy or (once the writer finds Redis gone) locally on
    // the same numbers; the eleventh is refused.
    for i in 5..10 {
        assert!(state.admit(vec![cell()]).await[0].allowed, "take {i}");
    }
    let refused = state.admit(vec![cell()]).await;
    assert!(!refused[0].allowed, "{refused:?}");
    assert!(refused[0].retry_after > Duration::ZERO);
    assert!(!state.healthy());

    // Back (empty: it keeps nothing on disk): after the probe interval Redis decides again.
    let _redis = OwnRedis::start(redis.port).expect("redis-server restarts");
    wait_until_up(&addr).await;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = state.admit(vec![cell()]).await;
        if state.healthy() {
            break;
        }
    }
    assert!(
        state.healthy(),
        "Redis answered again but the state did not go back to it"
    );
}
