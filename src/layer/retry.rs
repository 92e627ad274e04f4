//! Retry and fallback across a request's [`Plan`]: when an attempt fails before any byte has
//! reached the caller, and the failure is one another target might not have (connect error,
//! timeout, 429, 5xx), the next target is tried.
//!
//! This is the bottom of the request-level stack: it consumes the `Plan` the route layer
//! inserted and calls each target's own stack. Backoff, retry budgets and same-target retries
//! slot in here; an unready target (a tripped breaker) is skipped, never waited on.

use std::fmt::Write as _;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tower::{Service, ServiceExt};

use crate::ir::{Attempt, Error, ErrorKind, Plan, Reply, Request};

/// The retry service (a leaf: its "inner" services are the plan's targets).
#[derive(Debug, Clone, Default)]
pub struct Retry {
    _private: (),
}

impl Retry {
    /// A retry service with the default policy: try each target once, in plan order.
    pub fn new() -> Self {
        Self::default()
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
        Box::pin(async move {
            let Some(plan) = req.meta.extensions.remove::<Plan>() else {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "request reached retry without a route",
                ));
            };
            run(plan, Arc::new(req)).await
        })
    }
}

async fn run(plan: Plan, request: Arc<Request>) -> Result<Reply, Error> {
    let mut failures: Vec<(String, Error)> = Vec::new();
    let mut upstream_time = Duration::ZERO;
    for target in plan.targets.iter() {
        let attempt = Attempt {
            request: request.clone(),
            model: target.model.clone(),
            number: failures.len() as u32 + 1,
        };
        let started = std::time::Instant::now();
        let result = target.service.clone().oneshot(attempt).await;
        match result {
            Ok(mut reply) => {
                reply.attempts = failures.len() as u32 + 1;
                reply.upstream_time += upstream_time;
                return Ok(reply);
            }
            Err(e) => {
                upstream_time += started.elapsed();
                let retry = e.is_retryable();
                tracing::debug!(
                    request_id = %request.meta.request_id,
                    target = ?target,
                    kind = e.kind.as_str(),
                    retry,
                    "attempt failed"
                );
                failures.push((format!("{target:?}"), e));
                if !retry {
                    break;
                }
            }
        }
    }
    Err(summarise(&plan, failures))
}

/// One error for the caller: the last failure's status (a 429 keeps its `Retry-After`), with
/// every attempt listed when there were several.
fn summarise(plan: &Plan, failures: Vec<(String, Error)>) -> Error {
    let Some((_, last)) = failures.last() else {
        return Error::new(
            ErrorKind::Unavailable,
            format!("route '{}' has no targets", plan.route),
        );
    };
    if failures.len() == 1 {
        return last.clone();
    }
    let mut msg = format!("all {} attempts failed:", failures.len());
    for (target, e) in &failures {
        let _ = write!(msg, " {target}: {} ({});", e.kind.as_str(), e.status);
    }
    let _ = write!(msg, " last error: {}", last.message);
    Error {
        message: msg,
        ..last.clone()
    }
}
