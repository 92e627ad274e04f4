use super::*;
use crate::wire::{StreamDecoder as _, StreamEncoder as _};
use proptest::prelude::*;

fn obj(v: Value) -> Obj {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn msg(role: Role, parts: Vec<Part>) -> Message {
    let mut m = Message::text(role, "");
    m.content = parts;
    m
}

fn text(s: &str) -> Part {
    Part::Text(s.to_owned())
}

/// `ChatRequest` has no `PartialEq`; compare every field.
fn assert_req_eq(a: &ir::ChatRequest, b: &ir::ChatRequest) {
    assert_eq!(a.model, b.model, "model");
    assert_eq!(a.messages, b.messages, "messages");
    assert_eq!(a.tools, b.tools, "tools");
    assert_eq!(a.tool_choice, b.tool_choice, "tool_choice");
    assert_eq!(a.parallel_tool_calls, b.parallel_tool_calls, "parallel");
    assert_eq!(a.max_tokens, b.max_tokens, "max_tokens");
    assert_eq!(a.temperature, b.temperature, "temperature");
    assert_eq!(a.top_p, b.top_p, "top_p");
    assert_eq!(a.top_k, b.top_k, "top_k");
    assert_eq!(a.stop, b.stop, "stop");
    assert_eq!(a.n, b.n, "n");
    assert_eq!(a.response_format, b.response_format, "response_format");
    assert_eq!(a.stream, b.stream, "stream");
    assert_eq!(a.include_usage, b.include_usage, "include_usage");
    assert_eq!(a.user, b.user, "user");
    assert_eq!(a.extra, b.extra, "extra");
    assert_eq!(a.source, b.source, "source");
}

// --- requests -----------------------------------------------------------------------------

#[test]
fn plain_message_round_trips() {
    let wire = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}]
    });
    let req = decode_request(&body(&wire)).unwrap();
    let mut want = ir::ChatRequest::new("claude-sonnet-4-5", Format::Anthropic);
    want.max_tokens = Some(1024);
    want.messages = vec![Message::text(Role::User, "Hello, Claude")];
    assert_req_eq(&req, &want);
    let out = parse(&encode_request(&req, "claude-sonnet-4-5", 4096).unwrap());
    assert_eq!(out, wire);
}

#[test]
fn system_prompt_string_and_blocks() {
    let wire = json!({
        "model": "m", "max_tokens": 10,
        "system": "Be terse.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    });
    let req = decode_request(&body(&wire)).unwrap();
    assert_eq!(
        req.messages,
        vec![
            Message::text(Role::System, "Be terse."),
            Message::text(Role::User, "Hi")
        ]
    );
    // A single plain text block is written in the string form.
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert_eq!(out["system"], "Be terse.");
    assert_eq!(out["messages"][0]["content"], "Hi");

    let wire = json!({
        "model": "m", "max_tokens": 10,
        "system": [
            {"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "More."}
        ],
        "messages": [{"role": "user", "content": "Hi"}]
    });
    let mut req = decode_request(&body(&wire)).unwrap();
    let mut system = msg(Role::System, vec![text("Rules."), text("More.")]);
    system.extra.insert(
        CONTENT_EXTRA.into(),
        json!([{"cache_control": {"type": "ephemeral"}}, null]),
    );
    assert_eq!(req.messages[0], system);
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert_eq!(out["system"], wire["system"]);
    // Another upstream format never sees Anthropic's block fields.
    req.source = Format::OpenAi;
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "Rules."}, {"type": "text", "text": "More."}])
    );
}

#[test]
fn developer_and_mid_conversation_system_messages_are_hoisted() {
    let mut req = ir::ChatRequest::new("gpt", Format::OpenAi);
    req.messages = vec![
        Message::text(Role::Developer, "A."),
        Message::text(Role::User, "Hi"),
        Message::text(Role::System, "B."),
        Message::text(Role::User, "Again"),
    ];
    let out = parse(&encode_request(&req, "claude", 512).unwrap());
    assert_eq!(out["max_tokens"], 512);
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "A."}, {"type": "text", "text": "B."}])
    );
    // The two user messages merge: Anthropic requires alternation.
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "Hi"}, {"type": "text", "text": "Again"}
        ]}])
    );
}

#[test]
fn images_base64_url_and_data_url() {
    let wire = json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            {"type": "image", "source": {"type": "file", "file_id": "file_011"}},
            {"type": "text", "text": "Compare."}
        ]}]
    });
    let req = decode_request(&body(&wire)).unwrap();
    assert_eq!(
        req.messages[0].content,
        vec![
            Part::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }),
            Part::Image(Image::Url {
                url: "https://example.com/a.jpg".into(),
                detail: None
            }),
            Part::Other(
                json!({"type": "image", "source": {"type": "file", "file_id": "file_011"}})
            ),
            text("Compare."),
        ]
    );
    assert_eq!(parse(&encode_request(&req, "m", 1).unwrap()), wire);

    let mut req = ir::ChatRequest::new("m", Format::OpenAi);
    req.messages = vec![msg(
        Role::User,
        vec![
            Part::Image(Image::Url {
                url: "data:image/webp;base64,UklGRg==".into(),
                detail: Some("high".into()),
            }),
            Part::Other(json!({"type": "input_audio"})),
        ],
    )];
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert_eq!(
        out["messages"][0]["content"],
        json!([{"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRg=="}}])
    );
}

