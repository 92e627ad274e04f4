//! The OpenAI wire format (Chat Completions, Embeddings, Models), both directions.
//!
//! Used by the OpenAI caller surface (decode requests, encode replies and chunks) and by every
//! OpenAI-format upstream (encode requests, decode replies and chunks): OpenAI, Azure OpenAI and
//! the compatible servers (Groq, Mistral, vLLM, Ollama, ...). Unknown request fields are kept in
//! `extra` and written back untouched when the upstream speaks this format too.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::BytesMut;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::ir::{
    self, ChatReply, ChatRequest, Choice, Embedding, EmbeddingsReply, EmbeddingsRequest, Error,
    ErrorKind, FinishReason, Format, Image, Message, ModelInfo, Part, ResponseFormat, Role,
    StreamEvent, Tool, ToolCall, ToolChoice, Usage,
};
use crate::wire::skim;
use crate::{sse, wire};

// ---------------------------------------------------------------------------------------------
// Requests: decode (caller surface)
// ---------------------------------------------------------------------------------------------

/// A JSON object key, borrowed from the input when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A wire object with known fields parsed in place and every other field kept in `extra`.
/// Hand-rolled instead of `#[serde(flatten)]`, which buffers the whole object into an
/// intermediate tree first: this runs on every request.
macro_rules! object_with_extra {
    ($(#[$doc:meta])* $name:ident { required { $($rf:ident : $rt:ty),* $(,)? } optional { $($of:ident : $ot:ty),* $(,)? } }) => {
        $(#[$doc])*
        struct $name {
            $($rf: $rt,)*
            $($of: Option<$ot>,)*
            extra: Map<String, Value>,
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        $(let mut $rf: Option<$rt> = None;)*
                        $(let mut $of: Option<$ot> = None;)*
                        let mut extra = Map::new();
                        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                            match &*key {
                                $(stringify!($rf) => $rf = Some(map.next_value()?),)*
                                $(stringify!($of) => $of = map.next_value()?,)*
                                _ => {
                                    let v: Value = map.next_value()?;
                                    extra.insert(key.into_owned(), v);
                                }
                            }
                        }
                        Ok($name {
                            $($rf: $rf.ok_or_else(|| serde::de::Error::missing_field(stringify!($rf)))?,)*
                            $($of,)*
                            extra,
                        })
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

object_with_extra!(ChatRequestWire {
    required { model: String, messages: Vec<MessageWire> }
    optional {
        tools: Vec<ToolWire>,
        tool_choice: Value,
        parallel_tool_calls: bool,
        max_tokens: u32,
        temperature: f64,
        top_p: f64,
        stop: StopWire,
        n: u32,
        response_format: Value,
        stream: bool,
        stream_options: StreamOptionsWire,
        user: String,
    }
});

impl ChatRequestWire {
    /// The request read by [`skim`], when it reads the body exactly as serde would; `None`
    /// sends the body to serde, which reads or refuses it. The members most requests are made
    /// of (model, messages of text, stream, sampling numbers) are read in place; any other is
    /// decoded by serde from its own bytes. A member given twice goes to serde (which keeps the
    /// last), as does a body that is not UTF-8 throughout. Saves about a third of a small
    /// request's decode (the bench's: 4.2k → 2.9k instructions): serde's visitor matched every
    /// key through its field machinery and built each string as a `Value` first.
    fn skim(body: &[u8]) -> Option<Self> {
        Self::skim_with_model_at(body).map(|(w, _)| w)
    }

    /// [`ChatRequestWire::skim`], and where the model's string is in the body.
    fn skim_with_model_at(body: &[u8]) -> Option<(Self, std::ops::Range<usize>)> {
        let body = std::str::from_utf8(body).ok()?;
        let mut w = ChatRequestWire {
            model: String::new(),
            messages: Vec::new(),
            tools: None,
            tool_choice: None,
            parallel_tool_calls: None,
            max_tokens: None,
            temperature: None,
            top_p: None,
            stop: None,
            n: None,
            response_format: None,
            stream: None,
            stream_options: None,
            user: None,
            extra: Map::new(),
        };
        let (mut model, mut messages) = (None, None);
        let seen = &mut 0u16;
        skim::document(body, |r| {
            r.object(|r, k| match k {
                "model" => skim::once(&mut model, r.str_at()?),
                "messages" => skim::once(&mut messages, r.list(MessageWire::skim)?),
                "stream" => skim::member(seen, 1, &mut w.stream, r.opt_bool()?),
                "max_tokens" => skim::member(seen, 1 << 1, &mut w.max_tokens, opt_uint(r)?),
                "n" => skim::member(seen, 1 << 2, &mut w.n, opt_uint(r)?),
                "temperature" => skim::member(seen, 1 << 3, &mut w.temperature, r.serde()?),
                "top_p" => skim::member(seen, 1 << 4, &mut w.top_p, r.serde()?),
                "user" => skim::member(seen, 1 << 5, &mut w.user, opt_string(r)?),
                "parallel_tool_calls" => {
                    skim::member(seen, 1 << 6, &mut w.parallel_tool_calls, r.opt_bool()?)
                }
                "stream_options" => skim::member(seen, 1 << 7, &mut w.stream_options, r.serde()?),
                "tools" => skim::member(seen, 1 << 8, &mut w.tools, r.serde()?),
                "tool_choice" => skim::member(seen, 1 << 9, &mut w.tool_choice, r.serde()?),
                "stop" => skim::member(seen, 1 << 10, &mut w.stop, r.serde()?),
                "response_format" => {
                    skim::member(seen, 1 << 11, &mut w.response_format, r.serde()?)
                }
                _ => extra_member(r, k, &mut w.extra),
            })
        })?;
        let (model, model_at) = model?;
        w.model = model.into_owned();
        w.messages = messages?;
        Some((w, model_at))
    }
}

/// A member the wire type does not model, kept in `extra` as serde keeps it (a later one of
/// the same name replacing an earlier).
fn extra_member(r: &mut skim::Reader<'_>, key: &str, extra: &mut Map<String, Value>) -> Option<()> {
    let v: Value = r.serde()?;
    extra.insert(key.to_owned(), v);
    Some(())
}

/// An `Option<u32>` member as serde reads it: `null`, or digits that fit.
fn opt_uint(r: &mut skim::Reader<'_>) -> Option<Option<u32>> {
    if r.null() {
        return Some(None);
    }
    r.uint().map(Some)
}

/// An `Option<String>` member as serde reads it.
fn opt_string(r: &mut skim::Reader<'_>) -> Option<Option<String>> {
    r.opt_str().map(|s| s.map(Cow::into_owned))
}

impl MessageWire {
    /// One message read by [`skim`] (see [`ChatRequestWire::skim`]).
    fn skim(r: &mut skim::Reader<'_>) -> Option<Self> {
        let mut m = MessageWire {
            role: String::new(),
            content: None,
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        };
        let mut role = None;
        let seen = &mut 0u16;
        r.object(|r, k| match k {
            "role" => skim::once(&mut role, r.str()?.into_owned()),
            "content" => {
                let content = match r.peek()? {
                    b'"' => Some(Value::String(r.str()?.into_owned())),
                    _ => r.serde()?,
                };
                skim::member(seen, 1, &mut m.content, content)
            }
            "name" => skim::member(seen, 1 << 1, &mut m.name, opt_string(r)?),
            "tool_call_id" => skim::member(seen, 1 << 2, &mut m.tool_call_id, opt_string(r)?),
            "tool_calls" => skim::member(seen, 1 << 3, &mut m.tool_calls, r.serde()?),
            _ => extra_member(r, k, &mut m.extra),
        })?;
        m.role = role?;
        Some(m)
    }
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

object_with_extra!(MessageWire {
    required { role: String }
    optional {
        content: Value,
        name: String,
        tool_calls: Vec<ToolCallWire>,
        tool_call_id: String,
    }
});

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
    // The fast parses first; only a body that fails is parsed again to say where.
    let fast = match ChatRequestWire::skim(body) {
        Some(w) => Ok(w),
        None => serde_json::from_slice(body),
    };
    let wire: ChatRequestWire = match fast {
        Ok(w) => w,
        Err(fast) => {
            let mut de = serde_json::Deserializer::from_slice(body);
            serde_path_to_error::deserialize::<_, ChatRequestWire>(&mut de)
                .map_err(located_json_error)?;
            // The located parse took the first document: what failed is what follows it
            // (`from_slice` refuses trailing bytes; a bare `Deserializer` does not).
            return Err(de.end().err().map_or_else(|| json_error(fast), json_error));
        }
    };
    chat_request_from_wire(wire)
}

/// [`decode_chat_request`], keeping the body for an upstream of the same format
/// ([`ChatRequest::raw`]) when the skim read it and an OpenAI upstream may be sent it as it
/// came: everything but the model name is forwarded in the caller's bytes, without writing
/// the request again from the IR. A `stream_options` on a request that does not stream is
/// dropped on the way (OpenAI refuses it), so such a body is written from the IR.
pub fn decode_chat_request_raw(body: bytes::Bytes) -> Result<ChatRequest, Error> {
    let Some((wire, model_at)) = ChatRequestWire::skim_with_model_at(&body) else {
        return decode_chat_request(&body);
    };
    let keep = wire.stream_options.is_none() || wire.stream == Some(true);
    let max_tokens_named =
        wire.max_tokens.is_some() && !wire.extra.contains_key("max_completion_tokens");
    let mut req = chat_request_from_wire(wire)?;
    if keep {
        req.raw = Some(ir::RawChat {
            body,
            model_at,
            max_tokens_named,
        });
    }
    Ok(req)
}

/// The IR of a parsed Chat Completions request, checked.
fn chat_request_from_wire(wire: ChatRequestWire) -> Result<ChatRequest, Error> {
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

/// Encodes a chat request for an OpenAI-format upstream serving `model`. Written straight from
/// the IR by borrowing serializers (no intermediate `Value` tree): this runs on every request.
pub fn encode_chat_request(req: &ChatRequest, model: &str, opts: RequestOptions) -> Vec<u8> {
    if let Some(raw) = &req.raw {
        // The caller's bytes, unless this upstream wants something written differently: the
        // usage chunk asked for on a stream, or `max_tokens` under its newer name.
        let asks_usage = req.stream && opts.stream_usage && !req.include_usage;
        let renames_cap = opts.max_completion_tokens && raw.max_tokens_named;
        if !(asks_usage || renames_cap) {
            return splice_model(raw, model);
        }
    }
    let mut out = Vec::with_capacity(256 + req.messages.len() * 64);
    let _ = serde_json::to_writer(&mut out, &RequestOut { req, model, opts });
    out
}

/// The caller's body with `model` in place of the model it named.
fn splice_model(raw: &ir::RawChat, model: &str) -> Vec<u8> {
    let (body, at) = (&raw.body[..], raw.model_at.clone());
    let mut out = Vec::with_capacity(body.len() - at.len() + model.len() + 2);
    out.extend_from_slice(&body[..at.start]);
    let _ = serde_json::to_writer(&mut out, model);
    out.extend_from_slice(&body[at.end..]);
    out
}

struct RequestOut<'a> {
    req: &'a ChatRequest,
    model: &'a str,
    opts: RequestOptions,
}

impl Serialize for RequestOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let req = self.req;
        let passthrough = req.source == Format::OpenAi;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("model", self.model)?;
        m.serialize_entry("messages", &MessagesOut(&req.messages, passthrough))?;
        if !req.tools.is_empty() {
            m.serialize_entry("tools", &Seq(&req.tools, ToolOut))?;
        }
        if let Some(tc) = &req.tool_choice {
            m.serialize_entry("tool_choice", &ToolChoiceOut(tc))?;
        }
        if let Some(p) = req.parallel_tool_calls {
            m.serialize_entry("parallel_tool_calls", &p)?;
        }
        if let Some(mt) = req.max_tokens {
            // The caller's own field name travels in `extra`; write the IR value only when it
            // differs (a caller that sent both).
            match req
                .extra
                .get("max_completion_tokens")
                .filter(|_| passthrough)
            {
                Some(v) if v.as_u64() == Some(u64::from(mt)) => {}
                Some(_) => m.serialize_entry("max_tokens", &mt)?,
                None if self.opts.max_completion_tokens => {
                    m.serialize_entry("max_completion_tokens", &mt)?
                }
                None => m.serialize_entry("max_tokens", &mt)?,
            }
        }
        if let Some(t) = req.temperature {
            m.serialize_entry("temperature", &t)?;
        }
        if let Some(t) = req.top_p {
            m.serialize_entry("top_p", &t)?;
        }
        if !req.stop.is_empty() {
            m.serialize_entry("stop", &req.stop)?;
        }
        if let Some(n) = req.n {
            m.serialize_entry("n", &n)?;
        }
        if let Some(rf) = &req.response_format {
            m.serialize_entry("response_format", &ResponseFormatOut(rf))?;
        }
        if req.stream {
            m.serialize_entry("stream", &true)?;
            if self.opts.stream_usage {
                m.serialize_entry("stream_options", &IncludeUsage)?;
            }
        }
        if let Some(u) = &req.user {
            m.serialize_entry("user", u)?;
        }
        if passthrough {
            // Decoding moved every modelled field out of `extra`: no key is written twice.
            for (k, v) in &req.extra {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// Serializes a slice through a per-item borrowing wrapper.
struct Seq<'a, T, F>(&'a [T], F);

impl<'a, T, F, O> Serialize for Seq<'a, T, F>
where
    F: Fn(&'a T) -> O,
    O: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&(self.1)(item))?;
        }
        seq.end()
    }
}

struct MessagesOut<'a>(&'a [Message], bool);

impl Serialize for MessagesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for msg in self.0 {
            seq.serialize_element(&MessageOut(msg, self.1))?;
        }
        seq.end()
    }
}

