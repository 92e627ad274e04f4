//! Translation end to end: OpenAI callers → Anthropic and Gemini upstreams, and Anthropic
//! callers → OpenAI upstreams. The mock upstreams speak each provider's documented wire format
//! (Anthropic Messages and its SSE events, Gemini `generateContent` and
//! `streamGenerateContent?alt=sse`), written by hand here.

mod common;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use common::*;

// ---------------------------------------------------------------------------------------------
// Anthropic wire fixtures
// ---------------------------------------------------------------------------------------------

fn anthropic_message(content: Value, stop_reason: &str) -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 200,
            "output_tokens": 20,
            "service_tier": "standard"
        }
    })
}

fn anthropic_error(status_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": status_type, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
}

/// One Anthropic SSE event: `event: <type>` and its `data:` line.
fn ev(data: Value) -> String {
    let name = data["type"].as_str().expect("type").to_owned();
    format!("event: {name}\ndata: {data}\n\n")
}

/// A streamed Anthropic reply: a text block, then a tool_use block whose input arrives in
/// `input_json_delta` fragments, a ping in between, usage with cache tokens.
fn anthropic_tool_stream() -> Vec<String> {
    let events = [
        ev(
            json!({"type": "message_start", "message": {"id": "msg_014p7gG3wDgGV9EUtLvnow3U",
            "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 472, "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 2000, "output_tokens": 2}}}),
        ),
        ev(json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})),
        ev(json!({"type": "ping"})),
        ev(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Let me check "}})),
        ev(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "the weather."}})),
        ev(json!({"type": "content_block_stop", "index": 0})),
        ev(
            json!({"type": "content_block_start", "index": 1, "content_block":
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
             "name": "get_weather", "input": {}}}),
        ),
        ev(json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""}})),
        ev(json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}})),
        ev(json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": " \"Paris\"}"}})),
        ev(json!({"type": "content_block_stop", "index": 1})),
        ev(
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use",
            "stop_sequence": null}, "usage": {"output_tokens": 89}}),
        ),
        ev(json!({"type": "message_stop"})),
    ];
    // message_start split in three writes (inside `event:`, inside the JSON), the next two
    // events in one write, the rest one per write with the final three together.
    let all = events.concat();
    let first = events[0].len();
    let mut pieces = split_at(&events[0], &[4, first / 2]);
    pieces.push(events[1..3].concat());
    pieces.extend(events[3..10].iter().cloned());
    pieces.push(events[10..].concat());
    assert_eq!(pieces.concat(), all);
    pieces
}

fn anthropic_yaml(p0: &str, p1: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
providers:
  - name: claude
    kind: anthropic
    base_url: {p0}
    api_key: sk-ant-api03-testkey0
  - name: claude2
    kind: anthropic
    base_url: {p1}
    api_key: sk-ant-api03-testkey1
models:
  - name: chat-default
    targets: [claude/claude-sonnet-4-5, claude2/claude-sonnet-4-5]
"
    )
}

// ---------------------------------------------------------------------------------------------
// 9. OpenAI caller → Anthropic upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn openai_caller_to_anthropic_reply_and_cache_usage() {
    let up = Upstream::start([json(
        200,
        anthropic_message(
            json!([{"type": "text", "text": "Hi! How can I help?"}]),
            "end_turn",
        ),
    )])
    .await;
    let idle = Upstream::start([]).await;
    let gw = gateway(&anthropic_yaml(&up.url(), &idle.url())).await;

    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello"}
            ],
            "max_tokens": 100,
            "temperature": 0.5
        }))
        .await;

    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("claude"));
    assert_eq!(resp.header("x-switchyard-model"), Some("claude-sonnet-4-5"));
    let v = resp.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hi! How can I help?");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // OpenAI's prompt_tokens counts every input token: input + cache read + cache write.
    assert_eq!(v["usage"]["prompt_tokens"], 310, "{v}");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 200);
    assert_eq!(v["usage"]["completion_tokens"], 20);
    assert_eq!(v["usage"]["total_tokens"], 330);

    let call = up.only_call();
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.path, "/v1/messages");
    assert_eq!(call.header("x-api-key"), Some("sk-ant-api03-testkey0"));
    assert_eq!(call.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(call.header("authorization"), None);
    let sent = call.json();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["temperature"], 0.5);
    let system = match &sent["system"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
        other => panic!("system: {other}"),
    };
    assert_eq!(system, "Be brief.");
    let msgs = sent["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 1, "system is not a message: {sent}");
    assert_eq!(msgs[0]["role"], "user");
    let content = &msgs[0]["content"];
    assert!(
        content == "Hello" || content == &json!([{"type": "text", "text": "Hello"}]),
        "{content}"
    );
    assert_eq!(idle.count(), 0);
}

