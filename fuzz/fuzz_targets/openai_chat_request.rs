//! `POST /v1/chat/completions` bodies: the caller's bytes → IR, then IR → every upstream
//! format. A decode error must be a 4xx; an encoded request must be JSON with no key written
//! twice; for an OpenAI-format upstream the request survives the trip (what the upstream
//! decodes is what the caller sent); an Anthropic request is one our Anthropic decoder accepts
//! and a Gemini request has contents.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{assert_json_without_duplicate_keys as no_dups, close};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard::wire::{anthropic, gemini, openai};

fuzz_target!(|data: &[u8]| {
    match openai::decode_chat_request(data) {
        Err(e) => assert!(
            (400..500).contains(&e.status),
            "decode error status {}",
            e.status
        ),
        Ok(req) => {
            let opts = openai::RequestOptions {
                max_completion_tokens: false,
                stream_usage: req.include_usage,
            };
            let body = openai::encode_chat_request(&req, &req.model, opts);
            no_dups("openai request", &body);
            let again = openai::decode_chat_request(&body).expect("our own request decodes");
            assert_eq!(again.messages, req.messages, "messages");
            assert_eq!(again.tools, req.tools, "tools");
            assert_eq!(again.tool_choice, req.tool_choice, "tool_choice");
            assert_eq!(again.parallel_tool_calls, req.parallel_tool_calls);
            assert_eq!(again.max_tokens, req.max_tokens, "max_tokens");
            assert!(close(again.temperature, req.temperature), "temperature");
            assert!(close(again.top_p, req.top_p), "top_p");
            assert_eq!(again.stop, req.stop, "stop");
            assert_eq!(again.n, req.n, "n");
            assert_eq!(again.response_format, req.response_format);
            assert_eq!(again.stream, req.stream, "stream");
            if req.stream {
                assert_eq!(again.include_usage, req.include_usage, "include_usage");
            }
            assert_eq!(again.user, req.user, "user");
            assert_eq!(again.extra, req.extra, "extra");

            let body = openai::encode_chat_request(&req, "m", openai::RequestOptions::default());
            no_dups("openai request", &body);
            if let Ok(body) = anthropic::encode_request(&req, "m", 1024) {
                no_dups("anthropic request", &body);
                // Our Anthropic decoder follows Anthropic's rules: what we send, it accepts.
                if let Err(e) = anthropic::decode_request(&body) {
                    panic!("Anthropic would refuse it: {}", e.message);
                }
            }
            if let Ok(body) = gemini::encode_request(&req) {
                no_dups("gemini request", &body);
                let v: Value = serde_json::from_slice(&body).expect("JSON");
                let contents = v["contents"].as_array().map_or(0, Vec::len);
                assert!(contents > 0, "a Gemini request without contents");
            }
            let _ = req.estimate_input_tokens();
        }
    }
});
