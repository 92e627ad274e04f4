//! The `switchyard` command: parse the CLI, call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use switchyard::config::{self, Config, Env};
use switchyard::{inject, server, stack};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An LLM gateway shaped as a sidecar proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the data plane and the admin plane.
    Serve {
        /// Config file (YAML). Without one: the built-in mock provider plus every provider
        /// whose API key is in the environment.
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Override the data-plane address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override the admin-plane address.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Threads that serve requests: 1 (the default) runs everything on one thread, as a
        /// sidecar with a core or less should; 0 gives one per available core.
        #[arg(long, env = "SWITCHYARD_THREADS", default_value_t = 1)]
        threads: usize,
    },
    /// Validate a config file and print the resolved routes.
    Check {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the mock provider alone as an OpenAI-format upstream (for demos, tests, benchmarks).
    Mock {
        /// Port to listen on.
        #[arg(long, short, default_value_t = 9001)]
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Admin port (fault control at POST /mock/faults); 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        admin_port: u16,
        /// Inject this HTTP status (e.g. 503, 429, 500).
        #[arg(long)]
        fail_status: Option<u16>,
        /// ...on every Nth request.
        #[arg(long)]
        fail_every: Option<u64>,
        /// `Retry-After` seconds sent with the injected status.
        #[arg(long)]
        retry_after: Option<u64>,
        /// Added latency per request, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Pause between stream events, in milliseconds (long-lived streams for load runs).
        #[arg(long, default_value_t = 0)]
        token_interval_ms: u64,
    },
    /// Serve the Kubernetes sidecar-injection webhook (HTTPS `POST /mutate`, `GET /healthz`).
    Inject(Box<InjectArgs>),
}

/// The webhook's flags; each has an environment variable for the Helm chart.
#[derive(clap::Args)]
struct InjectArgs {
    /// Address to serve HTTPS on.
    #[arg(long, env = "SWITCHYARD_INJECT_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// TLS certificate chain (PEM); re-read when it changes.
    #[arg(long, env = "SWITCHYARD_INJECT_CERT")]
    cert: PathBuf,
    /// TLS private key (PEM).
    #[arg(long, env = "SWITCHYARD_INJECT_KEY")]
    key: PathBuf,
    /// The switchyard image injected as the sidecar.
    #[arg(long, env = "SWITCHYARD_INJECT_IMAGE")]
    image: Option<String>,
    /// The sidecar's image pull policy.
    #[arg(
        long,
        env = "SWITCHYARD_INJECT_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    image_pull_policy: String,
    /// Default ConfigMap holding `switchyard.yaml` (annotation `switchyard.dev/config`).
    #[arg(
        long,
        env = "SWITCHYARD_INJECT_CONFIG_MAP",
        default_value = "switchyard"
    )]
    config_map: String,
    /// Default Secret holding provider keys (annotation `switchyard.dev/secret`).
    #[arg(
        long,
        env = "SWITCHYARD_INJECT_SECRET",
        default_value = "switchyard-provider-keys"
    )]
    secret: String,
    /// The webhook's own namespace: its pods are never injected.
    #[arg(long, env = "SWITCHYARD_INJECT_NAMESPACE")]
    namespace: Option<String>,
    /// Default data-plane port (annotation `switchyard.dev/port`).
    #[arg(long, env = "SWITCHYARD_INJECT_PORT", default_value_t = 4000)]
    port: u16,
    /// Default admin-plane port (annotation `switchyard.dev/admin-port`).
    #[arg(long, env = "SWITCHYARD_INJECT_ADMIN_PORT", default_value_t = 9464)]
    admin_port: u16,
    /// Default sidecar CPU request; empty for none.
    #[arg(long, env = "SWITCHYARD_INJECT_CPU_REQUEST", default_value = "50m")]
    cpu_request: String,
    /// Default sidecar memory request; empty for none.
    #[arg(long, env = "SWITCHYARD_INJECT_MEMORY_REQUEST", default_value = "32Mi")]
    memory_request: String,
    /// Default sidecar CPU limit; empty for none.
    #[arg(long, env = "SWITCHYARD_INJECT_CPU_LIMIT", default_value = "")]
    cpu_limit: String,
    /// Default sidecar memory limit; empty for none.
    #[arg(long, env = "SWITCHYARD_INJECT_MEMORY_LIMIT", default_value = "128Mi")]
    memory_limit: String,
}

