//! The webhook's HTTPS server: `POST /mutate` and `GET /healthz`, TLS by rustls (ring).
//!
//! The certificate is re-read when its files change (cert-manager renews it in place), checked
//! at each new connection by file metadata — webhook traffic is a few calls per pod creation,
//! so a `stat` per handshake costs nothing, and it follows Secret symlink swaps.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{review, Settings};

/// The API server sends at most a few MiB per review.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors starting the webhook.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The certificate or key could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The certificate and key files, re-read when they change.
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<(Stamp, TlsAcceptor)>,
}

type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    [cert, key].map(|p| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    })
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServeError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Certificate {
    /// Loads the PEM certificate chain and private key.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, ServeError> {
        let s = stamp(&cert, &key);
        let a = acceptor(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: ArcSwap::from_pointee((s, a)),
        })
    }

    /// The acceptor for a new connection: reloaded first if the files changed, the old one
    /// kept (and the error logged) if the new files do not load.
    fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.load();
        let now = stamp(&self.cert, &self.key);
        if now == current.0 {
            return current.1.clone();
        }
        match acceptor(&self.cert, &self.key) {
            Ok(a) => {
                tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                self.current.store(Arc::new((now, a.clone())));
                a
            }
            Err(e) => {
                // Half-written during a rotation, most likely: the next connection retries.
                tracing::warn!(error = %e, "new webhook certificate does not load; keeping the old");
                current.1.clone()
            }
        }
    }
}

/// A bound webhook server, not yet serving.
pub struct Webhook {
    listener: TcpListener,
    certificate: Arc<Certificate>,
    settings: Arc<Settings>,
}

impl Webhook {
    /// Binds `addr`.
    pub async fn bind(
        addr: SocketAddr,
        certificate: Certificate,
        settings: Settings,
    ) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Self {
            listener,
            certificate: Arc::new(certificate),
            settings: Arc::new(settings),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` completes, then drains open connections for up to `grace`.
    pub async fn serve(self, stop: impl Future<Output = ()>, grace: Duration) {
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        tokio::pin!(stop);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop => break,
            };
            let acceptor = self.certificate.acceptor();
            let settings = self.settings.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let service = hyper::service::service_fn(move |req| {
                    let settings = settings.clone();
                    async move { Ok::<_, Infallible>(handle(req, &settings).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                let _ = watcher.watch(conn.into_owned()).await;
            });
        }
        drop(self.listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("webhook drain grace expired");
        }
    }
}

async fn handle(req: http::Request<Incoming>, settings: &Settings) -> http::Response<Full<Bytes>> {
    let respond = |status: StatusCode, ct: &'static str, body: Vec<u8>| {
        let mut r = http::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ct),
        );
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (&Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return respond(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("cannot read the body: {e}\n").into_bytes(),
                    )
                }
            };
            match review(&body, settings) {
                Ok(out) => respond(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec(&out).unwrap_or_default(),
                ),
                Err(e) => respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("{e}\n").into_bytes(),
                ),
            }
        }
        (_, "/healthz" | "/mutate") => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"method not allowed\n".to_vec(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}
