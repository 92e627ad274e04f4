//! Logs: `tracing` events to stderr, level from `RUST_LOG` (default `info`). JSON lines when
//! stderr is not a terminal (a pod's log collector), compact text on a terminal;
//! `SWITCHYARD_LOG_FORMAT=json|text` decides explicitly.
//!
//! Each request writes one line of target [`ACCESS`] (id, route, provider, attempts, status,
//! latency, tokens, cost) when it settles. Trace spans ([`super::trace::TARGET`]) are not
//! logged: they belong to the OpenTelemetry layer, and formatting them would cost every
//! request even with tracing off.

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The target of the per-request log line.
pub const ACCESS: &str = "switchyard::access";

fn json_wanted(var: Option<String>) -> bool {
    match var.as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => !std::io::stderr().is_terminal(),
    }
}

/// Keeps the background log writer alive; [`flush`] drops it, writing what is queued.
static GUARD: std::sync::Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> =
    std::sync::Mutex::new(None);

/// Writes every queued log line (call before the process exits).
pub fn flush() {
    if let Ok(mut g) = GUARD.lock() {
        g.take();
    }
}

/// The log layer, filtered by `RUST_LOG`.
pub fn layer<S>() -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let not_trace_spans =
        filter_fn(|meta| !(meta.is_span() && meta.target() == super::trace::TARGET));
    // Lines are written by a background thread: a request never waits on a stderr write
    // (a blocking syscall per line otherwise). Bounded and lossy under a log flood; losses
    // are the writer's, never the request's. The queue's slots are allocated and touched up
    // front: the default 128,000 lines cost 4 MiB of resident memory at idle; 8,192 (≈ 8 s
    // of access lines at 1,000 req/s with stderr stalled) cost 0.3 MiB.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(true)
        .finish(std::io::stderr());
    if let Ok(mut g) = GUARD.lock() {
        *g = Some(guard);
    }
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    if json_wanted(std::env::var("SWITCHYARD_LOG_FORMAT").ok()) {
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(env.and(not_trace_spans))
            .boxed()
    } else {
        fmt.compact().with_filter(env.and(not_trace_spans)).boxed()
    }
}

/// Installs logs only (commands that serve no traffic). Later calls do nothing.
pub fn init() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry().with(layer()).try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn format_is_explicit_when_asked() {
        assert!(super::json_wanted(Some("json".into())));
        assert!(!super::json_wanted(Some("text".into())));
    }
}
