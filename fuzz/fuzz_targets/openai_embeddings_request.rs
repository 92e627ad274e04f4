//! `POST /v1/embeddings` bodies: decode, then encode for OpenAI and Gemini upstreams.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::wire::{gemini, openai};

fuzz_target!(|data: &[u8]| {
    match openai::decode_embeddings_request(data) {
        Err(e) => assert!(
            (400..500).contains(&e.status),
            "decode error status {}",
            e.status
        ),
        Ok(req) => {
            let body = openai::encode_embeddings_request(&req, "m");
            serde_json::from_slice::<serde_json::Value>(&body).expect("openai request is JSON");
            if let Ok(body) = gemini::encode_embeddings(&req, "m") {
                serde_json::from_slice::<serde_json::Value>(&body).expect("gemini request is JSON");
            }
        }
    }
});
