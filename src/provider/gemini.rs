//! Google AI Gemini upstreams: `POST {base}/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse` and `:batchEmbedContents`; key in `x-goog-api-key`
//! (never in the URL, where it would end up in logs).

use crate::ir::{Error, ErrorKind, Operation, ReplyBody};
use crate::wire::{self, gemini};

use super::Path;

pub(super) fn encode(op: &Operation, model: &str) -> Result<(Path, Vec<u8>), Error> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    match op {
        Operation::Chat(c) if c.stream => Ok((
            Path::Owned(format!("/models/{model}:streamGenerateContent?alt=sse")),
            gemini::encode_request(c)?,
        )),
        Operation::Chat(c) => Ok((
            Path::Owned(format!("/models/{model}:generateContent")),
            gemini::encode_request(c)?,
        )),
        Operation::Embeddings(e) => Ok((
            Path::Owned(format!("/models/{model}:batchEmbedContents")),
            gemini::encode_embeddings(e, model)?,
        )),
        _ => Err(Error::new(
            ErrorKind::Internal,
            "operation has no upstream call",
        )),
    }
}

pub(super) fn decode(op: &Operation, body: &[u8], model: &str) -> Result<ReplyBody, Error> {
    match op {
        Operation::Chat(_) => Ok(ReplyBody::Chat(gemini::decode_reply(body, model)?)),
        Operation::Embeddings(_) => Ok(ReplyBody::Embeddings(gemini::decode_embeddings(
            body, model,
        )?)),
        _ => Err(Error::new(
            ErrorKind::Internal,
            "operation has no upstream call",
        )),
    }
}

pub(super) fn stream_decoder(model: &str) -> Box<dyn wire::StreamDecoder> {
    Box::new(gemini::StreamDecoder::new(model))
}