#[tokio::test]
async fn openai_caller_to_anthropic_gets_a_default_max_tokens() {
    let up = Upstream::start([json(
        200,
        anthropic_message(json!([{"type": "text", "text": "ok"}]), "end_turn"),
    )])
    .await;
    let gw = gateway(&anthropic_yaml(&up.url(), &up.url())).await;
    let resp = gw
        .chat(&json!({"model": "chat-default", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let sent = up.only_call().json();
    assert!(sent["max_tokens"].as_u64().is_some_and(|n| n > 0), "{sent}");
}

#[tokio::test]
async fn openai_caller_to_anthropic_tool_use_reply() {
    let up = Upstream::start([json(
        200,
        anthropic_message(
            json!([
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                 "input": {"location": "San Francisco, CA", "unit": "celsius"}}
            ]),
            "tool_use",
        ),
    )])
    .await;
    let gw = gateway(&anthropic_yaml(&up.url(), &up.url())).await;
    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [{"role": "user", "content": "Weather in SF?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Get the weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                    "unit": {"type": "string"}}, "required": ["location"]}}}],
            "tool_choice": "auto"
        }))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let v = resp.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Checking.");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("text")).expect("json");
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );

    let sent = up.only_call().json();
    assert_eq!(
        sent["tools"],
        json!([{"name": "get_weather", "description": "Get the weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"},
                "unit": {"type": "string"}}, "required": ["location"]}}])
    );
    assert_eq!(sent["tool_choice"]["type"], "auto");
}

#[tokio::test]
async fn openai_caller_to_anthropic_stream_with_tool_use_fragments() {
    let up = Upstream::start([sse(anthropic_tool_stream())]).await;
    let gw = gateway(&anthropic_yaml(&up.url(), &up.url())).await;
    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let chunks = openai_chunks(&resp.text());
    assert_eq!(openai_text(&chunks), "Let me check the weather.");

    let mut starts = Vec::new();
    let mut fragments = Vec::new();
    for c in &chunks {
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(id) = tc["id"].as_str() {
                starts.push((
                    tc["index"].clone(),
                    id.to_owned(),
                    tc["function"]["name"].clone(),
                ));
            }
            if let Some(a) = tc["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                fragments.push((tc["index"].clone(), a.to_owned()));
            }
        }
    }
    // The first (only) tool call of the turn is OpenAI index 0, whatever Anthropic's block
    // index was.
    assert_eq!(
        starts,
        [(
            json!(0),
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6".to_owned(),
            json!("get_weather")
        )]
    );
    assert_eq!(
        fragments,
        [
            (json!(0), "{\"location\":".to_owned()),
            (json!(0), " \"Paris\"}".to_owned())
        ]
    );
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).map(|ch| &ch["finish_reason"]))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("tool_calls")]);
    let usage = &chunks.last().expect("chunks")["usage"];
    assert_eq!(usage["prompt_tokens"], 472 + 100 + 2000, "{usage}");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 2000);
    assert_eq!(usage["completion_tokens"], 89);
    assert_eq!(usage["total_tokens"], 472 + 100 + 2000 + 89);

    let call = up.only_call();
    assert_eq!(call.path, "/v1/messages");
    assert_eq!(call.json()["stream"], true);
}

