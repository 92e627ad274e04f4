//! The OpenAI wire format (Chat Completions, Embeddings, Models), both directions.
//!
//! Used by the OpenAI caller surface (decode requests, encode replies and chunks) and by every
//! OpenAI-format upstream (encode requests, decode replies and chunks): OpenAI, Azure OpenAI and
//! the compatible servers (Groq, Mistral, vLLM, Ollama, ...). Unknown request fields are kept in
//! `extra` and written back untouched when the upstream speaks this format too.

use base64::Engine as _;
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::ir::{
    ChatReply, ChatRequest, Choice, Embedding, EmbeddingsReply, EmbeddingsRequest, Error,
    ErrorKind, FinishReason, Format, Image, Message, ModelInfo, Part, ResponseFormat, Role,
    StreamEvent, Tool, ToolCall, ToolChoice, Usage,
};
use crate::{sse, wire};

// ---------------------------------------------------------------------------------------------
// Requests: decode (caller surface)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChatRequestWire {
    model: String,
    messages: Vec<MessageWire>,
    #[serde(default)]
    tools: Option<Vec<ToolWire>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<StopWire>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptionsWire>,
    #[serde(default)]
    user: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StopWire {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptionsWire {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct MessageWire {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallWire>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct ToolCallWire {
    #[serde(default)]
    id: Option<String>,
    function: FunctionCallWire,
}

#[derive(Deserialize)]
struct FunctionCallWire {
    name: String,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ToolWire {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: FunctionWire,
}

#[derive(Deserialize)]
struct FunctionWire {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

/// Maps a serde error to a 400 that says where the body is wrong.
fn json_error(e: serde_json::Error) -> Error {
    let msg = if e.is_data() {
        format!("invalid request body: {e}")
    } else {
        format!("request body is not valid JSON: {e}")
    };
    Error::invalid(msg).with_param(String::new())
}

/// A serde error with the failing path as `param` (`messages[0].content`), the missing field
/// appended when that is the complaint.
fn located_json_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let mut path = e.path().to_string();
    let inner = e.into_inner();
    let text = inner.to_string();
    if let Some(field) = text
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        path = if path == "." {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
    }
    let err = json_error(inner);
    if path.is_empty() || path == "." {
        Error { param: None, ..err }
    } else {
        err.with_param(path)
    }
}

/// Decodes a Chat Completions request body.
pub fn decode_chat_request(body: &[u8]) -> Result<ChatRequest, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let wire: ChatRequestWire =
        serde_path_to_error::deserialize(&mut de).map_err(located_json_error)?;
    // `deserialize` stops after the first document: trailing bytes are a malformed body, not
    // something to ignore (`from_slice` checks this; a bare `Deserializer` does not).
    de.end().map_err(json_error)?;
    let mut req = ChatRequest::new(wire.model, Format::OpenAi);
    if wire.messages.is_empty() {
        return Err(
            Error::invalid("'messages' must contain at least one message").with_param("messages"),
        );
    }
    req.messages = wire
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| decode_message(i, m))
        .collect::<Result<_, _>>()?;
    req.tools = wire
        .tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if t.kind.as_deref().is_some_and(|k| k != "function") {
                return Err(
                    Error::invalid("only tools of type 'function' are supported")
                        .with_param(format!("tools[{i}].type")),
                );
            }
            Ok(Tool {
                name: t.function.name,
                description: t.function.description,
                parameters: t
                    .function
                    .parameters
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                strict: t.function.strict,
            })
        })
        .collect::<Result<_, _>>()?;
    req.tool_choice = wire.tool_choice.map(decode_tool_choice).transpose()?;
    req.parallel_tool_calls = wire.parallel_tool_calls;
    req.max_tokens = wire.max_tokens;
    let mut extra = wire.extra;
    // `max_completion_tokens` stays in `extra` so an OpenAI upstream receives the caller's own
    // field name (reasoning models refuse `max_tokens`); other formats read it from the IR.
    if req.max_tokens.is_none() {
        req.max_tokens = extra
            .get("max_completion_tokens")
            .and_then(Value::as_u64)
            .map(|v| v.min(u32::MAX as u64) as u32);
    }
    req.temperature = wire.temperature;
    req.top_p = wire.top_p;
    req.stop = match wire.stop {
        None => Vec::new(),
        Some(StopWire::One(s)) => vec![s],
        Some(StopWire::Many(v)) => v,
    };
    req.n = wire.n;
    req.response_format = wire
        .response_format
        .map(decode_response_format)
        .transpose()?;
    req.stream = wire.stream.unwrap_or(false);
    req.include_usage = wire
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    req.user = wire.user;
    extra.remove("stream_options");
    req.extra = extra;
    Ok(req)
}

