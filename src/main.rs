//! The `switchyard` command: parse the CLI, call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use switchyard::config::{self, Config, Env};
use switchyard::{server, stack};

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
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => config::load_file(p, &Env).map_err(|e| e.to_string()),
        None => Ok(Config::builtin(&Env)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    switchyard::telemetry::logs::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                listen,
                admin,
            } => {
                let mut cfg = match load(config.as_ref()) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("switchyard: invalid config: {e}");
                        return ExitCode::from(2);
                    }
                };
                if let Some(l) = listen {
                    cfg.listen = l;
                }
                if let Some(a) = admin {
                    cfg.admin = a;
                }
                serve(cfg).await
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
            Command::Mock {
                port,
                host,
                admin_port,
                fail_status,
                fail_every,
                retry_after,
                latency_ms,
            } => {
                let addr = SocketAddr::new(host, port);
                let admin = SocketAddr::new(host, admin_port);
                let faults = switchyard::provider::mock::Faults {
                    status: fail_status,
                    every: fail_every,
                    retry_after_secs: retry_after,
                    latency_ms,
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
    })
}

async fn serve(cfg: Config) -> ExitCode {
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
    server::shutdown_signal().await;
    eprintln!("switchyard: shutting down, draining in-flight requests");
    running.shutdown(server::DRAIN_GRACE).await;
    ExitCode::SUCCESS
}