fn golden_ir() -> ir::ChatRequest {
    let mut want = ir::ChatRequest::new("claude-sonnet-4-5", Format::Anthropic);
    want.max_tokens = Some(1024);
    want.stream = true;
    want.include_usage = true;
    want.user = Some("user-123".into());
    want.parallel_tool_calls = Some(false);
    want.tool_choice = Some(ToolChoice::Auto);
    let mut system = Message::text(Role::System, "You are a weather assistant.");
    system.extra.insert(
        CONTENT_EXTRA.into(),
        json!([{"cache_control": {"type": "ephemeral"}}]),
    );
    let mut assistant = msg(
        Role::Assistant,
        vec![
            Part::Other(
                json!({"type": "thinking", "thinking": "The user wants the weather.", "signature": "EqQBCgIYAh"}),
            ),
            text("I'll check the current weather."),
        ],
    );
    assistant.tool_calls = vec![ir::ToolCall {
        id: "toolu_01A09q90qw90lq917835lq9".into(),
        name: "get_weather".into(),
        arguments: r#"{"location":"San Francisco, CA","unit":"celsius"}"#.into(),
    }];
    let mut result = Message::text(Role::Tool, "15 degrees");
    result.tool_call_id = Some("toolu_01A09q90qw90lq917835lq9".into());
    result.extra.insert("is_error".into(), false.into());
    let mut follow_up = Message::text(Role::User, "Should I bring an umbrella?");
    follow_up.extra.insert(
        CONTENT_EXTRA.into(),
        json!([{"cache_control": {"type": "ephemeral"}}]),
    );
    want.messages = vec![
        system,
        msg(
            Role::User,
            vec![
                Part::Image(Image::Base64 {
                    media_type: "image/jpeg".into(),
                    data: "/9j/4AAQSkZJRg==".into(),
                }),
                text("What's the weather like in San Francisco?"),
            ],
        ),
        assistant,
        result,
        follow_up,
    ];
    want.tools = vec![ir::Tool {
        name: "get_weather".into(),
        description: Some("Get the current weather in a given location".into()),
        parameters: json!({
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            },
            "required": ["location"]
        }),
        strict: None,
    }];
    want.extra = obj(json!({
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
        "tool_extra": {"get_weather": {"cache_control": {"type": "ephemeral"}}},
    }));
    want
}

#[test]
fn golden_multi_turn_tool_use() {
    let input = include_str!("../../../tests/golden/anthropic/request_tool_use.json");
    let req = decode_request(input.as_bytes()).unwrap();
    assert_req_eq(&req, &golden_ir());
    // Anthropic to Anthropic: everything comes back, unknown fields included.
    let out = parse(&encode_request(&req, "claude-sonnet-4-5", 1).unwrap());
    assert_eq!(out, parse(input.as_bytes()));
    // From another format: Anthropic-only fields and parts are dropped, not mistranslated.
    let mut cross = req.clone();
    cross.source = Format::OpenAi;
    let out = parse(&encode_request(&cross, "claude-upstream", 1).unwrap());
    let want = include_str!(
        "../../../tests/golden/anthropic/request_tool_use.to_anthropic_from_openai.json"
    );
    assert_eq!(out, parse(want.as_bytes()));
}

#[test]
fn tool_messages_merge_into_one_user_turn_results_first() {
    let mut req = ir::ChatRequest::new("m", Format::OpenAi);
    let mut a = Message::text(Role::Assistant, "");
    a.tool_calls = vec![
        ir::ToolCall {
            id: "c1".into(),
            name: "f".into(),
            arguments: String::new(),
        },
        ir::ToolCall {
            id: "c2".into(),
            name: "g".into(),
            arguments: r#"{"x": [1, 2]}"#.into(),
        },
    ];
    let mut r1 = Message::text(Role::Tool, "one");
    r1.tool_call_id = Some("c1".into());
    let mut r2 = msg(Role::Tool, vec![text("two"), text("three")]);
    r2.tool_call_id = Some("c2".into());
    req.messages = vec![
        Message::text(Role::User, "go"),
        a,
        r1,
        Message::text(Role::User, "and?"),
        r2,
    ];
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
                {"type": "tool_use", "id": "c2", "name": "g", "input": {"x": [1, 2]}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
                {"type": "tool_result", "tool_use_id": "c2", "content": [
                    {"type": "text", "text": "two"}, {"type": "text", "text": "three"}
                ]},
                {"type": "text", "text": "and?"}
            ]}
        ])
    );
}

#[test]
fn tool_result_with_blocks_and_error_flag() {
    let wire = json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "is_error": true, "content": [
                {"type": "text", "text": "boom"},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
            ]},
            {"type": "tool_result", "tool_use_id": "t2"}
        ]}]
    });
    let req = decode_request(&body(&wire)).unwrap();
    let mut r1 = msg(
        Role::Tool,
        vec![
            text("boom"),
            Part::Image(Image::Url {
                url: "https://x/y.png".into(),
                detail: None,
            }),
        ],
    );
    r1.tool_call_id = Some("t1".into());
    r1.extra.insert("is_error".into(), true.into());
    let mut r2 = msg(Role::Tool, vec![]);
    r2.tool_call_id = Some("t2".into());
    assert_eq!(req.messages, vec![r1, r2]);
    assert_eq!(parse(&encode_request(&req, "m", 10).unwrap()), wire);
}

