//! switchyard: an LLM gateway shaped as a sidecar proxy.
//!
//! See `DESIGN.md` for the request path; `stack.rs` composes it.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod cost;
pub mod inject;
pub mod ir;
pub mod layer;
pub mod provider;
pub mod route;
pub mod server;
pub mod sse;
pub mod stack;
pub mod state;
pub mod surface;
pub mod telemetry;
pub mod wire;
