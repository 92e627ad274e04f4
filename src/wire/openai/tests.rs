use super::*;
use crate::wire::{StreamDecoder as _, StreamEncoder as _};

const CHAT: &str = include_str!("../../../tests/golden/openai/chat_request.json");

#[test]
fn decodes_every_modelled_field() {
    let r = decode_chat_request(CHAT.as_bytes()).unwrap();
    assert_eq!(r.model, "gpt-4o-mini");
    assert_eq!(r.messages.len(), 4);
    assert_eq!(r.messages[0].role, Role::Developer);
    let user = &r.messages[1];
    assert_eq!(user.content.len(), 4);
    assert_eq!(
        user.content[1],
        Part::Image(Image::Url {
            url: "https://example.com/cat.png".into(),
            detail: Some("low".into())
        })
    );
    assert_eq!(
        user.content[2],
        Part::Image(Image::Base64 {
            media_type: "image/png".into(),
            data: "iVBORw0KGgo=".into()
        })
    );
    assert!(matches!(user.content[3], Part::Other(_)));
    assert_eq!(
        r.messages[2].tool_calls[0].arguments,
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("call_abc"));
    assert_eq!(r.tools[0].strict, Some(true));
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("get_weather".into())));
    assert_eq!(r.parallel_tool_calls, Some(false));
    assert_eq!(r.max_tokens, Some(256));
    assert_eq!(r.stop, vec!["END".to_owned()]);
    assert!(r.stream && r.include_usage);
    assert!(
        matches!(r.response_format, Some(ResponseFormat::JsonSchema { ref name, .. }) if name == "answer")
    );
    // Unknown fields are carried, stream_options is not (it is re-derived per upstream).
    assert_eq!(r.extra.get("seed"), Some(&json!(7)));
    assert_eq!(r.extra.get("service_tier"), Some(&json!("flex")));
    assert!(!r.extra.contains_key("stream_options"));
}

#[test]
fn openai_to_openai_keeps_unknown_fields_and_the_callers_token_field() {
    let r = decode_chat_request(CHAT.as_bytes()).unwrap();
    let out: Value = serde_json::from_slice(&encode_chat_request(
        &r,
        "gpt-4o-mini-2024-07-18",
        RequestOptions {
            max_completion_tokens: false,
            stream_usage: true,
        },
    ))
    .unwrap();
    let original: Value = serde_json::from_str(CHAT).unwrap();
    assert_eq!(out["model"], "gpt-4o-mini-2024-07-18");
    for field in [
        "seed",
        "logprobs",
        "service_tier",
        "max_completion_tokens",
        "tools",
        "tool_choice",
        "response_format",
        "user",
        "parallel_tool_calls",
    ] {
        assert_eq!(out[field], original[field], "{field}");
    }
    assert!(
        out.get("max_tokens").is_none(),
        "one token cap, under the caller's name"
    );
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        out["messages"][1]["content"][3],
        original["messages"][1]["content"][3]
    );
    assert_eq!(
        out["messages"][2]["tool_calls"],
        original["messages"][2]["tool_calls"]
    );
    assert_eq!(out["stop"], json!(["END"]));
}

#[test]
fn usage_is_always_requested_upstream_even_when_the_caller_did_not_ask() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let r = decode_chat_request(body).unwrap();
    assert!(!r.include_usage);
    let out: Value = serde_json::from_slice(&encode_chat_request(
        &r,
        "m",
        RequestOptions {
            max_completion_tokens: true,
            stream_usage: true,
        },
    ))
    .unwrap();
    assert_eq!(out["stream_options"]["include_usage"], true);
}

