//! Google AI (Gemini, `generativelanguage` v1beta) upstream codec: IR → `generateContent` and
//! `batchEmbedContents` bodies; replies, `streamGenerateContent?alt=sse` events and error bodies
//! → IR. Pure functions, no I/O; the model name travels in the URL, never in a chat body.
//!
//! Decisions worth knowing (each also noted where it is made):
//! - Tool parameters go in `parametersJsonSchema` and JSON-mode schemas in `responseJsonSchema`:
//!   both take JSON Schema as callers write it, where `parameters`/`responseSchema` take only
//!   Google's OpenAPI subset and reject common keywords (`additionalProperties`, `$ref`, ...).
//! - System and developer messages are hoisted, wherever they sit, into `systemInstruction`
//!   (text only, as the API documents).
//! - The IR cannot carry Gemini's `thoughtSignature`, so a replayed model turn gets Google's
//!   documented placeholder on its first `functionCall` part; without it Gemini 3 answers 400.
//! - Dropped, having no Gemini equivalent: `parallel_tool_calls`, `user`, `Tool::strict`, image
//!   `detail`, the JSON schema's name/description/strict, message `name`, non-text parts of
//!   system and tool messages. `Part::Other` and `extra` are kept only when the request's
//!   source format is Gemini (never, today): they cannot be translated, only passed through.
//! - Reply parts other than text and function calls (thoughts, inline images, code execution)
//!   are dropped: the IR's `Part::Other` is tagged with the *request's* format, unknown here.
//! - A blocked prompt (no candidates, `promptFeedback.blockReason`) is an `InvalidRequest`
//!   error with code `content_filter`: there is no reply to give, the same prompt fails on
//!   retry, and it is the caller's content that was refused (OpenAI answers such prompts 400).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{ir, sse, wire};

/// Google's documented `thoughtSignature` for function calls the model did not just produce
/// (history replayed by a client that could not keep the real signature).
const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";

/// Upstream messages echoed to callers are cut to this many bytes.
const MAX_MESSAGE: usize = 2000;

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    generation_config: Map<String, Value>,
}

#[derive(Serialize)]
struct Content {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Value>,
}