struct IncludeUsage;

impl Serialize for IncludeUsage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("include_usage", &true)?;
        m.end()
    }
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

struct MessageOut<'a>(&'a Message, bool);

impl Serialize for MessageOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (msg, passthrough) = (self.0, self.1);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("role", role_str(msg.role))?;
        m.serialize_entry("content", &ContentOut(&msg.content, passthrough))?;
        if let Some(n) = &msg.name {
            m.serialize_entry("name", n)?;
        }
        if !msg.tool_calls.is_empty() {
            m.serialize_entry("tool_calls", &Seq(&msg.tool_calls, ToolCallOut))?;
        }
        if let Some(id) = &msg.tool_call_id {
            m.serialize_entry("tool_call_id", id)?;
        }
        if passthrough {
            for (k, v) in &msg.extra {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

struct ContentOut<'a>(&'a [Part], bool);

impl Serialize for ContentOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let passthrough = self.1;
        match self.0 {
            [] => s.serialize_none(),
            [Part::Text(t)] => s.serialize_str(t),
            parts => {
                let mut seq = s.serialize_seq(None)?;
                for p in parts {
                    match p {
                        Part::Text(t) => seq.serialize_element(&TextPart(t))?,
                        Part::Image(img) => seq.serialize_element(&ImagePart(img))?,
                        Part::Other(v) if passthrough => seq.serialize_element(v)?,
                        Part::Other(_) => {}
                    }
                }
                seq.end()
            }
        }
    }
}

