//! Orders a request's plan by its route's strategy, leaving out targets that may not take
//! traffic (breaker open, provider drained): `fallback` keeps config order, `weighted` draws
//! the first target by weight, `least_latency` takes the better of two random choices by
//! peak-EWMA latency × load (as linkerd and Finagle do), `cheapest` sorts by price, `hedge`
//! keeps config order (the retry layer sends the hedge).

use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::ir::{Error, Reply, Request, Strategy, Target};

/// Reorders the [`Plan`] in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct BalanceLayer;

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;
    fn layer(&self, inner: S) -> Balance<S> {
        Balance { inner }
    }
}

/// See [`BalanceLayer`].
#[derive(Debug, Clone)]
pub struct Balance<S> {
    inner: S,
}

impl<S> Service<Request> for Balance<S>
where
    S: Service<Request, Response = Reply, Error = Error>,
{
    type Response = Reply;
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> S::Future {
        if let Some(plan) = &mut req.meta.plan {
            // In config order with every target available (a route's usual state), the order
            // is the plan's own: it is kept, shared, instead of copied target by target (a
            // vector, a shared slice and a boxed service clone per target, each request).
            let kept = |ts: &[Target]| ts.iter().all(Target::is_available);
            let in_config_order = matches!(plan.strategy, Strategy::Fallback | Strategy::Hedge);
            if !(in_config_order && kept(&plan.targets)) {
                let ordered = order(plan.strategy, &plan.targets, &mut fastrand::Rng::new());
                plan.targets = ordered.into();
            }
            if let Some(d) = plan.degrade.as_ref().filter(|d| !kept(d)) {
                plan.degrade = Some(order(Strategy::Fallback, d, &mut fastrand::Rng::new()).into());
            }
        }
        self.inner.call(req)
    }
}

/// The available targets in the order the strategy prefers.
pub fn order(strategy: Strategy, targets: &[Target], rng: &mut fastrand::Rng) -> Vec<Target> {
    let mut out: Vec<Target> = targets
        .iter()
        .filter(|t| t.is_available())
        .cloned()
        .collect();
    if out.len() < 2 {
        return out;
    }
    match strategy {
        Strategy::Fallback | Strategy::Hedge => {}
        Strategy::Weighted => {
            let total: u64 = out.iter().map(|t| u64::from(t.weight)).sum();
            if total > 0 {
                let mut pick = rng.u64(0..total);
                let i = out
                    .iter()
                    .position(|t| {
                        let w = u64::from(t.weight);
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                let first = out.remove(i);
                out.insert(0, first);
            }
        }
        Strategy::LeastLatency => {
            let a = rng.usize(0..out.len());
            let mut b = rng.usize(0..out.len() - 1);
            if b >= a {
                b += 1;
            }
            let pick = if out[b].stats.cost() < out[a].stats.cost() {
                b
            } else {
                a
            };
            let first = out.remove(pick);
            out.sort_by_key(|t| t.stats.cost());
            out.insert(0, first);
        }
        Strategy::Cheapest => {
            out.sort_by(|a, b| {
                let pa = a.served.price.map_or(f64::INFINITY, |p| p.blended());
                let pb = b.served.price.map_or(f64::INFINITY, |p| p.blended());
                pa.total_cmp(&pb)
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attempt, TargetStats};
    use std::sync::Arc;
    use std::time::Duration;

    fn target(name: &str, weight: u32, price: Option<f64>) -> Target {
        let svc =
            tower::service_fn(|_: Attempt| async { Err::<Reply, Error>(Error::invalid("unused")) });
        let price = price.map(crate::ir::Price::flat);
        Target {
            served: Arc::new(crate::ir::ServedBy::new(
                Arc::from(name),
                Arc::from("m"),
                price,
                Arc::from(name),
            )),
            service: tower::util::BoxCloneSyncService::new(svc),
            weight,
            tags: Arc::from([]),
            stats: Arc::new(TargetStats::default()),
        }
    }

    fn names(v: &[Target]) -> Vec<&str> {
        v.iter().map(|t| &*t.served.provider).collect()
    }

    #[test]
    fn fallback_keeps_order_and_skips_unavailable() {
        let ts = vec![
            target("a", 1, None),
            target("b", 1, None),
            target("c", 1, None),
        ];
        ts[1].stats.set_drained(true);
        let out = order(Strategy::Fallback, &ts, &mut fastrand::Rng::with_seed(1));
        assert_eq!(names(&out), ["a", "c"]);
    }

    #[test]
    fn weighted_splits_by_weight() {
        let ts = vec![target("a", 1, None), target("b", 3, None)];
        let mut rng = fastrand::Rng::with_seed(7);
        let n = 4000;
        let b_first = (0..n)
            .filter(|_| &*order(Strategy::Weighted, &ts, &mut rng)[0].served.provider == "b")
            .count();
        let share = b_first as f64 / n as f64;
        assert!(
            (0.70..0.80).contains(&share),
            "b first in {share} of draws, want ~0.75"
        );
    }

    #[test]
    fn least_latency_prefers_the_faster_target() {
        let ts = vec![
            target("slow", 1, None),
            target("fast", 1, None),
            target("mid", 1, None),
        ];
        ts[0].stats.observe_ttfb(Duration::from_millis(900));
        ts[1].stats.observe_ttfb(Duration::from_millis(50));
        ts[2].stats.observe_ttfb(Duration::from_millis(300));
        let mut rng = fastrand::Rng::with_seed(3);
        let mut firsts = std::collections::HashMap::new();
        for _ in 0..3000 {
            *firsts
                .entry(
                    order(Strategy::LeastLatency, &ts, &mut rng)[0]
                        .served
                        .provider
                        .to_string(),
                )
                .or_insert(0) += 1;
        }
        // P2C: the slowest wins only when drawn against itself, which never happens.
        assert_eq!(firsts.get("slow"), None);
        assert!(firsts["fast"] > firsts["mid"], "{firsts:?}");
    }

    #[test]
    fn peak_ewma_reacts_at_once_to_slowness_and_slowly_to_recovery() {
        let s = TargetStats::default();
        s.observe_ttfb(Duration::from_millis(100));
        s.observe_ttfb(Duration::from_millis(1000));
        assert_eq!(s.ewma_ttfb_ns(), 1_000_000_000);
        s.observe_ttfb(Duration::from_millis(100));
        assert!(s.ewma_ttfb_ns() > 800_000_000);
    }

    #[test]
    fn cheapest_sorts_by_price_unpriced_last() {
        let ts = vec![
            target("dear", 1, Some(10.0)),
            target("free", 1, None),
            target("cheap", 1, Some(0.5)),
        ];
        let out = order(Strategy::Cheapest, &ts, &mut fastrand::Rng::with_seed(1));
        assert_eq!(names(&out), ["cheap", "dear", "free"]);
    }
}