#[test]
fn bad_requests_name_the_parameter() {
    let cases: &[(&str, &str)] = &[
        (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
        (r#"{"model":"m","messages":[]}"#, "messages"),
        (
            r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
            "messages[0].role",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
            "messages[0].tool_call_id",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
            "tool_choice",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
            "temperature",
        ),
    ];
    for (body, param) in cases {
        let e = decode_chat_request(body.as_bytes()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRequest, "{body}");
        assert_eq!(e.status, 400);
        assert!(
            e.param.as_deref().unwrap_or_default().contains(param),
            "{body}: {:?}",
            e.param
        );
    }
    let e = decode_chat_request(b"{not json").unwrap_err();
    assert!(e.message.contains("not valid JSON"), "{}", e.message);
}

/// A real OpenAI stream with a text answer split in pieces, two parallel tool calls whose
/// argument fragments interleave, the finish chunk, the usage chunk and `[DONE]`.
const STREAM: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Checking \\u00e9\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":20,\"total_tokens\":70,\"prompt_tokens_details\":{\"cached_tokens\":32},\"completion_tokens_details\":{\"reasoning_tokens\":4}}}\n\n\
data: [DONE]\n\n";

fn expected_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: "gpt-4o-mini".into(),
            created: 1,
        },
        StreamEvent::TextDelta {
            choice: 0,
            text: "Checking é".into(),
        },
        StreamEvent::ToolCallStart {
            choice: 0,
            index: 0,
            id: "call_a".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: "{\"city\":".into(),
        },
        StreamEvent::ToolCallStart {
            choice: 0,
            index: 1,
            id: "call_b".into(),
            name: "get_time".into(),
        },
        StreamEvent::ToolCallDelta {
            choice: 0,
            index: 1,
            arguments: "{}".into(),
        },
        StreamEvent::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: "\"Paris\"}".into(),
        },
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::ToolCalls,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 50,
            output_tokens: 20,
            cached_input_tokens: 32,
            cache_write_tokens: 0,
            reasoning_tokens: 4,
        }),
    ]
}

fn decode_stream(chunks: &[&[u8]]) -> (Vec<StreamEvent>, bool) {
    let mut parser = sse::Parser::default();
    let mut dec = StreamDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        parser.push(c);
        while let Some(ev) = parser.next_event().unwrap() {
            dec.event(&ev, &mut out).unwrap();
        }
    }
    (out, dec.is_done())
}

#[test]
fn stream_decodes_the_same_split_at_every_byte() {
    let bytes = STREAM.as_bytes();
    for i in 0..=bytes.len() {
        let (events, done) = decode_stream(&[&bytes[..i], &bytes[i..]]);
        assert_eq!(events, expected_events(), "split at {i}");
        assert!(done);
    }
}

#[test]
fn stream_reencodes_to_what_it_decoded() {
    for include_usage in [true, false] {
        let mut enc = StreamEncoder::new(include_usage);
        let mut out = BytesMut::new();
        for ev in expected_events() {
            enc.event(&ev, &mut out);
        }
        enc.finish(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        let (events, done) = decode_stream(&[&out]);
        assert!(done);
        let mut want = expected_events();
        if !include_usage {
            want.pop();
            assert!(!text.contains("\"usage\""), "no usage chunk unless asked");
        }
        assert_eq!(events, want);
    }
}

#[test]
fn stream_error_chunk_is_a_classified_error() {
    let mut dec = StreamDecoder::new();
    let ev = sse::Event {
        data: r#"{"error":{"message":"overloaded","type":"server_error"}}"#.into(),
        ..Default::default()
    };
    let e = dec.event(&ev, &mut Vec::new()).unwrap_err();
    assert!(e.is_retryable());
    let bad = sse::Event {
        data: "{\"choices\":[".into(),
        ..Default::default()
    };
    assert_eq!(
        StreamDecoder::new()
            .event(&bad, &mut Vec::new())
            .unwrap_err()
            .kind,
        ErrorKind::Protocol
    );
}

#[test]
fn upstream_errors_are_classified_and_auth_messages_are_not_echoed() {
    let e = decode_error(400, br#"{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}"#);
    assert_eq!(
        (e.kind, e.status, e.message.as_str(), e.param.as_deref()),
        (
            ErrorKind::InvalidRequest,
            400,
            "bad temperature",
            Some("temperature")
        )
    );
    let e = decode_error(401, br#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz","type":"invalid_request_error","code":"invalid_api_key"}}"#);
    assert_eq!((e.kind, e.status), (ErrorKind::UpstreamAuth, 502));
    assert!(!e.message.contains("sk-"), "{}", e.message);
    assert_eq!(decode_error(429, b"{}").kind, ErrorKind::RateLimited);
    assert_eq!(decode_error(503, b"<html>").status, 503);
    assert!(decode_error(500, b"oops").is_retryable());
    assert!(!decode_error(400, b"oops").is_retryable());
}

#[test]
fn errors_render_in_openai_shape() {
    let e = Error::new(ErrorKind::NotFound, "no such model").with_param("model");
    let v: Value = serde_json::from_slice(&encode_error(&e)).unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "no such model", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
    );
}

#[test]
fn reply_round_trips_with_tool_calls_and_usage() {
    let body = br#"{"id":"chatcmpl-9","object":"chat.completion","created":5,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}],"refusal":null},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":2}}}"#;
    let r = decode_chat_reply(body).unwrap();
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(r.usage.unwrap().cached_input_tokens, 2);
    let again = decode_chat_reply(&encode_chat_reply(&r)).unwrap();
    assert_eq!(again, r);
    let v: Value = serde_json::from_slice(&encode_chat_reply(&r)).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(v["usage"]["total_tokens"], 15);
}

#[test]
fn embeddings_convert_between_float_and_base64() {
    let reply = EmbeddingsReply {
        model: "m".into(),
        data: vec![Embedding::Float(vec![0.5, -1.0])],
        usage: None,
    };
    let v: Value =
        serde_json::from_slice(&encode_embeddings_reply(&reply, Some("base64"))).unwrap();
    let b64 = v["data"][0]["embedding"].as_str().unwrap().to_owned();
    assert_eq!(base64_to_floats(&b64), vec![0.5, -1.0]);
    let back = EmbeddingsReply {
        model: "m".into(),
        data: vec![Embedding::Base64(b64)],
        usage: None,
    };
    let v: Value = serde_json::from_slice(&encode_embeddings_reply(&back, None)).unwrap();
    assert_eq!(v["data"][0]["embedding"], json!([0.5, -1.0]));
}

#[test]
fn trailing_bytes_after_the_request_are_refused() {
    let body = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]} trailing"#;
    let err = decode_chat_request(body).expect_err("trailing bytes are malformed");
    assert_eq!(err.status, 400);
    let ok = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}  