struct TextPart<'a>(&'a str);

impl Serialize for TextPart<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("type", "text")?;
        m.serialize_entry("text", self.0)?;
        m.end()
    }
}

struct ImagePart<'a>(&'a Image);

impl Serialize for ImagePart<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("type", "image_url")?;
        m.serialize_entry("image_url", &ImageUrl(self.0))?;
        m.end()
    }
}

struct ImageUrl<'a>(&'a Image);

impl Serialize for ImageUrl<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self.0 {
            Image::Url { url, detail } => {
                m.serialize_entry("url", url)?;
                if let Some(d) = detail {
                    m.serialize_entry("detail", d)?;
                }
            }
            Image::Base64 { media_type, data } => {
                m.serialize_entry("url", &DataUrl(media_type, data))?;
            }
        }
        m.end()
    }
}

struct DataUrl<'a>(&'a str, &'a str);

impl Serialize for DataUrl<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("data:{};base64,{}", self.0, self.1))
    }
}

struct ToolCallOut<'a>(&'a ToolCall);

impl Serialize for ToolCallOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("id", &self.0.id)?;
        m.serialize_entry("type", "function")?;
        m.serialize_entry("function", &FunctionOut(&self.0.name, &self.0.arguments))?;
        m.end()
    }
}

struct FunctionOut<'a>(&'a str, &'a str);