#[test]
fn tool_choice_and_parallelism() {
    let base = |choice: Value| {
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
               "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": choice})
    };
    let cases = [
        (json!({"type": "auto"}), ToolChoice::Auto, None),
        (json!({"type": "any"}), ToolChoice::Required, None),
        (json!({"type": "none"}), ToolChoice::None, None),
        (
            json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true}),
            ToolChoice::Tool("f".into()),
            Some(false),
        ),
    ];
    for (wire, choice, parallel) in cases {
        let req = decode_request(&body(&base(wire.clone()))).unwrap();
        assert_eq!(req.tool_choice, Some(choice));
        assert_eq!(req.parallel_tool_calls, parallel);
        let out = parse(&encode_request(&req, "m", 1).unwrap());
        assert_eq!(out["tool_choice"], wire);
    }
    // OpenAI's parallel_tool_calls=false without a tool_choice.
    let mut req = ir::ChatRequest::new("m", Format::OpenAi);
    req.messages = vec![Message::text(Role::User, "x")];
    req.tools = vec![ir::Tool {
        name: "f".into(),
        description: None,
        parameters: Value::Null,
        strict: Some(true),
    }];
    req.parallel_tool_calls = Some(false);
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert_eq!(
        out["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // No `strict` for an OpenAI caller; a schema is always sent.
    assert_eq!(
        out["tools"],
        json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}])
    );
    // No tools: no tool_choice (Anthropic refuses one alone).
    req.tools.clear();
    req.tool_choice = Some(ToolChoice::Required);
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
}

#[test]
fn sampling_stop_user_and_extra_passthrough_only_from_anthropic() {
    let wire = json!({
        "model": "m", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
        "stop_sequences": ["\n\nHuman:"], "metadata": {"user_id": "u1"},
        "service_tier": "auto", "messages": [{"role": "user", "content": "x"}]
    });
    let mut req = decode_request(&body(&wire)).unwrap();
    assert_eq!(req.temperature, Some(0.5));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.top_k, Some(40));
    assert_eq!(req.stop, vec!["\n\nHuman:".to_owned()]);
    assert_eq!(req.user.as_deref(), Some("u1"));
    assert!(!req.stream && !req.include_usage);
    assert_eq!(req.extra, obj(json!({"service_tier": "auto"})));
    assert_eq!(parse(&encode_request(&req, "m", 1).unwrap()), wire);
    req.source = Format::OpenAi;
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert!(out.get("service_tier").is_none());
    assert_eq!(out["metadata"], json!({"user_id": "u1"}));
    // IR fields win over a same-named extra.
    req.source = Format::Anthropic;
    req.extra.insert("max_tokens".into(), 99.into());
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert_eq!(out["max_tokens"], 7);
}

#[test]
fn response_format_is_emulated_in_the_system_prompt() {
    let mut req = ir::ChatRequest::new("m", Format::OpenAi);
    req.messages = vec![
        Message::text(Role::System, "Extract."),
        Message::text(Role::User, "Ann is 3"),
    ];
    req.response_format = Some(ir::ResponseFormat::JsonSchema {
        name: "person".into(),
        schema: json!({"type": "object", "properties": {"age": {"type": "integer"}}}),
        strict: Some(true),
        description: None,
    });
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    let system = out["system"].as_array().unwrap();
    assert_eq!(system[0], json!({"type": "text", "text": "Extract."}));
    let instruction = system[1]["text"].as_str().unwrap();
    assert!(instruction.contains("\"person\""), "{instruction}");
    assert!(
        instruction.contains(r#"{"properties":{"age":{"type":"integer"}},"type":"object"}"#),
        "{instruction}"
    );
    req.response_format = Some(ir::ResponseFormat::JsonObject);
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert!(out["system"][1]["text"]
        .as_str()
        .unwrap()
        .contains("JSON object"));
    req.response_format = Some(ir::ResponseFormat::Text);
    let out = parse(&encode_request(&req, "m", 1).unwrap());
    assert_eq!(out["system"], "Extract.");

    // An Anthropic caller's native output_config is modelled and passed through, not emulated.
    let wire = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}});
    let req = decode_request(&body(&wire)).unwrap();
    assert!(matches!(
        req.response_format,
        Some(ir::ResponseFormat::JsonSchema { .. })
    ));
    assert_eq!(parse(&encode_request(&req, "m", 1).unwrap()), wire);
}

#[test]
fn encode_request_rejections() {
    let mut req = ir::ChatRequest::new("m", Format::OpenAi);
    req.messages = vec![Message::text(Role::User, "x")];
    req.n = Some(2);
    let err = encode_request(&req, "m", 1).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert_eq!(err.message, "anthropic cannot return n > 1 choices");
    req.n = Some(1);
    let mut a = Message::text(Role::Assistant, "");
    a.tool_calls = vec![ir::ToolCall {
        id: "c".into(),
        name: "f".into(),
        arguments: "{not json".into(),
    }];
    req.messages.push(a.clone());
    let err = encode_request(&req, "m", 1).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert_eq!(
        err.param.as_deref(),
        Some("messages.1.tool_calls.0.arguments")
    );
    a.tool_calls[0].arguments = "[1]".into();
    req.messages[1] = a;
    assert!(encode_request(&req, "m", 1).is_err());
    req.messages[1] = Message::text(Role::Tool, "no id");
    let err = encode_request(&req, "m", 1).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("messages.1.tool_call_id"));
}

