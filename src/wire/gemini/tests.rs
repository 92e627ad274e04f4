use super::*;
use crate::wire::StreamDecoder as _;
use ir::{ErrorKind, FinishReason, Image, Message, Part, Role, StreamEvent, ToolCall};
use proptest::prelude::*;

fn body(req: &ir::ChatRequest) -> Value {
    serde_json::from_slice(&encode_request(req).unwrap()).unwrap()
}

fn assistant(text: &str, calls: &[(&str, &str, &str)]) -> Message {
    let mut m = Message::text(Role::Assistant, text);
    m.tool_calls = calls
        .iter()
        .map(|(id, name, args)| ToolCall {
            id: (*id).into(),
            name: (*name).into(),
            arguments: (*args).into(),
        })
        .collect();
    m
}

fn tool_result(id: &str, text: &str) -> Message {
    let mut m = Message::text(Role::Tool, text);
    m.tool_call_id = Some(id.into());
    m
}

/// One request exercising every mapping rule; the golden file is the expected body.
fn representative() -> ir::ChatRequest {
    let mut req = ir::ChatRequest::new("gemini-fast", ir::Format::OpenAi);
    let mut user = Message::text(
        Role::User,
        "What is the weather where these photos were taken?",
    );
    user.name = Some("ana".into());
    user.content.extend([
        Part::Image(Image::Base64 {
            media_type: "image/png".into(),
            data: "iVBORw0KGgo=".into(),
        }),
        Part::Image(Image::Url {
            url: "https://example.com/photos/paris.webp?size=large".into(),
            detail: Some("high".into()),
        }),
        Part::Image(Image::Url {
            url: "data:image/gif;base64,R0lGODlh".into(),
            detail: None,
        }),
        Part::Other(json!({ "type": "input_audio" })),
        Part::Text(String::new()),
    ]);
    req.messages = vec![
        Message::text(Role::System, "You are a terse weather assistant."),
        user,
        assistant(
            "Both look like Paris; let me check.",
            &[
                (
                    "call_a",
                    "get_weather",
                    r#"{"city":"Paris","unit":"celsius"}"#,
                ),
                ("call_b", "get_time", ""),
            ],
        ),
        tool_result("call_a", r#"{"temp_c":18,"sky":"clear"}"#),
        tool_result("call_b", "12:00 CET"),
        Message::text(Role::Developer, "Answer in English."),
        Message::text(Role::Assistant, "It is 18°C and clear at noon."),
        Message::text(Role::User, "And tomorrow? Reply as JSON."),
    ];
    req.tools = vec![
        ir::Tool {
            name: "get_weather".into(),
            description: Some("Current weather for a city.".into()),
            parameters: json!({
                "type": "object",
                "properties": {
                    "city": { "type": "string" },
                    "unit": { "type": "string", "enum": ["celsius", "fahrenheit"] }
                },
                "required": ["city"],
                "additionalProperties": false
            }),
            strict: Some(true),
        },
        ir::Tool {
            name: "get_time".into(),
            description: None,
            parameters: Value::Null,
            strict: None,
        },
    ];
    req.tool_choice = Some(ir::ToolChoice::Tool("get_weather".into()));
    req.parallel_tool_calls = Some(false);
    req.max_tokens = Some(256);
    req.temperature = Some(0.2);
    req.top_p = Some(0.9);
    req.top_k = Some(40);
    req.stop = vec!["END".into()];
    req.n = Some(1);
    req.response_format = Some(ir::ResponseFormat::JsonSchema {
        name: "forecast".into(),
        schema: json!({
            "type": "object",
            "properties": { "forecast": { "type": "string" }, "high_c": { "type": "number" } },
            "required": ["forecast"]
        }),
        strict: Some(true),
        description: None,
    });
    req.stream = true;
    req.include_usage = true;
    req.user = Some("end-user-1".into());
    req.extra.insert("logprobs".into(), json!(true));
    req
}

#[test]
fn encode_representative_request_matches_golden() {
    let golden: Value =
        serde_json::from_str(include_str!("../../../tests/golden/gemini/request.json")).unwrap();
    assert_eq!(body(&representative()), golden);
}

#[test]
fn consecutive_same_role_messages_merge() {
    let mut req = ir::ChatRequest::new("m", ir::Format::OpenAi);
    req.messages = vec![
        Message::text(Role::User, "a"),
        Message::text(Role::User, "b"),
        Message::text(Role::Assistant, ""),
        Message::text(Role::Assistant, "c"),
    ];
    let b = body(&req);
    assert_eq!(
        b["contents"],
        json!([
            { "role": "user", "parts": [{ "text": "a" }, { "text": "b" }] },
            { "role": "model", "parts": [{ "text": "c" }] }
        ])
    );
    assert!(b.get("systemInstruction").is_none());
    assert!(b.get("generationConfig").is_none());
    assert!(b.get("model").is_none(), "the model is in the URL");
}

#[test]
fn tool_choice_modes_and_json_object() {
    let mut req = ir::ChatRequest::new("m", ir::Format::OpenAi);
    req.messages = vec![Message::text(Role::User, "hi")];
    req.tool_choice = Some(ir::ToolChoice::Required);
    assert!(
        body(&req).get("toolConfig").is_none(),
        "no tools, no config"
    );
    req.tools = vec![ir::Tool {
        name: "f".into(),
        description: None,
        parameters: json!({ "type": "object" }),
        strict: None,
    }];
    for (choice, mode) in [
        (ir::ToolChoice::Auto, "AUTO"),
        (ir::ToolChoice::None, "NONE"),
        (ir::ToolChoice::Required, "ANY"),
    ] {
        req.tool_choice = Some(choice);
        assert_eq!(
            body(&req)["toolConfig"],
            json!({ "functionCallingConfig": { "mode": mode } })
        );
    }
    req.tool_choice = Some(ir::ToolChoice::Tool("g".into()));
    assert_eq!(
        encode_request(&req).unwrap_err().param.as_deref(),
        Some("tool_choice")
    );
    req.tool_choice = None;
    req.response_format = Some(ir::ResponseFormat::JsonObject);
    assert_eq!(
        body(&req)["generationConfig"],
        json!({ "responseMimeType": "application/json" })
    );
}

#[test]
fn gemini_source_passes_other_parts_and_extra_through() {
    let mut req = ir::ChatRequest::new("m", ir::Format::Gemini);
    let mut user = Message::text(Role::User, "hi");
    user.content.push(Part::Other(
        json!({ "fileData": { "fileUri": "files/abc" } }),
    ));
    req.messages = vec![user];
    req.extra
        .insert("safetySettings".into(), json!([{ "category": "X" }]));
    req.extra.insert("contents".into(), json!("must not win"));
    let b = body(&req);
    assert_eq!(b["safetySettings"], json!([{ "category": "X" }]));
    assert_eq!(
        b["contents"][0]["parts"][1],
        json!({ "fileData": { "fileUri": "files/abc" } })
    );
}

#[test]
fn encode_rejects_what_gemini_cannot_take() {
    let base = |messages: Vec<Message>| {
        let mut r = ir::ChatRequest::new("m", ir::Format::OpenAi);
        r.messages = messages;
        encode_request(&r).unwrap_err()
    };
    let e = base(vec![tool_result("nope", "x")]);
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert_eq!(e.param.as_deref(), Some("messages[0].tool_call_id"));
    let mut orphan = Message::text(Role::Tool, "x");
    orphan.tool_call_id = None;
    assert_eq!(base(vec![orphan]).kind, ErrorKind::InvalidRequest);
    for bad in ["{not json", "[1,2]", "\"s\""] {
        let e = base(vec![assistant("", &[("c", "f", bad)])]);
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
    }
    let mut img = Message::text(Role::User, "x");
    img.content.push(Part::Image(Image::Url {
        url: "data:image/png,notbase64".into(),
        detail: None,
    }));
    assert_eq!(base(vec![img]).kind, ErrorKind::InvalidRequest);
}

#[test]
fn mime_guessed_from_url_extension() {
    assert_eq!(mime_from_url("https://x/a.PNG"), "image/png");
    assert_eq!(mime_from_url("https://x/a.jpeg#frag"), "image/jpeg");
    assert_eq!(mime_from_url("https://x/doc.pdf?dl=1"), "application/pdf");
    assert_eq!(mime_from_url("https://x/noext"), "image/jpeg");
}

#[test]
fn decode_text_reply_with_cached_and_thought_usage() {
    let body = include_bytes!("../../../tests/golden/gemini/reply_text.json");
    let reply = decode_reply(body, "gemini-flash-latest").unwrap();
    assert_eq!(reply.id, "mKl8aNvHBpKSz7IP1qbE0Qs");
    assert_eq!(reply.model, "gemini-2.5-flash");
    assert!(reply.created > 1_600_000_000);
    assert_eq!(reply.choices.len(), 1);
    let c = &reply.choices[0];
    assert_eq!(c.index, 0);
    assert_eq!(c.finish_reason, Some(FinishReason::Stop));
    assert_eq!(c.message.role, Role::Assistant);
    assert_eq!(
        c.message.content,
        vec![Part::Text("Light travels at about 299,792 km/s.".into())],
        "thought parts are skipped, text parts joined"
    );
    assert_eq!(
        reply.usage,
        Some(ir::Usage {
            input_tokens: 1200,
            output_tokens: 59,
            cached_input_tokens: 1024,
            cache_write_tokens: 0,
            reasoning_tokens: 50,
        })
    );
}

#[test]
fn decode_function_call_reply() {
    let body = include_bytes!("../../../tests/golden/gemini/reply_function_call.json");
    let reply = decode_reply(body, "gemini-2.0-flash-001").unwrap();
    assert_eq!(reply.model, "gemini-2.0-flash");
    assert!(reply.id.starts_with("gemini-"), "generated: {}", reply.id);
    let c = &reply.choices[0];
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert!(c.message.content.is_empty());
    let calls: Vec<_> = c
        .message
        .tool_calls
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_str(), t.arguments.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("call_0_0", "get_weather", r#"{"city":"Paris"}"#),
            ("fc-7", "get_time", "{}"),
            ("call_0_2", "ping", "{}"),
        ]
    );
    assert_eq!(reply.usage.unwrap().total(), 95);
}

