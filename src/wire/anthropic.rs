//! The Anthropic Messages wire format (`POST /v1/messages`), both directions.
//!
//! Caller side: [`decode_request`], [`encode_reply`], [`encode_error`], [`StreamEncoder`],
//! [`encode_count_tokens`], [`encode_models`]. Upstream side: [`encode_request`],
//! [`decode_reply`], [`decode_error`], [`StreamDecoder`]. Pure functions, no I/O.
//!
//! Decisions where the IR and Anthropic do not line up:
//! - Usage is normalised to the IR convention: IR `input_tokens` = Anthropic `input_tokens +
//!   cache_read_input_tokens + cache_creation_input_tokens`; encoding does the inverse.
//! - Fields the IR has no slot for are kept in `extra` (in Anthropic's format, so they are only
//!   replayed to an Anthropic upstream): top-level unknown fields verbatim; block fields such as
//!   `cache_control` in the message's `extra[CONTENT_EXTRA]` (aligned with `content`); a
//!   `tool_result`'s own fields (`is_error`, `cache_control`) in the Tool message's `extra`;
//!   custom-tool fields (`cache_control`, ...) in `extra[TOOL_EXTRA]` by tool name; server tools
//!   (a `type` other than `custom`, e.g. `web_search_20250305`) verbatim in `extra["tools"]`.
//!   All of these are dropped for other upstreams, which cannot run them.
//! - `response_format` has no portable Anthropic equivalent: native JSON outputs
//!   (`output_config.format`) exist only on recent models, and this codec cannot know the model's
//!   capabilities, so JSON modes are emulated with an instruction (schema included) appended to
//!   the system prompt. An Anthropic caller's own `output_config` is passed through instead.
//! - `thinking` / `redacted_thinking` / server-tool result blocks of replies are dropped (the IR
//!   carries no reasoning content); in requests they travel as `Part::Other`.
//! - Empty text parts are not sent upstream: Anthropic rejects empty text blocks, and OpenAI
//!   callers send `""` next to tool calls. A message left with no blocks is skipped.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use crate::ir::{self, ErrorKind, FinishReason, Format, Image, Message, Part, Role, ToolChoice};
use crate::{sse, wire};

/// Message `extra` key holding per-part Anthropic block fields (`cache_control`, `citations`),
/// an array aligned with `content` (`null` where a block had none).
pub const CONTENT_EXTRA: &str = "content_extra";
/// Request `extra` key holding custom-tool fields the IR does not model, by tool name.
pub const TOOL_EXTRA: &str = "tool_extra";

/// Longest upstream error message passed on to the caller.
const MAX_UPSTREAM_MESSAGE: usize = 2000;

type Obj = Map<String, Value>;

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// Caller surface: an Anthropic Messages request body → IR (`source` = `Format::Anthropic`).
pub fn decode_request(body: &[u8]) -> Result<ir::ChatRequest, ir::Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ir::Error::invalid(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ir::Error::invalid("request body must be a JSON object"));
    };

    let model = match take(&mut obj, "model") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err(invalid("`model` must not be empty", "model")),
        None => return Err(invalid("missing required field `model`", "model")),
        Some(_) => return Err(invalid("`model` must be a string", "model")),
    };
    let mut req = ir::ChatRequest::new(model, Format::Anthropic);

    req.max_tokens = match take(&mut obj, "max_tokens") {
        Some(v) => Some(want_u32(&v, "max_tokens")?),
        None => return Err(invalid(
            "missing required field `max_tokens` (the Messages API requires an output token cap)",
            "max_tokens",
        )),
    };

    if let Some(system) = take(&mut obj, "system") {
        req.messages.push(decode_system(system)?);
    }

    let messages = match take(&mut obj, "messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(invalid(
                "`messages` must contain at least one message",
                "messages",
            ))
        }
        None => return Err(invalid("missing required field `messages`", "messages")),
        Some(_) => return Err(invalid("`messages` must be an array", "messages")),
    };
    for (i, m) in messages.into_iter().enumerate() {
        decode_message(i, m, &mut req.messages)?;
    }

    if let Some(v) = take(&mut obj, "temperature") {
        req.temperature = Some(want_f64(&v, "temperature")?);
    }
    if let Some(v) = take(&mut obj, "top_p") {
        req.top_p = Some(want_f64(&v, "top_p")?);
    }
    if let Some(v) = take(&mut obj, "top_k") {
        req.top_k = Some(want_u32(&v, "top_k")?);
    }
    if let Some(v) = take(&mut obj, "stop_sequences") {
        let Value::Array(items) = v else {
            return Err(invalid(
                "`stop_sequences` must be an array of strings",
                "stop_sequences",
            ));
        };
        for (i, s) in items.into_iter().enumerate() {
            match s {
                Value::String(s) => req.stop.push(s),
                _ => {
                    return Err(invalid(
                        "stop sequences must be strings",
                        format!("stop_sequences.{i}"),
                    ))
                }
            }
        }
    }
    if let Some(v) = take(&mut obj, "stream") {
        req.stream = v
            .as_bool()
            .ok_or_else(|| invalid("`stream` must be a boolean", "stream"))?;
        // Anthropic streams always carry usage (message_start / message_delta).
        req.include_usage = req.stream;
    }
    if let Some(v) = take(&mut obj, "metadata") {
        let Value::Object(mut meta) = v else {
            return Err(invalid("`metadata` must be an object", "metadata"));
        };
        match take(&mut meta, "user_id") {
            Some(Value::String(u)) => req.user = Some(u),
            None => {}
            Some(_) => {
                return Err(invalid(
                    "`metadata.user_id` must be a string",
                    "metadata.user_id",
                ))
            }
        }
        if !meta.is_empty() {
            req.extra.insert("metadata".into(), Value::Object(meta));
        }
    }
    if let Some(v) = take(&mut obj, "tools") {
        decode_tools(v, &mut req)?;
    }
    if let Some(v) = take(&mut obj, "tool_choice") {
        decode_tool_choice(v, &mut req)?;
    }
    // Native JSON outputs: model them so other upstreams honour them; the field itself stays in
    // `extra` and is replayed verbatim to an Anthropic upstream.
    let native_format = obj
        .get("output_config")
        .and_then(|c| c.get("format"))
        .or_else(|| obj.get("output_format"));
    if let Some(f) = native_format {
        if f.get("type").and_then(Value::as_str) == Some("json_schema") {
            if let Some(schema) = f.get("schema") {
                req.response_format = Some(ir::ResponseFormat::JsonSchema {
                    name: "response".into(),
                    schema: schema.clone(),
                    strict: Some(true),
                    description: None,
                });
            }
        }
    }

    // `extra` also holds this codec's own bookkeeping; a caller's field of that name would be
    // read as it (merged into tools) or dropped. Not a Messages API field: Anthropic would
    // refuse it too.
    if obj.contains_key(TOOL_EXTRA) {
        return Err(invalid(
            format!("`{TOOL_EXTRA}` is not a Messages API field"),
            TOOL_EXTRA,
        ));
    }
    for (k, v) in obj {
        req.extra.insert(k, v);
    }
    Ok(req)
}