#[test]
fn decode_request_validation() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#,
            "model",
        ),
        (
            r#"{"model":"","max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#,
            "model",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (r#"{"model":"m","max_tokens":1}"#, "messages"),
        (r#"{"model":"m","max_tokens":1,"messages":[]}"#, "messages"),
        (r#"{"model":"m","max_tokens":1,"messages":{}}"#, "messages"),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#,
            "messages.0.role",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":5}]}"#,
            "messages.0.content",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
            "messages.0.content.0.type",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
            "messages.0.content.0.text",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"b","input":{}}]}]}"#,
            "messages.0.content.0",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"tool_result","tool_use_id":"a"}]}]}"#,
            "messages.0.content.0",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}"#,
            "messages.0.content.0.tool_use_id",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64"}}]}]}"#,
            "messages.0.content.0.source.media_type",
        ),
        (
            r#"{"model":"m","max_tokens":1,"system":[{"type":"image"}],"messages":[{"role":"user","content":"x"}]}"#,
            "system.0",
        ),
        (
            r#"{"model":"m","max_tokens":1,"temperature":"hot","messages":[{"role":"user","content":"x"}]}"#,
            "temperature",
        ),
        (
            r#"{"model":"m","max_tokens":1,"stop_sequences":["a",1],"messages":[{"role":"user","content":"x"}]}"#,
            "stop_sequences.1",
        ),
        (
            r#"{"model":"m","max_tokens":1,"stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
            "stream",
        ),
        (
            r#"{"model":"m","max_tokens":1,"tools":[{"name":"f"}],"messages":[{"role":"user","content":"x"}]}"#,
            "tools.0.input_schema",
        ),
        (
            r#"{"model":"m","max_tokens":1,"tool_choice":{"type":"tool"},"messages":[{"role":"user","content":"x"}]}"#,
            "tool_choice.name",
        ),
        (
            r#"{"model":"m","max_tokens":1,"tool_choice":{"type":"sometimes"},"messages":[{"role":"user","content":"x"}]}"#,
            "tool_choice.type",
        ),
    ];
    for (input, param) in cases {
        let err = decode_request(input.as_bytes()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest, "{input}");
        assert_eq!(err.status, 400);
        assert_eq!(
            err.param.as_deref(),
            Some(*param),
            "{input}: {}",
            err.message
        );
    }
    let err = decode_request(b"{\"model\": \"m\",\n  \"max_tokens\": }").unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("line 2 column"), "{}", err.message);
    assert!(decode_request(b"[1]").is_err());
    assert!(decode_request(b"").is_err());
}

// --- replies ------------------------------------------------------------------------------

#[test]
fn reply_decode_and_encode() {
    let wire = json!({
        "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "I'll check."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "SF"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 20,
                  "cache_creation_input_tokens": 300, "cache_read_input_tokens": 4000}
    });
    let reply = decode_reply(&body(&wire)).unwrap();
    assert_eq!(reply.id, "msg_01Aq9w938a90dw8q");
    assert_eq!(reply.model, "claude-sonnet-4-5");
    let mut want = Message::text(Role::Assistant, "I'll check.");
    want.tool_calls = vec![ir::ToolCall {
        id: "toolu_01".into(),
        name: "get_weather".into(),
        arguments: r#"{"location":"SF"}"#.into(),
    }];
    assert_eq!(reply.choices[0].message, want);
    assert_eq!(
        reply.choices[0].finish_reason,
        Some(FinishReason::ToolCalls)
    );
    assert_eq!(
        reply.usage,
        Some(ir::Usage {
            input_tokens: 4310,
            output_tokens: 20,
            cached_input_tokens: 4000,
            cache_write_tokens: 300,
            reasoning_tokens: 0,
        })
    );
    // Encoding is the inverse (thinking aside).
    let mut expected = wire.clone();
    expected["content"].as_array_mut().unwrap().remove(0);
    assert_eq!(parse(&encode_reply(&reply)), expected);
}

#[test]
fn reply_encode_ids_reasons_and_bad_arguments() {
    let mut m = Message::text(Role::Assistant, "");
    m.tool_calls = vec![ir::ToolCall {
        id: "call_1".into(),
        name: "f".into(),
        arguments: "{trunc".into(),
    }];
    let reply = ir::ChatReply {
        id: "chatcmpl-123".into(),
        model: "gpt-x".into(),
        created: 0,
        choices: vec![ir::Choice {
            index: 0,
            message: m,
            finish_reason: Some(FinishReason::Other("function_call".into())),
        }],
        usage: None,
    };
    let out = parse(&encode_reply(&reply));
    assert_eq!(out["id"], "msg_chatcmpl-123");
    assert_eq!(out["stop_reason"], "end_turn");
    assert_eq!(
        out["content"],
        json!([{"type": "tool_use", "id": "call_1", "name": "f", "input": {}}])
    );
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
    for (reason, wire) in [
        (FinishReason::Stop, "end_turn"),
        (FinishReason::Length, "max_tokens"),
        (FinishReason::ToolCalls, "tool_use"),
        (FinishReason::ContentFilter, "refusal"),
        (FinishReason::Other("pause_turn".into()), "pause_turn"),
    ] {
        assert_eq!(finish_to_wire(&reason), wire);
    }
    for (wire, reason) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other("pause_turn".into())),
    ] {
        assert_eq!(finish_from_wire(wire), reason);
    }
}