#[test]
fn decode_safety_blocked_candidate() {
    let body = include_bytes!("../../../tests/golden/gemini/reply_safety.json");
    let reply = decode_reply(body, "m").unwrap();
    assert_eq!(reply.id, "blocked-candidate");
    let c = &reply.choices[0];
    assert_eq!(c.finish_reason, Some(FinishReason::ContentFilter));
    assert!(c.message.content.is_empty() && c.message.tool_calls.is_empty());
}

#[test]
fn decode_blocked_prompt_is_a_content_filter_error() {
    let body = include_bytes!("../../../tests/golden/gemini/reply_blocked_prompt.json");
    let e = decode_reply(body, "m").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert_eq!(e.status, 400);
    assert_eq!(e.code.as_deref(), Some("content_filter"));
    assert!(
        e.message.contains("blocked the prompt: safety"),
        "{}",
        e.message
    );
}

#[test]
fn finish_reasons() {
    let cases = [
        ("STOP", false, FinishReason::Stop),
        ("STOP", true, FinishReason::ToolCalls),
        ("MAX_TOKENS", true, FinishReason::Length),
        ("RECITATION", false, FinishReason::ContentFilter),
        ("BLOCKLIST", false, FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", false, FinishReason::ContentFilter),
        ("SPII", false, FinishReason::ContentFilter),
        ("IMAGE_SAFETY", false, FinishReason::ContentFilter),
        (
            "MALFORMED_FUNCTION_CALL",
            false,
            FinishReason::Other("malformed_function_call".into()),
        ),
    ];
    for (wire, calls, want) in cases {
        assert_eq!(finish_reason(wire, calls), want, "{wire}");
    }
}

#[test]
fn decode_reply_malformed_inputs_are_errors() {
    for body in [
        &b""[..],
        b"not json",
        b"[]",
        b"{\"candidates\": 3}",
        b"{\"candidates\": [{\"index\": -1}]}",
        b"{}",
        b"{\"candidates\": []}",
    ] {
        let e = decode_reply(body, "m").unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Protocol,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let e = decode_reply(
        br#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}"#,
        "m",
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::RateLimited);
}

/// Runs a whole SSE byte stream, fed in the given pieces, through parser and decoder.
fn run_stream(pieces: &[&[u8]]) -> (Vec<StreamEvent>, bool) {
    let mut parser = sse::Parser::default();
    let mut dec = StreamDecoder::new("gemini-flash-latest");
    let mut out = Vec::new();
    for piece in pieces {
        parser.push(piece);
        while let Some(ev) = parser.next_event().unwrap() {
            dec.event(&ev, &mut out).unwrap();
        }
    }
    assert!(!parser.has_partial());
    for ev in &mut out {
        if let StreamEvent::Start { created, .. } = ev {
            assert!(*created > 1_600_000_000);
            *created = 0;
        }
    }
    (out, dec.is_done())
}

fn data_event(data: &str) -> sse::Event {
    sse::Event {
        data: data.into(),
        ..Default::default()
    }
}

const STREAM: &[u8] = include_bytes!("../../../tests/golden/gemini/stream_tool.sse");

fn expected_stream() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "sse-resp-1".into(),
            model: "gemini-2.5-flash".into(),
            created: 0,
        },
        StreamEvent::TextDelta {
            choice: 0,
            text: "Checking the".into(),
        },
        StreamEvent::TextDelta {
            choice: 0,
            text: " weather in Paris. ".into(),
        },
        StreamEvent::ToolCallStart {
            choice: 0,
            index: 0,
            id: "call_0_0".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: r#"{"city":"Paris","unit":"celsius"}"#.into(),
        },
        StreamEvent::ToolCallStart {
            choice: 0,
            index: 1,
            id: "fc-2".into(),
            name: "get_time".into(),
        },
        StreamEvent::ToolCallDelta {
            choice: 0,
            index: 1,
            arguments: "{}".into(),
        },
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::ToolCalls,
        },
        StreamEvent::Usage(ir::Usage {
            input_tokens: 40,
            output_tokens: 47,
            cached_input_tokens: 32,
            cache_write_tokens: 0,
            reasoning_tokens: 16,
        }),
    ]
}