impl InjectArgs {
    fn settings(&self) -> inject::Settings {
        let q = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let defaults = inject::Settings::default();
        inject::Settings {
            image: self.image.clone().unwrap_or(defaults.image),
            image_pull_policy: self.image_pull_policy.clone(),
            config_map: self.config_map.clone(),
            secret: self.secret.clone(),
            namespace: self.namespace.clone().filter(|n| !n.is_empty()),
            port: self.port,
            admin_port: self.admin_port,
            resources: inject::Resources {
                cpu_request: q(&self.cpu_request),
                memory_request: q(&self.memory_request),
                cpu_limit: q(&self.cpu_limit),
                memory_limit: q(&self.memory_limit),
            },
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => config::load_file(p, &Env).map_err(|e| e.to_string()),
        None => Ok(Config::builtin(&Env)),
    }
}

/// mimalloc serves every allocation: a request makes about 85 of them (header maps, boxed
/// futures, the IR's strings), and with glibc's malloc those took ~15% of the instructions
/// of a default unary request (callgrind, bench/instructions.sh: 116.0k -> 106.7k). Freed
/// pages go back to the system (`MADV_DONTNEED`) a second after they were freed, the next
/// time the allocator runs, and after a burst when [`trim_memory`] asks. Built without
/// transparent huge pages (feature `no_thp`): with them mimalloc advises its arenas
/// `MADV_HUGEPAGE`, and idle RSS went from 10 to 18 MiB in 2 MiB steps.
#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc as Rust's allocator. Every mimalloc block is at least word-aligned, so a layout
/// that asks no more goes to the plain entry points, and only larger alignments to the
/// aligned ones. (The `mimalloc` crate sends everything to `mi_malloc_aligned`, whose fast
/// path covers only blocks up to 1 KiB whose free slot happens to be aligned; past that it
/// takes a generic path and, for sizes that are not powers of two, over-allocates: ~19
/// allocations of a unary request; going around it saved 3.0k instructions, 98.9k -> 95.9k.)
struct Mimalloc;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

/// Up to this alignment a layout first tries the plain entry point and keeps the block when it
/// happens to be aligned (a Rust layout's size is a multiple of its alignment, so a block of
/// a 16-byte multiple size nearly always is): `mi_malloc_aligned`'s path cost ~230
/// instructions against ~40, for the futures and hash tables that ask 16 (a request's boxed
/// handler future, `http::Extensions`). Otherwise the block is freed and the aligned entry
/// point used.
const PLAIN_ALIGN_TRY: usize = 16;

/// A block for `layout` from `plain(size)` when the layout asks no more than a word of
/// alignment, or when it asks up to [`PLAIN_ALIGN_TRY`] and the plain block happens to have
/// it; from `aligned(size, align)` otherwise.
///
/// # Safety
/// `plain` and `aligned` are mimalloc's entry points of one kind (both zeroing or neither).
#[inline(always)]
unsafe fn mi_block(
    layout: std::alloc::Layout,
    plain: unsafe extern "C" fn(usize) -> *mut std::ffi::c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut std::ffi::c_void,
) -> *mut u8 {
    if layout.align() <= WORD {
        return plain(layout.size()).cast();
    }
    if layout.align() <= PLAIN_ALIGN_TRY {
        let p = plain(layout.size());
        if (p as usize) % layout.align() == 0 {
            return p.cast();
        }
        libmimalloc_sys::mi_free(p);
    }
    aligned(layout.size(), layout.align()).cast()
}

// SAFETY: each method hands the layout's size (and alignment, past a word) to mimalloc, whose
// blocks satisfy both, or checks the alignment of a plain block before it keeps it; mimalloc
// frees and reallocates any block it returned, however aligned, and a realloc past a word goes
// through the aligned entry point again.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        mi_block(
            layout,
            libmimalloc_sys::mi_malloc,
            libmimalloc_sys::mi_malloc_aligned,
        )
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        mi_block(
            layout,
            libmimalloc_sys::mi_zalloc,
            libmimalloc_sys::mi_zalloc_aligned,
        )
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        if layout.align() <= WORD {
            mi_realloc(ptr.cast(), size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), size, layout.align()).cast()
        }
    }
}

