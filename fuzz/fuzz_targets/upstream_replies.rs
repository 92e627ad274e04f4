//! Non-streamed upstream replies (chat and embeddings, every format): decode, then encode the
//! IR for both caller surfaces, which must produce JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::ir;
use switchyard::wire::{anthropic, gemini, openai};

fn check(reply: Result<ir::ChatReply, ir::Error>) {
    if let Ok(r) = reply {
        serde_json::from_slice::<serde_json::Value>(&openai::encode_chat_reply(&r))
            .expect("openai reply is JSON");
        serde_json::from_slice::<serde_json::Value>(&anthropic::encode_reply(&r))
            .expect("anthropic reply is JSON");
    }
}

fuzz_target!(|data: &[u8]| {
    check(openai::decode_chat_reply(data));
    check(anthropic::decode_reply(data));
    check(gemini::decode_reply(data, "gemini-m"));
    for e in [
        openai::decode_embeddings_reply(data),
        gemini::decode_embeddings(data, "m"),
    ]
    .into_iter()
    .flatten()
    {
        for fmt in [None, Some("float"), Some("base64")] {
            serde_json::from_slice::<serde_json::Value>(&openai::encode_embeddings_reply(&e, fmt))
                .expect("embeddings reply is JSON");
        }
    }
});
