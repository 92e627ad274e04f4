//! OpenAI-format upstreams: OpenAI itself, any OpenAI-compatible server, and Azure OpenAI
//! (deployment URLs, `api-version`, `api-key` header).

use crate::config::ProviderKind;
use crate::ir::{Error, ErrorKind, Operation, ReplyBody};
use crate::wire;
use crate::wire::openai::{self, encode_chat_request, encode_embeddings_request, RequestOptions};

use super::{Http, Path};

const CHAT: &str = "/chat/completions";
const EMBEDDINGS: &str = "/embeddings";

/// The paths [`encode`] sends to that do not depend on the model (all but Azure's).
pub(super) const FIXED_PATHS: &[&str] = &[CHAT, EMBEDDINGS];

/// The path (after the base URL) and body for an operation.
pub(super) fn encode(
    kind: ProviderKind,
    h: &Http,
    op: &Operation,
    model: &str,
) -> Result<(Path, Vec<u8>), Error> {
    let (endpoint, body) = match op {
        Operation::Chat(c) => {
            let opts = RequestOptions {
                max_completion_tokens: kind == ProviderKind::Openai,
                stream_usage: h.stream_usage,
            };
            (CHAT, encode_chat_request(c, model, opts))
        }
        Operation::Embeddings(e) => (EMBEDDINGS, encode_embeddings_request(e, model)),
        _ => {
            return Err(Error::new(
                ErrorKind::Internal,
                "operation has no upstream call",
            ))
        }
    };
    let path = match kind {
        // Azure names the deployment in the path; the model in the body is ignored.
        ProviderKind::AzureOpenai => Path::Owned(format!(
            "/openai/deployments/{model}{endpoint}?api-version={}",
            h.api_version.as_deref().unwrap_or_default()
        )),
        _ => Path::Borrowed(endpoint),
    };
    Ok((path, body))
}

/// `same_format`: the caller speaks OpenAI too, so the reply is forwarded in its own bytes.
pub(super) fn decode(
    op: &Operation,
    body: bytes::Bytes,
    same_format: bool,
) -> Result<ReplyBody, Error> {
    match op {
        Operation::Chat(_) if same_format => {
            Ok(ReplyBody::Raw(openai::summarise_chat_reply(body)?))
        }
        Operation::Chat(_) => Ok(ReplyBody::Chat(openai::decode_chat_reply(&body)?)),
        Operation::Embeddings(_) => Ok(ReplyBody::Embeddings(openai::decode_embeddings_reply(
            &body,
        )?)),
        _ => Err(Error::new(
            ErrorKind::Internal,
            "operation has no upstream call",
        )),
    }
}

/// `same_format`: the caller speaks OpenAI too, so chunks are forwarded in their own bytes.
pub(super) fn stream_decoder(same_format: bool) -> Box<dyn wire::StreamDecoder> {
    Box::new(if same_format {
        openai::StreamDecoder::verbatim()
    } else {
        openai::StreamDecoder::new()
    })
}
