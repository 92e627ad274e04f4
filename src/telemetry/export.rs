//! The span export queue: finished spans go into a bounded channel that a Tokio task drains
//! in batches to the OTLP exporter.
//!
//! Not the SDK's batch processor, for two reasons: its default form blocks on a thread without
//! a runtime when the exporter is the hyper-based OTLP/HTTP one (DEPENDENCIES.md), and it drops
//! spans on a full queue without telling anyone. Here `on_end` never blocks a request — it is
//! one `try_send` — and every span not exported is counted in
//! `switchyard_trace_spans_dropped_total{reason}`.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

use super::metrics::{self, SpanDrop};

/// Spans held while the collector is slow; past this they are dropped (and counted).
const QUEUE: usize = 4096;
/// Spans per export call.
const MAX_BATCH: usize = 512;
/// How long finished spans may wait for a batch to fill.
const INTERVAL: Duration = Duration::from_secs(1);
/// Upper bound of one export call (a black-holed collector must not stall the queue forever).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

enum Msg {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// A span processor that queues finished spans for a background exporter task.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

/// A handle to flush the queue from async code (the SDK's flush and shutdown are sync).
#[derive(Clone)]
pub(crate) struct Flusher {
    tx: mpsc::Sender<Msg>,
}

impl Flusher {
    /// Exports everything queued so far; waits at most `limit`.
    pub(crate) async fn flush(&self, limit: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}

impl QueueProcessor {
    /// Starts the exporter task on the current Tokio runtime.
    pub(crate) fn spawn<E: SpanExporter + 'static>(exporter: E) -> (Self, Flusher) {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(exporter, rx));
        (Self { tx: tx.clone() }, Flusher { tx })
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _: &mut Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            metrics::spans_dropped(SpanDrop::QueueFull, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (done, _) = oneshot::channel();
        let _ = self.tx.try_send(Msg::Flush(done));
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        // The task ends when the last sender (the provider's processor and the flusher) drops.
        Ok(())
    }
}

async fn run<E: SpanExporter>(exporter: E, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Span(s)) => {
                    batch.push(*s);
                    if batch.len() >= MAX_BATCH {
                        export(&exporter, &mut batch).await;
                    }
                }
                Some(Msg::Flush(done)) => {
                    export(&exporter, &mut batch).await;
                    let _ = done.send(());
                }
                None => {
                    export(&exporter, &mut batch).await;
                    break;
                }
            },
            _ = tick.tick() => export(&exporter, &mut batch).await,
        }
    }
    let _ = exporter.shutdown();
}

async fn export<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    let n = spans.len() as u64;
    match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            metrics::spans_dropped(SpanDrop::ExportFailed, n);
            tracing::debug!(error = %e, spans = n, "trace export failed");
        }
        Err(_) => {
            metrics::spans_dropped(SpanDrop::ExportFailed, n);
            tracing::debug!(spans = n, "trace export timed out");
        }
    }
}