#[tokio::test]
async fn openai_caller_anthropic_529_overloaded_falls_back() {
    let p0 = Upstream::start([json(529, anthropic_error("overloaded_error", "Overloaded"))]).await;
    let p1 = Upstream::start([json(
        200,
        anthropic_message(json!([{"type": "text", "text": "second"}]), "end_turn"),
    )])
    .await;
    let gw = gateway(&anthropic_yaml(&p0.url(), &p1.url())).await;
    let resp = gw
        .chat(&json!({"model": "chat-default", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("claude2"));
    assert_eq!(resp.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "second");
    assert_eq!((p0.count(), p1.count()), (1, 1));
    assert_eq!(
        p1.only_call().header("x-api-key"),
        Some("sk-ant-api03-testkey1")
    );
}

#[tokio::test]
async fn openai_caller_anthropic_400_is_kept_and_401_hides_the_key() {
    let up = Upstream::start([
        json(
            400,
            anthropic_error(
                "invalid_request_error",
                "messages: text content blocks must be non-empty",
            ),
        ),
        json(
            401,
            anthropic_error("authentication_error", "invalid x-api-key"),
        ),
    ])
    .await;
    let gw = gateway(&anthropic_yaml(&up.url(), &up.url())).await;
    let body = json!({"model": "claude/claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "x"}]});
    let bad = gw.chat(&body).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());
    assert_eq!(
        bad.json()["error"]["message"],
        "messages: text content blocks must be non-empty"
    );
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    let auth = gw.chat(&body).await;
    assert_eq!(auth.status, StatusCode::BAD_GATEWAY, "{}", auth.text());
    assert!(!auth.text().contains("sk-ant"), "{}", auth.text());
}

// ---------------------------------------------------------------------------------------------
// Gemini wire fixtures
// ---------------------------------------------------------------------------------------------

fn gemini_reply(parts: Value, finish: &str) -> Value {
    json!({
        "candidates": [{
            "content": {"parts": parts, "role": "model"},
            "finishReason": finish,
            "index": 0,
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}
            ]
        }],
        "usageMetadata": {
            "promptTokenCount": 40,
            "candidatesTokenCount": 12,
            "totalTokenCount": 52,
            "cachedContentTokenCount": 32,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 40}]
        },
        "modelVersion": "gemini-2.0-flash",
        "responseId": "mAitaLmkHPPlz7IPvtfUqQ4"
    })
}

/// Gemini frames SSE with CRLF line endings.
fn gemini_event(v: Value) -> String {
    format!("data: {v}\r\n\r\n")
}

fn gemini_yaml(p0: &str, p1: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
providers:
  - name: gem
    kind: gemini
    base_url: {p0}
    api_key: AIzaSyTestKey0
  - name: gem2
    kind: gemini
    base_url: {p1}
    api_key: AIzaSyTestKey1
models:
  - name: chat-default
    targets: [gem/gemini-2.0-flash, gem2/gemini-2.0-flash]
"
    )
}

// ---------------------------------------------------------------------------------------------
// 10. OpenAI caller → Gemini upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn openai_caller_to_gemini_text() {
    let up = Upstream::start([json(
        200,
        gemini_reply(json!([{"text": "Hello there."}]), "STOP"),
    )])
    .await;
    let gw = gateway(&gemini_yaml(&up.url_with("v1beta"), &up.url_with("v1beta"))).await;
    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello"}
            ],
            "max_tokens": 64,
            "temperature": 0.3
        }))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("gem"));
    let v = resp.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello there.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Gemini's promptTokenCount already includes the cached tokens.
    assert_eq!(v["usage"]["prompt_tokens"], 40, "{v}");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 32);
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(v["usage"]["total_tokens"], 52);

    let call = up.only_call();
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(call.header("x-goog-api-key"), Some("AIzaSyTestKey0"));
    assert_eq!(call.header("authorization"), None);
    let sent = call.json();
    assert_eq!(
        sent["contents"],
        json!([{"role": "user", "parts": [{"text": "Hello"}]}])
    );
    assert_eq!(
        sent["systemInstruction"]["parts"],
        json!([{"text": "Be brief."}])
    );
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 64);
    assert_eq!(sent["generationConfig"]["temperature"], 0.3);
}

