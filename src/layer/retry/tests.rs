use super::*;
use crate::ir::{Format, LatencyWindow, Meta, Operation, ReplyBody, ServedBy, TargetStats};
use std::sync::atomic::{AtomicU32, Ordering};

/// A scripted target: each call pops the next outcome (the last repeats) after `delay`.
#[derive(Clone)]
struct Script {
    calls: Arc<AtomicU32>,
    outcomes: Arc<Vec<Result<(), Error>>>,
    delay: Duration,
}

fn target(
    name: &str,
    outcomes: Vec<Result<(), Error>>,
    delay: Duration,
) -> (Target, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let script = Script {
        calls: calls.clone(),
        outcomes: Arc::new(outcomes),
        delay,
    };
    let provider: Arc<str> = Arc::from(name);
    let svc = tower::service_fn(move |a: Attempt| {
        let s = script.clone();
        async move {
            let n = s.calls.fetch_add(1, Ordering::SeqCst) as usize;
            tokio::time::sleep(s.delay).await;
            let outcome = s
                .outcomes
                .get(n)
                .or(s.outcomes.last())
                .cloned()
                .unwrap_or(Ok(()));
            outcome.map(|()| {
                let mut r = Reply::local(ReplyBody::TokenCount(1));
                r.served_by = Some(a.served.clone());
                r
            })
        }
    });
    let t = Target {
        served: Arc::new(ServedBy::new(
            provider.clone(),
            Arc::from("m"),
            None,
            provider,
        )),
        service: tower::util::BoxCloneSyncService::new(svc),
        weight: 1,
        tags: Arc::from([]),
        stats: Arc::new(TargetStats::default()),
    };
    (t, calls)
}

fn plan(targets: Vec<Target>, strategy: Strategy, max_attempts: u32) -> Plan {
    Plan {
        route: Arc::from("r"),
        targets: targets.into(),
        strategy,
        max_attempts,
        hedge_after: Some(Duration::from_millis(100)),
        degrade: None,
        latency: Arc::new(LatencyWindow::default()),
    }
}

fn request() -> Arc<Request> {
    Arc::new(Request {
        op: Operation::ListModels,
        meta: Meta::new(Arc::from("id"), Format::OpenAi),
    })
}

fn cfg() -> RetryConfig {
    RetryConfig {
        min_retries_per_sec: 100,
        ..RetryConfig::default()
    }
}

async fn run(plan: Plan, cfg: RetryConfig) -> Result<Reply, Error> {
    let budget = Arc::new(Budget::new(
        cfg.budget_ratio,
        cfg.budget_window_secs,
        cfg.min_retries_per_sec,
    ));
    Attempts::new(plan, request(), Arc::new(cfg), budget)
        .run()
        .await
}

fn err(kind: ErrorKind, status: u16) -> Result<(), Error> {
    Err(Error::new(kind, "scripted").with_status(status))
}

fn served(r: &Reply) -> &str {
    &r.served_by.as_ref().unwrap().provider
}

