//! Metrics, traces and logs.
//!
//! [`init`] installs the process-wide `tracing` subscriber: the log layer always, the
//! OpenTelemetry layer when trace export is configured.

mod export;
pub mod logs;
pub mod metrics;
pub mod trace;

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::config::TelemetryConfig;

/// Installs logs and, when configured, trace export (which needs a Tokio runtime). Returns the
/// trace pipeline to flush at exit. A bad trace setup is logged and leaves tracing off: it
/// never stops the proxy.
pub fn init(cfg: &TelemetryConfig) -> Option<trace::Tracing> {
    let settings = trace::Settings::resolve(cfg, &|k| std::env::var(k).ok());
    // A Vec rather than an `Option` layer: a `None` layer counts as interested in everything,
    // which would build every trace span even with tracing off.
    let mut layers = vec![logs::layer()];
    let tracing = match settings.as_ref().map(trace::Tracing::start) {
        Some(Ok((t, tracer))) => {
            layers.push(
                // Spans carry only the attributes switchyard sets. The bridge's own (the
                // callsite's source location and target, the thread, busy/idle time) mean
                // nothing on a pool of async workers, and cost every span: the timing is two
                // clock reads per poll, and each attribute is converted, encoded and sent.
                // Context activation is off too: nothing here reads the OpenTelemetry
                // current context (propagation reads the span's own), and it cost every poll.
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_location(false)
                    .with_target(false)
                    .with_threads(false)
                    .with_tracked_inactivity(false)
                    .with_context_activation(false)
                    .with_filter(filter_fn(|m| m.target() == trace::TARGET))
                    .boxed(),
            );
            Some(t)
        }
        Some(Err(e)) => {
            eprintln!("switchyard: {e}; traces are off");
            None
        }
        None => None,
    };
    let installed = tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok();
    if let (true, Some(s)) = (installed, &settings) {
        tracing::info!(
            protocol = ?s.protocol,
            endpoint = s.endpoint.as_deref().unwrap_or("(from OTEL_EXPORTER_OTLP_*)"),
            service = %s.service_name,
            "exporting traces over OTLP"
        );
    }
    tracing
}