fn decode_system(system: Value) -> Result<Message, ir::Error> {
    match system {
        Value::String(s) => Ok(Message::text(Role::System, s)),
        Value::Array(blocks) => {
            let mut msg = Message::text(Role::System, "");
            msg.content.clear();
            let mut extras = Vec::new();
            for (i, block) in blocks.into_iter().enumerate() {
                let param = format!("system.{i}");
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid("system blocks must be text blocks", param));
                }
                let (part, extra) = decode_part(block, &param)?;
                msg.content.push(part);
                extras.push(extra);
            }
            set_content_extra(&mut msg, extras);
            Ok(msg)
        }
        _ => Err(invalid(
            "`system` must be a string or an array of text blocks",
            "system",
        )),
    }
}

/// One wire message → IR messages (a user message with `tool_result` blocks becomes one Tool
/// message per result, then a User message with the rest, if any).
fn decode_message(i: usize, m: Value, out: &mut Vec<Message>) -> Result<(), ir::Error> {
    let param = format!("messages.{i}");
    let Value::Object(mut obj) = m else {
        return Err(invalid("each message must be an object", param));
    };
    let role = match take(&mut obj, "role") {
        Some(Value::String(r)) if r == "user" => Role::User,
        Some(Value::String(r)) if r == "assistant" => Role::Assistant,
        Some(_) => {
            return Err(invalid(
                "`role` must be \"user\" or \"assistant\" (put system instructions in the top-level `system` field)",
                format!("{param}.role"),
            ))
        }
        None => return Err(invalid("missing `role`", format!("{param}.role"))),
    };
    let blocks = match take(&mut obj, "content") {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(a)) => a,
        None => return Err(invalid("missing `content`", format!("{param}.content"))),
        Some(_) => {
            return Err(invalid(
                "`content` must be a string or an array of content blocks",
                format!("{param}.content"),
            ))
        }
    };

    let mut msg = Message::text(role, "");
    msg.content.clear();
    let mut extras = Vec::new();
    let mut had_results = false;
    for (j, block) in blocks.into_iter().enumerate() {
        let bparam = format!("{param}.content.{j}");
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") => {
                if role != Role::Assistant {
                    return Err(invalid(
                        "`tool_use` blocks may only appear in assistant messages",
                        bparam,
                    ));
                }
                msg.tool_calls.push(decode_tool_use(block, &bparam)?);
            }
            Some("tool_result") => {
                if role != Role::User {
                    return Err(invalid(
                        "`tool_result` blocks may only appear in user messages",
                        bparam,
                    ));
                }
                out.push(decode_tool_result(block, &bparam)?);
                had_results = true;
            }
            _ => {
                let (part, extra) = decode_part(block, &bparam)?;
                msg.content.push(part);
                extras.push(extra);
            }
        }
    }
    // As `tool_extra` at the top level: the name of this codec's own bookkeeping.
    if obj.contains_key(CONTENT_EXTRA) {
        return Err(invalid(
            format!("`{CONTENT_EXTRA}` is not a message field"),
            format!("{param}.{CONTENT_EXTRA}"),
        ));
    }
    set_content_extra(&mut msg, extras);
    for (k, v) in obj {
        msg.extra.insert(k, v);
    }
    // A user turn made only of tool results needs no User message of its own.
    if !had_results || !msg.content.is_empty() {
        out.push(msg);
    }
    Ok(())
}

fn decode_tool_use(block: Value, param: &str) -> Result<ir::ToolCall, ir::Error> {
    let id = want_str_field(&block, "id", param)?;
    let name = want_str_field(&block, "name", param)?;
    let arguments = match block.get("input") {
        Some(v @ Value::Object(_)) => v.to_string(),
        None | Some(Value::Null) => "{}".to_owned(),
        Some(_) => {
            return Err(invalid(
                "`input` must be an object",
                format!("{param}.input"),
            ))
        }
    };
    Ok(ir::ToolCall {
        id,
        name,
        arguments,
    })
}

fn decode_tool_result(block: Value, param: &str) -> Result<Message, ir::Error> {
    let id = want_str_field(&block, "tool_use_id", param)?;
    let Value::Object(mut obj) = block else {
        return Err(invalid("content block must be an object", param));
    };
    obj.remove("type");
    obj.remove("tool_use_id");
    let mut msg = Message::text(Role::Tool, "");
    msg.content.clear();
    msg.tool_call_id = Some(id);
    let mut extras = Vec::new();
    match obj.remove("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => msg.content.push(Part::Text(s)),
        Some(Value::Array(blocks)) => {
            for (k, b) in blocks.into_iter().enumerate() {
                let (part, extra) = decode_part(b, &format!("{param}.content.{k}"))?;
                msg.content.push(part);
                extras.push(extra);
            }
        }
        Some(_) => {
            return Err(invalid(
                "tool result `content` must be a string or an array of blocks",
                format!("{param}.content"),
            ))
        }
    }
    // `is_error`, `cache_control`: the block's own fields.
    msg.extra = obj;
    set_content_extra(&mut msg, extras);
    Ok(msg)
}