#[tokio::test(start_paused = true)]
async fn retryable_failure_moves_to_the_next_target() {
    let (a, a_calls) = target(
        "a",
        vec![err(ErrorKind::UpstreamStatus, 500)],
        Duration::ZERO,
    );
    let (b, b_calls) = target("b", vec![Ok(())], Duration::ZERO);
    let r = run(plan(vec![a, b], Strategy::Fallback, 2), cfg())
        .await
        .unwrap();
    assert_eq!(served(&r), "b");
    assert_eq!(r.attempts, 2);
    assert_eq!(
        (
            a_calls.load(Ordering::SeqCst),
            b_calls.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn caller_errors_are_not_retried() {
    let (a, _) = target(
        "a",
        vec![err(ErrorKind::InvalidRequest, 400)],
        Duration::ZERO,
    );
    let (b, b_calls) = target("b", vec![Ok(())], Duration::ZERO);
    let e = run(plan(vec![a, b], Strategy::Fallback, 2), cfg())
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(b_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn all_failing_lists_every_attempt_with_the_last_status() {
    let (a, _) = target("a", vec![err(ErrorKind::Connect, 502)], Duration::ZERO);
    let mut limited = Error::new(ErrorKind::RateLimited, "slow down");
    limited.retry_after = Some(Duration::from_secs(30));
    let (b, _) = target("b", vec![Err(limited)], Duration::ZERO);
    let e = run(plan(vec![a, b], Strategy::Fallback, 2), cfg())
        .await
        .unwrap_err();
    assert_eq!(e.status, 429);
    assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
    assert!(
        e.message.contains("a/m: connect (502)") && e.message.contains("b/m: rate_limited (429)"),
        "{}",
        e.message
    );
}

#[tokio::test(start_paused = true)]
async fn same_target_retries_back_off_within_bounds() {
    let (a, calls) = target(
        "a",
        vec![
            err(ErrorKind::Overloaded, 503),
            err(ErrorKind::Overloaded, 503),
            Ok(()),
        ],
        Duration::ZERO,
    );
    let started = tokio::time::Instant::now();
    let r = run(plan(vec![a], Strategy::Fallback, 3), cfg())
        .await
        .unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Full jitter: round 1 ≤ 100 ms, round 2 ≤ 200 ms.
    assert!(
        started.elapsed() <= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_short_retry_after_is_waited_out_on_the_same_target() {
    let mut limited = Error::new(ErrorKind::RateLimited, "slow down");
    limited.retry_after = Some(Duration::from_secs(2));
    let (a, calls) = target("a", vec![Err(limited), Ok(())], Duration::ZERO);
    let started = tokio::time::Instant::now();
    let r = run(plan(vec![a], Strategy::Fallback, 2), cfg())
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(r.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_is_not_waited_out() {
    let mut limited = Error::new(ErrorKind::RateLimited, "slow down");
    limited.retry_after = Some(Duration::from_secs(60));
    let (a, calls) = target("a", vec![Err(limited), Ok(())], Duration::ZERO);
    let e = run(plan(vec![a], Strategy::Fallback, 2), cfg())
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(e.retry_after, Some(Duration::from_secs(60)));
}

#[tokio::test(start_paused = true)]
async fn unavailable_targets_are_skipped_not_called() {
    let (a, a_calls) = target("a", vec![Ok(())], Duration::ZERO);
    a.stats.set_drained(true);
    let (b, _) = target("b", vec![Ok(())], Duration::ZERO);
    let r = run(plan(vec![a, b], Strategy::Fallback, 2), cfg())
        .await
        .unwrap();
    assert_eq!(served(&r), "b");
    assert_eq!(r.attempts, 1);
    assert_eq!(a_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn degradation_targets_are_used_only_after_every_primary_failed() {
    let (a, _) = target("a", vec![err(ErrorKind::Timeout, 504)], Duration::ZERO);
    let (cheap, cheap_calls) = target("cheap", vec![Ok(())], Duration::ZERO);
    let mut p = plan(vec![a], Strategy::Fallback, 1);
    p.degrade = Some(vec![cheap].into());
    let r = run(p, cfg()).await.unwrap();
    assert_eq!(served(&r), "cheap");
    assert_eq!(cheap_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn hedge_sends_a_second_request_after_the_delay_and_the_faster_wins() {
    let (slow, slow_calls) = target("slow", vec![Ok(())], Duration::from_secs(5));
    let (fast, fast_calls) = target("fast", vec![Ok(())], Duration::from_millis(10));
    let started = tokio::time::Instant::now();
    let r = run(plan(vec![slow, fast], Strategy::Hedge, 2), cfg())
        .await
        .unwrap();
    assert_eq!(served(&r), "fast");
    assert_eq!(r.attempts, 2);
    assert_eq!(
        (
            slow_calls.load(Ordering::SeqCst),
            fast_calls.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the slow reply was not awaited"
    );
}

#[tokio::test(start_paused = true)]
async fn hedge_is_not_sent_when_the_first_answers_in_time() {
    let (quick, _) = target("quick", vec![Ok(())], Duration::from_millis(10));
    let (other, other_calls) = target("other", vec![Ok(())], Duration::ZERO);
    let r = run(plan(vec![quick, other], Strategy::Hedge, 2), cfg())
        .await
        .unwrap();
    assert_eq!(served(&r), "quick");
    assert_eq!(other_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_stops_a_retry_storm() {
    let cfg = RetryConfig {
        budget_ratio: 0.2,
        budget_window_secs: 10,
        min_retries_per_sec: 0,
        ..RetryConfig::default()
    };
    let budget = Arc::new(Budget::new(
        cfg.budget_ratio,
        cfg.budget_window_secs,
        cfg.min_retries_per_sec,
    ));
    let cfg = Arc::new(cfg);
    let (a, a_calls) = target(
        "a",
        vec![err(ErrorKind::UpstreamStatus, 500)],
        Duration::ZERO,
    );
    let (b, b_calls) = target("b", vec![Ok(())], Duration::ZERO);
    let mut ok = 0;
    for _ in 0..100 {
        let p = plan(vec![a.clone(), b.clone()], Strategy::Fallback, 2);
        if Attempts::new(p, request(), cfg.clone(), budget.clone())
            .run()
            .await
            .is_ok()
        {
            ok += 1;
        }
    }
    assert_eq!(a_calls.load(Ordering::SeqCst), 100);
    let retries = b_calls.load(Ordering::SeqCst);
    assert!(
        retries <= 20,
        "retries {retries} must stay within 20% of 100 requests"
    );
    assert!(retries >= 15, "the budget still allows retries: {retries}");
    assert_eq!(ok, retries);
}

#[test]
fn backoff_is_bounded() {
    let cfg = RetryConfig::default();
    let mut rng = fastrand::Rng::with_seed(9);
    for round in 1..40 {
        let d = backoff(&cfg, round, &mut rng);
        assert!(d <= Duration::from_millis(cfg.backoff_max_ms));
        assert!(d <= Duration::from_millis(cfg.backoff_base_ms << round.min(20)));
    }
}