"#;
    assert!(
        decode_chat_request(ok).is_ok(),
        "trailing whitespace is fine"
    );
}

/// A stream as OpenAI sends it with `logprobs` and `include_usage` asked upstream: fields the
/// IR has no place for (`logprobs`, `system_fingerprint`, `obfuscation`), `"usage":null` on
/// every chunk, a usage-only chunk last.
const RICH_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":{\"content\":[],\"refusal\":null},\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"a1\"}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":{\"content\":[{\"token\":\"Hi\",\"logprob\":-0.01,\"bytes\":[72,105],\"top_logprobs\":[]}],\"refusal\":null},\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"b22\"}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
    "data: [DONE]\n\n",
);

fn relay(
    decoder: &mut StreamDecoder,
    encoder: &mut StreamEncoder,
    input: &[u8],
) -> Vec<StreamEvent> {
    let mut parser = sse::Parser::default();
    let (mut events, mut out) = (Vec::new(), BytesMut::new());
    parser.push(input);
    while let Some(ev) = parser.next_event().unwrap() {
        let mut batch = Vec::new();
        decoder.event(&ev, &mut batch).unwrap();
        for e in batch {
            encoder.event(&e, &mut out);
            events.push(e);
        }
    }
    encoder.finish(&mut out);
    events.push(StreamEvent::Verbatim {
        frame: out.freeze(),
        events: Vec::new(),
    });
    events
}