impl Serialize for FunctionOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", self.0)?;
        m.serialize_entry("arguments", self.1)?;
        m.end()
    }
}

struct ToolOut<'a>(&'a Tool);

impl Serialize for ToolOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Function<'a>(&'a Tool);
        impl Serialize for Function<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let t = self.0;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("name", &t.name)?;
                if let Some(d) = &t.description {
                    m.serialize_entry("description", d)?;
                }
                m.serialize_entry("parameters", &t.parameters)?;
                if let Some(strict) = t.strict {
                    m.serialize_entry("strict", &strict)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("type", "function")?;
        m.serialize_entry("function", &Function(self.0))?;
        m.end()
    }
}

struct ToolChoiceOut<'a>(&'a ToolChoice);

impl Serialize for ToolChoiceOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Tool(n) => {
                json!({"type": "function", "function": {"name": n}}).serialize(s)
            }
        }
    }
}

struct ResponseFormatOut<'a>(&'a ResponseFormat);

impl Serialize for ResponseFormatOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ResponseFormat::Text => json!({"type": "text"}).serialize(s),
            ResponseFormat::JsonObject => json!({"type": "json_object"}).serialize(s),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
                description,
            } => {
                let mut js = json!({"name": name, "schema": schema});
                if let Some(st) = strict {
                    js["strict"] = Value::Bool(*st);
                }
                if let Some(d) = description {
                    js["description"] = Value::String(d.clone());
                }
                json!({"type": "json_schema", "json_schema": js}).serialize(s)
            }
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

