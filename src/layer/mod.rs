//! Tower middleware, one concern per file. Layers speak IR only: they never import a caller
//! surface or a provider module. `stack.rs` orders them.

pub mod attempt_telemetry;
pub mod auth;
pub mod balance;
pub mod breaker;
pub mod budget;
pub mod ratelimit;
pub mod retry;
pub mod usage;

use crate::ir::{Error, Reply};

/// The inner service that `poll_ready` readied, for a call whose future outlives `&mut self`;
/// a fresh clone takes its place (the Tower idiom for services moved into a future).
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// What a layer does with its inner service's result once the call ends: see [`Then`].
pub trait AfterCall {
    /// Takes the inner result; returns the layer's.
    fn after(self, result: Result<Reply, Error>) -> Result<Reply, Error>;
}

pin_project_lite::pin_project! {
    /// A layer's response future that hands the inner result to an [`AfterCall`]: a named
    /// future where a boxed `async` block cost an allocation and a copy per call.
    pub struct Then<F, H> {
        #[pin]
        inner: F,
        then: Option<H>,
    }
}

impl<F, H> Then<F, H> {
    /// `inner`, its result handed to `then`.
    pub(crate) fn new(inner: F, then: H) -> Self {
        Self {
            inner,
            then: Some(then),
        }
    }
}

impl<F, H> std::future::Future for Then<F, H>
where
    F: std::future::Future<Output = Result<Reply, Error>>,
    H: AfterCall,
{
    type Output = Result<Reply, Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        std::task::Poll::Ready(match this.then.take() {
            Some(h) => h.after(result),
            None => result,
        })
    }
}
