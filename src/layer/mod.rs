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

/// The inner service that `poll_ready` readied, for a call whose future outlives `&mut self`;
/// a fresh clone takes its place (the Tower idiom for services moved into a future).
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}