impl UsageWire {
    /// `usage` read by [`skim`]: `None` for `null`; outer `None` where serde must decide.
    fn skim(r: &mut skim::Reader<'_>) -> Option<Option<Self>> {
        if r.null() {
            return Some(None);
        }
        let (mut prompt, mut completion, mut cached, mut reasoning) = (None, None, None, None);
        r.object(|r, k| match k {
            "prompt_tokens" => skim::once(&mut prompt, r.uint()?),
            "completion_tokens" => skim::once(&mut completion, r.uint()?),
            "prompt_tokens_details" => skim::once(&mut cached, details(r, "cached_tokens")?),
            "completion_tokens_details" => {
                skim::once(&mut reasoning, details(r, "reasoning_tokens")?)
            }
            _ => r.skip(),
        })?;
        Some(Some(Self {
            prompt_tokens: prompt.unwrap_or_default(),
            completion_tokens: completion.unwrap_or_default(),
            prompt_tokens_details: cached.map(|cached_tokens| PromptDetailsWire { cached_tokens }),
            completion_tokens_details: reasoning
                .map(|reasoning_tokens| CompletionDetailsWire { reasoning_tokens }),
        }))
    }
}

/// A `*_tokens_details` object's one count; `Some(None)` when the object or the count is
/// `null` or the count is absent; outer `None` where serde must decide. serde keeps a `null`
/// object as no details and a countless one as details without a count: `Usage::from` reads
/// both as 0, the only reading there is.
fn details(r: &mut skim::Reader<'_>, name: &str) -> Option<Option<u64>> {
    if r.null() {
        return Some(None);
    }
    let mut count = None;
    r.object(|r, k| {
        if k != name {
            return r.skip();
        }
        let v = if r.null() { None } else { Some(r.uint()?) };
        skim::once(&mut count, v)
    })?;
    Some(count.flatten())
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

/// A `finish_reason` member as serde reads it (`null` or absent: none), decoded.
fn opt_finish_reason<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<FinishReason>, D::Error> {
    Ok(Option::<Cow<'de, str>>::deserialize(d)?.map(|s| decode_finish_reason(&s)))
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

#[derive(Deserialize)]
struct ReplySummaryWire {
    #[serde(default)]
    model: String,
    choices: Vec<ChoiceSummaryWire>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
struct ChoiceSummaryWire {
    #[serde(default, deserialize_with = "opt_finish_reason")]
    finish_reason: Option<FinishReason>,
    #[allow(dead_code)]
    message: serde::de::IgnoredAny,
}

impl ReplySummaryWire {
    /// The summary read by [`skim`], when it reads the reply exactly as serde would. The body
    /// must be UTF-8 throughout (serde checks only the strings it reads; a body that is not
    /// goes to serde, which decides).
    fn skim(body: &[u8]) -> Option<Self> {
        let body = std::str::from_utf8(body).ok()?;
        let (mut model, mut choices, mut usage) = (None, None, None);
        skim::document(body, |r| {
            r.object(|r, k| match k {
                "model" => skim::once(&mut model, r.str()?.into_owned()),
                "choices" => skim::once(&mut choices, r.list(ChoiceSummaryWire::skim)?),
                "usage" => skim::once(&mut usage, UsageWire::skim(r)?),
                _ => r.skip(),
            })
        })?;
        Some(Self {
            model: model.unwrap_or_default(),
            choices: choices?,
            usage: usage.flatten(),
        })
    }
}

impl ChoiceSummaryWire {
    fn skim(r: &mut skim::Reader<'_>) -> Option<Self> {
        let (mut finish_reason, mut message) = (None, None);
        r.object(|r, k| match k {
            "finish_reason" => skim::once(
                &mut finish_reason,
                r.opt_str()?.as_deref().map(decode_finish_reason),
            ),
            "message" => {
                r.skip()?;
                skim::once(&mut message, serde::de::IgnoredAny)
            }
            _ => r.skip(),
        })?;
        Some(Self {
            finish_reason: finish_reason.flatten(),
            message: message?,
        })
    }
}

/// Keeps an upstream reply in its own bytes for a caller of the same format, reading only
/// what accounting needs (usage, model, finish reasons) and checking that it is a reply.
/// Read by [`skim`] where it can; serde reads (or refuses) the rest.
pub fn summarise_chat_reply(body: bytes::Bytes) -> Result<ir::RawReply, Error> {
    let w = match ReplySummaryWire::skim(&body) {
        Some(w) => w,
        None => serde_json::from_slice(&body).map_err(|e| protocol_error("chat completion", e))?,
    };
    Ok(ir::RawReply {
        format: Format::OpenAi,
        usage: w.usage.map(Usage::from),
        model: w.model,
        // Collected in place: a choice summary is the size of its finish reason.
        finish_reasons: w
            .choices
            .into_iter()
            .filter_map(|c| c.finish_reason)
            .collect(),
        body,
    })
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

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedOut,
    completion_tokens_details: ReasoningOut,
}

#[derive(Serialize)]
struct CachedOut {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningOut {
    reasoning_tokens: u64,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        UsageOut {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: CachedOut {
                cached_tokens: u.cached_input_tokens,
            },
            completion_tokens_details: ReasoningOut {
                reasoning_tokens: u.reasoning_tokens,
            },
        }
    }
}

#[derive(Serialize)]
struct ReplyOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Seq<'a, Choice, fn(&'a Choice) -> ChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

struct ChoiceOut<'a>(&'a Choice);

impl Serialize for ChoiceOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Msg<'a>(&'a Message);
        impl Serialize for Msg<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let msg = self.0;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("role", "assistant")?;
                match msg.content.as_slice() {
                    [] => m.serialize_entry("content", &None::<&str>)?,
                    [Part::Text(t)] => m.serialize_entry("content", t)?,
                    _ => m.serialize_entry("content", &msg.joined_text())?,
                }
                m.serialize_entry("refusal", msg.extra.get("refusal").unwrap_or(&Value::Null))?;
                if !msg.tool_calls.is_empty() {
                    m.serialize_entry("tool_calls", &Seq(&msg.tool_calls, ToolCallOut))?;
                }
                m.end()
            }
        }
        let c = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("index", &c.index)?;
        m.serialize_entry("message", &Msg(&c.message))?;
        m.serialize_entry("logprobs", &None::<()>)?;
        m.serialize_entry(
            "finish_reason",
            &c.finish_reason.as_ref().map(finish_reason_str),
        )?;
        m.end()
    }
}