/// A content block (not tool_use / tool_result) → IR part, plus its fields the IR has no slot
/// for (`cache_control`, `citations`, ...).
fn decode_part(block: Value, param: &str) -> Result<(Part, Option<Obj>), ir::Error> {
    let Value::Object(mut obj) = block else {
        return Err(invalid("content block must be an object", param));
    };
    let Some(ty) = obj.get("type").and_then(Value::as_str) else {
        return Err(invalid(
            "content block needs a string `type`",
            format!("{param}.type"),
        ));
    };
    match ty {
        "text" => {
            let Some(Value::String(text)) = obj.remove("text") else {
                return Err(invalid(
                    "text block needs a string `text`",
                    format!("{param}.text"),
                ));
            };
            obj.remove("type");
            Ok((Part::Text(text), non_empty(obj)))
        }
        "image" => {
            let source = obj.get("source").ok_or_else(|| {
                invalid("image block needs a `source`", format!("{param}.source"))
            })?;
            match decode_image_source(source, &format!("{param}.source"))? {
                Some(image) => {
                    obj.remove("type");
                    obj.remove("source");
                    Ok((Part::Image(image), non_empty(obj)))
                }
                // `file` and future sources: only an Anthropic upstream can resolve them.
                None => Ok((Part::Other(Value::Object(obj)), None)),
            }
        }
        _ => Ok((Part::Other(Value::Object(obj)), None)),
    }
}

fn decode_image_source(source: &Value, param: &str) -> Result<Option<Image>, ir::Error> {
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => Ok(Some(Image::Base64 {
            media_type: want_str_field(source, "media_type", param)?,
            data: want_str_field(source, "data", param)?,
        })),
        Some("url") => Ok(Some(Image::Url {
            url: want_str_field(source, "url", param)?,
            detail: None,
        })),
        Some(_) => Ok(None),
        None => Err(invalid(
            "image `source` needs a string `type`",
            format!("{param}.type"),
        )),
    }
}

fn decode_tools(v: Value, req: &mut ir::ChatRequest) -> Result<(), ir::Error> {
    let Value::Array(tools) = v else {
        return Err(invalid("`tools` must be an array", "tools"));
    };
    let mut server_tools = Vec::new();
    let mut tool_extra = Obj::new();
    for (i, tool) in tools.into_iter().enumerate() {
        let param = format!("tools.{i}");
        let Value::Object(mut obj) = tool else {
            return Err(invalid("each tool must be an object", param));
        };
        match obj.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            // Server tools run at Anthropic; only an Anthropic upstream can use them.
            Some(_) => {
                server_tools.push(Value::Object(obj));
                continue;
            }
        }
        let name = match take(&mut obj, "name") {
            Some(Value::String(n)) if !n.is_empty() => n,
            _ => {
                return Err(invalid(
                    "tool needs a non-empty string `name`",
                    format!("{param}.name"),
                ))
            }
        };
        let description = match take(&mut obj, "description") {
            Some(Value::String(d)) => Some(d),
            None => None,
            Some(_) => {
                return Err(invalid(
                    "tool `description` must be a string",
                    format!("{param}.description"),
                ))
            }
        };
        let parameters = match take(&mut obj, "input_schema") {
            Some(s @ Value::Object(_)) => s,
            _ => {
                return Err(invalid(
                    "tool needs an `input_schema` object (a JSON Schema)",
                    format!("{param}.input_schema"),
                ))
            }
        };
        let strict = match take(&mut obj, "strict") {
            Some(Value::Bool(b)) => Some(b),
            None => None,
            Some(_) => {
                return Err(invalid(
                    "tool `strict` must be a boolean",
                    format!("{param}.strict"),
                ))
            }
        };
        obj.remove("type");
        if !obj.is_empty() {
            tool_extra.insert(name.clone(), Value::Object(obj));
        }
        req.tools.push(ir::Tool {
            name,
            description,
            parameters,
            strict,
        });
    }
    if !server_tools.is_empty() {
        req.extra.insert("tools".into(), Value::Array(server_tools));
    }
    if !tool_extra.is_empty() {
        req.extra
            .insert(TOOL_EXTRA.into(), Value::Object(tool_extra));
    }
    Ok(())
}

fn decode_tool_choice(v: Value, req: &mut ir::ChatRequest) -> Result<(), ir::Error> {
    let Value::Object(obj) = v else {
        return Err(invalid(
            "`tool_choice` must be an object such as {\"type\":\"auto\"}",
            "tool_choice",
        ));
    };
    req.tool_choice = Some(match obj.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => match obj.get("name") {
            Some(Value::String(n)) => ToolChoice::Tool(n.clone()),
            _ => {
                return Err(invalid(
                    "`tool_choice` of type \"tool\" needs a string `name`",
                    "tool_choice.name",
                ))
            }
        },
        _ => {
            return Err(invalid(
                "`tool_choice.type` must be one of \"auto\", \"any\", \"tool\", \"none\"",
                "tool_choice.type",
            ))
        }
    });
    match obj.get("disable_parallel_tool_use") {
        Some(Value::Bool(true)) => req.parallel_tool_calls = Some(false),
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(_) => {
            return Err(invalid(
                "`disable_parallel_tool_use` must be a boolean",
                "tool_choice.disable_parallel_tool_use",
            ))
        }
    }
    Ok(())
}