#[test]
fn stream_split_at_every_byte_boundary() {
    let want = expected_stream();
    for i in 0..=STREAM.len() {
        let (a, b) = STREAM.split_at(i);
        let (got, done) = run_stream(&[a, b]);
        assert_eq!(got, want, "split at {i}");
        assert!(done, "split at {i}");
    }
}

#[test]
fn stream_byte_by_byte_and_in_one_read() {
    let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
    assert_eq!(run_stream(&chunks).0, expected_stream());
    let (got, done) = run_stream(&[STREAM]);
    assert_eq!(got, expected_stream());
    assert!(done);
    let usages = got
        .iter()
        .filter(|e| matches!(e, StreamEvent::Usage(_)))
        .count();
    assert_eq!(usages, 1, "usage is reported exactly once");
}

#[test]
fn stream_not_done_before_finish_and_ignores_after() {
    let mut dec = StreamDecoder::new("m");
    let mut out = Vec::new();
    let text = r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"usageMetadata":{"promptTokenCount":3}}"#;
    dec.event(&data_event(text), &mut out).unwrap();
    assert!(!dec.is_done());
    assert!(matches!(&out[0], StreamEvent::Start { model, .. } if model == "m"));
    let end = r#"{"candidates":[{"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1}}"#;
    dec.event(&data_event(end), &mut out).unwrap();
    assert!(dec.is_done());
    dec.event(&data_event(end), &mut out).unwrap();
    assert_eq!(
        out[2..],
        [
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::Length
            },
            StreamEvent::Usage(ir::Usage {
                input_tokens: 3,
                output_tokens: 1,
                ..Default::default()
            })
        ]
    );
}

