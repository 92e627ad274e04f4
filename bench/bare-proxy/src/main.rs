//! bare-proxy: the baseline for switchyard's load benchmark.
//!
//! A minimal HTTP/1.1 pass-through reverse proxy on hyper 1: every request is forwarded
//! (method, path and query, headers minus hop-by-hop, body streamed) to the upstream through a
//! pooled `hyper_util::client::legacy` client with TCP_NODELAY, and the response is streamed
//! back. No parsing, no policy, no logging.
//!
//! Usage: `[BARE_PROXY_THREADS=1] bare-proxy LISTEN_ADDR UPSTREAM_ADDR`, e.g.
//! `bare-proxy 127.0.0.1:9102 127.0.0.1:9101` (UPSTREAM_ADDR may also be `http://host:port`,
//! optionally with a path prefix that is prepended to every forwarded path).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

struct Upstream {
    client: Client<HttpConnector, Incoming>,
    /// `http://host:port` with no trailing slash.
    authority_base: String,
    /// Path prefix prepended to every request path ("" for none).
    prefix: String,
}

/// RFC 9110 §7.6.1 hop-by-hop headers, plus the ones a proxy must not forward.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
    headers.remove("proxy-connection");
}

fn error(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}

async fn forward(up: Arc<Upstream>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("{}{}{}", up.authority_base, up.prefix, pq).parse() {
        Ok(u) => u,
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST)),
    };
    parts.uri = uri;
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // The client sets Host from the upstream URI.
    parts.headers.remove(header::HOST);
    let req = Request::from_parts(parts, body);
    match up.client.request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(_) => Ok(error(StatusCode::BAD_GATEWAY)),
    }
}

fn parse_upstream(s: &str) -> Result<(String, String), String> {
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e| format!("bad UPSTREAM_ADDR {s:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "bad UPSTREAM_ADDR {s:?}: only http:// is supported"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("bad UPSTREAM_ADDR {s:?}: no host"))?;
    let prefix = uri.path().trim_end_matches('/').to_string();
    Ok((format!("http://{authority}"), prefix))
}

/// tokio's multi-thread runtime (what `#[tokio::main]` builds, the baseline the bar
/// was measured on), or with `BARE_PROXY_THREADS=1` the one-thread runtime `switchyard serve`
/// uses by default, so the two can also be compared like for like.
fn main() -> ExitCode {
    let one = std::env::var("BARE_PROXY_THREADS").is_ok_and(|v| v == "1");
    let mut builder = if one {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(serve()),
        Err(e) => {
            eprintln!("bare-proxy: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: bare-proxy LISTEN_ADDR UPSTREAM_ADDR");
        return ExitCode::from(2);
    }
    let listen: SocketAddr = match args[1].parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare-proxy: bad LISTEN_ADDR {:?}: {e}", args[1]);
            return ExitCode::from(2);
        }
    };
    let (authority_base, prefix) = match parse_upstream(&args[2]) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("bare-proxy: {e}");
            return ExitCode::from(2);
        }
    };

    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(http);
    let up = Arc::new(Upstream {
        client,
        authority_base,
        prefix,
    });

    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare-proxy: cannot bind {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "bare-proxy listening on http://{} -> {}{}",
        listener.local_addr().unwrap_or(listen),
        up.authority_base,
        up.prefix
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let up = up.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| forward(up.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