/// IR → body for `POST {base}/models/{model}:generateContent` (or
/// `:streamGenerateContent?alt=sse`; same body).
pub fn encode_request(req: &ir::ChatRequest) -> Result<Vec<u8>, ir::Error> {
    let passthrough = req.source == ir::Format::Gemini;
    let mut system = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    let mut call_names: HashMap<&str, &str> = HashMap::new();

    for (i, msg) in req.messages.iter().enumerate() {
        let (role, parts) = match msg.role {
            ir::Role::System | ir::Role::Developer => {
                system.extend(msg.content.iter().filter_map(|p| match p {
                    ir::Part::Text(t) if !t.is_empty() => Some(json!({ "text": t })),
                    _ => None,
                }));
                continue;
            }
            ir::Role::User => ("user", content_parts(&msg.content, passthrough, i)?),
            ir::Role::Assistant => {
                let mut parts = content_parts(&msg.content, passthrough, i)?;
                for (n, call) in msg.tool_calls.iter().enumerate() {
                    call_names.insert(&call.id, &call.name);
                    let mut part = json!({
                        "functionCall": { "name": call.name, "args": arguments(call, i, n)? }
                    });
                    if n == 0 {
                        // Parallel calls carry one signature, on the first call of the step.
                        part["thoughtSignature"] = json!(PLACEHOLDER_SIGNATURE);
                    }
                    parts.push(part);
                }
                ("model", parts)
            }
            ir::Role::Tool => {
                let param = || format!("messages[{i}].tool_call_id");
                let id = msg.tool_call_id.as_deref().ok_or_else(|| {
                    ir::Error::invalid("a tool message must carry tool_call_id").with_param(param())
                })?;
                let name = call_names.get(id).ok_or_else(|| {
                    ir::Error::invalid(format!(
                        "tool message answers tool_call_id '{id}', which no earlier assistant \
                         message called"
                    ))
                    .with_param(param())
                })?;
                let text = msg.joined_text();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(obj @ Value::Object(_)) => obj,
                    _ => json!({ "content": text }),
                };
                let part = json!({ "functionResponse": { "name": name, "response": response } });
                ("user", vec![part])
            }
        };
        if parts.is_empty() {
            continue; // Gemini rejects a content without parts
        }
        match contents.last_mut() {
            // Gemini wants turns to alternate; consecutive tool results become one turn.
            Some(last) if last.role == Some(role) => last.parts.extend(parts),
            _ => contents.push(Content {
                role: Some(role),
                parts,
            }),
        }
    }

    if contents.is_empty() {
        // Gemini refuses a request without contents; say why here instead of spending an
        // upstream call on it.
        return Err(ir::Error::invalid(
            "no message has content a Gemini model can read (only system text, or empty \
             messages)",
        )
        .with_param("messages"));
    }
    let body = Request {
        contents,
        system_instruction: (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        }),
        tools: tools(req),
        tool_config: tool_config(req)?,
        generation_config: generation_config(req),
    };
    let mut value = serde_json::to_value(body).map_err(internal)?;
    if passthrough {
        if let Value::Object(obj) = &mut value {
            for (k, v) in &req.extra {
                obj.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    serde_json::to_vec(&value).map_err(internal)
}

fn content_parts(
    content: &[ir::Part],
    passthrough: bool,
    msg: usize,
) -> Result<Vec<Value>, ir::Error> {
    let mut parts = Vec::with_capacity(content.len());
    for part in content {
        match part {
            ir::Part::Text(t) if t.is_empty() => {} // Gemini rejects empty text parts
            ir::Part::Text(t) => parts.push(json!({ "text": t })),
            ir::Part::Image(img) => parts.push(image(img, msg)?),
            ir::Part::Other(v) if passthrough => parts.push(v.clone()),
            ir::Part::Other(_) => {}
        }
    }
    Ok(parts)
}

fn image(img: &ir::Image, msg: usize) -> Result<Value, ir::Error> {
    match img {
        ir::Image::Base64 { media_type, data } => {
            Ok(json!({ "inlineData": { "mimeType": media_type, "data": data } }))
        }
        ir::Image::Url { url, .. } => {
            if let Some(rest) = url.strip_prefix("data:") {
                let (mime, data) = rest
                    .split_once(";base64,")
                    .filter(|(mime, _)| !mime.is_empty())
                    .ok_or_else(|| {
                        ir::Error::invalid("an image data: URL must be data:<mime>;base64,<data>")
                            .with_param(format!("messages[{msg}].content"))
                    })?;
                return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
            }
            Ok(json!({ "fileData": { "mimeType": mime_from_url(url), "fileUri": url } }))
        }
    }
}

/// Gemini wants a MIME type with every `fileData`; the URL's extension is all we know.
fn mime_from_url(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        Some("pdf") => "application/pdf",
        _ => "image/jpeg",
    }
}

fn arguments(call: &ir::ToolCall, msg: usize, n: usize) -> Result<Value, ir::Error> {
    if call.arguments.trim().is_empty() {
        return Ok(json!({})); // some clients send "" for a call without arguments
    }
    match serde_json::from_str::<Value>(&call.arguments) {
        Ok(obj @ Value::Object(_)) => Ok(obj),
        _ => Err(ir::Error::invalid(format!(
            "tool call '{}' has arguments that are not a JSON object",
            call.name
        ))
        .with_param(format!(
            "messages[{msg}].tool_calls[{n}].function.arguments"
        ))),
    }
}

fn tools(req: &ir::ChatRequest) -> Vec<Value> {
    if req.tools.is_empty() {
        return Vec::new();
    }
    let decls: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut d = Map::new();
            d.insert("name".into(), json!(t.name));
            if let Some(desc) = &t.description {
                d.insert("description".into(), json!(desc));
            }
            // Full JSON Schema, as callers write it (see the module docs).
            if !t.parameters.is_null() {
                d.insert("parametersJsonSchema".into(), t.parameters.clone());
            }
            Value::Object(d)
        })
        .collect();
    vec![json!({ "functionDeclarations": decls })]
}

fn tool_config(req: &ir::ChatRequest) -> Result<Option<Value>, ir::Error> {
    let Some(choice) = &req.tool_choice else {
        return Ok(None);
    };
    if req.tools.is_empty() {
        return Ok(None); // a mode without declarations means nothing to Gemini
    }
    let config = match choice {
        ir::ToolChoice::Auto => json!({ "mode": "AUTO" }),
        ir::ToolChoice::None => json!({ "mode": "NONE" }),
        ir::ToolChoice::Required => json!({ "mode": "ANY" }),
        ir::ToolChoice::Tool(name) => {
            if !req.tools.iter().any(|t| &t.name == name) {
                return Err(ir::Error::invalid(format!(
                    "tool_choice names '{name}', which is not among the tools"
                ))
                .with_param("tool_choice"));
            }
            json!({ "mode": "ANY", "allowedFunctionNames": [name] })
        }
    };
    Ok(Some(json!({ "functionCallingConfig": config })))
}