/// Upstream: IR → Anthropic Messages request body for upstream model `model`.
/// `default_max_tokens` fills `max_tokens` when the IR has none (Anthropic requires it).
pub fn encode_request(
    req: &ir::ChatRequest,
    model: &str,
    default_max_tokens: u32,
) -> Result<Vec<u8>, ir::Error> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(invalid("anthropic cannot return n > 1 choices", "n"));
    }
    // Unknown fields are only meaningful to the format they came from.
    let same_format = req.source == Format::Anthropic;
    let mut body = Obj::new();
    body.insert("model".into(), model.into());
    body.insert(
        "max_tokens".into(),
        req.max_tokens.unwrap_or(default_max_tokens).into(),
    );

    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => system.extend(
                encode_parts(m, same_format)
                    .into_iter()
                    .filter(|b| b["type"] == "text"),
            ),
            Role::User => push_turn(&mut turns, "user", encode_parts(m, same_format), false),
            Role::Assistant => {
                let mut blocks = encode_parts(m, same_format);
                for (j, call) in m.tool_calls.iter().enumerate() {
                    blocks.push(encode_tool_use(call, i, j)?);
                }
                push_turn(&mut turns, "assistant", blocks, false);
            }
            Role::Tool => {
                let block = encode_tool_result(m, i, same_format)?;
                push_turn(&mut turns, "user", vec![block], true);
            }
        }
    }

    let native_format = same_format
        && (req
            .extra
            .get("output_config")
            .is_some_and(|c| c.get("format").is_some())
            || req.extra.contains_key("output_format"));
    if let (Some(rf), false) = (&req.response_format, native_format) {
        if let Some(text) = json_instruction(rf) {
            system.push(json!({"type": "text", "text": text}));
        }
    }
    if !system.is_empty() {
        let value = match system.as_slice() {
            [one] if is_plain_text(one) => one["text"].clone(),
            _ => Value::Array(system),
        };
        body.insert("system".into(), value);
    }

    let messages: Vec<Value> = turns
        .into_iter()
        .map(|t| {
            let content = match t.blocks.as_slice() {
                [one] if is_plain_text(one) => one["text"].clone(),
                _ => Value::Array(t.blocks),
            };
            json!({"role": t.role, "content": content})
        })
        .collect();
    if messages.is_empty() {
        // Empty text and unmodelled parts are dropped on the way (Anthropic refuses empty
        // blocks); with nothing left, Anthropic would refuse an empty `messages` anyway. Say
        // why here instead of spending an upstream call on it.
        return Err(invalid(
            "no message has content an Anthropic model can read (only system text, or empty \
             messages)",
            "messages",
        ));
    }
    body.insert("messages".into(), Value::Array(messages));

    encode_tools(req, same_format, &mut body);
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), p.into());
    }
    if let Some(k) = req.top_k {
        body.insert("top_k".into(), k.into());
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), req.stop.clone().into());
    }
    if req.stream {
        body.insert("stream".into(), true.into());
    }
    let mut metadata = match req.extra.get("metadata") {
        Some(Value::Object(m)) if same_format => m.clone(),
        _ => Obj::new(),
    };
    if let Some(user) = &req.user {
        metadata.insert("user_id".into(), user.clone().into());
    }
    if !metadata.is_empty() {
        body.insert("metadata".into(), Value::Object(metadata));
    }
    if same_format {
        for (k, v) in &req.extra {
            if matches!(k.as_str(), "tools" | "metadata" | TOOL_EXTRA) {
                continue; // merged above
            }
            // IR fields win: layers in the middle (limits, routing) may have changed them.
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    serde_json::to_vec(&Value::Object(body))
        .map_err(|e| ir::Error::new(ErrorKind::Internal, format!("encoding request: {e}")))
}

/// A wire message being assembled (consecutive same-role IR messages merge into one).
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// Anthropic requires user/assistant alternation and tool results first in their user turn.
fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>, results: bool) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(t) if t.role == role => {
            if results {
                let at = t
                    .blocks
                    .iter()
                    .position(|b| b["type"] != "tool_result")
                    .unwrap_or(t.blocks.len());
                t.blocks.splice(at..at, blocks);
            } else {
                t.blocks.extend(blocks);
            }
        }
        _ => turns.push(Turn { role, blocks }),
    }
}

/// A message's content parts as blocks, with their passthrough fields when the formats match.
fn encode_parts(m: &Message, same_format: bool) -> Vec<Value> {
    let extras = same_format
        .then(|| m.extra.get(CONTENT_EXTRA).and_then(Value::as_array))
        .flatten();
    let mut blocks = Vec::with_capacity(m.content.len());
    for (k, part) in m.content.iter().enumerate() {
        let Some(mut block) = encode_part(part, same_format) else {
            continue;
        };
        let extra = extras.and_then(|e| e.get(k)).and_then(Value::as_object);
        if let (Some(extra), Value::Object(b)) = (extra, &mut block) {
            for (key, v) in extra {
                b.entry(key.clone()).or_insert_with(|| v.clone());
            }
        }
        blocks.push(block);
    }
    blocks
}

fn encode_part(part: &Part, same_format: bool) -> Option<Value> {
    match part {
        // Anthropic rejects empty text blocks.
        Part::Text(t) if t.is_empty() => None,
        Part::Text(t) => Some(json!({"type": "text", "text": t})),
        Part::Image(img) => Some(json!({"type": "image", "source": image_source(img)})),
        Part::Other(v) if same_format => Some(v.clone()),
        Part::Other(_) => None,
    }
}

fn image_source(img: &Image) -> Value {
    match img {
        Image::Base64 { media_type, data } => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        Image::Url { url, .. } => match parse_data_url(url) {
            Some((media_type, data)) => {
                json!({"type": "base64", "media_type": media_type, "data": data})
            }
            None => json!({"type": "url", "url": url}),
        },
    }
}

/// `data:<mime>;base64,<data>` → (mime, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    (!media_type.is_empty()).then_some((media_type, data))
}

fn encode_tool_use(call: &ir::ToolCall, i: usize, j: usize) -> Result<Value, ir::Error> {
    let param = format!("messages.{i}.tool_calls.{j}.arguments");
    let input: Value = if call.arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&call.arguments).map_err(|e| {
            invalid(
                format!(
                    "arguments of tool call `{}` are not valid JSON: {e}",
                    call.name
                ),
                param.clone(),
            )
        })?
    };
    if !input.is_object() {
        return Err(invalid(
            format!(
                "arguments of tool call `{}` must be a JSON object",
                call.name
            ),
            param,
        ));
    }
    Ok(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}))
}