/// Gives freed heap back to the system after a burst. mimalloc returns freed pages about a
/// second after they were freed, but only when it runs again: a sidecar that goes idle right
/// after a burst sat at the burst's peak (47.4 MiB through 100 s of idle after 1,000 streams
/// ended, bench/streams.sh). Once a second the in-flight gauge is read; when it falls to an
/// eighth of the peak seen since the last collection (and that peak was a burst),
/// `mi_collect` frees what the allocator keeps for reuse, and again on each of the next few
/// seconds: connections and their buffers go a little after their requests (one collection
/// at the burst's end left 27.1 MiB after 1,000 ten-minute streams). It runs on the
/// runtime's thread: mimalloc's heaps are per thread, and on the one-thread runtime (the
/// default) that is the thread every request allocated on; with `--threads` > 1 it reaches
/// the heap of the worker it runs on, and pages the others abandoned.
fn trim_memory() {
    tokio::spawn(async {
        /// In-flight requests that make a burst worth collecting after.
        const BURST: i64 = 32;
        /// Seconds, from the burst's end, with a collection each.
        const AFTER: u8 = 5;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut peak = 0;
        let mut left = 0;
        loop {
            tick.tick().await;
            let now = switchyard::telemetry::metrics::inflight().get();
            peak = peak.max(now);
            if peak >= BURST && now <= peak / 8 {
                peak = now;
                left = AFTER;
            }
            if left > 0 {
                left -= 1;
                // SAFETY: mi_collect only frees the allocator's own free lists and pages.
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
        }
    });
}

/// The runtime `serve` runs on. One thread by default: a sidecar is given a core or less,
/// and on one thread a request never wakes another (a cross-thread wake-up is a futex call
/// each way, and a task stolen by the other worker finds its data in the other core's cache).
/// On 2 shared cores, unary requests through the default config, the CPU per request fell
/// 82 → 73 µs at 1 connection, 49 → 31 µs at 16 and 43 → 32 µs at 64 against tokio's
/// multi-thread scheduler (`--threads 0`), with the same instructions per request: what went
/// was futex calls and cache misses. The other commands keep tokio's default.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(0) | None => tokio::runtime::Builder::new_multi_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder.enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Serve { threads, .. } => Some(*threads),
        _ => None,
    };
    let runtime = match runtime(threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                listen,
                admin,
                threads: _,
            } => {
                let mut cfg = match load(config.as_ref()) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("switchyard: invalid config: {e}");
                        return ExitCode::from(2);
                    }
                };
                let overrides = move |c: &mut Config| {
                    if let Some(l) = listen {
                        c.listen = l;
                    }
                    if let Some(a) = admin {
                        c.admin = a;
                    }
                };
                overrides(&mut cfg);
                // Trace export runs on a thread of its own (telemetry/export.rs).
                let traces = switchyard::telemetry::init(&cfg.telemetry);
                server::raise_open_files_limit();
                trim_memory();
                let code = serve(cfg, config, overrides).await;
                if let Some(t) = traces {
                    t.shutdown(std::time::Duration::from_secs(5)).await;
                }
                code
            }
            Command::Check { config } => match load(Some(&config)) {
                Ok(cfg) => match stack::routes(&cfg, Default::default()) {
                    Ok(routes) => {
                        print!("{}", switchyard::route::describe_text(&cfg, &routes));
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("switchyard: {}", e.message);
                        ExitCode::from(2)
                    }
                },
                Err(e) => {
                    eprintln!("switchyard: invalid config: {e}");
                    ExitCode::from(2)
                }
            },
            Command::Inject(args) => {
                switchyard::telemetry::logs::init();
                run_inject(*args).await
            }
            Command::Mock {
                port,
                host,
                admin_port,
                fail_status,
                fail_every,
                retry_after,
                latency_ms,
                token_interval_ms,
            } => {
                switchyard::telemetry::logs::init();
                server::raise_open_files_limit();
                let addr = SocketAddr::new(host, port);
                let admin = SocketAddr::new(host, admin_port);
                let faults = switchyard::provider::mock::Faults {
                    status: fail_status,
                    every: fail_every,
                    retry_after_secs: retry_after,
                    latency_ms,
                    token_interval_ms,
                    ..Default::default()
                };
                match server::serve_mock(addr, admin, faults).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("switchyard: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    });
    // Queued log lines are written before the process exits.
    switchyard::telemetry::logs::flush();
    code
}

async fn serve(
    cfg: Config,
    path: Option<PathBuf>,
    overrides: impl Fn(&mut Config) + Send + 'static,
) -> ExitCode {
    // Before anything is announced: an early SIGTERM drains instead of killing the process,
    // and the second signal is not lost while the first is being handled.
    let mut signals = server::Signals::new();
    let running = match server::start(&cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::FAILURE;
        }
    };
    let routes = running.routes.load();
    eprintln!(
        "switchyard {} serving on http://{} (admin http://{})",
        env!("CARGO_PKG_VERSION"),
        running.data_addr,
        running.admin_addr
    );
    eprint!("{}", switchyard::route::describe_text(&cfg, &routes));
    eprintln!("point an OpenAI SDK at http://{}/v1", running.data_addr);
    if let Some(path) = path {
        // Hot reload: a bad version is refused and the running one keeps serving.
        if let Err(e) = running.watch_config(path, overrides) {
            eprintln!("switchyard: {e}; config changes need a restart");
        }
    }
    let _ = signals.recv().await;
    eprintln!("switchyard: shutting down, draining in-flight requests (a second signal quits now)");
    tokio::select! {
        _ = running.shutdown(server::DRAIN_GRACE) => ExitCode::SUCCESS,
        _ = signals.recv() => {
            eprintln!("switchyard: second signal, quitting without draining");
            ExitCode::from(130)
        }
    }
}