#[test]
fn malformed_replies_are_protocol_errors() {
    for bad in [&b"not json"[..], b"{}", b"[]", b"{\"content\": 3}"] {
        let err = decode_reply(bad).unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Protocol,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let err = decode_reply(
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Overloaded);
}

// --- errors -------------------------------------------------------------------------------

#[test]
fn decode_error_table() {
    let e = |ty: &str, msg: &str| {
        body(
            &json!({"type": "error", "error": {"type": ty, "message": msg}, "request_id": "req_1"}),
        )
    };
    let cases = [
        (
            400,
            e("invalid_request_error", "max_tokens: too big"),
            ErrorKind::InvalidRequest,
            400,
            Some("max_tokens: too big"),
        ),
        (
            401,
            e("authentication_error", "invalid x-api-key sk-ant-abc"),
            ErrorKind::UpstreamAuth,
            502,
            None,
        ),
        (
            403,
            e("permission_error", "key sk-ant-abc lacks access"),
            ErrorKind::UpstreamAuth,
            502,
            None,
        ),
        (
            404,
            e("not_found_error", "model: claude-nope"),
            ErrorKind::NotFound,
            404,
            Some("model: claude-nope"),
        ),
        (
            413,
            e("request_too_large", "too big"),
            ErrorKind::PayloadTooLarge,
            413,
            None,
        ),
        (
            429,
            e("rate_limit_error", "org 1234 exceeded"),
            ErrorKind::RateLimited,
            429,
            None,
        ),
        (
            500,
            e("api_error", "Internal server error"),
            ErrorKind::UpstreamStatus,
            502,
            None,
        ),
        (
            529,
            e("overloaded_error", "Overloaded"),
            ErrorKind::Overloaded,
            529,
            None,
        ),
        (
            504,
            e("timeout_error", "timeout"),
            ErrorKind::Timeout,
            504,
            None,
        ),
        (
            503,
            b"<html>busy</html>".to_vec(),
            ErrorKind::Overloaded,
            503,
            None,
        ),
        (502, b"".to_vec(), ErrorKind::UpstreamStatus, 502, None),
        (
            400,
            b"Bad Request".to_vec(),
            ErrorKind::InvalidRequest,
            400,
            None,
        ),
        (401, b"nope".to_vec(), ErrorKind::UpstreamAuth, 502, None),
        (
            422,
            e("invalid_request_error", "bad"),
            ErrorKind::InvalidRequest,
            400,
            Some("bad"),
        ),
        (
            409,
            e("invalid_request_error", "conflict"),
            ErrorKind::UpstreamStatus,
            409,
            None,
        ),
    ];
    for (status, body, kind, want_status, kept) in cases {
        let err = decode_error(status, &body);
        assert_eq!(
            (err.kind, err.status),
            (kind, want_status),
            "status {status}"
        );
        assert!(!err.message.is_empty());
        assert!(!err.message.contains("sk-ant"), "{}", err.message);
        if let Some(m) = kept {
            assert_eq!(err.message, m);
        }
    }
    let long = "x".repeat(5000);
    let err = decode_error(400, &e("invalid_request_error", &long));
    assert!(err.message.chars().count() <= MAX_UPSTREAM_MESSAGE + 1);
}

#[test]
fn encode_error_table() {
    let cases = [
        (ErrorKind::InvalidRequest, "invalid_request_error"),
        (ErrorKind::Unauthenticated, "authentication_error"),
        (ErrorKind::Forbidden, "permission_error"),
        (ErrorKind::NotFound, "not_found_error"),
        (ErrorKind::PayloadTooLarge, "request_too_large"),
        (ErrorKind::RateLimited, "rate_limit_error"),
        (ErrorKind::BudgetExceeded, "rate_limit_error"),
        (ErrorKind::Overloaded, "overloaded_error"),
        (ErrorKind::Timeout, "timeout_error"),
        (ErrorKind::UpstreamAuth, "api_error"),
        (ErrorKind::Internal, "api_error"),
        (ErrorKind::Unavailable, "api_error"),
    ];
    for (kind, ty) in cases {
        let out = parse(&encode_error(&ir::Error::new(kind, "why")));
        assert_eq!(
            out,
            json!({"type": "error", "error": {"type": ty, "message": "why"}})
        );
    }
}

#[test]
fn count_tokens_and_models_bodies() {
    assert_eq!(parse(&encode_count_tokens(42)), json!({"input_tokens": 42}));
    let models = [
        ir::ModelInfo {
            id: "fast".into(),
            owned_by: "switchyard".into(),
        },
        ir::ModelInfo {
            id: "smart".into(),
            owned_by: "anthropic".into(),
        },
    ];
    let out = parse(&encode_models(&models));
    assert_eq!(out["data"][1]["id"], "smart");
    assert_eq!(out["data"][0]["type"], "model");
    assert_eq!(
        (out["first_id"].as_str(), out["last_id"].as_str()),
        (Some("fast"), Some("smart"))
    );
    assert_eq!(out["has_more"], false);
    assert_eq!(parse(&encode_models(&[]))["first_id"], Value::Null);
}

// --- streams ------------------------------------------------------------------------------

const STREAM: &str = include_str!("../../../tests/golden/anthropic/stream_tool_use.sse");

/// Runs SSE bytes, in the given pieces, through the parser and a fresh decoder.
fn decode_stream(chunks: &[&[u8]]) -> (Vec<ir::StreamEvent>, Result<(), ir::Error>, bool) {
    let mut parser = sse::Parser::default();
    let mut dec = StreamDecoder::new();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        while let Some(ev) = parser.next_event().unwrap() {
            if let Err(e) = dec.event(&ev, &mut out) {
                return (zero_created(out), Err(e), dec.is_done());
            }
        }
    }
    (zero_created(out), Ok(()), dec.is_done())
}

