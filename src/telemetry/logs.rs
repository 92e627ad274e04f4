//! Logs: `tracing` events to stderr, level from `RUST_LOG` (default `info`). JSON lines when
//! stderr is not a terminal (a pod's log collector), compact text on a terminal;
//! `SWITCHYARD_LOG_FORMAT=json|text` decides explicitly.
//!
//! Each request writes one line of target [`ACCESS`] (id, route, provider, attempts, status,
//! latency, tokens, cost) when it settles, through [`access`]: `RUST_LOG` decides whether it
//! is written like any other event, but the line is formatted here (the generic formatter
//! cost a tenth of a small request's CPU) and written in batches every 50 ms (a hand-over per
//! line woke the writer thread on every request).

use std::cell::RefCell;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Subscriber;
use tracing_subscriber::filter::EnvFilter;
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
    flush_access_lines(&mut Vec::new());
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
    let json = json_wanted(std::env::var("SWITCHYARD_LOG_FORMAT").ok());
    ACCESS_FORMAT.store(
        if json { FORMAT_JSON } else { FORMAT_TEXT },
        Ordering::Relaxed,
    );
    start_access_flusher();
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(env)
            .boxed()
    } else {
        fmt.compact().with_filter(env).boxed()
    }
}

/// How access lines are written: not at all until [`layer`] installs logs, then as JSON or
/// as text.
static ACCESS_FORMAT: AtomicU8 = AtomicU8::new(FORMAT_NONE);
const FORMAT_NONE: u8 = 0;
const FORMAT_TEXT: u8 = 1;
const FORMAT_JSON: u8 = 2;

/// Access lines not yet written. Handing each line over on its own woke the writer thread for
/// every request (a futex wake, a context switch and a `write` per request, about a third of
/// a small request's CPU); a batch goes [`ACCESS_FLUSH_EVERY`] after its first line.
static ACCESS_PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The thread that writes pending access lines, woken by the line that finds none pending.
static ACCESS_FLUSHER: OnceLock<std::thread::Thread> = OnceLock::new();

/// How long a batch of access lines gathers, from its first line, before it is written.
const ACCESS_FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Pending access lines beyond this are dropped (a writer that cannot keep up must not grow
/// memory; log lines are lossy under a flood, requests never wait on them).
const ACCESS_PENDING_MAX: usize = 4 << 20;

/// A batch buffer grown past this by a burst is not kept for the next batch.
const ACCESS_BATCH_KEEP: usize = 256 << 10;

/// Writes pending access lines to stderr, in one write. The batch is swapped with `spare`
/// (the previous batch's buffer, emptied), so the buffer lines are appended to keeps the
/// capacity it grew to: a fresh one per batch was grown again, line by line, by reallocating
/// and copying every batch. Written by this thread straight to stderr, not through the log
/// layer's writer thread, which would copy the batch once more to hand it over. `Stderr`
/// holds its lock for a whole `write_all`, so a batch and the log layer's lines do not
/// interleave mid-line.
fn flush_access_lines(spare: &mut Vec<u8>) {
    {
        let Ok(mut pending) = ACCESS_PENDING.lock() else {
            return;
        };
        if pending.is_empty() {
            return;
        }
        std::mem::swap(&mut *pending, spare);
    }
    let _ = std::io::stderr().write_all(spare);
    spare.clear();
    if spare.capacity() > ACCESS_BATCH_KEEP {
        *spare = Vec::new();
    }
}

/// Starts (once per process) the thread that writes pending access lines. It sleeps parked
/// while none are pending, so an idle sidecar is not woken for them (it was, 20 times a
/// second, when the thread looked every 50 ms); the line that finds the queue empty wakes it,
/// and it writes the batch 50 ms later. Under load that is one wake-up per batch.
fn start_access_flusher() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("switchyard-access-log".into())
            .spawn(|| {
                let _ = ACCESS_FLUSHER.set(std::thread::current());
                let mut spare = Vec::new();
                loop {
                    // Lines queued before this thread could be woken are not waited on; a
                    // wake-up that came while the last batch was written returns at once.
                    let idle = ACCESS_PENDING.lock().map_or(true, |p| p.is_empty());
                    if idle {
                        std::thread::park();
                    }
                    std::thread::sleep(ACCESS_FLUSH_EVERY);
                    flush_access_lines(&mut spare);
                }
            });
    });
}