fn decode_message(i: usize, m: MessageWire) -> Result<Message, Error> {
    let role = match m.role.as_str() {
        "system" => Role::System,
        "developer" => Role::Developer,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        other => {
            return Err(Error::invalid(format!(
                "unknown role '{other}': expected system, developer, user, assistant or tool"
            ))
            .with_param(format!("messages[{i}].role")))
        }
    };
    let content = match m.content {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![Part::Text(s)],
        Some(Value::Array(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(j, p)| {
                decode_part(p).map_err(|e| e.with_param(format!("messages[{i}].content[{j}]")))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(
                Error::invalid("message content must be a string or an array of parts")
                    .with_param(format!("messages[{i}].content")),
            )
        }
    };
    let tool_calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(j, c)| ToolCall {
            id: c.id.unwrap_or_else(|| format!("call_{i}_{j}")),
            name: c.function.name,
            arguments: c.function.arguments.unwrap_or_default(),
        })
        .collect();
    let tool_call_id = match (role, m.tool_call_id) {
        // Legacy `function` messages carry only the function name.
        (Role::Tool, None) if m.role == "function" => m.name.clone(),
        (Role::Tool, None) => {
            return Err(Error::invalid("a tool message needs 'tool_call_id'")
                .with_param(format!("messages[{i}].tool_call_id")))
        }
        (_, id) => id,
    };
    Ok(Message {
        role,
        content,
        tool_calls,
        tool_call_id,
        name: m.name,
        extra: m.extra,
    })
}

fn decode_part(p: Value) -> Result<Part, Error> {
    let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "text" => match p.get("text").and_then(Value::as_str) {
            Some(t) => Ok(Part::Text(t.to_owned())),
            None => Err(Error::invalid("a text part needs a string 'text'")),
        },
        "image_url" => {
            let img = p.get("image_url");
            let url = img
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid("an image_url part needs 'image_url.url'"))?;
            let detail = img
                .and_then(|i| i.get("detail"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(Part::Image(image_from_url(url, detail)))
        }
        "" => Err(Error::invalid("a content part needs a 'type'")),
        _ => Ok(Part::Other(p)),
    }
}

/// A `data:` URL becomes inline base64 so formats without URL images can carry it.
fn image_from_url(url: &str, detail: Option<String>) -> Image {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((mime, data)) = rest.split_once(";base64,") {
            return Image::Base64 {
                media_type: mime.to_owned(),
                data: data.to_owned(),
            };
        }
    }
    Image::Url {
        url: url.to_owned(),
        detail,
    }
}

fn decode_tool_choice(v: Value) -> Result<ToolChoice, Error> {
    match &v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            _ => Err(Error::invalid(format!(
                "tool_choice '{s}' is not one of auto, none, required"
            ))
            .with_param("tool_choice")),
        },
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Tool(n.to_owned()))
            .ok_or_else(|| {
                Error::invalid("tool_choice object needs 'function.name'").with_param("tool_choice")
            }),
        _ => {
            Err(Error::invalid("tool_choice must be a string or an object")
                .with_param("tool_choice"))
        }
    }
}

