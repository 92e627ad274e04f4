//! The OpenAI caller surface: Chat Completions (JSON and SSE), Embeddings, Models.

use http::StatusCode;

use crate::ir::{Error, Format, ModelInfo, Operation, ReplyBody};
use crate::wire::openai as wire;

use super::{json_response, sse_response, Body};

/// Decodes `POST /v1/chat/completions`. The body is kept with the request for an upstream
/// that speaks this format ([`crate::ir::ChatRequest::raw`]).
pub(super) fn decode_chat(body: bytes::Bytes) -> Result<Operation, Error> {
    wire::decode_chat_request_raw(body).map(|c| Operation::Chat(Box::new(c)))
}

/// Decodes `POST /v1/embeddings`.
pub(super) fn decode_embeddings(body: &[u8]) -> Result<Operation, Error> {
    wire::decode_embeddings_request(body).map(|e| Operation::Embeddings(Box::new(e)))
}

/// What the encoder needs to remember of the request.
#[derive(Debug, Clone, Default)]
pub(super) struct StreamOptions {
    include_usage: bool,
    encoding_format: Option<String>,
}

impl StreamOptions {
    pub(super) fn from_op(op: &Operation) -> Self {
        match op {
            Operation::Chat(c) => Self {
                include_usage: c.include_usage,
                encoding_format: None,
            },
            Operation::Embeddings(e) => Self {
                include_usage: false,
                encoding_format: e.encoding_format.clone(),
            },
            _ => Self::default(),
        }
    }
}

/// Encodes a reply body.
pub(super) fn encode_reply(body: ReplyBody, opts: StreamOptions) -> http::Response<Body> {
    match body {
        ReplyBody::Chat(r) => json_response(StatusCode::OK, wire::encode_chat_reply(&r)),
        ReplyBody::Raw(r) if r.format == Format::OpenAi => json_response(StatusCode::OK, r.body),
        ReplyBody::Raw(r) => match super::decode_raw(&r) {
            Ok(c) => json_response(StatusCode::OK, wire::encode_chat_reply(&c)),
            Err(e) => super::error_response(Format::OpenAi, &e),
        },
        ReplyBody::Stream(s) => {
            sse_response(s, Box::new(wire::StreamEncoder::new(opts.include_usage)))
        }
        ReplyBody::Embeddings(e) => json_response(
            StatusCode::OK,
            wire::encode_embeddings_reply(&e, opts.encoding_format.as_deref()),
        ),
        ReplyBody::Models(m) => json_response(StatusCode::OK, wire::encode_models(&m)),
        ReplyBody::TokenCount(n) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&serde_json::json!({ "input_tokens": n })).unwrap_or_default(),
        ),
    }
}

/// Encodes one model.
pub(super) fn encode_model(m: &ModelInfo) -> Vec<u8> {
    serde_json::to_vec(&wire::encode_model(m)).unwrap_or_default()
}