fn zero_created(mut events: Vec<ir::StreamEvent>) -> Vec<ir::StreamEvent> {
    for ev in &mut events {
        if let ir::StreamEvent::Start { created, .. } = ev {
            assert!(*created > 1_600_000_000);
            *created = 0;
        }
    }
    events
}

fn golden_stream_events() -> Vec<ir::StreamEvent> {
    use ir::StreamEvent as E;
    vec![
        E::Start {
            id: "msg_014p7gG3wDgGV9EUtLvnow3U".into(),
            model: "claude-sonnet-4-5".into(),
            created: 0,
        },
        E::TextDelta {
            choice: 0,
            text: "Okay, let's check ".into(),
        },
        E::TextDelta {
            choice: 0,
            text: "the weather — ☂?".into(),
        },
        // Tool positions count tool_use blocks (0, 1), not content blocks (2, 3).
        E::ToolCallStart {
            choice: 0,
            index: 0,
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "get_weather".into(),
        },
        E::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: "{\"location\":".into(),
        },
        E::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: " \"San Francisc".into(),
        },
        E::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: "o, CA\"}".into(),
        },
        E::ToolCallStart {
            choice: 0,
            index: 1,
            id: "toolu_02".into(),
            name: "get_weather".into(),
        },
        E::ToolCallDelta {
            choice: 0,
            index: 1,
            arguments: "{\"location\": \"Paris\"}".into(),
        },
        E::Finish {
            choice: 0,
            reason: FinishReason::ToolCalls,
        },
        // Cache reads and writes are part of the IR's input count.
        E::Usage(ir::Usage {
            input_tokens: 472 + 100 + 2000,
            output_tokens: 89,
            cached_input_tokens: 2000,
            cache_write_tokens: 100,
            reasoning_tokens: 0,
        }),
    ]
}

#[test]
fn stream_decode_split_at_every_byte_boundary() {
    let bytes = STREAM.as_bytes();
    let want = golden_stream_events();
    let (events, res, done) = decode_stream(&[bytes]);
    assert_eq!(events, want);
    assert!(res.is_ok() && done);
    for i in 0..=bytes.len() {
        let (a, b) = bytes.split_at(i);
        let (events, res, done) = decode_stream(&[a, b]);
        assert_eq!(events, want, "split at {i}");
        assert!(res.is_ok() && done, "split at {i}");
    }
    let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(decode_stream(&one_by_one).0, want);
    // Truncated before message_stop: not done.
    let cut = STREAM.find("event: message_stop").unwrap();
    let (_, res, done) = decode_stream(&[&bytes[..cut]]);
    assert!(res.is_ok() && !done);
}

#[test]
fn stream_decode_errors() {
    let err_stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":5}}}\n\n\
        event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let (events, res, done) = decode_stream(&[err_stream.as_bytes()]);
    assert_eq!(events.len(), 1);
    let err = res.unwrap_err();
    assert_eq!((err.kind, err.status), (ErrorKind::Overloaded, 529));
    assert!(!done);

    let bad =
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\n\n";
    let err = decode_stream(&[bad.as_bytes()]).1.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Protocol);
    let bad = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n";
    assert_eq!(
        decode_stream(&[bad.as_bytes()]).1.unwrap_err().kind,
        ErrorKind::Protocol
    );
    // Unknown events are skipped even when their data is not JSON.
    let fine = "event: brand_new\ndata: not json\n\nevent: ping\ndata: {}\n\n";
    assert_eq!(decode_stream(&[fine.as_bytes()]), (vec![], Ok(()), false));
    // Unnamed events fall back to the data's `type`.
    let unnamed = "data: {\"type\":\"message_stop\"}\n\n";
    let (events, res, done) = decode_stream(&[unnamed.as_bytes()]);
    assert!(res.is_ok() && done);
    assert_eq!(events, vec![ir::StreamEvent::Usage(ir::Usage::default())]);
}

fn encode_events(events: &[ir::StreamEvent]) -> BytesMut {
    let mut enc = StreamEncoder::new("public-model");
    let mut out = BytesMut::new();
    for ev in events {
        enc.event(ev, &mut out);
    }
    enc.finish(&mut out);
    out
}

fn sse_events(bytes: &[u8]) -> Vec<sse::Event> {
    let mut parser = sse::Parser::default();
    parser.push(bytes);
    let mut events = Vec::new();
    while let Some(ev) = parser.next_event().unwrap() {
        events.push(ev);
    }
    assert!(!parser.has_partial());
    events
}

