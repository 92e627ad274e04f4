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