/// One request's access line. `None` fields are left out.
#[derive(Debug, Default)]
pub struct AccessLine<'a> {
    /// `x-request-id`, the caller's or ours.
    pub request_id: &'a str,
    /// `chat`, `embeddings`, ...
    pub operation: &'a str,
    /// The public model name the caller asked for.
    pub route: &'a str,
    /// The provider that served it (`none` when none did).
    pub provider: &'a str,
    /// The upstream model that served it.
    pub model: &'a str,
    /// The caller key's team.
    pub team: &'a str,
    /// The caller key's configured name (never the key).
    pub key: Option<&'a str>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// The HTTP status sent to the caller (499: the caller left first).
    pub status: u16,
    /// The error class, when it failed.
    pub error: Option<&'a str>,
    /// Whether the reply was streamed.
    pub stream: bool,
    /// Received to settled.
    pub latency_ms: f64,
    /// Received to first streamed event.
    pub ttft_ms: Option<f64>,
    /// Input tokens (cached included).
    pub input_tokens: Option<u64>,
    /// Output tokens.
    pub output_tokens: Option<u64>,
    /// Input tokens read from a prompt cache.
    pub cached_tokens: Option<u64>,
    /// Whether the counts are switchyard's estimate (the upstream sent none).
    pub usage_estimated: bool,
    /// The reply's cost, when its model is priced.
    pub cost_usd: Option<f64>,
    /// The request's trace, when tracing is on.
    pub trace_id: Option<&'a str>,
    /// Only when `telemetry.log_content` is on.
    pub prompt: Option<&'a str>,
    /// Only when `telemetry.log_content` is on.
    pub completion: Option<&'a str>,
}

/// Writes a request's access line, when `RUST_LOG` lets `switchyard::access` INFO through.
pub fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "switchyard::access", tracing::Level::INFO) {
        return;
    }
    let json = match ACCESS_FORMAT.load(Ordering::Relaxed) {
        FORMAT_JSON => true,
        FORMAT_TEXT => false,
        _ => return,
    };
    thread_local! {
        static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    }
    BUF.with(|b| {
        let Ok(mut buf) = b.try_borrow_mut() else {
            return;
        };
        buf.clear();
        if json {
            line.write_json(&mut buf);
        } else {
            line.write_text(&mut buf);
        }
        let first = match ACCESS_PENDING.lock() {
            Ok(mut pending) if pending.len() + buf.len() <= ACCESS_PENDING_MAX => {
                pending.extend_from_slice(&buf);
                pending.len() == buf.len()
            }
            _ => false,
        };
        if first {
            if let Some(flusher) = ACCESS_FLUSHER.get() {
                flusher.unpark();
            }
        }
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::with_capacity(512);
        }
    });
}

/// `2026-11-23T13:39:12.345678Z`, the seconds part kept per thread (it changes once a
/// second).
fn write_timestamp(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let mut s = Vec::with_capacity(19);
            let (y, m, d) = civil((secs / 86_400) as i64);
            let t = secs % 86_400;
            let _ = write!(
                s,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
                t / 3600,
                t % 3600 / 60,
                t % 60
            );
            if s.len() == 19 {
                c.1.copy_from_slice(&s);
                c.0 = secs;
            } else {
                out.extend_from_slice(&s);
                return;
            }
        }
        out.extend_from_slice(&c.1);
    });
    let micros = now.subsec_micros();
    let mut frac = *b".000000Z";
    let mut v = micros;
    for i in (1..7).rev() {
        frac[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&frac);
}

/// (year, month, day) of days since 1970-01-01 (H. Hinnant's `civil_from_days`); also the
/// budget layer's calendar.
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A value of an access line, written as JSON or as text.
enum V<'a> {
    S(&'a str),
    U(u64),
    F(f64),
    B(bool),
}

/// Calls `$emit!(name, Option<V>)` for each field of the access line `$line`, in the line's
/// order; `None` fields are left out by the caller. A macro rather than a loop over a table,
/// so each name reaches the writer as a literal: the JSON writer copies `,"name":` as a
/// constant (inline moves), where a name taken from a table cost a `memcpy` call each.
macro_rules! each_field {
    ($line:expr, $emit:ident) => {
        $emit!("request_id", Some(V::S($line.request_id)));
        $emit!("operation", Some(V::S($line.operation)));
        $emit!("route", Some(V::S($line.route)));
        $emit!("provider", Some(V::S($line.provider)));
        $emit!("model", Some(V::S($line.model)));
        $emit!("team", Some(V::S($line.team)));
        $emit!("key", $line.key.map(V::S));
        $emit!("attempts", Some(V::U(u64::from($line.attempts))));
        $emit!("status", Some(V::U(u64::from($line.status))));
        $emit!("error", $line.error.map(V::S));
        $emit!("stream", Some(V::B($line.stream)));
        $emit!("latency_ms", Some(V::F($line.latency_ms)));
        $emit!("ttft_ms", $line.ttft_ms.map(V::F));
        $emit!("input_tokens", $line.input_tokens.map(V::U));
        $emit!("output_tokens", $line.output_tokens.map(V::U));
        $emit!("cached_tokens", $line.cached_tokens.map(V::U));
        $emit!("usage_estimated", Some(V::B($line.usage_estimated)));
        $emit!("cost_usd", $line.cost_usd.map(V::F));
        $emit!("trace_id", $line.trace_id.map(V::S));
        $emit!("prompt", $line.prompt.map(V::S));
        $emit!("completion", $line.completion.map(V::S));
    };
}

