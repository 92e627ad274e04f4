//! Per-attempt telemetry: one client span per upstream attempt (a child of the request's
//! server span, so a fallback shows as sibling attempts under one request), the attempt
//! counter by outcome, and the attempt duration.
//!
//! The outermost layer of each target's stack: a breaker refusal or a timeout of the layers
//! below is an outcome of the attempt like any upstream error.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::usage::{finish_str, watch};
use crate::ir::{Attempt, Error, Reply, ReplyBody, ServedBy, Settlement, TargetStats};
use crate::telemetry::metrics::AttemptSeries;
use crate::telemetry::trace::{self, int, KeyValue, Recording};

/// Telemetry of the attempts to one target.
#[derive(Clone)]
pub struct AttemptTelemetryLayer {
    target: Arc<ServedBy>,
    series: AttemptSeries,
    stats: Arc<TargetStats>,
}

impl AttemptTelemetryLayer {
    /// The layer of `target`, whose breaker publishes into `stats`.
    pub fn new(target: Arc<ServedBy>, stats: Arc<TargetStats>) -> Self {
        let series = AttemptSeries::new(target.provider.clone(), &target.model);
        series.circuit(stats.circuit());
        Self {
            target,
            series,
            stats,
        }
    }
}

impl<S> Layer<S> for AttemptTelemetryLayer {
    type Service = AttemptTelemetry<S>;
    fn layer(&self, inner: S) -> AttemptTelemetry<S> {
        AttemptTelemetry {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AttemptTelemetryLayer`].
#[derive(Clone)]
pub struct AttemptTelemetry<S> {
    inner: S,
    layer: AttemptTelemetryLayer,
}

impl<S> Service<Attempt> for AttemptTelemetry<S>
where
    S: Service<Attempt, Response = Reply, Error = Error>,
{
    type Response = Reply;
    type Error = Error;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let ready = self.inner.poll_ready(cx);
        if let Poll::Ready(Err(_)) = &ready {
            self.layer.series.circuit(self.layer.stats.circuit());
        }
        ready
    }

    fn call(&mut self, mut attempt: Attempt) -> Self::Future {
        let span = if trace::enabled() {
            let op = attempt.request.op.name();
            let l = &self.layer;
            let span = Recording::client(
                attempt.request.meta.extensions.get::<trace::Parent>(),
                format!("{op} {}", l.target.model),
                vec![
                    KeyValue::new("switchyard.provider", l.series.provider().clone()),
                    KeyValue::new("switchyard.attempt", i64::from(attempt.number)),
                    KeyValue::new("gen_ai.operation.name", op),
                    KeyValue::new("gen_ai.provider.name", l.target.gen_ai_provider.clone()),
                    KeyValue::new("gen_ai.request.model", l.target.model.clone()),
                ],
            );
            if let Some(s) = &span {
                // The upstream continues the attempt's trace.
                attempt.trace_headers = s.trace_headers();
            }
            span
        } else {
            None
        };
        AttemptFuture {
            inner: self.inner.call(attempt),
            started: Instant::now(),
            layer: self.layer.clone(),
            span,
        }
    }
}

pin_project! {
    /// The response future of [`AttemptTelemetry`].
    pub struct AttemptFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        layer: AttemptTelemetryLayer,
        span: Option<Recording>,
    }
}

impl<F> std::future::Future for AttemptFuture<F>
where
    F: std::future::Future<Output = Result<Reply, Error>>,
{
    type Output = Result<Reply, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = ready!(this.inner.as_mut().poll(cx));
        let l = &*this.layer;
        l.series
            .duration
            .observe(this.started.elapsed().as_secs_f64());
        let span = this.span.take();
        Poll::Ready(match result {
            Ok(reply) => {
                l.series.ok.inc();
                match span {
                    Some(span) => Ok(annotate(reply, span)),
                    None => Ok(reply),
                }
            }
            Err(e) => {
                l.series.failed(e.kind.as_str());
                if let Some(mut span) = span {
                    span.fail(e.kind.as_str());
                }
                Err(e)
            }
        })
    }
}

/// Records the reply's GenAI attributes on the attempt span; a stream keeps the span open
/// until it ends, so the span covers the whole generation.
fn annotate(mut reply: Reply, mut span: Recording) -> Reply {
    match &mut reply.body {
        ReplyBody::Chat(c) => {
            span.set("gen_ai.response.model", c.model.clone());
            if let Some(u) = c.usage {
                span.set("gen_ai.usage.input_tokens", int(u.input_tokens));
                span.set("gen_ai.usage.output_tokens", int(u.output_tokens));
            }
            let finish: Vec<&'static str> = c
                .choices
                .iter()
                .filter_map(|ch| ch.finish_reason.as_ref().map(finish_str))
                .collect();
            span.finish_reasons(&finish);
            reply
        }
        ReplyBody::Embeddings(e) => {
            span.set("gen_ai.response.model", e.model.clone());
            if let Some(u) = e.usage {
                span.set("gen_ai.usage.input_tokens", int(u.input_tokens));
            }
            reply
        }
        ReplyBody::Stream(s) => {
            let inner = std::mem::replace(s, Box::pin(futures_util::stream::empty()));
            let (watched, seen) = watch(inner, false);
            *s = watched;
            reply.on_settle(move |st: &Settlement| {
                if let Some(u) = st.usage {
                    span.set("gen_ai.usage.input_tokens", int(u.input_tokens));
                    span.set("gen_ai.usage.output_tokens", int(u.output_tokens));
                }
                if let Ok(seen) = seen.lock() {
                    if let Some(m) = &seen.model {
                        span.set("gen_ai.response.model", m.clone());
                    }
                    span.finish_reasons(&seen.finish);
                }
                if let Some(kind) = st.error {
                    span.fail(kind.as_str());
                }
                drop(span);
            })
        }
        _ => reply,
    }
}
