//! The span export queue: finished spans are appended to a bounded in-memory batch that a
//! Tokio task hands to the OTLP exporter once a second, or as soon as a full batch is waiting.
//!
//! The task runs on a thread of its own (`switchyard-otlp`, a runtime of its own), not on
//! the runtime that serves requests: encoding and dropping a batch of 512 spans is a
//! millisecond of work, which on the serving thread (one by default) stalled whichever
//! requests were in flight behind it.
//!
//! Not the SDK's batch processor, for two reasons: its default form blocks on a thread without
//! a runtime when the exporter is the hyper-based OTLP/HTTP one (DEPENDENCIES.md), and it drops
//! spans on a full queue without telling anyone. Here `on_end` never blocks a request and never
//! wakes the exporter task for one span (a push under a short lock; the task is woken only when
//! a whole batch is waiting, or by a flush), and every span not exported is counted in
//! `switchyard_trace_spans_dropped_total{reason}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot, Notify};

use super::metrics::{self, SpanDrop};

/// Spans held while the collector is slow; past this they are dropped (and counted).
const QUEUE: usize = 4096;
/// Spans per export call; a batch this full wakes the exporter at once.
const MAX_BATCH: usize = 512;
/// How long finished spans may wait for a batch to fill.
const INTERVAL: Duration = Duration::from_secs(1);
/// Upper bound of one export call (a black-holed collector must not stall the queue forever).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished spans waiting for the exporter, and the bell it answers when a batch is full.
#[derive(Debug, Default)]
struct Pending {
    spans: Mutex<Vec<SpanData>>,
    full: Notify,
}

impl Pending {
    /// The spans queued so far. The queue starts again with room for as many (up to a batch),
    /// so that it does not grow, copying every span it holds, again after each export.
    fn take(&self) -> Vec<SpanData> {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if spans.is_empty() {
            return Vec::new();
        }
        let room = spans.len().min(MAX_BATCH);
        std::mem::replace(&mut *spans, Vec::with_capacity(room))
    }
}

/// A span processor that queues finished spans for a background exporter task.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    pending: Arc<Pending>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

/// A handle to flush the queue from async code (the SDK's flush and shutdown are sync).
#[derive(Clone)]
pub(crate) struct Flusher {
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

impl Flusher {
    /// Exports everything queued so far; waits at most `limit`.
    pub(crate) async fn flush(&self, limit: Duration) {
        let (done, wait) = oneshot::channel();
        if self.flush.send(done).await.is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}

impl QueueProcessor {
    /// Starts the exporter on a runtime of its own; `make` builds the exporter there (a gRPC
    /// channel spawns its worker on the runtime it is made in). Its error is returned.
    ///
    /// The runtime is a multi-thread one with one worker: its scheduler's code is not the
    /// serving runtime's (one thread by default), whose hot loop a second instance of it
    /// made the compiler stop inlining (~1k instructions a request, bench/instructions.sh).
    /// It is kept for the life of the process (trace export starts once per process).
    pub(crate) fn spawn<E, F>(make: F) -> Result<(Self, Flusher), String>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<E, String> + Send + 'static,
    {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        if RUNTIME.get().is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("switchyard-otlp")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the trace exporter: {e}"))?;
            let _ = RUNTIME.set(rt);
        }
        let rt = RUNTIME.get().expect("set above");
        let (flush, rx) = mpsc::channel(16);
        let pending = Arc::new(Pending::default());
        let queue = pending.clone();
        // A std channel: the caller may be on the serving runtime, where a Tokio blocking receive
        // is refused; it waits only for `make`.
        let (made, started) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            match make() {
                Ok(exporter) => {
                    let _ = made.send(Ok(()));
                    run(exporter, queue, rx).await;
                }
                Err(e) => {
                    let _ = made.send(Err(e));
                }
            }
        });
        started
            .recv()
            .map_err(|_| "the trace exporter ended at start".to_owned())??;
        Ok((
            Self {
                pending,
                flush: flush.clone(),
            },
            Flusher { flush },
        ))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _: &mut Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let mut spans = self.pending.spans.lock().unwrap_or_else(|e| e.into_inner());
        if spans.len() >= QUEUE {
            drop(spans);
            metrics::spans_dropped(SpanDrop::QueueFull, 1);
            return;
        }
        spans.push(span);
        let full = spans.len() == MAX_BATCH;
        drop(spans);
        if full {
            self.pending.full.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (done, _) = oneshot::channel();
        let _ = self.flush.try_send(done);
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        // The task ends when the last sender (the provider's processor and the flusher) drops.
        Ok(())
    }
}

async fn run<E: SpanExporter>(
    exporter: E,
    pending: Arc<Pending>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            flush = flushes.recv() => match flush {
                Some(done) => {
                    export(&exporter, pending.take()).await;
                    let _ = done.send(());
                }
                None => {
                    export(&exporter, pending.take()).await;
                    break;
                }
            },
            () = pending.full.notified() => export(&exporter, pending.take()).await,
            _ = tick.tick() => export(&exporter, pending.take()).await,
        }
    }
    let _ = exporter.shutdown();
}

async fn export<E: SpanExporter>(exporter: &E, mut spans: Vec<SpanData>) {
    while !spans.is_empty() {
        let rest = spans.split_off(spans.len().min(MAX_BATCH));
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
        spans = rest;
    }
}