fn generation_config(req: &ir::ChatRequest) -> Map<String, Value> {
    let mut g = Map::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            g.insert(k.to_owned(), v);
        }
    };
    set("temperature", req.temperature.map(Value::from));
    set("topP", req.top_p.map(Value::from));
    set("topK", req.top_k.map(Value::from));
    set("maxOutputTokens", req.max_tokens.map(Value::from));
    set("candidateCount", req.n.map(Value::from));
    set(
        "stopSequences",
        (!req.stop.is_empty()).then(|| json!(req.stop)),
    );
    // OpenAI sampling fields the IR carries in `extra` that Gemini's generationConfig has
    // under its own names.
    if req.source == ir::Format::OpenAi {
        for (from, to) in [
            ("seed", "seed"),
            ("presence_penalty", "presencePenalty"),
            ("frequency_penalty", "frequencyPenalty"),
        ] {
            set(to, req.extra.get(from).filter(|v| v.is_number()).cloned());
        }
    }
    match &req.response_format {
        None | Some(ir::ResponseFormat::Text) => {}
        Some(ir::ResponseFormat::JsonObject) => {
            set("responseMimeType", Some(json!("application/json")));
        }
        Some(ir::ResponseFormat::JsonSchema { schema, .. }) => {
            set("responseMimeType", Some(json!("application/json")));
            set("responseJsonSchema", Some(schema.clone()));
        }
    }
    g
}