fn encode_tool_result(m: &Message, i: usize, same_format: bool) -> Result<Value, ir::Error> {
    let Some(id) = &m.tool_call_id else {
        return Err(invalid(
            "a tool message needs the id of the tool call it answers",
            format!("messages.{i}.tool_call_id"),
        ));
    };
    let mut block = Obj::new();
    block.insert("type".into(), "tool_result".into());
    block.insert("tool_use_id".into(), id.clone().into());
    let blocks = encode_parts(m, same_format);
    match (m.content.as_slice(), blocks.as_slice()) {
        // One text part: the string form (empty text is allowed here).
        ([Part::Text(t)], _) if blocks.iter().all(is_plain_text) => {
            block.insert("content".into(), t.clone().into());
        }
        (_, []) => {}
        _ => {
            block.insert("content".into(), Value::Array(blocks));
        }
    }
    if same_format {
        for (k, v) in &m.extra {
            if k != CONTENT_EXTRA {
                block.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    Ok(Value::Object(block))
}

fn encode_tools(req: &ir::ChatRequest, same_format: bool, body: &mut Obj) {
    let tool_extra = req
        .extra
        .get(TOOL_EXTRA)
        .and_then(Value::as_object)
        .filter(|_| same_format);
    let mut tools: Vec<Value> = Vec::with_capacity(req.tools.len());
    for t in &req.tools {
        let mut tool = Obj::new();
        tool.insert("name".into(), t.name.clone().into());
        if let Some(d) = &t.description {
            tool.insert("description".into(), d.clone().into());
        }
        let schema = match &t.parameters {
            Value::Object(_) => t.parameters.clone(),
            // OpenAI allows omitting `parameters`; Anthropic requires a schema.
            _ => json!({"type": "object", "properties": {}}),
        };
        tool.insert("input_schema".into(), schema);
        // `strict` tool use exists on recent models only; an OpenAI caller's `strict` would be
        // refused by older ones, so only an Anthropic caller's own flag is sent.
        if let (Some(strict), true) = (t.strict, same_format) {
            tool.insert("strict".into(), strict.into());
        }
        if let Some(Value::Object(extra)) = tool_extra.and_then(|e| e.get(&t.name)) {
            for (k, v) in extra {
                tool.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        tools.push(Value::Object(tool));
    }
    if same_format {
        if let Some(Value::Array(server)) = req.extra.get("tools") {
            tools.extend(server.iter().cloned());
        }
    }
    if tools.is_empty() {
        // Anthropic refuses a `tool_choice` without tools.
        return;
    }
    body.insert("tools".into(), Value::Array(tools));
    let disable = req.parallel_tool_calls == Some(false);
    let mut choice = match &req.tool_choice {
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::None) => json!({"type": "none"}),
        Some(ToolChoice::Tool(name)) => json!({"type": "tool", "name": name}),
        // Parallelism is only expressible inside `tool_choice`.
        None if disable => json!({"type": "auto"}),
        None => return,
    };
    if disable && !matches!(req.tool_choice, Some(ToolChoice::None)) {
        choice["disable_parallel_tool_use"] = true.into();
    }
    body.insert("tool_choice".into(), choice);
}

/// The system-prompt instruction emulating a JSON `response_format`.
fn json_instruction(rf: &ir::ResponseFormat) -> Option<String> {
    match rf {
        ir::ResponseFormat::Text => None,
        ir::ResponseFormat::JsonObject => Some(
            "Respond with a single valid JSON object and nothing else: no prose, no code fences."
                .to_owned(),
        ),
        ir::ResponseFormat::JsonSchema {
            name,
            schema,
            description,
            ..
        } => {
            let mut s = format!(
                "Respond with a single valid JSON value and nothing else (no prose, no code \
                 fences) that conforms to the JSON Schema named \"{name}\""
            );
            if let Some(d) = description {
                s.push_str(&format!(" ({d})"));
            }
            s.push_str(&format!(":\n{schema}"));
            Some(s)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// Upstream: a non-streamed Messages response body → IR.
pub fn decode_reply(body: &[u8]) -> Result<ir::ChatReply, ir::Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| protocol(format!("anthropic reply is not valid JSON: {e}")))?;
    if value.get("type").and_then(Value::as_str) == Some("error") {
        return Err(decode_error_object(None, value.get("error")));
    }
    let Some(content) = value.get("content").and_then(Value::as_array) else {
        return Err(protocol("anthropic reply has no `content` array"));
    };
    let mut message = Message::text(Role::Assistant, "");
    message.content.clear();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                message.content.push(Part::Text(text.to_owned()));
            }
            Some("tool_use") => message.tool_calls.push(ir::ToolCall {
                id: str_of(block, "id"),
                name: str_of(block, "name"),
                arguments: block
                    .get("input")
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
            }),
            // thinking, redacted_thinking, server tool blocks: the IR has no slot for them.
            _ => {}
        }
    }
    let finish_reason = value
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_from_wire);
    let usage = value.get("usage").map(|u| {
        let mut w = WireUsage::default();
        w.update(u);
        w.to_ir()
    });
    Ok(ir::ChatReply {
        id: str_of(&value, "id"),
        model: str_of(&value, "model"),
        created: now_secs(),
        choices: vec![ir::Choice {
            index: 0,
            message,
            finish_reason,
        }],
        usage,
    })
}

/// Caller surface: IR reply → Anthropic Message JSON (choice 0).
pub fn encode_reply(reply: &ir::ChatReply) -> Vec<u8> {
    let choice = reply.choices.iter().find(|c| c.index == 0);
    let mut content = Vec::new();
    if let Some(c) = choice {
        for part in &c.message.content {
            if let Part::Text(t) = part {
                if !t.is_empty() {
                    content.push(json!({"type": "text", "text": t}));
                }
            }
        }
        for call in &c.message.tool_calls {
            let input = serde_json::from_str::<Value>(&call.arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            content.push(
                json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}),
            );
        }
    }
    let stop_reason = choice
        .and_then(|c| c.finish_reason.as_ref())
        .map(finish_to_wire);
    let usage = WireUsage::from_ir(&reply.usage.unwrap_or_default());
    let body = json!({
        "id": message_id(&reply.id),
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage.to_wire(),
    });
    body.to_string().into_bytes()
}