/// Encodes a chat reply for an OpenAI caller.
pub fn encode_chat_reply(r: &ChatReply) -> Vec<u8> {
    let out = ReplyOut {
        id: &r.id,
        object: "chat.completion",
        created: r.created,
        model: &r.model,
        choices: Seq(&r.choices, ChoiceOut),
        usage: r.usage.as_ref().map(UsageOut::from),
    };
    let mut buf = Vec::with_capacity(512);
    let _ = serde_json::to_writer(&mut buf, &out);
    buf
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChunkWire<'a> {
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    created: u64,
    #[serde(default, borrow)]
    choices: Vec<ChunkChoiceWire<'a>>,
    #[serde(default)]
    usage: Option<UsageWire>,
    #[serde(default)]
    error: Option<ErrorBodyWire>,
}

#[derive(Deserialize)]
struct ChunkChoiceWire<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    delta: Option<DeltaWire<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaWire<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallDeltaWire<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDeltaWire<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FunctionDeltaWire<'a>>,
}

#[derive(Deserialize)]
struct FunctionDeltaWire<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl<'a> ChunkWire<'a> {
    /// The chunk read by [`skim`], when it reads it exactly as serde would. Tool-call deltas
    /// are small and rare, so serde reads those values; an `error` member sends the whole
    /// chunk to serde.
    fn skim(data: &'a str) -> Option<Self> {
        let (mut id, mut model, mut created, mut choices, mut usage, mut error) =
            (None, None, None, None, None, None);
        skim::document(data, |r| {
            r.object(|r, k| match k {
                "id" => skim::once(&mut id, r.str()?),
                "model" => skim::once(&mut model, r.str()?),
                "created" => skim::once(&mut created, r.uint()?),
                "choices" => skim::once(&mut choices, r.list(ChunkChoiceWire::skim)?),
                "usage" => skim::once(&mut usage, UsageWire::skim(r)?),
                "error" if r.null() => skim::once(&mut error, ()),
                "error" => None,
                _ => r.skip(),
            })
        })?;
        Some(Self {
            id: id.unwrap_or_default(),
            model: model.unwrap_or_default(),
            created: created.unwrap_or_default(),
            choices: choices.unwrap_or_default(),
            usage: usage.flatten(),
            error: None,
        })
    }
}