#[test]
fn stream_encode_round_trips_through_the_decoder() {
    use ir::StreamEvent as E;
    let usage = ir::Usage {
        input_tokens: 1500,
        output_tokens: 30,
        cached_input_tokens: 1000,
        cache_write_tokens: 200,
        reasoning_tokens: 0,
    };
    let input = vec![
        E::Start {
            id: "chatcmpl-9".into(),
            model: "gpt-upstream".into(),
            created: 7,
        },
        E::TextDelta {
            choice: 0,
            text: "Let me ".into(),
        },
        E::TextDelta {
            choice: 0,
            text: "look.".into(),
        },
        E::ToolCallStart {
            choice: 0,
            index: 0,
            id: "call_a".into(),
            name: "f".into(),
        },
        E::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: "{\"a\":".into(),
        },
        E::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: "1}".into(),
        },
        E::ToolCallStart {
            choice: 0,
            index: 1,
            id: "call_b".into(),
            name: "g".into(),
        },
        E::ToolCallDelta {
            choice: 0,
            index: 1,
            arguments: "{}".into(),
        },
        // OpenAI order: finish, then usage.
        E::Finish {
            choice: 0,
            reason: FinishReason::ToolCalls,
        },
        E::Usage(usage),
    ];
    let out = encode_events(&input);
    let events = sse_events(&out);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let mut last_started = None;
    for ev in &events {
        let data = parse(ev.data.as_bytes());
        assert_eq!(
            data["type"],
            ev.event.as_str(),
            "data type matches the event name"
        );
        if ev.event == "content_block_start" {
            let index = data["index"].as_u64().unwrap();
            assert_eq!(
                index,
                last_started.map_or(0, |i| i + 1),
                "indexes count up from 0"
            );
            last_started = Some(index);
        }
    }
    let start = parse(events[0].data.as_bytes());
    assert_eq!(start["message"]["id"], "msg_chatcmpl-9");
    assert_eq!(start["message"]["model"], "public-model");
    assert_eq!(start["message"]["content"], json!([]));
    let delta = parse(events[12].data.as_bytes());
    assert_eq!(
        delta,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 300, "output_tokens": 30,
                         "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000}})
    );

    let (decoded, res, done) = decode_stream(&[&out]);
    assert!(res.is_ok() && done);
    let mut want = input.clone();
    want[0] = E::Start {
        id: "msg_chatcmpl-9".into(),
        model: "public-model".into(),
        created: 0,
    };
    assert_eq!(decoded, want);

    // Usage before finish encodes the same.
    let mut swapped = input.clone();
    swapped.swap(8, 9);
    assert_eq!(encode_events(&swapped), out);
}

#[test]
fn stream_encode_edge_cases() {
    use ir::StreamEvent as E;
    // Nothing but a finish: still a complete message the SDKs accept.
    let events = sse_events(&encode_events(&[]));
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    assert_eq!(
        parse(events[1].data.as_bytes())["delta"]["stop_reason"],
        "end_turn"
    );

    // Text after a tool call opens a new block; other choices and empty text are ignored.
    let events = sse_events(&encode_events(&[
        E::Start {
            id: "msg_x".into(),
            model: "m".into(),
            created: 0,
        },
        E::ToolCallStart {
            choice: 0,
            index: 0,
            id: "t".into(),
            name: "f".into(),
        },
        E::TextDelta {
            choice: 1,
            text: "other choice".into(),
        },
        E::TextDelta {
            choice: 0,
            text: "".into(),
        },
        E::TextDelta {
            choice: 0,
            text: "after".into(),
        },
        E::ToolCallDelta {
            choice: 0,
            index: 5,
            arguments: "{}".into(),
        },
        E::Finish {
            choice: 0,
            reason: FinishReason::Length,
        },
    ]));
    let summary: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            let d = parse(e.data.as_bytes());
            (
                e.event.clone(),
                d.get("index").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("message_start".into(), Value::Null),
            ("content_block_start".into(), json!(0)),
            ("content_block_stop".into(), json!(0)),
            ("content_block_start".into(), json!(1)),
            ("content_block_delta".into(), json!(1)),
            ("content_block_stop".into(), json!(1)),
            ("message_delta".into(), Value::Null),
            ("message_stop".into(), Value::Null),
        ]
    );

    // An error after bytes went out is a well-formed error event, and ends the stream.
    let mut enc = StreamEncoder::new("m");
    let mut out = BytesMut::new();
    enc.event(
        &E::Start {
            id: "msg_1".into(),
            model: "m".into(),
            created: 0,
        },
        &mut out,
    );
    enc.error(&ir::Error::new(ErrorKind::Overloaded, "busy"), &mut out);
    enc.finish(&mut out);
    let events = sse_events(&out);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event, "error");
    assert_eq!(
        parse(events[1].data.as_bytes()),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    );
    let (_, res, _) = decode_stream(&[&out]);
    assert_eq!(res.unwrap_err().kind, ErrorKind::Overloaded);
}

// --- property: encode_request → decode_request is the identity on the expressible subset ---

fn arb_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9 .,!?é☂\n\"]{0,24}"
}

fn arb_args() -> impl Strategy<Value = String> {
    prop::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            arb_text().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()).to_string())
}

/// One exchange: a user turn (answering the previous turn's calls first), then an assistant
/// turn with optional text and up to two tool calls.
#[derive(Debug, Clone)]
struct Exchange {
    user: Option<String>,
    assistant: Option<String>,
    calls: Vec<(String, String)>,
    results: Vec<String>,
}