#[test]
fn a_same_format_stream_is_forwarded_in_its_own_bytes() {
    let chunks: Vec<&str> = RICH_STREAM.split_inclusive("\n\n").collect();
    for include_usage in [true, false] {
        let mut events = relay(
            &mut StreamDecoder::verbatim(),
            &mut StreamEncoder::new(include_usage),
            RICH_STREAM.as_bytes(),
        );
        let Some(StreamEvent::Verbatim { frame: out, .. }) = events.pop() else {
            unreachable!()
        };
        let out = std::str::from_utf8(&out).unwrap();
        // The three chunks with choices go out byte for byte: logprobs and all.
        let forwarded = chunks[..3].concat();
        assert!(out.starts_with(&forwarded), "{out}");
        let rest = &out[forwarded.len()..];
        if include_usage {
            // The usage chunk is the encoder's own, with the upstream's id and model.
            let (usage, done) = rest.split_once("\n\n").unwrap();
            let v: serde_json::Value =
                serde_json::from_str(usage.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(v["id"], "chatcmpl-9");
            assert_eq!(v["model"], "gpt-4o-2024-08-06");
            assert_eq!(v["choices"], serde_json::json!([]));
            assert_eq!(v["usage"]["total_tokens"], 10);
            assert_eq!(done, "data: [DONE]\n\n");
        } else {
            assert_eq!(rest, "data: [DONE]\n\n", "no usage chunk unless asked");
        }
        // What the chunks say reaches accounting as IR events, as a translated stream's would.
        let mut seen = Vec::new();
        for e in &events {
            e.for_each(|e| seen.push(e.clone()));
        }
        assert!(
            matches!(&seen[0], StreamEvent::Start { model, .. } if model == "gpt-4o-2024-08-06")
        );
        assert!(seen.contains(&StreamEvent::TextDelta {
            choice: 0,
            text: "Hi".into()
        }));
        assert!(seen.contains(&StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::Stop
        }));
        assert!(matches!(seen.last(), Some(StreamEvent::Usage(u)) if u.output_tokens == 1));
    }
}

#[test]
fn another_format_encodes_what_verbatim_chunks_say() {
    let mut dec = StreamDecoder::verbatim();
    let mut enc = crate::wire::anthropic::StreamEncoder::new("claude-relay");
    let mut parser = sse::Parser::default();
    let mut out = BytesMut::new();
    parser.push(RICH_STREAM.as_bytes());
    while let Some(ev) = parser.next_event().unwrap() {
        let mut batch = Vec::new();
        dec.event(&ev, &mut batch).unwrap();
        for e in &batch {
            enc.event(e, &mut out);
        }
    }
    enc.finish(&mut out);
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.contains("\"text_delta\""), "{text}");
    assert!(text.contains("\"Hi\""), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(!text.contains("chat.completion.chunk"), "{text}");
}

// --- the skimmed fast path reads what serde reads ---------------------------------------------

/// What a decoded chunk says, comparable.
type ChunkView = (
    String,
    String,
    u64,
    Vec<(
        u32,
        Option<String>,
        Option<String>,
        Vec<String>,
        Option<String>,
    )>,
    Option<Usage>,
    bool,
);

fn chunk_view(c: ChunkWire<'_>) -> ChunkView {
    let choices = c
        .choices
        .into_iter()
        .map(|ch| {
            let (content, refusal, calls) = match ch.delta {
                Some(d) => (
                    d.content.map(Cow::into_owned),
                    d.refusal.map(Cow::into_owned),
                    d.tool_calls
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| {
                            let f = t.function.map(|f| (f.name, f.arguments));
                            format!("{:?}/{:?}/{f:?}", t.index, t.id)
                        })
                        .collect(),
                ),
                None => (None, None, Vec::new()),
            };
            (
                ch.index,
                content,
                refusal,
                calls,
                ch.finish_reason.map(Cow::into_owned),
            )
        })
        .collect();
    (
        c.id.into_owned(),
        c.model.into_owned(),
        c.created,
        choices,
        c.usage.map(Usage::from),
        c.error.is_some(),
    )
}

/// The fast path either declines or reads exactly what serde reads; it never takes what
/// serde refuses.
fn check_chunk(data: &str) {
    let Some(fast) = ChunkWire::skim(data) else {
        return;
    };
    let slow = serde_json::from_str::<ChunkWire<'_>>(data)
        .unwrap_or_else(|e| panic!("serde refuses what the fast path read ({e}): {data}"));
    assert_eq!(chunk_view(fast), chunk_view(slow), "{data}");
}

fn summary_view(w: ReplySummaryWire) -> (String, Vec<Option<FinishReason>>, Option<Usage>) {
    let reasons = w.choices.into_iter().map(|c| c.finish_reason).collect();
    (w.model, reasons, w.usage.map(Usage::from))
}