// ---------------------------------------------------------------------------------------------
// Reply

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Response {
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
    model_version: Option<String>,
    response_id: Option<String>,
    error: Option<ErrorBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Candidate {
    content: Option<CandidateContent>,
    finish_reason: Option<String>,
    index: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CandidateContent {
    parts: Vec<ReplyPart>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ReplyPart {
    text: Option<String>,
    thought: Option<bool>,
    function_call: Option<FunctionCall>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionCall {
    id: Option<String>,
    name: String,
    args: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase", default)]
struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    cached_content_token_count: u64,
    thoughts_token_count: u64,
    tool_use_prompt_token_count: u64,
}

impl From<UsageMetadata> for ir::Usage {
    fn from(u: UsageMetadata) -> Self {
        ir::Usage {
            // promptTokenCount already includes the cached content; tool-use prompts (built-in
            // tools) are counted apart by Gemini but billed as input.
            input_tokens: u
                .prompt_token_count
                .saturating_add(u.tool_use_prompt_token_count),
            output_tokens: u
                .candidates_token_count
                .saturating_add(u.thoughts_token_count),
            cached_input_tokens: u.cached_content_token_count,
            cache_write_tokens: 0,
            reasoning_tokens: u.thoughts_token_count,
        }
    }
}

/// One part of a candidate, as the IR sees it.
enum Piece<'a> {
    Text(&'a str),
    Call {
        id: Option<&'a str>,
        name: &'a str,
        arguments: String,
    },
}

impl Candidate {
    /// Text and function-call parts in order; thoughts and unmodelled parts are skipped.
    fn pieces(&self) -> impl Iterator<Item = Piece<'_>> {
        let parts = self.content.as_ref().map_or(&[][..], |c| &c.parts[..]);
        parts
            .iter()
            .filter(|p| p.thought != Some(true))
            .flat_map(|p| {
                let text = p.text.as_deref().filter(|t| !t.is_empty()).map(Piece::Text);
                let call = p.function_call.as_ref().map(|c| Piece::Call {
                    id: c.id.as_deref().filter(|id| !id.is_empty()),
                    name: &c.name,
                    arguments: c
                        .args
                        .as_ref()
                        .map_or_else(|| "{}".to_owned(), Value::to_string),
                });
                text.into_iter().chain(call)
            })
    }

    /// The finish reason, if this candidate has one (the unused default counts as none).
    fn finish(&self) -> Option<&str> {
        self.finish_reason
            .as_deref()
            .filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED")
    }
}

fn finish_reason(reason: &str, called_tools: bool) -> ir::FinishReason {
    match reason {
        "STOP" if called_tools => ir::FinishReason::ToolCalls,
        "STOP" => ir::FinishReason::Stop,
        "MAX_TOKENS" => ir::FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            ir::FinishReason::ContentFilter
        }
        other => ir::FinishReason::Other(other.to_ascii_lowercase()),
    }
}

fn call_id(id: Option<&str>, choice: u32, n: u32) -> String {
    id.map_or_else(|| format!("call_{choice}_{n}"), str::to_owned)
}

/// Parses one `GenerateContentResponse`, which must be a JSON object (serde would otherwise read
/// an array into the struct positionally and call it a reply).
fn parse_response(body: &[u8]) -> Result<Response, ir::Error> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ir::Error::new(
            ir::ErrorKind::Protocol,
            "the provider's reply is not a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(protocol)
}

/// Checks a parsed body for the two ways Gemini says "no reply": an error object, and a
/// blocked prompt.
fn refusal(resp: &Response) -> Option<ir::Error> {
    if let Some(err) = &resp.error {
        let status = err.code.and_then(|c| u16::try_from(c).ok()).unwrap_or(502);
        return Some(classify(status, Some(err)));
    }
    if resp.candidates.is_empty() {
        let reason = resp.prompt_feedback.as_ref()?.block_reason.as_deref()?;
        let mut err = ir::Error::invalid(format!(
            "the provider blocked the prompt: {}",
            reason.to_ascii_lowercase()
        ));
        err.code = Some("content_filter".into());
        return Some(err);
    }
    None
}

/// A `generateContent` response body → IR. `model` is the upstream model name (used when the
/// body has no `modelVersion`).
pub fn decode_reply(body: &[u8], model: &str) -> Result<ir::ChatReply, ir::Error> {
    let resp = parse_response(body)?;
    if let Some(err) = refusal(&resp) {
        return Err(err);
    }
    if resp.candidates.is_empty() {
        return Err(ir::Error::new(
            ir::ErrorKind::Protocol,
            "the provider's reply has no candidates",
        ));
    }
    let choices = resp
        .candidates
        .iter()
        .enumerate()
        .map(|(pos, cand)| {
            let index = cand.index.unwrap_or(pos as u32);
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            for piece in cand.pieces() {
                match piece {
                    Piece::Text(t) => text.push_str(t),
                    Piece::Call {
                        id,
                        name,
                        arguments,
                    } => tool_calls.push(ir::ToolCall {
                        id: call_id(id, index, tool_calls.len() as u32),
                        name: name.to_owned(),
                        arguments,
                    }),
                }
            }
            let finish = cand
                .finish()
                .map(|r| finish_reason(r, !tool_calls.is_empty()));
            ir::Choice {
                index,
                message: ir::Message {
                    role: ir::Role::Assistant,
                    content: if text.is_empty() {
                        Vec::new()
                    } else {
                        vec![ir::Part::Text(text)]
                    },
                    tool_calls,
                    tool_call_id: None,
                    name: None,
                    extra: ir::Extra::new(),
                },
                finish_reason: finish,
            }
        })
        .collect();
    Ok(ir::ChatReply {
        id: resp
            .response_id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(fresh_id),
        model: resp
            .model_version
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| model.to_owned()),
        created: now(),
        choices,
        usage: resp.usage_metadata.map(ir::Usage::from),
    })
}

// ---------------------------------------------------------------------------------------------
// Stream

/// Decoder for `streamGenerateContent?alt=sse`: each SSE `data:` is one complete
/// `GenerateContentResponse`. Gemini has no end marker; the stream is done once every
/// candidate seen has a finish reason.
#[derive(Debug)]
pub struct StreamDecoder {
    model: String,
    started: bool,
    done: bool,
    /// Latest `usageMetadata`: Gemini repeats it on many chunks, complete on the last.
    usage: Option<ir::Usage>,
    candidates: BTreeMap<u32, CandidateState>,
}

#[derive(Debug, Default)]
struct CandidateState {
    calls: u32,
    finished: bool,
}

impl StreamDecoder {
    /// A decoder for a stream from upstream model `model` (used when chunks carry no
    /// `modelVersion`).
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            done: false,
            usage: None,
            candidates: BTreeMap::new(),
        }
    }
}