fn finish_from_wire(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

fn finish_to_wire(r: &FinishReason) -> &str {
    match r {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
        // Anthropic's own reasons pass through; another provider's reason is not one the
        // caller's SDK knows, and the turn did end.
        FinishReason::Other(s)
            if matches!(
                s.as_str(),
                "pause_turn" | "stop_sequence" | "model_context_window_exceeded"
            ) =>
        {
            s
        }
        FinishReason::Other(_) => "end_turn",
    }
}

/// Keeps an Anthropic id, prefixes any other upstream's id so callers see the shape they expect.
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

/// Anthropic's usage counters (input excludes cache reads and writes).
#[derive(Debug, Clone, Copy, Default)]
struct WireUsage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

impl WireUsage {
    /// Overrides each counter the wire object carries.
    fn update(&mut self, u: &Value) {
        let field = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(n) = field("input_tokens") {
            self.input = n;
        }
        if let Some(n) = field("output_tokens") {
            self.output = n;
        }
        if let Some(n) = field("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = field("cache_creation_input_tokens") {
            self.cache_write = n;
        }
    }

    fn to_ir(self) -> ir::Usage {
        ir::Usage {
            // Saturating: the counts are the upstream's (see `ir::Usage::total`).
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_write),
            output_tokens: self.output,
            cached_input_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
            reasoning_tokens: 0,
        }
    }

    fn from_ir(u: &ir::Usage) -> Self {
        Self {
            input: u
                .input_tokens
                .saturating_sub(u.cached_input_tokens)
                .saturating_sub(u.cache_write_tokens),
            output: u.output_tokens,
            cache_read: u.cached_input_tokens,
            cache_write: u.cache_write_tokens,
        }
    }

    fn to_wire(self) -> Value {
        json!({
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and small bodies
// ---------------------------------------------------------------------------------------------

/// Upstream: classify an Anthropic error response (status + body) into an [`ir::Error`].
/// The message is caller-safe; the caller adds the provider name.
pub fn decode_error(status: u16, body: &[u8]) -> ir::Error {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    decode_error_object(Some(status), value.as_ref().and_then(|v| v.get("error")))
}

/// An `{"type": .., "message": ..}` error object (from a response body or an `error` stream
/// event, which has no status of its own).
fn decode_error_object(status: Option<u16>, error: Option<&Value>) -> ir::Error {
    let ty = error.and_then(|e| e.get("type")).and_then(Value::as_str);
    let upstream = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(bounded);
    let status = status.unwrap_or_else(|| status_for_type(ty));
    let kept = |generic: &str| upstream.clone().unwrap_or_else(|| generic.to_owned());
    if ty == Some("overloaded_error") || status == 529 {
        return ir::Error::new(ErrorKind::Overloaded, "the provider is overloaded")
            .with_status(529);
    }
    match status {
        400 => ir::Error::invalid(kept("the provider rejected the request as invalid")),
        // The upstream text can quote fragments of the gateway's key: never echo it.
        401 | 403 => ir::Error::new(
            ErrorKind::UpstreamAuth,
            "the provider refused the gateway's credentials",
        ),
        402 => ir::Error::new(
            ErrorKind::UpstreamStatus,
            "the provider refused the request for billing reasons",
        ),
        404 => ir::Error::new(
            ErrorKind::NotFound,
            kept("the provider does not know the requested resource"),
        ),
        408 | 409 => ir::Error::new(
            ErrorKind::UpstreamStatus,
            format!("the provider answered with status {status}"),
        )
        .with_status(status),
        413 => ir::Error::new(
            ErrorKind::PayloadTooLarge,
            "the request exceeds the provider's size limit",
        ),
        // Rate-limit texts name the gateway's organisation: keep them to ourselves.
        429 => ir::Error::new(
            ErrorKind::RateLimited,
            "the provider rate-limited the request",
        ),
        503 => {
            ir::Error::new(ErrorKind::Overloaded, "the provider is unavailable").with_status(503)
        }
        504 => ir::Error::new(ErrorKind::Timeout, "the provider timed out"),
        // Anthropic uses invalid_request_error for 4xx statuses it does not list.
        405..=499 => ir::Error::invalid(kept("the provider rejected the request as invalid")),
        500 => ir::Error::new(
            ErrorKind::UpstreamStatus,
            "the provider had an internal error",
        ),
        _ => ir::Error::new(
            ErrorKind::UpstreamStatus,
            format!("the provider answered with status {status}"),
        ),
    }
}

/// The HTTP status Anthropic documents for an error type (for stream `error` events).
fn status_for_type(ty: Option<&str>) -> u16 {
    match ty {
        Some("invalid_request_error") => 400,
        Some("authentication_error") => 401,
        Some("billing_error") => 402,
        Some("permission_error") => 403,
        Some("not_found_error") => 404,
        Some("request_too_large") => 413,
        Some("rate_limit_error") => 429,
        Some("timeout_error") => 504,
        Some("overloaded_error") => 529,
        _ => 500,
    }
}

fn bounded(m: &str) -> String {
    match m.char_indices().nth(MAX_UPSTREAM_MESSAGE) {
        Some((at, _)) => format!("{}…", &m[..at]),
        None => m.to_owned(),
    }
}

/// Anthropic's error `type` for an IR error kind.
fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        // Anthropic uses invalid_request_error for 4xx statuses it does not list.
        ErrorKind::InvalidRequest | ErrorKind::MethodNotAllowed => "invalid_request_error",
        ErrorKind::Unauthenticated => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::RateLimited | ErrorKind::BudgetExceeded => "rate_limit_error",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::Timeout => "timeout_error",
        ErrorKind::UpstreamAuth
        | ErrorKind::UpstreamStatus
        | ErrorKind::Connect
        | ErrorKind::Protocol
        | ErrorKind::Internal
        | ErrorKind::Unavailable => "api_error",
    }
}

fn error_body(err: &ir::Error) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type(err.kind), "message": err.message},
    })
}