async fn run_inject(args: InjectArgs) -> ExitCode {
    let settings = args.settings();
    let webhook = match inject::server::Certificate::load(args.cert.clone(), args.key.clone()) {
        Ok(cert) => inject::server::Webhook::bind(args.listen, cert, settings).await,
        Err(e) => Err(e),
    };
    let webhook = match webhook {
        Ok(w) => w,
        Err(e) => {
            eprintln!("switchyard inject: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "switchyard inject {} serving https://{}/mutate",
        env!("CARGO_PKG_VERSION"),
        webhook.local_addr().unwrap_or(args.listen)
    );
    webhook
        .serve(
            server::shutdown_signal(),
            std::time::Duration::from_secs(10),
        )
        .await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Mimalloc;

    /// Every size class and alignment comes back aligned, zeroed when asked, and keeps its
    /// bytes through a realloc that grows it past the small-block sizes.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let a = Mimalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 7, 8, 24, 100, 1000, 1025, 1500, 4097, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is freed once, with its own layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null() && p as usize % align == 0, "{size}/{align}");
                    p.write_bytes(0xa5, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert!(grown as usize % align == 0, "realloc {size}/{align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xa5), "{size}/{align}");
                    a.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert!(z as usize % align == 0, "zeroed {size}/{align}");
                    assert!((0..size).all(|i| *z.add(i) == 0), "zeroed {size}/{align}");
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