impl AccessLine<'_> {
    /// The shape `tracing-subscriber`'s flattened JSON gives every other event.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
        macro_rules! json {
            ($k:literal, $v:expr) => {
                if let Some(v) = $v {
                    out.extend_from_slice(concat!(",\"", $k, "\":").as_bytes());
                    match v {
                        V::S(s) => json_str(out, s),
                        V::U(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
                        // NaN and infinities are not JSON: written as null, as serde_json does.
                        V::F(x) => {
                            let _ = serde_json::to_writer(&mut *out, &x);
                        }
                        V::B(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
                    }
                }
            };
        }
        each_field!(self, json);
        out.extend_from_slice(b",\"target\":\"switchyard::access\"}\n");
    }

    /// The compact text shape, for a terminal.
    fn write_text(&self, out: &mut Vec<u8>) {
        write_timestamp(out);
        out.extend_from_slice(b"  INFO switchyard::access: request");
        macro_rules! text {
            ($k:literal, $v:expr) => {
                if let Some(v) = $v {
                    out.extend_from_slice(concat!(" ", $k, "=").as_bytes());
                    let _ = match v {
                        V::S(s) => write!(out, "{s}"),
                        V::U(n) => write!(out, "{n}"),
                        V::F(x) => write!(out, "{x}"),
                        V::B(b) => write!(out, "{b}"),
                    };
                }
            };
        }
        each_field!(self, text);
        out.push(b'\n');
    }
}

/// `s` as a JSON string. Ids, names and labels need no escape: they are checked eight bytes at
/// a time and copied whole, where serde_json's writer goes byte by byte; anything else is
/// escaped by serde_json.
#[inline]
fn json_str(out: &mut Vec<u8>, s: &str) {
    if crate::ir::json_plain(s) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
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
    use super::*;

    #[test]
    fn access_lines_are_json_objects_with_every_field_set() {
        let line = AccessLine {
            request_id: "r-\"1\"",
            operation: "chat",
            route: "chat-default",
            provider: "mock",
            model: "echo",
            team: "default",
            key: Some("team-a"),
            attempts: 2,
            status: 200,
            stream: true,
            latency_ms: 1.25,
            ttft_ms: Some(0.5),
            input_tokens: Some(10),
            output_tokens: Some(3),
            cost_usd: Some(f64::NAN),
            completion: Some("line\nbreak"),
            ..AccessLine::default()
        };
        let mut out = Vec::new();
        line.write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["target"], "switchyard::access");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["request_id"], "r-\"1\"");
        assert_eq!(v["key"], "team-a");
        assert_eq!(
            (v["attempts"].as_u64(), v["status"].as_u64()),
            (Some(2), Some(200))
        );
        assert_eq!(v["stream"], true);
        assert_eq!(v["latency_ms"], 1.25);
        assert_eq!(v["ttft_ms"], 0.5);
        assert_eq!(v["output_tokens"], 3);
        assert!(v["cost_usd"].is_null());
        assert_eq!(v["completion"], "line\nbreak");
        assert!(
            v.get("error").is_none() && v.get("prompt").is_none() && v.get("trace_id").is_none()
        );
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        let mut text = Vec::new();
        line.write_text(&mut text);
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(" INFO switchyard::access: request request_id=r-\"1\" operation=chat"),
            "{text}"
        );
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\u{1}",
            "\u{1f}",
            " ",
            "\u{7f}",
            "é ü 漢字 🚀",
            "</script>",
            "eight by",
            "sixteen bytes...",
            "sixteen bytes..\"",
            "sixteen bytes..\u{0}",
            "0123456789abcdef\\x",
        ] {
            let mut out = Vec::new();
            json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        let mut a = Vec::new();
        write_timestamp(&mut a);
        let mut b = Vec::new();
        write_timestamp(&mut b);
        let (a, b) = (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
        assert!(a <= b, "{a} then {b}");
        assert!(a.starts_with("20"), "{a}");
    }

    #[test]
    fn format_is_explicit_when_asked() {
        assert!(super::json_wanted(Some("json".into())));
        assert!(!super::json_wanted(Some("text".into())));
    }
}