/// Caller surface: an [`ir::Error`] as Anthropic's error body.
pub fn encode_error(err: &ir::Error) -> Vec<u8> {
    error_body(err).to_string().into_bytes()
}

/// Caller surface: body for `POST /v1/messages/count_tokens`.
pub fn encode_count_tokens(input_tokens: u64) -> Vec<u8> {
    json!({ "input_tokens": input_tokens })
        .to_string()
        .into_bytes()
}

/// Caller surface: body for `GET /v1/models` in Anthropic's list format. The IR has no creation
/// date or display name: `created_at` is the Unix epoch and `display_name` the id.
pub fn encode_models(models: &[ir::ModelInfo]) -> Vec<u8> {
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({
                "type": "model",
                "id": m.id,
                "display_name": m.id,
                "created_at": "1970-01-01T00:00:00Z",
            })
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": models.first().map(|m| &m.id),
        "last_id": models.last().map(|m| &m.id),
    })
    .to_string()
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// Upstream stream decoder: Anthropic SSE events → IR events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// Content block index → tool call position (0-based count of `tool_use` blocks).
    tools: HashMap<u64, u32>,
    next_tool: u32,
    usage: WireUsage,
    finished: bool,
    usage_sent: bool,
    done: bool,
}

impl StreamDecoder {
    /// A decoder for one stream.
    pub fn new() -> Self {
        Self::default()
    }

    fn usage_event(&mut self, out: &mut Vec<ir::StreamEvent>) {
        if !self.usage_sent {
            self.usage_sent = true;
            out.push(ir::StreamEvent::Usage(self.usage.to_ir()));
        }
    }
}