impl wire::StreamDecoder for StreamDecoder {
    fn event(&mut self, ev: &sse::Event, out: &mut Vec<ir::StreamEvent>) -> Result<(), ir::Error> {
        let data = ev.data.trim();
        if self.done || data.is_empty() {
            return Ok(()); // nothing follows a finished reply; blank data is no chunk
        }
        let chunk = parse_response(data.as_bytes())?;
        if let Some(err) = refusal(&chunk) {
            return Err(err);
        }
        if !self.started {
            self.started = true;
            out.push(ir::StreamEvent::Start {
                id: chunk
                    .response_id
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(fresh_id),
                model: chunk
                    .model_version
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| self.model.clone()),
                created: now(),
            });
        }
        if let Some(u) = chunk.usage_metadata {
            self.usage = Some(u.into());
        }
        for (pos, cand) in chunk.candidates.iter().enumerate() {
            let choice = cand.index.unwrap_or(pos as u32);
            let state = self.candidates.entry(choice).or_default();
            if state.finished {
                continue;
            }
            for piece in cand.pieces() {
                match piece {
                    Piece::Text(t) => out.push(ir::StreamEvent::TextDelta {
                        choice,
                        text: t.to_owned(),
                    }),
                    Piece::Call {
                        id,
                        name,
                        arguments,
                    } => {
                        let index = state.calls;
                        state.calls += 1;
                        out.push(ir::StreamEvent::ToolCallStart {
                            choice,
                            index,
                            id: call_id(id, choice, index),
                            name: name.to_owned(),
                        });
                        out.push(ir::StreamEvent::ToolCallDelta {
                            choice,
                            index,
                            arguments,
                        });
                    }
                }
            }
            if let Some(reason) = cand.finish() {
                state.finished = true;
                out.push(ir::StreamEvent::Finish {
                    choice,
                    reason: finish_reason(reason, state.calls > 0),
                });
            }
        }
        if !self.candidates.is_empty() && self.candidates.values().all(|c| c.finished) {
            self.done = true;
            if let Some(usage) = self.usage {
                out.push(ir::StreamEvent::Usage(usage));
            }
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    code: Option<i64>,
    message: String,
    status: String,
    details: Vec<Value>,
}

/// Classifies a Gemini error response into an [`ir::Error`] with a caller-safe message (the
/// caller adds the provider name).
pub fn decode_error(status: u16, body: &[u8]) -> ir::Error {
    let parsed = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        // `streamGenerateContent` without `alt=sse` wraps its answer in a JSON array. (Going
        // through `Value`: serde would read an array into a struct positionally.)
        let obj = match v {
            Value::Array(items) => items.into_iter().next()?,
            v => v,
        };
        ErrorBody::deserialize(obj.get("error")?).ok()
    });
    classify(status, parsed.as_ref())
}

/// The HTTP status Google pairs with each canonical status name (google.rpc.Code), so a body
/// whose name and HTTP status disagree (a 200 with an error inside a stream) still classifies.
fn status_of(name: &str) -> Option<u16> {
    Some(match name {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ABORTED" | "ALREADY_EXISTS" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" => 500,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => return None,
    })
}

fn classify(http: u16, err: Option<&ErrorBody>) -> ir::Error {
    use ir::ErrorKind as K;
    let code = err.and_then(|e| status_of(&e.status)).unwrap_or(http);
    let upstream = err
        .map(|e| truncate(e.message.trim()))
        .filter(|m| !m.is_empty());
    // Gemini answers a bad API key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID): that is
    // the gateway's credential, not the caller's request, and its message must not be echoed.
    let key_refused = err.is_some_and(|e| {
        e.details.iter().any(|d| {
            d.get("reason")
                .and_then(Value::as_str)
                .is_some_and(|r| r.starts_with("API_KEY"))
        }) || e.message.to_ascii_lowercase().contains("api key")
    });
    let with_upstream = |generic: &str| upstream.clone().unwrap_or_else(|| generic.to_owned());
    match code {
        401 | 403 => auth_error(),
        400 if key_refused => auth_error(),
        400 => ir::Error::new(
            K::InvalidRequest,
            with_upstream("the provider rejected the request as invalid"),
        ),
        404 => ir::Error::new(
            K::NotFound,
            with_upstream("the provider does not know the requested model or resource"),
        ),
        408 | 504 => ir::Error::new(K::Timeout, "the provider timed out"),
        413 => ir::Error::new(
            K::PayloadTooLarge,
            "the request is too large for the provider",
        ),
        429 => {
            let mut e = ir::Error::new(
                K::RateLimited,
                with_upstream("the provider's rate limit or quota is exhausted"),
            );
            e.retry_after = err.and_then(retry_delay);
            e
        }
        503 => ir::Error::new(K::Overloaded, "the provider is temporarily unavailable"),
        _ if (400..500).contains(&code) => ir::Error::new(
            K::UpstreamStatus,
            format!("the provider refused the request with status {code}"),
        )
        .with_status(code),
        _ => ir::Error::new(
            K::UpstreamStatus,
            format!("the provider failed with status {code}"),
        ),
    }
}

