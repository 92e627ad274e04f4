//! The Anthropic caller surface: Messages (JSON and SSE), `count_tokens`, and the model list
//! in Anthropic's shape. Current SDKs authenticate with `Authorization: Bearer` as well as
//! `x-api-key` and send a recent `anthropic-version`; both are accepted as they come.

use http::StatusCode;
use serde_json::Value;

use crate::ir::{Error, Operation, ReplyBody};
use crate::wire::anthropic as wire;

use super::{json_response, sse_response, Body};

/// Decodes `POST /v1/messages`.
pub(super) fn decode_messages(body: &[u8]) -> Result<Operation, Error> {
    wire::decode_request(body).map(|c| Operation::Chat(Box::new(c)))
}

/// Decodes `POST /v1/messages/count_tokens`: a Messages request without `max_tokens`.
pub(super) fn decode_count_tokens(body: &[u8]) -> Result<Operation, Error> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("request body is not valid JSON: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        obj.entry("max_tokens").or_insert(Value::from(1));
        obj.remove("stream");
    }
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    wire::decode_request(&bytes).map(|c| Operation::CountTokens(Box::new(c)))
}

/// Encodes a reply body for an Anthropic caller.
pub(super) fn encode_reply(body: ReplyBody, public_model: &str) -> http::Response<Body> {
    match body {
        ReplyBody::Chat(r) => json_response(StatusCode::OK, wire::encode_reply(&r)),
        ReplyBody::Raw(r) if r.format == crate::ir::Format::Anthropic => {
            json_response(StatusCode::OK, r.body)
        }
        ReplyBody::Raw(r) => match super::decode_raw(&r) {
            Ok(c) => json_response(StatusCode::OK, wire::encode_reply(&c)),
            Err(e) => super::error_response(crate::ir::Format::Anthropic, &e),
        },
        ReplyBody::Stream(s) => sse_response(s, Box::new(wire::StreamEncoder::new(public_model))),
        ReplyBody::Models(m) => json_response(StatusCode::OK, wire::encode_models(&m)),
        ReplyBody::TokenCount(n) => json_response(StatusCode::OK, wire::encode_count_tokens(n)),
        ReplyBody::Embeddings(_) => super::error_response(
            crate::ir::Format::Anthropic,
            &Error::invalid("the Anthropic API has no embeddings endpoint"),
        ),
    }
}
