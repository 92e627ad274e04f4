//! `POST /v1/embeddings` bodies: decode, then encode for OpenAI and Gemini upstreams (JSON with
//! no key written twice).
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::assert_json_without_duplicate_keys as no_dups;
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
            no_dups("openai request", &body);
            if let Ok(body) = gemini::encode_embeddings(&req, "m") {
                no_dups("gemini request", &body);
            }
        }
    }
});
