//! OpenAI callers → OpenAI-format upstreams: chat (JSON and SSE), embeddings, models, errors,
//! model-name resolution, and the built-in mock provider. Asserts on the wire both ways.

mod common;

use base64::Engine as _;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use common::*;

fn one_provider(url: &str, key: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
{extra}providers:
  - name: primary
    kind: openai_compatible
    base_url: {url}
    api_key: {key}
    models: [\"gpt-*\", text-embedding-3-small]
models:
  - name: chat-default
    targets: [primary/gpt-4o-mini]
"
    )
}

/// The OpenAI error envelope, with exactly its four fields.
fn assert_openai_error(resp: &Resp, status: u16) -> Value {
    assert_eq!(resp.status.as_u16(), status, "body: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    let obj = v.as_object().expect("object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["error"], "{v}");
    let err = v["error"].as_object().expect("error object");
    let mut keys: Vec<&String> = err.keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    v["error"].clone()
}

#[tokio::test]
async fn chat_reply_shape_headers_and_the_upstream_request() {
    let up = Upstream::start([json(200, openai_completion("Hello! How can I help?"))]).await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;

    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"}
            ],
            "temperature": 0.2,
            "max_tokens": 50,
            "seed": 42,
            "logprobs": true,
            "top_logprobs": 2,
            "service_tier": "flex",
            "metadata": {"team": "search"}
        }))
        .await;

    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("x-switchyard-provider"), Some("primary"));
    assert_eq!(resp.header("x-switchyard-model"), Some("gpt-4o-mini"));
    assert_eq!(resp.header("x-switchyard-attempts"), Some("1"));
    let rid = resp.header("x-request-id").expect("x-request-id");
    assert!(!rid.is_empty());
    let overhead = resp
        .header("x-switchyard-overhead-us")
        .expect("x-switchyard-overhead-us");
    overhead
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("overhead is a number: {overhead}"));

    // Caller and upstream both speak OpenAI: the reply is the upstream's own JSON, every field
    // kept (annotations, audio token details, service_tier, system_fingerprint), not re-encoded.
    assert_eq!(resp.json(), openai_completion("Hello! How can I help?"));

    let call = up.only_call();
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.path, "/v1/chat/completions");
    assert_eq!(call.header("authorization"), Some("Bearer sk-test-primary"));
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert!(
        !call
            .headers
            .values()
            .any(|v| v.to_str().unwrap_or("").contains("sk-caller-secret")),
        "the caller's key must not reach the upstream: {:?}",
        call.headers
    );
    assert_eq!(
        call.json(),
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"}
            ],
            "temperature": 0.2,
            "max_tokens": 50,
            "seed": 42,
            "logprobs": true,
            "top_logprobs": 2,
            "service_tier": "flex",
            "metadata": {"team": "search"}
        })
    );
}

#[tokio::test]
async fn a_callers_request_id_is_kept() {
    let up = Upstream::start([json(200, openai_completion("ok"))]).await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;
    let resp = gw
        .post(
            "/v1/chat/completions",
            &[("x-request-id", "trace-abc-123")],
            &json!({"model": "chat-default", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("x-request-id"), Some("trace-abc-123"));
}

#[tokio::test]
async fn stream_framing_and_usage_hidden_unless_asked() {
    let body = openai_text_stream(&["Hello", " world", "!"]);
    // Cut inside the first event's `data:` prefix, inside a JSON string, and between the `\n`s
    // of an event's end; the remainder (several events and [DONE]) arrives in one write.
    let first_end = body.find("\n\n").expect("event end") + 2;
    let pieces = split_at(&body, &[3, 40, first_end - 1, first_end + 25]);
    let up = Upstream::start([sse(pieces)]).await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;

    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [{"role": "user", "content": "Say hello"}],
            "stream": true
        }))
        .await;

    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert_eq!(resp.header("x-switchyard-provider"), Some("primary"));
    let chunks = openai_chunks(&resp.text());
    assert_eq!(openai_text(&chunks), "Hello world!");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        assert_eq!(c["id"], "chatcmpl-stream1", "{c}");
        assert!(c.get("usage").is_none_or(Value::is_null), "no usage: {c}");
        assert_eq!(c["choices"].as_array().map(Vec::len), Some(1), "{c}");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");

    let call = up.only_call();
    assert_eq!(call.header("accept"), Some("text/event-stream"));
    let sent = call.json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn stream_usage_chunk_when_the_caller_asks() {
    let body = openai_text_stream(&["Hi", " there"]);
    let up = Upstream::start([sse([body])]).await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;

    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .await;

    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let chunks = openai_chunks(&resp.text());
    assert_eq!(openai_text(&chunks), "Hi there");
    let (usage_chunk, rest) = chunks.split_last().expect("chunks");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 12);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 2);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 14);
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
        4
    );
    for c in rest {
        // OpenAI documents `usage: null` on every other chunk when usage is asked for.
        assert_eq!(c.get("usage"), Some(&Value::Null), "{c}");
    }
    assert_eq!(
        up.only_call().json()["stream_options"],
        json!({"include_usage": true})
    );
}