fn arb_exchange() -> impl Strategy<Value = Exchange> {
    (
        prop::option::of(arb_text()),
        prop::option::of(arb_text()),
        prop::collection::vec(("[a-z_]{1,8}", arb_args()), 0..3),
        prop::collection::vec(arb_text(), 2),
    )
        .prop_map(|(user, assistant, calls, results)| Exchange {
            user,
            assistant,
            calls,
            results,
        })
}

fn arb_request() -> impl Strategy<Value = ir::ChatRequest> {
    (
        prop::option::of(arb_text()),
        prop::collection::vec(arb_exchange(), 1..5),
        prop::collection::vec(
            ("[a-z]{1,8}", prop::option::of(arb_text())),
            0..3,
        ),
        0usize..6,
        1u32..200_000,
        prop::option::of(0u32..=8),
        prop::collection::vec(arb_text(), 0..3),
        any::<bool>(),
        prop::option::of("[a-z0-9-]{1,12}"),
    )
        .prop_map(
            |(system, exchanges, tools, choice, max_tokens, temp, stop, stream, user)| {
                let mut req = ir::ChatRequest::new("claude-test", Format::Anthropic);
                if let Some(s) = system {
                    req.messages.push(Message::text(Role::System, s));
                }
                let mut pending: Vec<String> = Vec::new();
                let mut n = 0;
                for (k, ex) in exchanges.iter().enumerate() {
                    for (id, answer) in pending.drain(..).zip(ex.results.iter().cycle()) {
                        let mut r = Message::text(Role::Tool, answer.clone());
                        r.tool_call_id = Some(id);
                        req.messages.push(r);
                    }
                    // The first turn must be a user turn; later ones may be tool results only.
                    let user = match (&ex.user, k) {
                        (Some(u), _) => Some(u.clone()),
                        (None, 0) => Some("hi".to_owned()),
                        (None, _) if req.messages.last().map(|m| m.role) != Some(Role::Tool) => {
                            Some("go on".to_owned())
                        }
                        (None, _) => None,
                    };
                    if let Some(u) = user {
                        req.messages.push(Message::text(Role::User, u));
                    }
                    let mut a = Message::text(Role::Assistant, "");
                    a.content = ex.assistant.iter().cloned().map(Part::Text).collect();
                    for (name, args) in &ex.calls {
                        n += 1;
                        let id = format!("toolu_{n:04}");
                        a.tool_calls.push(ir::ToolCall {
                            id: id.clone(),
                            name: name.clone(),
                            arguments: args.clone(),
                        });
                        pending.push(id);
                    }
                    if a.content.is_empty() && a.tool_calls.is_empty() {
                        a.content.push(Part::Text("ok".into()));
                    }
                    req.messages.push(a);
                }
                for id in pending {
                    let mut r = Message::text(Role::Tool, "done");
                    r.tool_call_id = Some(id);
                    req.messages.push(r);
                }
                let mut seen = std::collections::HashSet::new();
                req.tools = tools
                    .into_iter()
                    .filter(|(name, _)| seen.insert(name.clone()))
                    .map(|(name, description)| ir::Tool {
                        parameters: json!({"type": "object", "properties": {name.clone(): {"type": "string"}}}),
                        name,
                        description,
                        strict: None,
                    })
                    .collect();
                if let Some(first) = req.tools.first() {
                    req.tool_choice = match choice {
                        0 => None,
                        1 => Some(ToolChoice::Auto),
                        2 => Some(ToolChoice::Required),
                        3 => Some(ToolChoice::None),
                        _ => Some(ToolChoice::Tool(first.name.clone())),
                    };
                    if choice == 5 {
                        req.parallel_tool_calls = Some(false);
                    }
                }
                req.max_tokens = Some(max_tokens);
                // Quarter steps are exact in binary, so JSON text round-trips them.
                req.temperature = temp.map(|t| f64::from(t) * 0.25);
                req.stop = stop;
                req.stream = stream;
                req.include_usage = stream;
                req.user = user;
                req
            },
        )
}

proptest! {
    #[test]
    fn request_round_trip(req in arb_request()) {
        let bytes = encode_request(&req, "claude-test", 1).unwrap();
        let back = decode_request(&bytes).unwrap();
        assert_req_eq(&back, &req);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_request(&bytes);
        let _ = decode_reply(&bytes);
        let _ = decode_error(500, &bytes);
        let mut dec = StreamDecoder::new();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for name in ["message_start", "content_block_start", "content_block_delta", "message_delta", "error", ""] {
            let ev = sse::Event { event: name.into(), data: text.clone(), id: None };
            let _ = dec.event(&ev, &mut Vec::new());
        }
    }

    #[test]
    fn arbitrary_json_requests_never_panic(v in arb_json()) {
        let wrapped = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": v.clone()}],
                             "system": v.clone(), "tools": v.clone(), "tool_choice": v});
        let _ = decode_request(&body(&wrapped));
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        prop_oneof![
            Just("text"),
            Just("image"),
            Just("tool_use"),
            Just("tool_result"),
            Just("base64"),
            Just("url"),
            Just("auto"),
            Just("tool"),
            Just("x"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type"),
                    Just("text"),
                    Just("source"),
                    Just("id"),
                    Just("name"),
                    Just("input"),
                    Just("tool_use_id"),
                    Just("content"),
                    Just("media_type"),
                    Just("data"),
                    Just("url"),
                    Just("input_schema"),
                ]
                .prop_map(str::to_owned),
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