#[tokio::test]
async fn openai_caller_to_gemini_function_call() {
    let up = Upstream::start([json(
        200,
        gemini_reply(
            json!([{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]),
            "STOP",
        ),
    )])
    .await;
    let gw = gateway(&gemini_yaml(&up.url_with("v1beta"), &up.url_with("v1beta"))).await;
    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Get the weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                    "required": ["location"]}}}]
        }))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let v = resp.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(
        call["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{call}"
    );
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("text")).expect("json");
    assert_eq!(args, json!({"location": "Paris"}));

    let sent = up.only_call().json();
    let decl = &sent["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "get_weather");
    assert_eq!(decl["description"], "Get the weather");
    // Either documented field: `parameters` (OpenAPI subset) or `parametersJsonSchema`.
    let schema = decl
        .get("parametersJsonSchema")
        .or_else(|| decl.get("parameters"))
        .expect("a parameter schema");
    assert_eq!(schema["properties"]["location"]["type"], "string", "{decl}");
}

#[tokio::test]
async fn openai_caller_to_gemini_stream() {
    let events = [
        gemini_event(
            json!({"candidates": [{"content": {"parts": [{"text": "The sky"}],
            "role": "model"}, "index": 0}], "usageMetadata": {"promptTokenCount": 9,
            "totalTokenCount": 9}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"}),
        ),
        gemini_event(
            json!({"candidates": [{"content": {"parts": [{"text": " is blue"}],
            "role": "model"}, "index": 0}], "usageMetadata": {"promptTokenCount": 9,
            "totalTokenCount": 9}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"}),
        ),
        gemini_event(json!({"candidates": [{"content": {"parts": [{"text": "."}],
            "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4,
            "totalTokenCount": 13}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"})),
    ];
    // Split between `\r` and `\n`, inside the JSON; the last two events in one write.
    let first = &events[0];
    let cr = first.len() - 3;
    let mut pieces = split_at(first, &[10, cr]);
    pieces.push(events[1..].concat());
    let up = Upstream::start([sse(pieces)]).await;
    let gw = gateway(&gemini_yaml(&up.url_with("v1beta"), &up.url_with("v1beta"))).await;
    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [{"role": "user", "content": "Sky colour?"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let chunks = openai_chunks(&resp.text());
    assert_eq!(openai_text(&chunks), "The sky is blue.");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).map(|ch| &ch["finish_reason"]))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("stop")]);
    let usage = &chunks.last().expect("chunks")["usage"];
    assert_eq!(usage["prompt_tokens"], 9, "{usage}");
    assert_eq!(usage["completion_tokens"], 4);

    let call = up.only_call();
    assert_eq!(
        call.path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(call.header("x-goog-api-key"), Some("AIzaSyTestKey0"));
    assert!(!call.path.contains("key="), "the key stays out of the URL");
}

#[tokio::test]
async fn openai_caller_gemini_resource_exhausted_falls_back() {
    let p0 = Upstream::start([json(
        429,
        json!({"error": {"code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]}}),
    )])
    .await;
    let p1 = Upstream::start([json(200, gemini_reply(json!([{"text": "second"}]), "STOP"))]).await;
    let gw = gateway(&gemini_yaml(&p0.url_with("v1beta"), &p1.url_with("v1beta"))).await;
    let resp = gw
        .chat(&json!({"model": "chat-default", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("gem2"));
    assert_eq!(resp.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "second");
    assert_eq!((p0.count(), p1.count()), (1, 1));
    assert_eq!(
        p1.only_call().header("x-goog-api-key"),
        Some("AIzaSyTestKey1")
    );
}

#[tokio::test]
async fn openai_caller_gemini_resource_exhausted_alone_is_a_429_with_retry_after() {
    let p0 = Upstream::start([json(
        429,
        json!({"error": {"code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]}}),
    )])
    .await;
    let gw = gateway(&gemini_yaml(&p0.url_with("v1beta"), &p0.url_with("v1beta"))).await;
    let resp = gw
        .chat(&json!({"model": "gem/gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(
        resp.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        resp.text()
    );
    assert_eq!(resp.header("retry-after"), Some("31"));
    assert_eq!(resp.json()["error"]["type"], "rate_limit_error");
}

// ---------------------------------------------------------------------------------------------
// 11. Anthropic caller → OpenAI upstream
// ---------------------------------------------------------------------------------------------

fn openai_yaml(url: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
max_body_bytes: 4096
providers:
  - name: oai
    kind: openai_compatible
    base_url: {url}
    api_key: sk-test-oai
models:
  - name: chat-default
    targets: [oai/gpt-4o-mini]
"
    )
}

const ANTHROPIC_HEADERS: &[(&str, &str)] = &[
    ("x-api-key", "sk-ant-caller-secret"),
    ("anthropic-version", "2023-06-01"),
];

/// The Anthropic error envelope `{"type":"error","error":{"type","message"}}`.
fn assert_anthropic_error(resp: &Resp, status: u16, kind: &str) -> String {
    assert_eq!(resp.status.as_u16(), status, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("message: {v}"))
        .to_owned()
}

#[tokio::test]
async fn anthropic_caller_to_openai_reply() {
    let up = Upstream::start([
        json(200, openai_completion("Hello! How can I help?")),
        json(200, openai_completion("again")),
    ])
    .await;
    let gw = gateway(&openai_yaml(&up.url_with("v1"))).await;
    let resp = gw
        .post(
            "/v1/messages",
            ANTHROPIC_HEADERS,
            &json!({
                "model": "chat-default",
                "max_tokens": 100,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": "Hello"}]
            }),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("x-switchyard-provider"), Some("oai"));
    let v = resp.json();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["role"], "assistant");
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello! How can I help?"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    // Anthropic's input_tokens excludes cache reads: 19 prompt tokens, 8 of them cached.
    assert_eq!(v["usage"]["input_tokens"], 11, "{v}");
    assert_eq!(v["usage"]["cache_read_input_tokens"], 8, "{v}");
    assert_eq!(v["usage"]["output_tokens"], 10);

    let call = &up.calls()[0];
    assert_eq!(call.path, "/v1/chat/completions");
    assert_eq!(call.header("authorization"), Some("Bearer sk-test-oai"));
    assert_eq!(call.header("x-api-key"), None, "caller key not forwarded");
    assert_eq!(call.header("anthropic-version"), None);
    let sent = call.json();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    );

    // Current SDKs send `Authorization: Bearer` instead of `x-api-key`.
    let bearer = gw
        .post(
            "/v1/messages",
            &[
                ("authorization", "Bearer sk-ant-caller-secret"),
                ("anthropic-version", "2023-06-01"),
            ],
            &json!({"model": "chat-default", "max_tokens": 10,
                "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(bearer.status, StatusCode::OK, "{}", bearer.text());
    assert_eq!(bearer.json()["content"][0]["text"], "again");
    assert_eq!(
        up.calls()[1].header("authorization"),
        Some("Bearer sk-test-oai")
    );
}

#[tokio::test]
async fn anthropic_caller_to_openai_stream_event_sequence() {
    let up = Upstream::start([sse([openai_text_stream(&["Hello", " world"])])]).await;
    let gw = gateway(&openai_yaml(&up.url_with("v1"))).await;
    let resp = gw
        .post(
            "/v1/messages",
            ANTHROPIC_HEADERS,
            &json!({"model": "chat-default", "max_tokens": 100, "stream": true,
                "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let events = sse_events(&resp.text());
    for e in &events {
        let name = e.event.as_deref().expect("every event is named");
        assert_eq!(e.json()["type"], name, "event name matches data.type");
    }
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| e.event.as_deref())
        .filter(|n| *n != "ping")
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let by = |n: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e.event.as_deref() == Some(n))
            .map(Sse::json)
            .collect()
    };
    let start = &by("message_start")[0]["message"];
    assert_eq!(start["type"], "message");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["content"], json!([]));
    assert_eq!(
        by("content_block_start")[0],
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})
    );
    let text: String = by("content_block_delta")
        .iter()
        .map(|d| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(text, "Hello world");
    let delta = &by("message_delta")[0];
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 2);

    let sent = up.only_call().json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn anthropic_caller_to_openai_tool_use_round_trip() {
    let tool_reply = json!({
        "id": "chatcmpl-tool1",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{"id": "call_abc123", "type": "function", "function":
                    {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
            "logprobs": null,
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 50, "completion_tokens": 15, "total_tokens": 65}
    });
    let up = Upstream::start([json(200, tool_reply)]).await;
    let gw = gateway(&openai_yaml(&up.url_with("v1"))).await;
    let resp = gw
        .post(
            "/v1/messages",
            ANTHROPIC_HEADERS,
            &json!({
                "model": "chat-default",
                "max_tokens": 200,
                "tools": [{"name": "get_weather", "description": "Get the weather",
                    "input_schema": {"type": "object",
                        "properties": {"location": {"type": "string"}}, "required": ["location"]}}],
                "messages": [
                    {"role": "user", "content": "Weather in London, then Paris?"},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                         "input": {"location": "London"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "12C, rain"}]}
                ]
            }),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"],
        json!([{"type": "tool_use", "id": "call_abc123", "name": "get_weather",
            "input": {"location": "Paris"}}])
    );

    let sent = up.only_call().json();
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "get_weather",
            "description": "Get the weather", "parameters": {"type": "object",
                "properties": {"location": {"type": "string"}}, "required": ["location"]}}}])
    );
    let msgs = sent["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 3, "{sent}");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["tool_calls"][0]["id"], "toolu_01");
    assert_eq!(msgs[1]["tool_calls"][0]["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(
        msgs[1]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .expect("arguments text"),
    )
    .expect("json");
    assert_eq!(args, json!({"location": "London"}));
    assert_eq!(msgs[2]["role"], "tool");
    assert_eq!(msgs[2]["tool_call_id"], "toolu_01");
    assert_eq!(msgs[2]["content"], "12C, rain");
}

#[tokio::test]
async fn anthropic_caller_to_openai_streamed_tool_use() {
    let mut body = openai_delta(
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
            "id": "call_abc123", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]}),
        None,
    );
    for frag in ["{\"loc", "ation\":\"Pa", "ris\"}"] {
        body.push_str(&openai_delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}),
            None,
        ));
    }
    body.push_str(&openai_delta(json!({}), Some("tool_calls")));
    body.push_str("data: [DONE]\n\n");
    let up = Upstream::start([sse(body.split_inclusive("\n\n").map(str::to_owned))]).await;
    let gw = gateway(&openai_yaml(&up.url_with("v1"))).await;
    let resp = gw
        .post(
            "/v1/messages",
            ANTHROPIC_HEADERS,
            &json!({"model": "chat-default", "max_tokens": 100, "stream": true,
                "tools": [{"name": "get_weather", "input_schema": {"type": "object",
                    "properties": {"location": {"type": "string"}}}}],
                "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let events: Vec<Value> = sse_events(&resp.text())
        .iter()
        .filter(|e| e.event.as_deref() != Some("ping"))
        .map(Sse::json)
        .collect();
    let block = events
        .iter()
        .find(|e| e["type"] == "content_block_start")
        .expect("a block starts");
    assert_eq!(
        block["content_block"],
        json!({"type": "tool_use", "id": "call_abc123", "name": "get_weather", "input": {}})
    );
    let index = block["index"].clone();
    let partial: String = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| {
            assert_eq!(e["index"], index);
            assert_eq!(e["delta"]["type"], "input_json_delta");
            e["delta"]["partial_json"]
                .as_str()
                .expect("partial_json")
                .to_owned()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).expect("input json"),
        json!({"location": "Paris"})
    );
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .expect("message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(events.last().expect("events")["type"], "message_stop");
}

#[tokio::test]
async fn anthropic_caller_errors_in_anthropic_shape() {
    let up = Upstream::start([json_with(
        429,
        &[("retry-after", "12")],
        openai_error(
            "Rate limit reached",
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
    )])
    .await;
    let gw = gateway(&openai_yaml(&up.url_with("v1"))).await;
    let ask = |model: &str| json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});

    let unknown = gw
        .post("/v1/messages", ANTHROPIC_HEADERS, &ask("no-such-model"))
        .await;
    let msg = assert_anthropic_error(&unknown, 404, "not_found_error");
    assert!(msg.contains("no-such-model"), "{msg}");

    let malformed = gw
        .call(
            Method::POST,
            "/v1/messages",
            &[
                ("content-type", "application/json"),
                ("x-api-key", "k"),
                ("anthropic-version", "2023-06-01"),
            ],
            "{\"model\": ",
        )
        .await;
    assert_anthropic_error(&malformed, 400, "invalid_request_error");

    let no_max_tokens = gw
        .post(
            "/v1/messages",
            ANTHROPIC_HEADERS,
            &json!({"model": "chat-default", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    let msg = assert_anthropic_error(&no_max_tokens, 400, "invalid_request_error");
    assert!(msg.contains("max_tokens"), "{msg}");

    let too_large = gw
        .post(
            "/v1/messages",
            ANTHROPIC_HEADERS,
            &json!({"model": "chat-default", "max_tokens": 10,
                "messages": [{"role": "user", "content": "x".repeat(5000)}]}),
        )
        .await;
    assert_anthropic_error(&too_large, 413, "request_too_large");

    let wrong_method = gw.get("/v1/messages").await;
    assert_eq!(wrong_method.status.as_u16(), 405);
    assert_eq!(
        wrong_method.json()["type"],
        "error",
        "{}",
        wrong_method.text()
    );

    assert_eq!(up.count(), 0);
    let limited = gw
        .post("/v1/messages", ANTHROPIC_HEADERS, &ask("chat-default"))
        .await;
    assert_anthropic_error(&limited, 429, "rate_limit_error");
    assert_eq!(limited.header("retry-after"), Some("12"));
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn anthropic_caller_count_tokens() {
    let up = Upstream::start([]).await;
    let gw = gateway(&openai_yaml(&up.url_with("v1"))).await;
    let resp = gw
        .post(
            "/v1/messages/count_tokens",
            ANTHROPIC_HEADERS,
            &json!({"model": "chat-default", "system": "You are a scientist",
                "messages": [{"role": "user", "content": "Hello, Claude"}]}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let v = resp.json();
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["input_tokens"], "{v}");
    assert!(v["input_tokens"].as_u64().is_some_and(|n| n > 0), "{v}");

    let unknown = gw
        .post(
            "/v1/messages/count_tokens",
            ANTHROPIC_HEADERS,
            &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_anthropic_error(&unknown, 404, "not_found_error");
    assert_eq!(up.count(), 0, "counting needs no upstream call");
}

#[tokio::test]
async fn anthropic_caller_lists_models_in_anthropic_shape() {
    let up = Upstream::start([]).await;
    let gw = gateway(&openai_yaml(&up.url_with("v1"))).await;
    let resp = gw
        .call(Method::GET, "/v1/models", ANTHROPIC_HEADERS, "")
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["data"][0]["type"], "model", "{v}");
    assert_eq!(v["data"][0]["id"], "chat-default");
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], "chat-default");
}