#[tokio::test]
async fn stream_parallel_tool_calls_keep_fragments_and_indexes() {
    let fragments: [(u32, &str); 4] = [
        (0, "{\"loc"),
        (0, "ation\": \"Paris\"}"),
        (1, "{\"tz\":"),
        (1, "\"CET\"}"),
    ];
    let mut body = openai_delta(
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_A",
            "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        None,
    );
    body.push_str(&openai_delta(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": fragments[0].1}}]}),
        None,
    ));
    body.push_str(&openai_delta(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": fragments[1].1}}]}),
        None,
    ));
    body.push_str(&openai_delta(
        json!({"tool_calls": [{"index": 1, "id": "call_B", "type": "function",
            "function": {"name": "get_time", "arguments": ""}}]}),
        None,
    ));
    body.push_str(&openai_delta(
        json!({"tool_calls": [{"index": 1, "function": {"arguments": fragments[2].1}}]}),
        None,
    ));
    body.push_str(&openai_delta(
        json!({"tool_calls": [{"index": 1, "function": {"arguments": fragments[3].1}}]}),
        None,
    ));
    body.push_str(&openai_delta(json!({}), Some("tool_calls")));
    body.push_str("data: [DONE]\n\n");
    // Every event in its own write, and one event split in the middle.
    let mut pieces: Vec<String> = body.split_inclusive("\n\n").map(str::to_owned).collect();
    let third = pieces.remove(2);
    pieces.insert(2, third[..30].to_owned());
    pieces.insert(3, third[30..].to_owned());
    let up = Upstream::start([sse(pieces)]).await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;

    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [{"role": "user", "content": "Weather and time in Paris?"}],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters":
                    {"type": "object", "properties": {"location": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "get_time", "parameters":
                    {"type": "object", "properties": {"tz": {"type": "string"}}}}}
            ],
            "parallel_tool_calls": true,
            "stream": true
        }))
        .await;

    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let chunks = openai_chunks(&resp.text());
    let mut starts = Vec::new();
    let mut seen = Vec::new();
    for c in &chunks {
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let index = tc["index"].as_u64().expect("index") as u32;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(tc["type"], "function");
                starts.push((index, id.to_owned(), tc["function"]["name"].clone()));
            }
            if let Some(a) = tc["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                seen.push((index, a.to_owned()));
            }
        }
    }
    assert_eq!(
        starts,
        [
            (0, "call_A".to_owned(), json!("get_weather")),
            (1, "call_B".to_owned(), json!("get_time"))
        ]
    );
    let want: Vec<(u32, String)> = fragments.iter().map(|(i, a)| (*i, a.to_string())).collect();
    assert_eq!(seen, want, "fragments arrive as sent, in order");
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");

    let sent = up.only_call().json();
    assert_eq!(sent["parallel_tool_calls"], true);
    assert_eq!(sent["tools"][1]["function"]["name"], "get_time");
}

fn embedding_reply(embedding: Value) -> Value {
    json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8}
    })
}