impl<'a> ChunkChoiceWire<'a> {
    fn skim(r: &mut skim::Reader<'a>) -> Option<Self> {
        let (mut index, mut delta, mut finish_reason) = (None, None, None);
        r.object(|r, k| match k {
            "index" => skim::once(&mut index, r.uint()?),
            "delta" if r.null() => skim::once(&mut delta, None),
            "delta" => skim::once(&mut delta, Some(DeltaWire::skim(r)?)),
            "finish_reason" => skim::once(&mut finish_reason, r.opt_str()?),
            _ => r.skip(),
        })?;
        Some(Self {
            index: index.unwrap_or_default(),
            delta: delta.flatten(),
            finish_reason: finish_reason.flatten(),
        })
    }
}

impl<'a> DeltaWire<'a> {
    fn skim(r: &mut skim::Reader<'a>) -> Option<Self> {
        let (mut content, mut refusal, mut tool_calls) = (None, None, None);
        r.object(|r, k| match k {
            "content" => skim::once(&mut content, r.opt_str()?),
            "refusal" => skim::once(&mut refusal, r.opt_str()?),
            "tool_calls" => skim::once(&mut tool_calls, serde_json::from_str(r.raw()?).ok()?),
            _ => r.skip(),
        })?;
        Some(Self {
            content: content.flatten(),
            refusal: refusal.flatten(),
            tool_calls: tool_calls.flatten(),
        })
    }
}

/// Decodes an OpenAI-format upstream's chunk stream.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    done: bool,
    verbatim: bool,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder for a caller that speaks OpenAI too: each chunk with choices is also kept in
    /// its own bytes ([`StreamEvent::Verbatim`]). Usage-only chunks are not (the caller may
    /// not have asked for usage), nor is `[DONE]` (the encoder closes the stream).
    pub fn verbatim() -> Self {
        Self {
            verbatim: true,
            ..Self::default()
        }
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
        let c = match ChunkWire::skim(data) {
            Some(c) => c,
            None => serde_json::from_str(data).map_err(|e| protocol_error("stream chunk", e))?,
        };
        if let Some(e) = c.error {
            return Err(error_from_body(500, e));
        }
        let first = out.len();
        let verbatim = self.verbatim
            && !c.choices.is_empty()
            && c.usage.is_none()
            && ev.event.is_empty()
            && ev.id.is_none()
            && sse::is_one_line(data);
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: c.id.into_owned(),
                model: c.model.into_owned(),
                created: c.created,
            });
        }
        for ch in c.choices {
            if let Some(d) = ch.delta {
                for t in [d.content, d.refusal].into_iter().flatten() {
                    if !t.is_empty() {
                        out.push(StreamEvent::TextDelta {
                            choice: ch.index,
                            text: t.into_owned(),
                        });
                    }
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
                            id: tc
                                .id
                                .map(Cow::into_owned)
                                .unwrap_or_else(|| format!("call_{index}")),
                            name: name.map(Cow::into_owned).unwrap_or_default(),
                        });
                    }
                    if let Some(a) = args.filter(|a| !a.is_empty()) {
                        out.push(StreamEvent::ToolCallDelta {
                            choice: ch.index,
                            index,
                            arguments: a.into_owned(),
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
        if verbatim {
            let events = out.split_off(first);
            out.push(StreamEvent::Verbatim {
                frame: sse::data_line_bytes(data),
                events,
            });
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// Writes IR stream events as OpenAI `chat.completion.chunk` SSE events, serialized straight
/// into the output buffer (one per event, as they arrive).
#[derive(Debug)]
pub struct StreamEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct ChunkOut<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<()>,
    choices: C,
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    usage: UsageField,
}

/// OpenAI sends `"usage": null` on every chunk when the caller asked for usage, and the
/// usage object on the last one; nothing otherwise.
enum UsageField {
    Absent,
    Null,
    Some(UsageOut),
}

impl UsageField {
    fn is_absent(&self) -> bool {
        matches!(self, UsageField::Absent)
    }
}

impl Serialize for UsageField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UsageField::Some(u) => u.serialize(s),
            _ => s.serialize_none(),
        }
    }
}