fn decode_response_format(v: Value) -> Result<ResponseFormat, Error> {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let js = v.get("json_schema").ok_or_else(|| {
                Error::invalid("response_format json_schema needs 'json_schema'")
                    .with_param("response_format.json_schema")
            })?;
            Ok(ResponseFormat::JsonSchema {
                name: js
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_owned(),
                schema: js.get("schema").cloned().unwrap_or_else(|| json!({})),
                strict: js.get("strict").and_then(Value::as_bool),
                description: js
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        }
        _ => Err(Error::invalid(format!(
            "response_format type '{kind}' is not one of text, json_object, json_schema"
        ))
        .with_param("response_format.type")),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: encode (upstream)
// ---------------------------------------------------------------------------------------------

/// How an upstream of this format wants a request written.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOptions {
    /// Write the token cap as `max_completion_tokens` (OpenAI itself) rather than `max_tokens`
    /// (what most compatible servers understand).
    pub max_completion_tokens: bool,
    /// Ask for the usage chunk on streams (`stream_options.include_usage`). On for every
    /// upstream that accepts it, so that no stream is priced at $0.
    pub stream_usage: bool,
}

/// Encodes a chat request for an OpenAI-format upstream serving `model`.
pub fn encode_chat_request(req: &ChatRequest, model: &str, opts: RequestOptions) -> Vec<u8> {
    let passthrough = req.source == Format::OpenAi;
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert(
        "messages".into(),
        Value::Array(
            req.messages
                .iter()
                .map(|m| encode_message(m, passthrough))
                .collect(),
        ),
    );
    if !req.tools.is_empty() {
        out.insert(
            "tools".into(),
            Value::Array(req.tools.iter().map(encode_tool).collect()),
        );
    }
    if let Some(tc) = &req.tool_choice {
        out.insert("tool_choice".into(), encode_tool_choice(tc));
    }
    if let Some(p) = req.parallel_tool_calls {
        out.insert("parallel_tool_calls".into(), Value::Bool(p));
    }
    if let Some(mt) = req.max_tokens {
        let caller_field = passthrough && req.extra.contains_key("max_completion_tokens");
        if !caller_field {
            let field = if opts.max_completion_tokens {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            out.insert(field.into(), json!(mt));
        } else if req
            .extra
            .get("max_completion_tokens")
            .and_then(Value::as_u64)
            != Some(mt as u64)
        {
            out.insert("max_tokens".into(), json!(mt));
        }
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        out.insert("top_p".into(), json!(t));
    }
    if !req.stop.is_empty() {
        out.insert("stop".into(), json!(req.stop));
    }
    if let Some(n) = req.n {
        out.insert("n".into(), json!(n));
    }
    if let Some(rf) = &req.response_format {
        out.insert("response_format".into(), encode_response_format(rf));
    }
    if req.stream {
        out.insert("stream".into(), Value::Bool(true));
        if opts.stream_usage {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(u) = &req.user {
        out.insert("user".into(), Value::String(u.clone()));
    }
    if passthrough {
        for (k, v) in &req.extra {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    serde_json::to_vec(&Value::Object(out)).unwrap_or_default()
}

fn role_str(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn encode_message(m: &Message, passthrough: bool) -> Value {
    let mut out = Map::new();
    out.insert("role".into(), Value::String(role_str(m.role).into()));
    let content = encode_content(&m.content, passthrough);
    out.insert("content".into(), content);
    if let Some(n) = &m.name {
        out.insert("name".into(), Value::String(n.clone()));
    }
    if !m.tool_calls.is_empty() {
        out.insert(
            "tool_calls".into(),
            Value::Array(m.tool_calls.iter().map(encode_tool_call).collect()),
        );
    }
    if let Some(id) = &m.tool_call_id {
        out.insert("tool_call_id".into(), Value::String(id.clone()));
    }
    if passthrough {
        for (k, v) in &m.extra {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Value::Object(out)
}

fn encode_content(parts: &[Part], passthrough: bool) -> Value {
    match parts {
        [] => Value::Null,
        [Part::Text(t)] => Value::String(t.clone()),
        _ => Value::Array(
            parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(json!({"type": "text", "text": t})),
                    Part::Image(Image::Url { url, detail }) => {
                        let mut img = json!({"url": url});
                        if let Some(d) = detail {
                            img["detail"] = Value::String(d.clone());
                        }
                        Some(json!({"type": "image_url", "image_url": img}))
                    }
                    Part::Image(Image::Base64 { media_type, data }) => Some(json!({
                        "type": "image_url",
                        "image_url": {"url": format!("data:{media_type};base64,{data}")}
                    })),
                    Part::Other(v) if passthrough => Some(v.clone()),
                    Part::Other(_) => None,
                })
                .collect(),
        ),
    }
}

fn encode_tool_call(c: &ToolCall) -> Value {
    json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})
}

fn encode_tool(t: &Tool) -> Value {
    let mut f = json!({"name": t.name, "parameters": t.parameters});
    if let Some(d) = &t.description {
        f["description"] = Value::String(d.clone());
    }
    if let Some(s) = t.strict {
        f["strict"] = Value::Bool(s);
    }
    json!({"type": "function", "function": f})
}

fn encode_tool_choice(tc: &ToolChoice) -> Value {
    match tc {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": n}}),
    }
}

fn encode_response_format(rf: &ResponseFormat) -> Value {
    match rf {
        ResponseFormat::Text => json!({"type": "text"}),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
            description,
        } => {
            let mut js = json!({"name": name, "schema": schema});
            if let Some(s) = strict {
                js["strict"] = Value::Bool(*s);
            }
            if let Some(d) = description {
                js["description"] = Value::String(d.clone());
            }
            json!({"type": "json_schema", "json_schema": js})
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChatReplyWire {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    created: u64,
    choices: Vec<ChoiceWire>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
struct ChoiceWire {
    #[serde(default)]
    index: u32,
    message: ReplyMessageWire,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ReplyMessageWire {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallWire>>,
}

#[derive(Deserialize, Default)]
struct UsageWire {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetailsWire>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetailsWire>,
}

#[derive(Deserialize, Default)]
struct PromptDetailsWire {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct CompletionDetailsWire {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<UsageWire> for Usage {
    fn from(u: UsageWire) -> Self {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

fn protocol_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("upstream sent an invalid {what}: {e}"),
    )
}

/// Decodes a finish reason string.
pub fn decode_finish_reason(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

fn finish_reason_str(r: &FinishReason) -> &str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(s) => s,
    }
}

/// Decodes a non-streamed Chat Completions reply from an upstream.
pub fn decode_chat_reply(body: &[u8]) -> Result<ChatReply, Error> {
    let w: ChatReplyWire =
        serde_json::from_slice(body).map_err(|e| protocol_error("chat completion", e))?;
    Ok(ChatReply {
        id: w.id,
        model: w.model,
        created: w.created,
        choices: w
            .choices
            .into_iter()
            .map(|c| {
                let mut content = Vec::new();
                if let Some(t) = c.message.content {
                    content.push(Part::Text(t));
                }
                let mut extra = Map::new();
                if let Some(r) = c.message.refusal {
                    extra.insert("refusal".into(), Value::String(r));
                }
                Choice {
                    index: c.index,
                    message: Message {
                        role: Role::Assistant,
                        content,
                        tool_calls: c
                            .message
                            .tool_calls
                            .unwrap_or_default()
                            .into_iter()
                            .enumerate()
                            .map(|(j, t)| ToolCall {
                                id: t.id.unwrap_or_else(|| format!("call_{j}")),
                                name: t.function.name,
                                arguments: t.function.arguments.unwrap_or_default(),
                            })
                            .collect(),
                        tool_call_id: None,
                        name: None,
                        extra,
                    },
                    finish_reason: c.finish_reason.as_deref().map(decode_finish_reason),
                }
            })
            .collect(),
        usage: w.usage.map(Usage::from),
    })
}

fn encode_usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// Encodes a chat reply for an OpenAI caller.
pub fn encode_chat_reply(r: &ChatReply) -> Vec<u8> {
    let choices: Vec<Value> = r
        .choices
        .iter()
        .map(|c| {
            let text: Option<String> = if c.message.content.is_empty() {
                None
            } else {
                Some(c.message.joined_text())
            };
            let mut msg = json!({
                "role": "assistant",
                "content": text,
                "refusal": c.message.extra.get("refusal").cloned().unwrap_or(Value::Null),
            });
            if !c.message.tool_calls.is_empty() {
                msg["tool_calls"] =
                    Value::Array(c.message.tool_calls.iter().map(encode_tool_call).collect());
            }
            json!({
                "index": c.index,
                "message": msg,
                "logprobs": null,
                "finish_reason": c.finish_reason.as_ref().map(finish_reason_str),
            })
        })
        .collect();
    let mut out = json!({
        "id": r.id,
        "object": "chat.completion",
        "created": r.created,
        "model": r.model,
        "choices": choices,
    });
    if let Some(u) = &r.usage {
        out["usage"] = encode_usage(u);
    }
    serde_json::to_vec(&out).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChunkWire {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    choices: Vec<ChunkChoiceWire>,
    #[serde(default)]
    usage: Option<UsageWire>,
    #[serde(default)]
    error: Option<ErrorBodyWire>,
}

#[derive(Deserialize)]
struct ChunkChoiceWire {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<DeltaWire>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaWire {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDeltaWire>>,
}

#[derive(Deserialize)]
struct ToolCallDeltaWire {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDeltaWire>,
}

#[derive(Deserialize)]
struct FunctionDeltaWire {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Decodes an OpenAI-format upstream's chunk stream.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    done: bool,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }
}

impl wire::StreamDecoder for StreamDecoder {
    fn event(&mut self, ev: &sse::Event, out: &mut Vec<StreamEvent>) -> Result<(), Error> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let c: ChunkWire =
            serde_json::from_str(data).map_err(|e| protocol_error("stream chunk", e))?;
        if let Some(e) = c.error {
            return Err(error_from_body(500, e));
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: c.id,
                model: c.model,
                created: c.created,
            });
        }
        for ch in c.choices {
            if let Some(d) = ch.delta {
                if let Some(t) = d.content.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::TextDelta {
                        choice: ch.index,
                        text: t,
                    });
                }
                if let Some(t) = d.refusal.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::TextDelta {
                        choice: ch.index,
                        text: t,
                    });
                }
                for (pos, tc) in d.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    let index = tc.index.unwrap_or(pos as u32);
                    let (name, args) = match tc.function {
                        Some(f) => (f.name, f.arguments),
                        None => (None, None),
                    };
                    if tc.id.is_some() || name.is_some() {
                        out.push(StreamEvent::ToolCallStart {
                            choice: ch.index,
                            index,
                            id: tc.id.unwrap_or_else(|| format!("call_{index}")),
                            name: name.unwrap_or_default(),
                        });
                    }
                    if let Some(a) = args.filter(|a| !a.is_empty()) {
                        out.push(StreamEvent::ToolCallDelta {
                            choice: ch.index,
                            index,
                            arguments: a,
                        });
                    }
                }
            }
            if let Some(r) = ch.finish_reason {
                out.push(StreamEvent::Finish {
                    choice: ch.index,
                    reason: decode_finish_reason(&r),
                });
            }
        }
        if let Some(u) = c.usage {
            out.push(StreamEvent::Usage(u.into()));
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// Writes IR stream events as OpenAI `chat.completion.chunk` SSE events.
#[derive(Debug)]
pub struct StreamEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Option<Usage>,
}

impl StreamEncoder {
    /// An encoder; `include_usage` is whether the caller asked for the usage chunk.
    pub fn new(include_usage: bool) -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            created: 0,
            include_usage,
            usage: None,
        }
    }

    fn chunk(&self, out: &mut BytesMut, choices: Value) {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        sse::write_event(out, None, &c.to_string());
    }

    fn delta(&self, out: &mut BytesMut, choice: u32, delta: Value) {
        self.chunk(
            out,
            json!([{"index": choice, "delta": delta, "logprobs": null, "finish_reason": null}]),
        );
    }
}

impl wire::StreamEncoder for StreamEncoder {
    fn event(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        match ev {
            StreamEvent::Start { id, model, created } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                self.created = *created;
                self.delta(
                    out,
                    0,
                    json!({"role": "assistant", "content": "", "refusal": null}),
                );
            }
            StreamEvent::TextDelta { choice, text } => {
                self.delta(out, *choice, json!({"content": text}));
            }
            StreamEvent::ToolCallStart {
                choice,
                index,
                id,
                name,
            } => self.delta(
                out,
                *choice,
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
            ),
            StreamEvent::ToolCallDelta {
                choice,
                index,
                arguments,
            } => self.delta(
                out,
                *choice,
                json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
            ),
            StreamEvent::Finish { choice, reason } => self.chunk(
                out,
                json!([{"index": choice, "delta": {}, "logprobs": null,
                    "finish_reason": finish_reason_str(reason)}]),
            ),
            // OpenAI sends usage last, after every finish chunk: hold it until the end.
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.include_usage {
            if let Some(u) = self.usage {
                let c = json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "system_fingerprint": null,
                    "choices": [],
                    "usage": encode_usage(&u),
                });
                sse::write_event(out, None, &c.to_string());
            }
        }
        sse::write_event(out, None, "[DONE]");
    }

    fn error(&mut self, err: &Error, out: &mut BytesMut) {
        // The SDKs raise an APIError on a chunk carrying `error`; nothing follows it.
        let body = String::from_utf8(encode_error(err)).unwrap_or_default();
        sse::write_event(out, None, &body);
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ErrorEnvelopeWire {
    error: ErrorBodyWire,
}

#[derive(Deserialize, Default)]
struct ErrorBodyWire {
    #[serde(default)]
    message: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

fn error_from_body(status: u16, b: ErrorBodyWire) -> Error {
    let code = match b.code {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = b.message.unwrap_or_else(|| "upstream error".to_owned());
    let mut err = classify_status(status, message);
    if err.kind == ErrorKind::InvalidRequest || err.kind == ErrorKind::NotFound {
        err.param = b.param;
    }
    if err.kind != ErrorKind::UpstreamAuth {
        err.code = code.or(b.kind);
    }
    err
}

/// Classifies an upstream failure by status. `message` is the upstream's, kept where it is the
/// caller's business (a 400 about their request) and replaced where it is the gateway's (a 401
/// about the gateway's own key, whose message can quote part of that key).
fn classify_status(status: u16, message: String) -> Error {
    match status {
        400 | 422 => Error::invalid(message).with_status(400),
        401 | 403 => Error::new(
            ErrorKind::UpstreamAuth,
            "the provider refused the gateway's credentials",
        ),
        404 => Error::new(ErrorKind::NotFound, message),
        408 => Error::new(ErrorKind::Timeout, format!("upstream timed out: {message}")),
        413 => Error::new(ErrorKind::PayloadTooLarge, message),
        429 => Error::new(ErrorKind::RateLimited, message),
        503 | 529 => Error::new(ErrorKind::Overloaded, message).with_status(503),
        s if s >= 500 => Error::new(
            ErrorKind::UpstreamStatus,
            format!("upstream error {s}: {message}"),
        ),
        s => Error::new(
            ErrorKind::UpstreamStatus,
            format!("upstream status {s}: {message}"),
        )
        .with_status(502),
    }
}

/// Classifies an error reply from an OpenAI-format upstream.
pub fn decode_error(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorEnvelopeWire>(body) {
        Ok(env) => error_from_body(status, env.error),
        Err(_) => classify_status(status, format!("HTTP {status}")),
    }
}

/// The OpenAI error `type` for a failure kind.
fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::NotFound
        | ErrorKind::MethodNotAllowed
        | ErrorKind::PayloadTooLarge => "invalid_request_error",
        ErrorKind::Unauthenticated => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::BudgetExceeded => "insufficient_quota",
        ErrorKind::Timeout => "timeout_error",
        _ => "api_error",
    }
}

/// Renders an error in OpenAI's `{"error": {...}}` shape.
pub fn encode_error(err: &Error) -> Vec<u8> {
    let code = err.code.clone().or_else(|| match err.kind {
        ErrorKind::NotFound => Some("model_not_found".to_owned()),
        ErrorKind::Unauthenticated => Some("invalid_api_key".to_owned()),
        ErrorKind::RateLimited => Some("rate_limit_exceeded".to_owned()),
        ErrorKind::BudgetExceeded => Some("insufficient_quota".to_owned()),
        _ => None,
    });
    serde_json::to_vec(&json!({"error": {
        "message": err.message,
        "type": error_type(err.kind),
        "param": err.param,
        "code": code,
    }}))
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Embeddings and models
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct EmbeddingsRequestWire {
    model: String,
    input: Value,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// Decodes an Embeddings request body.
pub fn decode_embeddings_request(body: &[u8]) -> Result<EmbeddingsRequest, Error> {
    let w: EmbeddingsRequestWire = serde_json::from_slice(body).map_err(json_error)?;
    match &w.input {
        Value::String(_) => {}
        Value::Array(a) if !a.is_empty() => {}
        _ => {
            return Err(Error::invalid(
                "'input' must be a string, an array of strings, or an array of token arrays",
            )
            .with_param("input"))
        }
    }
    if let Some(f) = w.encoding_format.as_deref() {
        if f != "float" && f != "base64" {
            return Err(
                Error::invalid("'encoding_format' must be 'float' or 'base64'")
                    .with_param("encoding_format"),
            );
        }
    }
    Ok(EmbeddingsRequest {
        model: w.model,
        input: w.input,
        dimensions: w.dimensions,
        encoding_format: w.encoding_format,
        user: w.user,
        extra: w.extra,
        source: Format::OpenAi,
    })
}

/// Encodes an Embeddings request for an OpenAI-format upstream.
pub fn encode_embeddings_request(req: &EmbeddingsRequest, model: &str) -> Vec<u8> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("input".into(), req.input.clone());
    if let Some(d) = req.dimensions {
        out.insert("dimensions".into(), json!(d));
    }
    if let Some(f) = &req.encoding_format {
        out.insert("encoding_format".into(), Value::String(f.clone()));
    }
    if let Some(u) = &req.user {
        out.insert("user".into(), Value::String(u.clone()));
    }
    if req.source == Format::OpenAi {
        for (k, v) in &req.extra {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    serde_json::to_vec(&Value::Object(out)).unwrap_or_default()
}

#[derive(Deserialize)]
struct EmbeddingsReplyWire {
    #[serde(default)]
    model: String,
    data: Vec<EmbeddingWire>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
struct EmbeddingWire {
    #[serde(default)]
    index: usize,
    embedding: Value,
}

/// Decodes an Embeddings reply from an upstream.
pub fn decode_embeddings_reply(body: &[u8]) -> Result<EmbeddingsReply, Error> {
    let mut w: EmbeddingsReplyWire =
        serde_json::from_slice(body).map_err(|e| protocol_error("embeddings reply", e))?;
    w.data.sort_by_key(|d| d.index);
    let data = w
        .data
        .into_iter()
        .map(|d| match d.embedding {
            Value::String(s) => Ok(Embedding::Base64(s)),
            Value::Array(a) => Ok(Embedding::Float(
                a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
            )),
            _ => Err(protocol_error(
                "embeddings reply",
                "embedding is neither array nor string",
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(EmbeddingsReply {
        model: w.model,
        data,
        usage: w.usage.map(Usage::from),
    })
}

/// Encodes an Embeddings reply in the encoding the caller asked for (`base64` or floats),
/// converting when the upstream answered in the other one.
pub fn encode_embeddings_reply(r: &EmbeddingsReply, encoding_format: Option<&str>) -> Vec<u8> {
    let b64 = encoding_format == Some("base64");
    let data: Vec<Value> = r
        .data
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = match (e, b64) {
                (Embedding::Float(v), false) => json!(v),
                (Embedding::Base64(s), true) => Value::String(s.clone()),
                (Embedding::Float(v), true) => Value::String(floats_to_base64(v)),
                (Embedding::Base64(s), false) => json!(base64_to_floats(s)),
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let u = r.usage.unwrap_or_default();
    serde_json::to_vec(&json!({
        "object": "list",
        "data": data,
        "model": r.model,
        "usage": {"prompt_tokens": u.input_tokens, "total_tokens": u.total()},
    }))
    .unwrap_or_default()
}

/// Little-endian f32s as base64 (OpenAI's `encoding_format: base64`).
pub fn floats_to_base64(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for f in v {
        bytes.extend_from_slice(&f.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_to_floats(s: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Encodes a model list (`GET /v1/models`).
pub fn encode_models(models: &[ModelInfo]) -> Vec<u8> {
    let data: Vec<Value> = models.iter().map(encode_model).collect();
    serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default()
}

/// Encodes one model (`GET /v1/models/{id}`).
pub fn encode_model(m: &ModelInfo) -> Value {
    json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by})
}

#[cfg(test)]
mod tests;
