//! Wire formats: the JSON and SSE shapes of each API, and their codecs to and from the IR.
//!
//! A format is written once here and used from both sides: the OpenAI format is a caller
//! surface *and* an upstream, so `surface/openai.rs` and `provider/openai.rs` share
//! [`openai`]. Each module converts in both directions where both are needed; none of them does
//! I/O. Depends on `ir` and `sse` only.

use bytes::BytesMut;

use crate::{ir, sse};

pub mod anthropic;
pub mod gemini;
pub mod openai;
mod skim;

/// Turns an upstream's stream events into IR events. Stateful: formats such as Anthropic's
/// spread one tool call over several events.
pub trait StreamDecoder: Send {
    /// Decodes one SSE event, pushing zero or more IR events. An `Err` ends the stream.
    fn event(&mut self, ev: &sse::Event, out: &mut Vec<ir::StreamEvent>) -> Result<(), ir::Error>;
    /// Whether the upstream has signalled a proper end (OpenAI `[DONE]`, Anthropic
    /// `message_stop`, ...). A body that ends before this is a truncated stream.
    fn is_done(&self) -> bool;
}

/// Writes IR events in a caller's stream format. Stateful: formats such as Anthropic's need
/// content blocks opened and closed around deltas.
pub trait StreamEncoder: Send {
    /// Encodes one event (possibly as several SSE events, or none).
    fn event(&mut self, ev: &ir::StreamEvent, out: &mut BytesMut);
    /// The stream ended normally: write the format's closing events (`data: [DONE]`, ...).
    fn finish(&mut self, out: &mut BytesMut);
    /// The stream failed after bytes reached the caller: write a well-formed error event; no
    /// further call follows.
    fn error(&mut self, err: &ir::Error, out: &mut BytesMut);
}