fn check_summary(body: &[u8]) {
    let Some(fast) = ReplySummaryWire::skim(body) else {
        return;
    };
    let slow = serde_json::from_slice::<ReplySummaryWire>(body).unwrap_or_else(|e| {
        panic!(
            "serde refuses what the fast path read ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(summary_view(fast), summary_view(slow));
}

const SKIM_CHUNKS: [&str; 5] = [
    r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1796292988,"model":"gpt-4o","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#,
    r#"{"id":"c","choices":[{"index":1,"delta":{"content":"caf\u00e9 \"quoted\"\n"},"logprobs":{"content":[{"token":"x","logprob":-0.25,"bytes":[120],"top_logprobs":[]}]},"finish_reason":null}],"created":1,"model":"m"}"#,
    r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\":"}}]},"finish_reason":null}]}"#,
    r#"{"id":"c","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":2}}}"#,
    r#" { "id" : "c" , "choices" : [ { "index" : 0 , "delta" : { } , "finish_reason" : "length" } ] , "error" : null } "#,
];

#[test]
fn skimmed_chunks_read_as_serde_reads_them() {
    for data in SKIM_CHUNKS {
        assert!(ChunkWire::skim(data).is_some(), "declined {data}");
        check_chunk(data);
    }
    // Declined, and serde decides: an error member, a field twice, a wrong type, an
    // escaped key, a fraction where an integer goes.
    for data in [
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        r#"{"id":"a","id":"b","choices":[]}"#,
        r#"{"id":null,"choices":[]}"#,
        r#"{"i\u0064":"a","choices":[]}"#,
        r#"{"created":1.5,"choices":[]}"#,
        r#"{"choices":[{"index":-1}]}"#,
        r#"{"choices":null}"#,
    ] {
        assert!(ChunkWire::skim(data).is_none(), "took {data}");
    }
}

#[test]
fn skimmed_replies_read_as_serde_reads_them() {
    let body = br#"{"id":"chatcmpl-mock0","object":"chat.completion","created":1796292905,"model":"echo","choices":[{"index":0,"message":{"role":"assistant","content":"Say \"hi\"","refusal":null},"logprobs":null,"finish_reason":"stop"},{"index":1,"message":{},"finish_reason":null}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
    let fast = ReplySummaryWire::skim(body).expect("read");
    assert_eq!(
        summary_view(fast),
        (
            "echo".to_owned(),
            vec![Some(FinishReason::Stop), None],
            Some(Usage {
                input_tokens: 20,
                output_tokens: 9,
                ..Usage::default()
            })
        )
    );
    check_summary(body);
    // A reply without choices, or a choice without its message, is no reply: serde says so.
    for body in [
        &br#"{"model":"m"}"#[..],
        br#"{"model":"m","choices":[{"finish_reason":"stop"}]}"#,
        b"{\"model\":\"\xff\",\"choices\":[]}",
    ] {
        assert!(ReplySummaryWire::skim(body).is_none());
        assert!(summarise_chat_reply(bytes::Bytes::copy_from_slice(body)).is_err());
    }
}

/// `doc` with one byte changed (`op` 0), removed (1) or inserted (2) near `at`.
fn damaged(doc: &str, at: usize, byte: u8, op: u8) -> Vec<u8> {
    let mut out = doc.as_bytes().to_vec();
    let at = at % (out.len() + 1);
    match op {
        0 if at < out.len() => out[at] = byte,
        1 if at < out.len() => {
            out.remove(at);
        }
        _ => out.insert(at, byte),
    }
    out
}

proptest::proptest! {
    /// Any one-byte change to a chunk or a reply: the fast path declines, or agrees with serde.
    #[test]
    fn a_damaged_chunk_is_declined_or_read_as_serde_reads_it(
        which in 0..SKIM_CHUNKS.len(),
        at in 0usize..400,
        byte in proptest::sample::select(b" \"\\{}[],:0123456789.-+eEtrufalsn\x07x\n".to_vec()),
        op in 0u8..3,
    ) {
        let data = damaged(SKIM_CHUNKS[which], at, byte, op);
        if let Ok(data) = std::str::from_utf8(&data) {
            check_chunk(data);
        }
        check_summary(&data);
    }
}

// --- requests: the skimmed fast path reads what serde reads ------------------------------------

