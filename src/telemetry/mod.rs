//! Metrics, traces and logs.
//!
//! [`init`] installs the process-wide `tracing` subscriber (logs) and, when configured, starts
//! trace export.

mod export;
pub mod logs;
pub mod metrics;
pub(crate) mod otlp;
pub mod trace;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::TelemetryConfig;

/// Installs logs and, when configured, trace export (on a thread of its own). Returns the
/// trace pipeline to flush at exit. A bad trace setup is logged and leaves tracing off: it
/// never stops the proxy.
pub fn init(cfg: &TelemetryConfig) -> Option<trace::Tracing> {
    let settings = trace::Settings::resolve(cfg, &|k| std::env::var(k).ok());
    let tracing = match settings.as_ref().map(trace::Tracing::start) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!("switchyard: {e}; traces are off");
            None
        }
        None => None,
    };
    let installed = tracing_subscriber::registry()
        .with(logs::layer())
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
