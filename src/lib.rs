//! switchyard: an LLM gateway shaped as a sidecar proxy.
//!
//! See `DESIGN.md` for the request path; `stack.rs` composes it.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod ir;
pub mod sse;
pub mod wire;