/// The fast path either declines a request body or reads it exactly as serde does: the same
/// IR, or the same refusal of what the IR checks. It never takes what serde refuses.
fn check_request(body: &[u8]) {
    let Some(fast) = ChatRequestWire::skim(body) else {
        return;
    };
    let slow = serde_json::from_slice::<ChatRequestWire>(body).unwrap_or_else(|e| {
        panic!(
            "serde refuses what the fast path read ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(
        format!("{:?}", chat_request_from_wire(fast)),
        format!("{:?}", chat_request_from_wire(slow)),
        "{}",
        String::from_utf8_lossy(body)
    );
    // What it read, it can forward: the caller's bytes with another model read as the caller's
    // document with that model.
    let (_, at) = ChatRequestWire::skim_with_model_at(body).unwrap();
    let raw = ir::RawChat {
        body: bytes::Bytes::copy_from_slice(body),
        model_at: at,
        max_tokens_named: false,
    };
    let out = splice_model(&raw, "up/stream \"1\"");
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap(),
        with_model(body, "up/stream \"1\""),
        "{}",
        String::from_utf8_lossy(body)
    );
}

/// `body` as a JSON value, its model replaced.
fn with_model(body: &[u8], model: &str) -> Value {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    v["model"] = json!(model);
    v
}

const COMPATIBLE: RequestOptions = RequestOptions {
    max_completion_tokens: false,
    stream_usage: true,
};

#[test]
fn a_same_format_upstream_is_sent_the_callers_bytes_with_its_model() {
    let escaped = r#"{"model":"m\u0031","messages":[{"role":"user","content":"hi"}],"seed":1}"#;
    for body in SKIM_REQUESTS.iter().chain([&escaped]) {
        let r = decode_chat_request_raw(bytes::Bytes::copy_from_slice(body.as_bytes())).unwrap();
        // The IR is the one the body makes anyway; only the bytes come along.
        let ir_only = decode_chat_request(body.as_bytes()).unwrap();
        assert_eq!(
            format!(
                "{:?}",
                ChatRequest {
                    raw: None,
                    ..r.clone()
                }
            ),
            format!("{ir_only:?}")
        );
        let at = r.raw.as_ref().expect("kept").model_at.clone();
        assert_eq!(
            serde_json::from_str::<String>(&body[at.clone()]).unwrap(),
            r.model
        );
        for model in ["echo", "caf\u{e9}/\"q\"\n", ""] {
            let out = String::from_utf8(encode_chat_request(&r, model, COMPATIBLE)).unwrap();
            assert!(out.starts_with(&body[..at.start]), "{out}");
            assert!(out.ends_with(&body[at.end..]), "{out}");
            assert_eq!(
                serde_json::from_str::<Value>(&out).unwrap(),
                with_model(body.as_bytes(), model)
            );
        }
    }
}

#[test]
fn the_callers_bytes_are_rewritten_where_the_upstream_needs_it() {
    let raw = |body: &str| decode_chat_request_raw(bytes::Bytes::copy_from_slice(body.as_bytes()));
    let encode = |r: &ChatRequest, opts| -> Value {
        serde_json::from_slice(&encode_chat_request(r, "up", opts)).unwrap()
    };
    // A stream whose caller did not ask for usage: the upstream is asked all the same.
    let r =
        raw(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#).unwrap();
    assert_eq!(
        encode(&r, COMPATIBLE)["stream_options"]["include_usage"],
        true
    );
    let no_usage = RequestOptions {
        stream_usage: false,
        ..COMPATIBLE
    };
    assert_eq!(encode(&r, no_usage).get("stream_options"), None);
    // `max_tokens` for OpenAI itself is renamed; a caller that used the new name keeps it.
    let openai = RequestOptions {
        max_completion_tokens: true,
        ..COMPATIBLE
    };
    let r =
        raw(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":9}"#).unwrap();
    let out = encode(&r, openai);
    assert_eq!(
        (out["max_completion_tokens"].clone(), out.get("max_tokens")),
        (json!(9), None)
    );
    assert_eq!(encode(&r, COMPATIBLE)["max_tokens"], 9);
    let body =
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":9}"#;
    let out = encode(&raw(body).unwrap(), openai);
    assert_eq!(out, with_model(body.as_bytes(), "up"));
    // `stream_options` without a stream is left out (OpenAI refuses it): the IR writes it.
    let r = raw(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}"#).unwrap();
    assert!(r.raw.is_none());
    assert_eq!(encode(&r, COMPATIBLE).get("stream_options"), None);
    // A body the skim declines is decoded by serde, and written from the IR.
    let r =
        raw(r#"{"model":"a","model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    assert!(r.raw.is_none());
    assert_eq!(encode(&r, COMPATIBLE)["model"], "up");
    // What the IR refuses, it refuses here too.
    assert!(raw(r#"{"model":"m","messages":[]}"#).is_err());
}

const SKIM_REQUESTS: [&str; 6] = [
    r#"{"model":"chat-default","messages":[{"role":"user","content":"Say hello to the benchmark in one short sentence."}]}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"caf\u00e9 \"quoted\"\n","name":"ann"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":16,"temperature":0.7,"top_p":1,"n":1,"user":"u-1","seed":42,"metadata":{"a":[1,2.5e3,null]}}"#,
    r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}]},{"role":"tool","tool_call_id":"call_1","content":"42"}],"tools":[{"type":"function","function":{"name":"get","parameters":{"type":"object"}}}],"tool_choice":"auto","parallel_tool_calls":false}"#,
    r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"stop":["\n"],"response_format":{"type":"json_object"},"max_completion_tokens":9,"temperature":null,"stream":null}"#,
    r#" { "model" : "m" , "messages" : [ { "role" : "developer" , "content" : "x" , "cache" : { } } ] , "logprobs" : false , "top_logprobs" : 0 } "#,
    r#"{"model":"m","messages":[{"role":"user","content":"\ud83d\ude00 \/ \b\f\r\t"}],"temperature":1e-2,"top_p":0.1000000000000000055511151231257827}"#,
];