#[derive(Serialize)]
struct ChunkChoiceOut<'a, D> {
    index: u32,
    delta: D,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct RoleDelta {
    role: &'static str,
    content: &'static str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct EmptyDelta {}

#[derive(Serialize)]
struct ToolCallsDelta<'a> {
    tool_calls: [ToolCallDeltaOut<'a>; 1],
}

#[derive(Serialize)]
struct ToolCallDeltaOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaOut<'a>,
}

#[derive(Serialize)]
struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
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

    /// Keeps what the chunks after `ev` need: the reply's id, model and time, and its usage.
    fn remember(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::Start { id, model, created } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                self.created = *created;
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            _ => {}
        }
    }

    fn chunk<C: Serialize>(&self, out: &mut BytesMut, choices: C, usage: UsageField) {
        let usage = match usage {
            UsageField::Absent if self.include_usage => UsageField::Null,
            u => u,
        };
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: None,
            choices,
            usage,
        };
        sse::write_json_event(out, None, &chunk);
    }

    fn delta<D: Serialize>(&self, out: &mut BytesMut, choice: u32, delta: D, finish: Option<&str>) {
        let c = [ChunkChoiceOut {
            index: choice,
            delta,
            logprobs: None,
            finish_reason: finish,
        }];
        self.chunk(out, c, UsageField::Absent);
    }
}

impl wire::StreamEncoder for StreamEncoder {
    fn event(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        // What later chunks need, whether this event is written here or forwarded as received.
        ev.for_each(|ev| self.remember(ev));
        match ev {
            StreamEvent::Start { .. } => {
                let d = RoleDelta {
                    role: "assistant",
                    content: "",
                    refusal: None,
                };
                self.delta(out, 0, d, None);
            }
            StreamEvent::TextDelta { choice, text } => {
                self.delta(out, *choice, TextDelta { content: text }, None);
            }
            StreamEvent::ToolCallStart {
                choice,
                index,
                id,
                name,
            } => {
                let d = ToolCallsDelta {
                    tool_calls: [ToolCallDeltaOut {
                        index: *index,
                        id: Some(id),
                        kind: Some("function"),
                        function: FunctionDeltaOut {
                            name: Some(name),
                            arguments: "",
                        },
                    }],
                };
                self.delta(out, *choice, d, None);
            }
            StreamEvent::ToolCallDelta {
                choice,
                index,
                arguments,
            } => {
                let d = ToolCallsDelta {
                    tool_calls: [ToolCallDeltaOut {
                        index: *index,
                        id: None,
                        kind: None,
                        function: FunctionDeltaOut {
                            name: None,
                            arguments,
                        },
                    }],
                };
                self.delta(out, *choice, d, None);
            }
            StreamEvent::Finish { choice, reason } => {
                self.delta(out, *choice, EmptyDelta {}, Some(finish_reason_str(reason)));
            }
            // OpenAI sends usage last, after every finish chunk: held (above) until the end.
            StreamEvent::Usage(_) => {}
            // Already in this format: forwarded as is.
            StreamEvent::Verbatim { frame, .. } => out.extend_from_slice(frame),
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.include_usage {
            if let Some(u) = self.usage {
                let none: [ChunkChoiceOut<'_, EmptyDelta>; 0] = [];
                self.chunk(out, none, UsageField::Some(UsageOut::from(&u)));
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