impl wire::StreamDecoder for StreamDecoder {
    fn event(&mut self, ev: &sse::Event, out: &mut Vec<ir::StreamEvent>) -> Result<(), ir::Error> {
        const KNOWN: [&str; 7] = [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "error",
        ];
        let parse = |data: &str| {
            serde_json::from_str::<Value>(data)
                .map_err(|e| protocol(format!("anthropic stream event is not valid JSON: {e}")))
        };
        // Anthropic names every event; the data's `type` is the fallback.
        let parsed = if ev.event.is_empty() {
            Some(parse(&ev.data)?)
        } else {
            None
        };
        let name = match &parsed {
            Some(d) => d.get("type").and_then(Value::as_str).unwrap_or_default(),
            None => ev.event.as_str(),
        };
        // `ping` and event types added after this code was written are ignored, as Anthropic's
        // versioning policy asks.
        let Some(&kind) = KNOWN.iter().find(|k| **k == name) else {
            return Ok(());
        };
        let data = match parsed {
            Some(d) => d,
            None => parse(&ev.data)?,
        };
        match kind {
            "message_start" => {
                let Some(msg) = data.get("message").filter(|m| m.is_object()) else {
                    return Err(protocol("anthropic `message_start` event has no `message`"));
                };
                if let Some(u) = msg.get("usage") {
                    self.usage.update(u);
                }
                out.push(ir::StreamEvent::Start {
                    id: str_of(msg, "id"),
                    model: str_of(msg, "model"),
                    created: now_secs(),
                });
            }
            "content_block_start" => {
                let (index, block) = indexed(&data, "content_block", kind)?;
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => push_text(out, block, "text"),
                    Some("tool_use") => {
                        let position = self.next_tool;
                        self.next_tool += 1;
                        self.tools.insert(index, position);
                        out.push(ir::StreamEvent::ToolCallStart {
                            choice: 0,
                            index: position,
                            id: str_of(block, "id"),
                            name: str_of(block, "name"),
                        });
                    }
                    // thinking, server tools: no IR slot.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let (index, delta) = indexed(&data, "delta", kind)?;
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => push_text(out, delta, "text"),
                    Some("input_json_delta") => {
                        let json = str_of(delta, "partial_json");
                        // Deltas of server-tool blocks have no IR call to belong to.
                        if let (Some(&position), false) = (self.tools.get(&index), json.is_empty())
                        {
                            out.push(ir::StreamEvent::ToolCallDelta {
                                choice: 0,
                                index: position,
                                arguments: json,
                            });
                        }
                    }
                    // thinking_delta, signature_delta, citations_delta: no IR slot.
                    _ => {}
                }
            }
            "content_block_stop" => {}
            "message_delta" => {
                if let Some(u) = data.get("usage") {
                    self.usage.update(u);
                }
                let reason = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if let (Some(reason), false) = (reason, self.finished) {
                    self.finished = true;
                    out.push(ir::StreamEvent::Finish {
                        choice: 0,
                        reason: finish_from_wire(reason),
                    });
                    self.usage_event(out);
                }
            }
            "message_stop" => {
                self.usage_event(out);
                self.done = true;
            }
            "error" => return Err(decode_error_object(None, data.get("error"))),
            _ => {}
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// Caller-surface stream encoder: IR events → Anthropic SSE events, in the order the official
/// SDKs expect (`message_start`, blocks each opened, filled and closed with indexes counting
/// up from 0, `message_delta`, `message_stop`).
#[derive(Debug)]
pub struct StreamEncoder {
    model: String,
    started: bool,
    /// The block currently open: its index, and the tool position if it is a `tool_use` block.
    open: Option<(u32, Option<u32>)>,
    next_block: u32,
    /// Tool position → content block index.
    tools: HashMap<u32, u32>,
    finish: Option<FinishReason>,
    usage: Option<ir::Usage>,
    ended: bool,
}

impl StreamEncoder {
    /// An encoder that names `public_model` (the caller's model name) in `message_start`.
    pub fn new(public_model: &str) -> Self {
        Self {
            model: public_model.to_owned(),
            started: false,
            open: None,
            next_block: 0,
            tools: HashMap::new(),
            finish: None,
            usage: None,
            ended: false,
        }
    }

    fn start(&mut self, id: &str, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": message_id(id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        write(
            out,
            "message_start",
            json!({"type": "message_start", "message": message}),
        );
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((index, _)) = self.open.take() {
            write(
                out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, block: Value, tool: Option<u32>, out: &mut BytesMut) -> u32 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, tool));
        write(
            out,
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }
}

impl wire::StreamEncoder for StreamEncoder {
    fn event(&mut self, ev: &ir::StreamEvent, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        // Another format's bytes: what they say is encoded here.
        if let ir::StreamEvent::Verbatim { events, .. } = ev {
            for ev in events {
                self.event(ev, out);
            }
            return;
        }
        if let ir::StreamEvent::Start { id, .. } = ev {
            self.start(id, out);
            return;
        }
        self.start("", out);
        match ev {
            ir::StreamEvent::Start { .. } | ir::StreamEvent::Verbatim { .. } => {}
            // Anthropic has one choice; the surface refuses n > 1.
            ir::StreamEvent::TextDelta { choice, .. }
            | ir::StreamEvent::ToolCallStart { choice, .. }
            | ir::StreamEvent::ToolCallDelta { choice, .. }
            | ir::StreamEvent::Finish { choice, .. }
                if *choice != 0 => {}
            ir::StreamEvent::TextDelta { text, .. } => {
                if text.is_empty() {
                    return;
                }
                let index = match self.open {
                    Some((index, None)) => index,
                    _ => self.open_block(json!({"type": "text", "text": ""}), None, out),
                };
                write(
                    out,
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": text}}),
                );
            }
            ir::StreamEvent::ToolCallStart {
                index: position,
                id,
                name,
                ..
            } => {
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let index = self.open_block(block, Some(*position), out);
                self.tools.insert(*position, index);
            }
            ir::StreamEvent::ToolCallDelta {
                index: position,
                arguments,
                ..
            } => {
                // A delta for a call whose block is already closed (no upstream we speak to
                // interleaves calls) is still written against that block: the SDKs accumulate
                // `partial_json` by index.
                let Some(&index) = self.tools.get(position) else {
                    return; // never started: there is no block to put it in
                };
                if arguments.is_empty() {
                    return;
                }
                write(
                    out,
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                );
            }
            // OpenAI upstreams send the finish reason before usage: both wait for `finish()`.
            ir::StreamEvent::Finish { reason, .. } => self.finish = Some(reason.clone()),
            ir::StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.start("", out);
        self.close_block(out);
        self.ended = true;
        let stop_reason = self.finish.as_ref().map_or("end_turn", finish_to_wire);
        let usage = WireUsage::from_ir(&self.usage.unwrap_or_default());
        write(
            out,
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": usage.to_wire()}),
        );
        write(out, "message_stop", json!({"type": "message_stop"}));
    }

    fn error(&mut self, err: &ir::Error, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ended = true;
        write(out, "error", error_body(err));
    }
}

/// The `index` and the `field` object of a content block event.
fn indexed<'a>(data: &'a Value, field: &str, kind: &str) -> Result<(u64, &'a Value), ir::Error> {
    match (data.get("index").and_then(Value::as_u64), data.get(field)) {
        (Some(index), Some(v)) => Ok((index, v)),
        _ => Err(protocol(format!(
            "anthropic `{kind}` event lacks `index` or `{field}`"
        ))),
    }
}

/// A non-empty text field as a `TextDelta` of choice 0.
fn push_text(out: &mut Vec<ir::StreamEvent>, v: &Value, key: &str) {
    let text = str_of(v, key);
    if !text.is_empty() {
        out.push(ir::StreamEvent::TextDelta { choice: 0, text });
    }
}

fn write(out: &mut BytesMut, event: &str, data: Value) {
    sse::write_event(out, Some(event), &data.to_string());
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn invalid(message: impl Into<String>, param: impl Into<String>) -> ir::Error {
    ir::Error::invalid(message).with_param(param)
}

fn protocol(message: impl Into<String>) -> ir::Error {
    ir::Error::new(ErrorKind::Protocol, message)
}

/// Removes `key`, treating an explicit `null` as absent.
fn take(obj: &mut Obj, key: &str) -> Option<Value> {
    obj.remove(key).filter(|v| !v.is_null())
}

fn want_u32(v: &Value, param: &str) -> Result<u32, ir::Error> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                format!("`{param}` must be a non-negative integer below 2^32"),
                param,
            )
        })
}

fn want_f64(v: &Value, param: &str) -> Result<f64, ir::Error> {
    v.as_f64()
        .ok_or_else(|| invalid(format!("`{param}` must be a number"), param))
}

fn want_str_field(v: &Value, key: &str, param: &str) -> Result<String, ir::Error> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(invalid(
            format!("missing string field `{key}`"),
            format!("{param}.{key}"),
        )),
    }
}

/// A string field of an upstream object, empty when absent (upstream replies are lenient).
fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn non_empty(obj: Obj) -> Option<Obj> {
    (!obj.is_empty()).then_some(obj)
}

fn set_content_extra(msg: &mut Message, extras: Vec<Option<Obj>>) {
    if extras.iter().any(Option::is_some) {
        let aligned = extras
            .into_iter()
            .map(|e| e.map_or(Value::Null, Value::Object))
            .collect();
        msg.extra
            .insert(CONTENT_EXTRA.into(), Value::Array(aligned));
    }
}

/// `{"type":"text","text":..}` and nothing else: may be written in the string form.
fn is_plain_text(block: &Value) -> bool {
    block.as_object().is_some_and(|b| {
        b.len() == 2
            && b.get("type").and_then(Value::as_str) == Some("text")
            && b.contains_key("text")
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
