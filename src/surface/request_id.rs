//! `x-request-id`: every request has one before anything logs it (the caller's own is kept),
//! and the caller sees it on the response.
//!
//! One header probe on the way in and one on the way out; tower-http's
//! `SetRequestId` + `PropagateRequestId` pair did three lookups and two extension inserts for
//! the same result.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// `x-request-id`, named once.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a per-process random prefix and a counter — unique, cheap, and sortable
/// within one sidecar's logs.
#[derive(Debug, Clone)]
pub struct RequestIdLayer {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl Default for RequestIdLayer {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0)
            ^ std::process::id();
        Self {
            prefix: seed,
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl RequestIdLayer {
    /// `req_` + 8 hex digits of the process prefix + 10 of the counter, without `format!`.
    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = *b"req_000000000000000000";
        let hex = |v: u64, out: &mut [u8]| {
            for (i, b) in out.iter_mut().rev().enumerate() {
                *b = b"0123456789abcdef"[((v >> (4 * i)) & 0xf) as usize];
            }
        };
        hex(u64::from(self.prefix), &mut id[4..12]);
        hex(n & 0xff_ffff_ffff, &mut id[12..]);
        // Owned by its shared bytes: the clone the response keeps is a count, where a value
        // copied from a slice is moved to a new shared allocation at its first clone.
        HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
            .unwrap_or(HeaderValue::from_static("req_unknown"))
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId {
            inner,
            ids: self.clone(),
        }
    }
}

/// See [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
    ids: RequestIdLayer,
}

impl<S, B, RB> Service<http::Request<B>> for RequestId<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // One probe for both the lookup and the insert.
        let id = match req.headers_mut().entry(X_REQUEST_ID) {
            http::header::Entry::Occupied(e) => e.get().clone(),
            http::header::Entry::Vacant(v) => v.insert(self.ids.make()).clone(),
        };
        RequestIdFuture {
            inner: self.inner.call(req),
            id: Some(id),
        }
    }
}

pin_project! {
    /// The response future of [`RequestId`]: the id goes on a response that has none.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, RB, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(resp), Some(id)) = (&mut result, this.id.take()) {
            if let http::header::Entry::Vacant(v) = resp.headers_mut().entry(X_REQUEST_ID) {
                v.insert(id);
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn request_ids_are_prefix_and_counter_in_hex() {
        let m = RequestIdLayer {
            prefix: 0x00ab_cdef,
            next: Arc::new(AtomicU64::new(0x1f)),
        };
        let id = |m: &RequestIdLayer| m.make().to_str().unwrap().to_owned();
        assert_eq!(id(&m), "req_00abcdef000000001f");
        assert_eq!(id(&m), "req_00abcdef0000000020");
        let m = RequestIdLayer {
            next: Arc::new(AtomicU64::new(u64::MAX)),
            ..m
        };
        assert_eq!(id(&m), "req_00abcdefffffffffff");
    }

    /// The id the inner service saw, and the one the response carries.
    async fn exchange(
        layer: &RequestIdLayer,
        sent: Option<&'static str>,
        answered: Option<&'static str>,
    ) -> (String, String) {
        let svc = layer.layer(tower::service_fn(
            move |req: http::Request<()>| async move {
                let seen = req.headers()[X_REQUEST_ID].to_str().unwrap().to_owned();
                let mut resp = http::Response::new(seen);
                if let Some(a) = answered {
                    resp.headers_mut()
                        .insert(X_REQUEST_ID, HeaderValue::from_static(a));
                }
                Ok::<_, std::convert::Infallible>(resp)
            },
        ));
        let mut req = http::Request::new(());
        if let Some(s) = sent {
            req.headers_mut()
                .insert(X_REQUEST_ID, HeaderValue::from_static(s));
        }
        let resp = svc.oneshot(req).await.unwrap();
        let on_resp = resp.headers()[X_REQUEST_ID].to_str().unwrap().to_owned();
        (resp.into_body(), on_resp)
    }

    #[tokio::test]
    async fn the_callers_id_is_kept_and_a_missing_one_is_made() {
        let layer = RequestIdLayer::default();
        let (seen, answered) = exchange(&layer, Some("caller-1"), None).await;
        assert_eq!((seen.as_str(), answered.as_str()), ("caller-1", "caller-1"));
        let (seen, answered) = exchange(&layer, None, None).await;
        assert!(seen.starts_with("req_") && seen.len() == 22, "{seen}");
        assert_eq!(seen, answered);
        let (next, _) = exchange(&layer, None, None).await;
        assert_ne!(seen, next);
        // A response that already names an id keeps it.
        let (_, answered) = exchange(&layer, Some("caller-2"), Some("inner")).await;
        assert_eq!(answered, "inner");
    }
}