#[test]
fn skimmed_requests_read_as_serde_reads_them() {
    for body in SKIM_REQUESTS {
        assert!(
            ChatRequestWire::skim(body.as_bytes()).is_some(),
            "declined {body}"
        );
        check_request(body.as_bytes());
    }
    // Declined, and serde decides (a member twice: serde keeps the last; the others it refuses
    // or reads its own way).
    for body in [
        r#"{"model":"a","model":"b","messages":[{"role":"user","content":"x"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream":false}"#,
        r#"{"model":"m","messages":[{"role":"user","role":"system","content":"x"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"x","content":"y"}]}"#,
        r#"{"model":null,"messages":[]}"#,
        r#"{"m\u006fdel":"m","messages":[]}"#,
        r#"{"model":"m","messages":[{"content":"x"}]}"#,
        r#"{"model":"m","messages":[],"max_tokens":1.0}"#,
        r#"{"model":"m","messages":[],"max_tokens":-1}"#,
        r#"{"model":"m","messages":[],"max_tokens":4294967296}"#,
        r#"{"model":"m","messages":[],"n":01}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#,
        r#"{"model":"m","messages":{}}"#,
        r#"{"model":"m"}"#,
        r#"[]"#,
        r#"{"model":"m","messages":[]} x"#,
    ] {
        assert!(
            ChatRequestWire::skim(body.as_bytes()).is_none(),
            "took {body}"
        );
    }
    // Not UTF-8: declined; serde refuses it where it reads it.
    let body = b"{\"model\":\"\xff\",\"messages\":[]}";
    assert!(ChatRequestWire::skim(body).is_none());
    assert!(decode_chat_request(body).is_err());
    // What the IR refuses is refused the same way whichever path read it.
    for body in [
        r#"{"model":"m","messages":[]}"#,
        r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
        r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
    ] {
        assert!(
            ChatRequestWire::skim(body.as_bytes()).is_some(),
            "declined {body}"
        );
        check_request(body.as_bytes());
        assert!(decode_chat_request(body.as_bytes()).is_err(), "{body}");
    }
}

proptest::proptest! {
    /// Any one-byte change to a request: the fast path declines, or agrees with serde.
    #[test]
    fn a_damaged_request_is_declined_or_read_as_serde_reads_it(
        which in 0..SKIM_REQUESTS.len(),
        at in 0usize..600,
        byte in proptest::sample::select(b" \"\\{}[],:0123456789.-+eEtrufalsn\x07x\n\xc3".to_vec()),
        op in 0u8..3,
    ) {
        let body = damaged(SKIM_REQUESTS[which], at, byte, op);
        check_request(&body);
    }
}