fn auth_error() -> ir::Error {
    ir::Error::new(
        ir::ErrorKind::UpstreamAuth,
        "the provider refused the gateway's credentials",
    )
}

/// `retryDelay` of a `google.rpc.RetryInfo` detail: a protobuf Duration in JSON, decimal
/// seconds with an `s` suffix ("30s", "1.5s", "45.837906927s").
fn retry_delay(err: &ErrorBody) -> Option<Duration> {
    err.details
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| parse_duration(d.get("retryDelay")?.as_str()?))
}

/// Capped at [`ir::MAX_RETRY_AFTER`], as a `Retry-After` header is.
fn parse_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    let delay = Duration::try_from_secs_f64(secs).ok()?;
    Some(delay.min(ir::MAX_RETRY_AFTER))
}

// ---------------------------------------------------------------------------------------------
// Embeddings

/// IR embeddings → body for `POST {base}/models/{model}:batchEmbedContents`: one request per
/// input string. Gemini embeds text only, so token-array inputs are refused.
pub fn encode_embeddings(req: &ir::EmbeddingsRequest, model: &str) -> Result<Vec<u8>, ir::Error> {
    let not_text = || {
        ir::Error::invalid("Gemini embeds text only: input must be a string or an array of strings")
            .with_param("input")
    };
    let texts: Vec<&str> = match &req.input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().ok_or_else(not_text))
            .collect::<Result<_, _>>()?,
        _ => return Err(not_text()),
    };
    // Each request repeats the model, which must match the one in the URL.
    let name = if model.starts_with("models/") {
        model.to_owned()
    } else {
        format!("models/{model}")
    };
    let requests: Vec<Value> = texts
        .iter()
        .map(|text| {
            let mut r = json!({ "model": name, "content": { "parts": [{ "text": text }] } });
            if let Some(d) = req.dimensions {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    serde_json::to_vec(&json!({ "requests": requests })).map_err(internal)
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    embeddings: Vec<EmbeddingValues>,
}

#[derive(Deserialize)]
struct EmbeddingValues {
    values: Vec<f32>,
}

/// `batchEmbedContents` response → IR. Vectors are floats whatever `encoding_format` asked
/// (the surface converts); Gemini reports no usage for embeddings.
pub fn decode_embeddings(body: &[u8], model: &str) -> Result<ir::EmbeddingsReply, ir::Error> {
    let resp: EmbeddingsResponse = serde_json::from_slice(body).map_err(protocol)?;
    Ok(ir::EmbeddingsReply {
        model: model.to_owned(),
        data: resp
            .embeddings
            .into_iter()
            .map(|e| ir::Embedding::Float(e.values))
            .collect(),
        usage: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Shared

fn protocol(e: serde_json::Error) -> ir::Error {
    ir::Error::new(
        ir::ErrorKind::Protocol,
        format!("the provider's reply is not valid Gemini JSON: {e}"),
    )
}

fn internal(e: serde_json::Error) -> ir::Error {
    ir::Error::new(
        ir::ErrorKind::Internal,
        format!("could not encode the Gemini request: {e}"),
    )
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An id for a reply whose body carries no `responseId`: unique within the process.
fn fresh_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("gemini-{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sampling_tests {
    use super::*;

    #[test]
    fn openai_seed_and_penalties_reach_generation_config() {
        let mut req = ir::ChatRequest::new("m", ir::Format::OpenAi);
        req.messages.push(ir::Message::text(ir::Role::User, "hi"));
        req.extra.insert("seed".into(), json!(7));
        req.extra.insert("presence_penalty".into(), json!(0.5));
        req.extra.insert("frequency_penalty".into(), json!(-0.25));
        req.extra.insert("logprobs".into(), json!(true));
        let body: Value = serde_json::from_slice(&encode_request(&req).unwrap()).unwrap();
        assert_eq!(
            body["generationConfig"],
            json!({"seed": 7, "presencePenalty": 0.5, "frequencyPenalty": -0.25})
        );
    }
}