#[test]
fn stream_multiple_candidates_finish_independently() {
    let mut dec = StreamDecoder::new("m");
    let mut out = Vec::new();
    dec.event(
        &data_event(r#"{"candidates":[{"index":0,"content":{"parts":[{"text":"a"}]},"finishReason":"STOP"},{"index":1,"content":{"parts":[{"text":"b"}]}}]}"#),
        &mut out,
    )
    .unwrap();
    assert!(!dec.is_done(), "candidate 1 is still generating");
    dec.event(
        &data_event(r#"{"candidates":[{"index":1,"content":{"parts":[{"functionCall":{"name":"f","args":{"x":1}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":4}}"#),
        &mut out,
    )
    .unwrap();
    assert!(dec.is_done());
    assert!(out.contains(&StreamEvent::ToolCallStart {
        choice: 1,
        index: 0,
        id: "call_1_0".into(),
        name: "f".into()
    }));
    assert!(out.contains(&StreamEvent::Finish {
        choice: 1,
        reason: FinishReason::ToolCalls
    }));
    assert!(out.contains(&StreamEvent::Finish {
        choice: 0,
        reason: FinishReason::Stop
    }));
}

#[test]
fn stream_errors() {
    let run = |data: &str| {
        let mut out = Vec::new();
        StreamDecoder::new("m")
            .event(&data_event(data), &mut out)
            .unwrap_err()
    };
    assert_eq!(run("{\"candidates\":").kind, ErrorKind::Protocol);
    assert_eq!(run("[DONE]").kind, ErrorKind::Protocol);
    assert_eq!(run("[]").kind, ErrorKind::Protocol);
    let e = run(
        r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#,
    );
    assert_eq!(e.kind, ErrorKind::Overloaded);
    let e = run(r#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}"#);
    assert_eq!(e.code.as_deref(), Some("content_filter"));
    let mut out = Vec::new();
    StreamDecoder::new("m")
        .event(&data_event("  "), &mut out)
        .unwrap();
    assert!(out.is_empty(), "blank data is not a chunk");
}

fn err_body(code: u16, status: &str, message: &str, details: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "error": { "code": code, "message": message, "status": status, "details": details }
    }))
    .unwrap()
}

