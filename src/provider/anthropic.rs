//! Anthropic Messages upstreams: `POST {base}/v1/messages`, `x-api-key` and
//! `anthropic-version` headers (set at build time in `mod.rs`).

use crate::ir::{Error, ErrorKind, Operation, ReplyBody};
use crate::wire::{self, anthropic};

use super::{Http, Path};

/// Anthropic requires `max_tokens`; used when neither caller nor config gave one.
pub(super) const DEFAULT_MAX_TOKENS: u32 = 4096;

const MESSAGES: &str = "/v1/messages";

/// The paths [`encode`] sends to that do not depend on the model.
pub(super) const FIXED_PATHS: &[&str] = &[MESSAGES];

pub(super) fn encode(h: &Http, op: &Operation, model: &str) -> Result<(Path, Vec<u8>), Error> {
    match op {
        Operation::Chat(c) => Ok((
            Path::Borrowed(MESSAGES),
            anthropic::encode_request(c, model, h.default_max_tokens)?,
        )),
        Operation::Embeddings(_) => Err(Error::invalid(
            "this model's provider (Anthropic) has no embeddings API",
        )
        .with_param("model")),
        _ => Err(Error::new(
            ErrorKind::Internal,
            "operation has no upstream call",
        )),
    }
}

pub(super) fn decode(op: &Operation, body: &[u8]) -> Result<ReplyBody, Error> {
    match op {
        Operation::Chat(_) => Ok(ReplyBody::Chat(anthropic::decode_reply(body)?)),
        _ => Err(Error::new(
            ErrorKind::Internal,
            "operation has no upstream call",
        )),
    }
}

pub(super) fn stream_decoder() -> Box<dyn wire::StreamDecoder> {
    Box::new(anthropic::StreamDecoder::new())
}
