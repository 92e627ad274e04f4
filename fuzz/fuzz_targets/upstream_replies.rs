//! Non-streamed upstream replies (chat and embeddings, every format): decode, then encode the
//! IR for both caller surfaces, which must produce JSON.
//!
//! Accounting must not depend on the path a reply takes: an OpenAI reply forwarded in its own
//! bytes (`summarise_chat_reply`, for an OpenAI caller) is read for the same usage, model and
//! finish reasons as the full decode, and a reply encoded for a caller and read back by that
//! format's decoder keeps its usage, text and tool calls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::ir;
use switchyard::wire::{anthropic, gemini, openai};

fn check(reply: Result<ir::ChatReply, ir::Error>) {
    if let Err(e) = &reply {
        // A reply that is an error (Gemini's `error` in a 200, Anthropic's `type: error`)
        // is a failure the caller sees with an error status.
        assert!((400..600).contains(&e.status), "status {}", e.status);
    }
    if let Ok(r) = reply {
        let body = openai::encode_chat_reply(&r);
        serde_json::from_slice::<serde_json::Value>(&body).expect("openai reply is JSON");
        let back = openai::decode_chat_reply(&body).expect("our OpenAI reply decodes");
        // OpenAI's usage has no cache-write count; the rest must survive.
        let usage = r.usage.map(|u| ir::Usage {
            cache_write_tokens: 0,
            ..u
        });
        assert_eq!(back.usage, usage, "usage through an OpenAI caller");
        assert_eq!(back.choices.len(), r.choices.len());
        for (a, b) in r.choices.iter().zip(&back.choices) {
            assert_eq!(a.index, b.index);
            assert_eq!(a.message.joined_text(), b.message.joined_text());
            assert_eq!(calls(&a.message), calls(&b.message), "tool calls");
        }
        let body = anthropic::encode_reply(&r);
        serde_json::from_slice::<serde_json::Value>(&body).expect("anthropic reply is JSON");
        let back = anthropic::decode_reply(&body).expect("our Anthropic reply decodes");
        // Anthropic's usage has no reasoning count, and counts input without the cached
        // part: the rest must survive when the upstream's counts add up (cache reads and
        // writes within the input; cost.rs clamps those that do not).
        let usage = ir::Usage {
            reasoning_tokens: 0,
            ..r.usage.unwrap_or_default()
        };
        let consistent = usage
            .cached_input_tokens
            .checked_add(usage.cache_write_tokens)
            .is_some_and(|c| c <= usage.input_tokens);
        if consistent {
            assert_eq!(
                back.usage.unwrap_or_default(),
                usage,
                "usage through an Anthropic caller"
            );
        }
        if let Some(first) = r.choices.iter().find(|c| c.index == 0) {
            let names = |m: &ir::Message| -> Vec<String> {
                m.tool_calls.iter().map(|c| c.name.clone()).collect()
            };
            assert_eq!(names(&first.message), names(&back.choices[0].message));
            assert_eq!(
                first.message.joined_text(),
                back.choices[0].message.joined_text()
            );
        }
    }
}

fn calls(m: &ir::Message) -> Vec<(&str, &str, &str)> {
    m.tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let full = openai::decode_chat_reply(data);
    if let Ok(r) = &full {
        // The same-format path reads what the full decode reads.
        let raw = openai::summarise_chat_reply(bytes::Bytes::copy_from_slice(data))
            .expect("a reply the full decoder reads, the summary reads");
        assert_eq!(raw.usage, r.usage, "usage");
        assert_eq!(raw.model, r.model, "model");
        let reasons: Vec<_> = r
            .choices
            .iter()
            .filter_map(|c| c.finish_reason.clone())
            .collect();
        assert_eq!(raw.finish_reasons, reasons, "finish reasons");
    }
    check(full);
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