#[tokio::test]
async fn embeddings_float() {
    let up = Upstream::start([json(200, embedding_reply(json!([0.5, -1.0, 0.25])))]).await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;
    let resp = gw
        .post(
            "/v1/embeddings",
            &[],
            &json!({"model": "primary/text-embedding-3-small",
                "input": "The food was delicious", "dimensions": 3}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json(), embedding_reply(json!([0.5, -1.0, 0.25])));
    let call = up.only_call();
    assert_eq!(call.path, "/v1/embeddings");
    assert_eq!(
        call.json(),
        json!({"model": "text-embedding-3-small", "input": "The food was delicious", "dimensions": 3})
    );
}

#[tokio::test]
async fn embeddings_base64() {
    let mut raw = Vec::new();
    for f in [0.5f32, -1.0, 0.25] {
        raw.extend_from_slice(&f.to_le_bytes());
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let up = Upstream::start([json(200, embedding_reply(json!(b64)))]).await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;
    let resp = gw
        .post(
            "/v1/embeddings",
            &[],
            &json!({"model": "primary/text-embedding-3-small",
                "input": ["The food was delicious"], "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json(), embedding_reply(json!(b64)));
    assert_eq!(up.only_call().json()["encoding_format"], "base64");
}

#[tokio::test]
async fn models_list_and_one_model() {
    let up = Upstream::start([]).await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;

    let list = gw.get("/v1/models").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    assert_eq!(
        list.json(),
        json!({"object": "list", "data": [
            {"id": "chat-default", "object": "model", "created": 0, "owned_by": "switchyard"},
            {"id": "primary/text-embedding-3-small", "object": "model", "created": 0, "owned_by": "primary"}
        ]})
    );

    let one = gw.get("/v1/models/chat-default").await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    assert_eq!(
        one.json(),
        json!({"id": "chat-default", "object": "model", "created": 0, "owned_by": "switchyard"})
    );
    let slash = gw.get("/v1/models/primary/text-embedding-3-small").await;
    assert_eq!(slash.status, StatusCode::OK, "{}", slash.text());
    assert_eq!(slash.json()["id"], "primary/text-embedding-3-small");

    let missing = gw.get("/v1/models/nope").await;
    assert_openai_error(&missing, 404);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn caller_errors_in_openai_shape() {
    let up = Upstream::start([]).await;
    let gw = gateway(&one_provider(
        &up.url_with("v1"),
        "sk-test-primary",
        "max_body_bytes: 512\n",
    ))
    .await;

    let unknown = gw
        .chat(&json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let e = assert_openai_error(&unknown, 404);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("no-such-model"),
        "{e}"
    );
    assert_eq!(e["param"], "model");

    let malformed = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            "{\"model\": \"chat-default\", \"messages\": [",
        )
        .await;
    let e = assert_openai_error(&malformed, 400);
    assert_eq!(e["type"], "invalid_request_error");

    let no_messages = gw.chat(&json!({"model": "chat-default"})).await;
    let e = assert_openai_error(&no_messages, 400);
    assert_eq!(e["param"], "messages", "{e}");
    assert_eq!(e["type"], "invalid_request_error");

    let wrong_method = gw.get("/v1/chat/completions").await;
    assert_openai_error(&wrong_method, 405);

    let no_path = gw
        .post("/v1/nope", &[], &json!({"model": "chat-default"}))
        .await;
    assert_openai_error(&no_path, 404);

    let big = "x".repeat(2000);
    let too_large = gw
        .chat(&json!({"model": "chat-default", "messages": [{"role": "user", "content": big}]}))
        .await;
    let e = assert_openai_error(&too_large, 413);
    assert_eq!(e["type"], "invalid_request_error");

    assert_eq!(up.count(), 0, "no caller error reaches the upstream");
}

#[tokio::test]
async fn upstream_400_stays_400_with_its_message() {
    let up = Upstream::start([json(
        400,
        openai_error(
            "Invalid value for 'temperature': must be between 0 and 2.",
            "invalid_request_error",
            Some("temperature"),
            Some("invalid_value"),
        ),
    )])
    .await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;
    let resp = gw
        .chat(&json!({"model": "chat-default", "temperature": 7,
            "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let e = assert_openai_error(&resp, 400);
    assert_eq!(
        e["message"],
        "Invalid value for 'temperature': must be between 0 and 2."
    );
    assert_eq!(e["param"], "temperature");
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn upstream_401_is_a_502_that_shows_no_key() {
    let key = "sk-proj-Zq9xW3secretKEYtail";
    let up = Upstream::start([json(
        401,
        openai_error(
            "Incorrect API key provided: sk-proj-****tail. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
    )])
    .await;
    let gw = gateway(&one_provider(&up.url_with("v1"), key, "")).await;
    let resp = gw
        .chat(&json!({"model": "chat-default", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let e = assert_openai_error(&resp, 502);
    let msg = e["message"].as_str().unwrap_or("");
    assert!(msg.contains("credentials"), "{msg}");
    let text = resp.text();
    for part in ["sk-proj", "Zq9x", "secretKEY", "tail", "invalid_api_key"] {
        assert!(!text.contains(part), "{part} leaked: {text}");
    }
    assert_eq!(
        up.only_call().header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
}

#[tokio::test]
async fn upstream_429_keeps_retry_after_when_no_target_is_left() {
    let up = Upstream::start([json_with(
        429,
        &[("retry-after", "20")],
        openai_error(
            "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1.",
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
    )])
    .await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;
    let resp = gw
        .chat(&json!({"model": "chat-default", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let e = assert_openai_error(&resp, 429);
    assert_eq!(resp.header("retry-after"), Some("20"));
    assert!(
        e["message"].as_str().unwrap_or("").contains("Rate limit"),
        "{e}"
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn bare_model_names_and_provider_slash_model() {
    let up = Upstream::start([
        json(200, openai_completion("bare")),
        json(200, openai_completion("direct")),
    ])
    .await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;

    let bare = gw
        .chat(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(bare.status, StatusCode::OK, "{}", bare.text());
    assert_eq!(bare.header("x-switchyard-provider"), Some("primary"));
    assert_eq!(bare.header("x-switchyard-model"), Some("gpt-4o-mini"));

    let direct = gw
        .chat(&json!({"model": "primary/gpt-4.1-nano", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(direct.status, StatusCode::OK, "{}", direct.text());
    assert_eq!(direct.header("x-switchyard-model"), Some("gpt-4.1-nano"));
    assert_eq!(direct.json()["choices"][0]["message"]["content"], "direct");

    let calls = up.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].json()["model"], "gpt-4o-mini");
    assert_eq!(calls[1].json()["model"], "gpt-4.1-nano");

    // Not offered (`models: [gpt-*, ...]`) and not `provider/model`: 404, no upstream call.
    let other = gw
        .chat(&json!({"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_openai_error(&other, 404);
    let unknown_provider = gw
        .chat(&json!({"model": "nobody/gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_openai_error(&unknown_provider, 404);
    assert_eq!(up.count(), 2);
}

const MOCK_ONLY: &str = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n";

#[tokio::test]
async fn builtin_mock_echo() {
    let gw = gateway(MOCK_ONLY).await;
    let resp = gw
        .chat(&json!({"model": "mock/echo", "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "ping pong"}
        ]}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("mock"));
    let v = resp.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "ping pong");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{v}");

    // The bare name resolves too.
    let bare = gw
        .chat(&json!({"model": "echo", "messages": [{"role": "user", "content": "again"}]}))
        .await;
    assert_eq!(bare.json()["choices"][0]["message"]["content"], "again");
}

#[tokio::test]
async fn builtin_mock_lorem_streams_max_tokens_words() {
    let gw = gateway(MOCK_ONLY).await;
    let resp = gw
        .chat(
            &json!({"model": "mock/lorem", "max_tokens": 7, "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let chunks = openai_chunks(&resp.text());
    let text = openai_text(&chunks);
    assert_eq!(text.split_whitespace().count(), 7, "{text:?}");
    assert!(text.starts_with("lorem ipsum"), "{text:?}");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0].get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("length")]);
    let usage = &chunks.last().expect("chunks")["usage"];
    assert_eq!(usage["completion_tokens"], 7, "{usage}");
}

#[tokio::test]
async fn builtin_mock_calls_a_tool_when_tools_are_given() {
    let gw = gateway(MOCK_ONLY).await;
    let resp = gw
        .chat(&json!({"model": "mock/echo",
            "messages": [{"role": "user", "content": "Paris"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"]}}}]}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let v = resp.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(
        call["function"]["arguments"]
            .as_str()
            .expect("arguments text"),
    )
    .expect("arguments are JSON");
    assert!(args["city"].is_string(), "{args}");
}

#[tokio::test]
async fn a_streamed_reply_reaches_an_openai_caller_in_the_upstreams_own_bytes() {
    // Fields switchyard has no place for (logprobs, system_fingerprint) reach the caller as
    // OpenAI sent them: chunks are forwarded, not re-serialised.
    let chunk = |delta: &str, logprobs: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-lp\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"gpt-up\",\"system_fingerprint\":\"fp_x\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":{logprobs},\"finish_reason\":{finish}}}],\"usage\":null}}\n\n"
        )
    };
    let forwarded = [
        chunk(r#"{"role":"assistant","content":""}"#, "null", "null"),
        chunk(
            r#"{"content":"Hi"}"#,
            r#"{"content":[{"token":"Hi","logprob":-0.25,"bytes":[72,105],"top_logprobs":[]}],"refusal":null}"#,
            "null",
        ),
        chunk("{}", "null", "\"stop\""),
    ]
    .concat();
    let usage = "data: {\"id\":\"chatcmpl-lp\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"gpt-up\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n";
    let up = Upstream::start([sse([format!("{forwarded}{usage}data: [DONE]\n\n")])]).await;
    let gw = gateway(&one_provider(&up.url_with("v1"), "sk-test-primary", "")).await;

    let resp = gw
        .chat(&json!({
            "model": "chat-default",
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": true,
            "logprobs": true
        }))
        .await;

    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    // Byte for byte, then no usage chunk (the caller did not ask for one), then [DONE].
    assert_eq!(resp.text(), format!("{forwarded}data: [DONE]\n\n"));
    let sent = up.only_call().json();
    assert_eq!(sent["logprobs"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}
