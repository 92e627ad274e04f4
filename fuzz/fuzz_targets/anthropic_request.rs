//! `POST /v1/messages` bodies: the caller's bytes → IR, then IR → every upstream format. A
//! decode error must be a 4xx; an encoded request must be JSON with no key written twice; and
//! for an Anthropic upstream the conversation survives the trip (turns may be merged, so it is
//! compared per role: the text, the tool calls and the tool results, in order); a Gemini
//! request has contents.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{assert_json_without_duplicate_keys as no_dups, close};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard::ir::{ChatRequest, Role, ToolChoice};
use switchyard::wire::{anthropic, gemini, openai};

/// What an upstream must read from a request, whatever the turn boundaries.
#[derive(Debug, PartialEq)]
struct View {
    text: Vec<(Role, String)>,
    calls: Vec<(String, String, Value)>,
    results: Vec<(Option<String>, String)>,
}

fn view(req: &ChatRequest) -> View {
    let mut text: Vec<(Role, String)> = Vec::new();
    let mut calls = Vec::new();
    let mut results = Vec::new();
    for m in &req.messages {
        let role = match m.role {
            Role::Developer => Role::System,
            r => r,
        };
        if role == Role::Tool {
            results.push((m.tool_call_id.clone(), m.joined_text()));
            continue;
        }
        // Empty text is dropped on the way (Anthropic refuses empty blocks), so the turns
        // around it may merge: compare non-empty text only.
        let t = m.joined_text();
        match text.last_mut() {
            _ if t.is_empty() => {}
            Some((r, acc)) if *r == role => acc.push_str(&t),
            _ => text.push((role, t)),
        }
        for c in &m.tool_calls {
            let args = serde_json::from_str(&c.arguments).unwrap_or(Value::Null);
            calls.push((c.id.clone(), c.name.clone(), args));
        }
    }
    View {
        text,
        calls,
        results,
    }
}

fuzz_target!(|data: &[u8]| {
    match anthropic::decode_request(data) {
        Err(e) => assert!(
            (400..500).contains(&e.status),
            "decode error status {}",
            e.status
        ),
        Ok(req) => {
            if let Ok(body) = anthropic::encode_request(&req, &req.model, 1024) {
                no_dups("anthropic request", &body);
                let again = anthropic::decode_request(&body).expect("our own request decodes");
                assert_eq!(view(&again), view(&req), "the conversation");
                assert_eq!(again.tools, req.tools, "tools");
                // Without tools, `tool_choice` is left out on purpose (Anthropic refuses it).
                if !req.tools.is_empty() || req.extra.contains_key("tools") {
                    assert_eq!(again.tool_choice, req.tool_choice, "tool_choice");
                    // ...and so is `disable_parallel_tool_use` next to `type: none`.
                    if req.tool_choice != Some(ToolChoice::None) {
                        assert_eq!(again.parallel_tool_calls, req.parallel_tool_calls);
                    }
                }
                assert_eq!(again.max_tokens, req.max_tokens, "max_tokens");
                assert!(close(again.temperature, req.temperature), "temperature");
                assert!(close(again.top_p, req.top_p), "top_p");
                assert_eq!(again.top_k, req.top_k, "top_k");
                assert_eq!(again.stop, req.stop, "stop_sequences");
                assert_eq!(again.stream, req.stream, "stream");
                assert_eq!(again.user, req.user, "metadata.user_id");
                assert_eq!(again.extra, req.extra, "extra");
            }
            let body = openai::encode_chat_request(&req, "m", openai::RequestOptions::default());
            no_dups("openai request", &body);
            if let Ok(body) = gemini::encode_request(&req) {
                no_dups("gemini request", &body);
                let v: Value = serde_json::from_slice(&body).expect("JSON");
                let contents = v["contents"].as_array().map_or(0, Vec::len);
                assert!(contents > 0, "a Gemini request without contents");
            }
        }
    }
});