#[test]
fn error_table() {
    let secret = "API key not valid. Please pass a valid API key. AIzaSyFAKE";
    let cases: &[(u16, &str, &str, Value, ErrorKind, u16)] = &[
        (
            400,
            "INVALID_ARGUMENT",
            "bad field",
            json!([]),
            ErrorKind::InvalidRequest,
            400,
        ),
        (
            400,
            "FAILED_PRECONDITION",
            "enable billing",
            json!([]),
            ErrorKind::InvalidRequest,
            400,
        ),
        (
            400,
            "INVALID_ARGUMENT",
            secret,
            json!([{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID" }]),
            ErrorKind::UpstreamAuth,
            502,
        ),
        (
            401,
            "UNAUTHENTICATED",
            secret,
            json!([]),
            ErrorKind::UpstreamAuth,
            502,
        ),
        (
            403,
            "PERMISSION_DENIED",
            secret,
            json!([]),
            ErrorKind::UpstreamAuth,
            502,
        ),
        (
            404,
            "NOT_FOUND",
            "models/x is not found",
            json!([]),
            ErrorKind::NotFound,
            404,
        ),
        (
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            json!([]),
            ErrorKind::RateLimited,
            429,
        ),
        (
            500,
            "INTERNAL",
            "oops",
            json!([]),
            ErrorKind::UpstreamStatus,
            502,
        ),
        (
            503,
            "UNAVAILABLE",
            "overloaded",
            json!([]),
            ErrorKind::Overloaded,
            503,
        ),
        (
            504,
            "DEADLINE_EXCEEDED",
            "slow",
            json!([]),
            ErrorKind::Timeout,
            504,
        ),
        (
            409,
            "ABORTED",
            "retry",
            json!([]),
            ErrorKind::UpstreamStatus,
            409,
        ),
        // The status name wins over a disagreeing HTTP status (an error inside a 200 stream).
        (
            200,
            "RESOURCE_EXHAUSTED",
            "quota",
            json!([]),
            ErrorKind::RateLimited,
            429,
        ),
    ];
    for (http, status, message, details, kind, want_status) in cases {
        let e = decode_error(*http, &err_body(*http, status, message, details.clone()));
        assert_eq!((e.kind, e.status), (*kind, *want_status), "{status}");
        assert!(!e.message.contains("AIza"), "{status} leaks: {}", e.message);
    }
    let e = decode_error(
        400,
        &err_body(400, "INVALID_ARGUMENT", "bad field", json!([])),
    );
    assert_eq!(
        e.message, "bad field",
        "the upstream message helps the caller fix it"
    );
}

#[test]
fn rate_limit_retry_after_from_retry_info() {
    for (delay, want) in [
        ("30s", Duration::from_secs(30)),
        ("1.5s", Duration::from_millis(1500)),
        ("45.837906927s", Duration::new(45, 837_906_927)),
    ] {
        let details = json!([
            { "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [] },
            { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay }
        ]);
        let e = decode_error(429, &err_body(429, "RESOURCE_EXHAUSTED", "q", details));
        assert_eq!(e.retry_after, Some(want), "{delay}");
    }
    for bad in ["30", "-1s", "NaNs", "1e300s", ""] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
    // A delay a `Duration` can hold but no retry should wait is capped, as a
    // `Retry-After` header is.
    assert_eq!(parse_duration("1e19s"), Some(crate::ir::MAX_RETRY_AFTER));
}

#[test]
fn error_bodies_that_are_not_gemini_json() {
    let e = decode_error(502, b"<html>Bad Gateway</html>");
    assert_eq!((e.kind, e.status), (ErrorKind::UpstreamStatus, 502));
    let e = decode_error(429, b"");
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(e.retry_after, None);
    let e = decode_error(401, b"nope");
    assert_eq!(e.kind, ErrorKind::UpstreamAuth);
    let e = decode_error(413, b"too big");
    assert_eq!(e.kind, ErrorKind::PayloadTooLarge);
    // streamGenerateContent without alt=sse answers with an array.
    let e = decode_error(
        404,
        br#"[{"error":{"code":404,"message":"models/x is not found","status":"NOT_FOUND"}}]"#,
    );
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::NotFound, "models/x is not found")
    );
    let long = "é".repeat(3000);
    let e = decode_error(400, &err_body(400, "INVALID_ARGUMENT", &long, json!([])));
    assert!(e.message.len() <= MAX_MESSAGE + 3);
}

#[test]
fn embeddings_round_trip() {
    let mut req = ir::EmbeddingsRequest {
        model: "embed".into(),
        input: json!(["first", "second"]),
        dimensions: Some(768),
        encoding_format: Some("float".into()),
        user: None,
        extra: ir::Extra::new(),
        source: ir::Format::OpenAi,
    };
    let b: Value =
        serde_json::from_slice(&encode_embeddings(&req, "gemini-embedding-001").unwrap()).unwrap();
    assert_eq!(
        b,
        json!({ "requests": [
            { "model": "models/gemini-embedding-001", "content": { "parts": [{ "text": "first" }] }, "outputDimensionality": 768 },
            { "model": "models/gemini-embedding-001", "content": { "parts": [{ "text": "second" }] }, "outputDimensionality": 768 }
        ]})
    );
    req.input = json!("solo");
    req.dimensions = None;
    let b: Value = serde_json::from_slice(&encode_embeddings(&req, "models/e").unwrap()).unwrap();
    assert_eq!(
        b,
        json!({ "requests": [{ "model": "models/e", "content": { "parts": [{ "text": "solo" }] } }] })
    );
    for bad in [
        json!([1, 2, 3]),
        json!([[1, 2]]),
        json!([]),
        json!(3),
        json!(["a", 1]),
    ] {
        req.input = bad;
        let e = encode_embeddings(&req, "e").unwrap_err();
        assert_eq!(
            (e.kind, e.param.as_deref()),
            (ErrorKind::InvalidRequest, Some("input"))
        );
    }
    let reply = decode_embeddings(
        br#"{"embeddings":[{"values":[0.5,-1]},{"values":[0.25]}]}"#,
        "gemini-embedding-001",
    )
    .unwrap();
    assert_eq!(
        reply,
        ir::EmbeddingsReply {
            model: "gemini-embedding-001".into(),
            data: vec![
                ir::Embedding::Float(vec![0.5, -1.0]),
                ir::Embedding::Float(vec![0.25])
            ],
            usage: None,
        }
    );
    for bad in [&b"{}"[..], b"{\"embeddings\":[{}]}", b"nope"] {
        assert_eq!(
            decode_embeddings(bad, "e").unwrap_err().kind,
            ErrorKind::Protocol
        );
    }
}

/// JSON shaped like Gemini's (its field names, nested), so fuzzing reaches the decoders'
/// inner paths rather than stopping at the first type error.
fn gemini_json() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "candidates",
        "content",
        "parts",
        "text",
        "thought",
        "functionCall",
        "name",
        "args",
        "id",
        "finishReason",
        "index",
        "promptFeedback",
        "blockReason",
        "usageMetadata",
        "promptTokenCount",
        "candidatesTokenCount",
        "thoughtsTokenCount",
        "cachedContentTokenCount",
        "toolUsePromptTokenCount",
        "modelVersion",
        "responseId",
        "error",
        "code",
        "message",
        "status",
        "details",
        "@type",
        "retryDelay",
        "reason",
        "embeddings",
        "values",
    ];
    const WORDS: &[&str] = &[
        "STOP",
        "SAFETY",
        "MAX_TOKENS",
        "RESOURCE_EXHAUSTED",
        "INVALID_ARGUMENT",
        "type.googleapis.com/google.rpc.RetryInfo",
        "1.5s",
        "API_KEY_INVALID",
        "",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300..1e300f64).prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn exercise(bytes: &[u8]) {
    let _ = decode_reply(bytes, "m");
    let _ = decode_error(429, bytes);
    let _ = decode_embeddings(bytes, "m");
    let mut dec = StreamDecoder::new("m");
    let mut out = Vec::new();
    let data = String::from_utf8_lossy(bytes).into_owned();
    for _ in 0..2 {
        let _ = dec.event(&data_event(&data), &mut out);
    }
    let _ = dec.is_done();
}

proptest! {
    #[test]
    fn arbitrary_json_never_panics(v in gemini_json()) {
        exercise(&serde_json::to_vec(&v).unwrap());
        exercise(&serde_json::to_vec(&json!({ "candidates": [v.clone()] })).unwrap());
        exercise(&serde_json::to_vec(&json!({ "error": v })).unwrap());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
    }
}
