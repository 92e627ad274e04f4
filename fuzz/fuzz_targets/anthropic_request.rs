//! `POST /v1/messages` bodies: the caller's bytes → IR, then IR → every upstream format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::wire::{anthropic, gemini, openai};

fuzz_target!(|data: &[u8]| {
    match anthropic::decode_request(data) {
        Err(e) => assert!(
            (400..500).contains(&e.status),
            "decode error status {}",
            e.status
        ),
        Ok(req) => {
            let body = openai::encode_chat_request(&req, "m", openai::RequestOptions::default());
            serde_json::from_slice::<serde_json::Value>(&body).expect("openai request is JSON");
            if let Ok(body) = anthropic::encode_request(&req, "m", 1024) {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .expect("anthropic request is JSON");
            }
            if let Ok(body) = gemini::encode_request(&req) {
                serde_json::from_slice::<serde_json::Value>(&body).expect("gemini request is JSON");
            }
        }
    }
});
