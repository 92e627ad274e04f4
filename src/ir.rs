//! The canonical request, reply and stream-event types.
//!
//! Every caller surface decodes into these types and every provider adapter encodes from them:
//! N surfaces and M providers meet here, so the middle of the stack (routing, retry, limits,
//! usage) is provider-agnostic. Fields a format has that the IR does not model travel in
//! `extra`, tagged with the [`Format`] they came from, so they can be passed through untouched
//! when caller and upstream speak the same format (and are dropped, not mistranslated, when not).
//!
//! This module depends on nothing of ours.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use serde_json::{Map, Value};

/// Longest `Retry-After` honoured, however an upstream says it (a header, Gemini's
/// `RetryInfo`): one asking for more is taken at its word up to here (a day), so absurd values
/// cannot overflow a `Duration` or an `Instant`, nor eject a target for years.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// A wire format: the API a caller speaks, or the API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenAI Chat Completions / Embeddings / Models (and every compatible server).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google AI `generateContent`.
    Gemini,
    /// The built-in mock provider (in-process, no wire format).
    Mock,
}

impl Format {
    /// Stable lowercase name, used in errors and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
            Format::Mock => "mock",
        }
    }
}

/// Unknown fields of a wire object, kept with the format they belong to.
pub type Extra = Map<String, Value>;

/// One request entering the middle of the stack.
#[derive(Debug)]
pub struct Request {
    /// What is asked.
    pub op: Operation,
    /// Who asked, when, and anything layers attach on the way.
    pub meta: Meta,
}

/// Per-request context that is not part of the API payload.
#[derive(Debug)]
pub struct Meta {
    /// The request id (from `x-request-id` or generated).
    pub request_id: Arc<str>,
    /// The caller's API format: errors and replies are rendered in it.
    pub surface: Format,
    /// When the request reached switchyard.
    pub received_at: Instant,
    /// The caller's credential as presented: set by the surface, read by the auth layer.
    pub caller_key: Option<CallerKey>,
    /// Who is calling: set by the auth layer (the anonymous principal when auth is off).
    pub principal: Option<Principal>,
    /// The targets to try: set by the route layer, reordered by balance, taken by retry.
    pub plan: Option<Plan>,
    /// What the layers below the usage layer decide, reported back up to it: set by the
    /// usage layer, filled by the tap layers.
    pub tap: Option<Arc<Tap>>,
    /// Other values layers attach for later layers. Each layer documents what it inserts
    /// and what it consumes in `stack.rs`. (The caller key, principal, plan and tap, set for
    /// most requests, are fields: the first extension of a request costs three allocations,
    /// and each one after it two.)
    pub extensions: http::Extensions,
}

/// What layers below the usage layer decided about a request, for its metrics and log line:
/// the usage layer keeps one handle and the request carries the other down the stack.
///
/// One uncontended lock per write: a `OnceLock` per field cost ~80 instructions per first set
/// (its `Once` slow path), three or four times a request.
#[derive(Debug, Default)]
pub struct Tap(std::sync::Mutex<Tapped>);

/// The values of a [`Tap`]; the first value set of each is kept.
#[derive(Debug, Default, Clone)]
pub struct Tapped {
    /// The route label (a configured route, or `direct`).
    pub route: Option<Arc<str>>,
    /// The caller's team.
    pub team: Option<Arc<str>>,
    /// The caller's key name.
    pub key: Option<Arc<str>>,
}

impl Tap {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tapped> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the route label, unless one is set.
    pub fn set_route(&self, route: impl FnOnce() -> Arc<str>) {
        let mut t = self.lock();
        if t.route.is_none() {
            t.route = Some(route());
        }
    }

    /// Sets the caller's team and key name, unless they are set.
    pub fn set_principal(&self, team: &Arc<str>, key: &Arc<str>) {
        let mut t = self.lock();
        if t.team.is_none() {
            t.team = Some(team.clone());
            t.key = Some(key.clone());
        }
    }

    /// What was set, taken out (the tap is read once, when the request settles).
    pub fn take(&self) -> Tapped {
        std::mem::take(&mut *self.lock())
    }

    /// What was set, copied.
    pub fn get(&self) -> Tapped {
        self.lock().clone()
    }
}

impl Meta {
    /// A fresh context for a request from `surface`, received now.
    pub fn new(request_id: Arc<str>, surface: Format) -> Self {
        Self::received(request_id, surface, Instant::now())
    }

    /// A fresh context for a request from `surface`, received at `received_at`.
    pub fn received(request_id: Arc<str>, surface: Format, received_at: Instant) -> Self {
        Self {
            request_id,
            surface,
            received_at,
            caller_key: None,
            principal: None,
            plan: None,
            tap: None,
            extensions: http::Extensions::new(),
        }
    }
}

/// The operations switchyard understands.
///
/// The requests are boxed: a [`Request`] is handed by value down every layer and captured in
/// their futures, and unboxed a chat request made it 488 bytes, copied at each step.
#[derive(Debug, Clone)]
pub enum Operation {
    /// A chat / messages completion, streamed or not.
    Chat(Box<ChatRequest>),
    /// Token counting for a chat request (answered by estimation where no upstream offers it).
    CountTokens(Box<ChatRequest>),
    /// An embeddings request.
    Embeddings(Box<EmbeddingsRequest>),
    /// List the models (public routes) this gateway serves.
    ListModels,
}

impl Operation {
    /// The public model name asked for, if the operation names one.
    pub fn model(&self) -> Option<&str> {
        match self {
            Operation::Chat(c) | Operation::CountTokens(c) => Some(&c.model),
            Operation::Embeddings(e) => Some(&e.model),
            Operation::ListModels => None,
        }
    }

    /// Whether the caller asked for a streamed reply.
    pub fn is_stream(&self) -> bool {
        matches!(self, Operation::Chat(c) if c.stream)
    }

    /// Stable operation name (OpenTelemetry GenAI `gen_ai.operation.name`).
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Chat(_) => "chat",
            Operation::CountTokens(_) => "count_tokens",
            Operation::Embeddings(_) => "embeddings",
            Operation::ListModels => "list_models",
        }
    }
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// System instructions.
    System,
    /// OpenAI's `developer` role (system instructions for reasoning models).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

/// A chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The model name as the caller wrote it (a route name or `provider/model`).
    pub model: String,
    /// The conversation, system messages included, in order.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// How the model must use the tools.
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one turn.
    pub parallel_tool_calls: Option<bool>,
    /// Output token cap.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling (Anthropic, Gemini).
    pub top_k: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Number of choices (OpenAI `n`).
    pub n: Option<u32>,
    /// Requested output format.
    pub response_format: Option<ResponseFormat>,
    /// Whether the reply is streamed.
    pub stream: bool,
    /// Whether the caller wants the usage chunk of a streamed reply. Upstreams are always asked
    /// for usage; this only decides whether the caller sees it.
    pub include_usage: bool,
    /// End-user id, when the caller passed one.
    pub user: Option<String>,
    /// Fields of the caller's format the IR does not model.
    pub extra: Extra,
    /// The format `extra` (and every nested `extra`) belongs to.
    pub source: Format,
    /// The caller's own body, when an upstream of the caller's format can be sent it as it
    /// came but for the model name. Whatever changes this request must clear it.
    pub raw: Option<RawChat>,
}

/// A chat request in the caller's own bytes ([`ChatRequest::raw`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RawChat {
    /// The body as received: one JSON object, checked whole when it was read.
    pub body: bytes::Bytes,
    /// Where the `model` member's string value (quotes included) is in `body`.
    pub model_at: std::ops::Range<usize>,
    /// The caller wrote `max_tokens` and not `max_completion_tokens`: an upstream that reads
    /// only the latter needs the body rewritten.
    pub max_tokens_named: bool,
}

impl ChatRequest {
    /// An empty request for `model` from a `source` format.
    pub fn new(model: impl Into<String>, source: Format) -> Self {
        Self {
            model: model.into(),
            messages: Vec::new(),
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            max_tokens: None,
            temperature: None,
            top_p: None,
            top_k: None,
            stop: Vec::new(),
            n: None,
            response_format: None,
            stream: false,
            include_usage: false,
            user: None,
            extra: Extra::new(),
            source,
            raw: None,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// Content parts, in order.
    pub content: Vec<Part>,
    /// Tool calls made by an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// For a `Tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    /// Participant name (OpenAI `name`).
    pub name: Option<String>,
    /// Unknown fields of the message, in the request's source format.
    pub extra: Extra,
}

impl Message {
    /// A message with one text part.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: vec![Part::Text(text.into())],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            extra: Extra::new(),
        }
    }

    /// All text parts joined, for formats (and estimates) that need plain text.
    pub fn joined_text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let Part::Text(t) = part {
                out.push_str(t);
            }
        }
        out
    }
}

/// A content part.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Plain text.
    Text(String),
    /// An image, by URL or inline data.
    Image(Image),
    /// A part the IR does not model, in the request's source format (passed through only to an
    /// upstream of that format).
    Other(Value),
}

/// An image in a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// A remote image.
    Url {
        /// The URL.
        url: String,
        /// OpenAI's `detail` hint.
        detail: Option<String>,
    },
    /// Inline bytes, base64-encoded.
    Base64 {
        /// MIME type, e.g. `image/png`.
        media_type: String,
        /// Base64 data (no `data:` prefix).
        data: String,
    },
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Call id, echoed by the tool result.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as JSON text, exactly as the model produced it.
    pub arguments: String,
}

/// A tool (function) the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Function name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    /// OpenAI structured-outputs `strict`.
    pub strict: Option<bool>,
}

/// How the model must use tools.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool must be called.
    Tool(String),
}

/// Requested output format.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// Schema name.
        name: String,
        /// The schema.
        schema: Value,
        /// Whether adherence is enforced.
        strict: Option<bool>,
        /// Description of the schema.
        description: Option<String>,
    },
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end or a stop sequence.
    Stop,
    /// The token cap was hit.
    Length,
    /// The model called tools.
    ToolCalls,
    /// A safety filter stopped it.
    ContentFilter,
    /// Anything else, verbatim.
    Other(String),
}

/// Token usage, normalised: `input_tokens` counts every input token *including* cached reads
/// and cache writes (OpenAI's convention); the cached and cache-write counts are subsets of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens.
    pub input_tokens: u64,
    /// All output tokens (reasoning included).
    pub output_tokens: u64,
    /// Input tokens read from a prompt cache (subset of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Input tokens written to a prompt cache (subset of `input_tokens`).
    pub cache_write_tokens: u64,
    /// Output tokens spent on reasoning (subset of `output_tokens`).
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input plus output. Saturating: the counts are the upstream's, and an absurd pair must
    /// not overflow (a panic in debug builds, a small wrapped total in release).
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A complete (non-streamed) chat reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    /// Upstream's response id.
    pub id: String,
    /// The model that answered, as the upstream names it.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// One per `n`.
    pub choices: Vec<Choice>,
    /// Token usage, when the upstream reported it.
    pub usage: Option<Usage>,
}

/// One choice of a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Choice index.
    pub index: u32,
    /// The assistant message.
    pub message: Message,
    /// Why it stopped.
    pub finish_reason: Option<FinishReason>,
}

/// One event of a streamed chat reply. A well-formed stream is: `Start`, then any number of
/// deltas, `Finish` per choice, optionally `Usage` (at most once, possibly before `Finish`),
/// then the stream ends. A failure mid-stream is an `Err` item, after which nothing follows.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The reply began.
    Start {
        /// Upstream's response id.
        id: String,
        /// The model that answers.
        model: String,
        /// Unix seconds.
        created: u64,
    },
    /// Text for a choice.
    TextDelta {
        /// Choice index.
        choice: u32,
        /// The text fragment.
        text: String,
    },
    /// A tool call began.
    ToolCallStart {
        /// Choice index.
        choice: u32,
        /// Position of the call within the turn (OpenAI's `tool_calls[].index`).
        index: u32,
        /// Call id.
        id: String,
        /// Function name.
        name: String,
    },
    /// A fragment of a tool call's JSON arguments.
    ToolCallDelta {
        /// Choice index.
        choice: u32,
        /// Position of the call within the turn.
        index: u32,
        /// Argument text fragment.
        arguments: String,
    },
    /// A choice finished.
    Finish {
        /// Choice index.
        choice: u32,
        /// Why.
        reason: FinishReason,
    },
    /// Token usage for the whole reply.
    Usage(Usage),
    /// An upstream event forwarded in its own bytes to a caller that speaks the upstream's
    /// format (no re-serialising; fields the IR has no place for, such as `logprobs`, reach
    /// the caller), with what it says as IR events for accounting and for other encoders.
    Verbatim {
        /// The whole SSE event as received, blank line included.
        frame: bytes::Bytes,
        /// What it says.
        events: Vec<StreamEvent>,
    },
}

impl StreamEvent {
    /// Calls `f` on this event, or on each event a [`StreamEvent::Verbatim`] carries.
    pub fn for_each(&self, mut f: impl FnMut(&StreamEvent)) {
        match self {
            StreamEvent::Verbatim { events, .. } => events.iter().for_each(f),
            ev => f(ev),
        }
    }
}

/// A streamed reply.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, Error>> + Send>>;

/// An embeddings request.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    /// The model name as the caller wrote it.
    pub model: String,
    /// The inputs (OpenAI accepts a string, strings, or token arrays; kept verbatim).
    pub input: Value,
    /// Requested dimensions.
    pub dimensions: Option<u32>,
    /// `float` or `base64`, as the caller asked.
    pub encoding_format: Option<String>,
    /// End-user id.
    pub user: Option<String>,
    /// Unknown fields, in `source` format.
    pub extra: Extra,
    /// The format of `extra`.
    pub source: Format,
}

/// An embeddings reply.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsReply {
    /// The model that answered.
    pub model: String,
    /// One vector per input, in input order.
    pub data: Vec<Embedding>,
    /// Token usage.
    pub usage: Option<Usage>,
}

/// One embedding vector, as floats or as the upstream's base64 (little-endian f32) text.
#[derive(Debug, Clone, PartialEq)]
pub enum Embedding {
    /// Floats.
    Float(Vec<f32>),
    /// Base64 of little-endian f32s.
    Base64(String),
}

/// A model entry for `/v1/models`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Public id.
    pub id: String,
    /// Who offers it (provider name, or `switchyard` for a route).
    pub owned_by: String,
}

/// What the middle of the stack returns.
pub struct Reply {
    /// The payload.
    pub body: ReplyBody,
    /// Which target served it (absent for answers the gateway gives itself).
    pub served_by: Option<Arc<ServedBy>>,
    /// How many upstream attempts were made.
    pub attempts: u32,
    /// Time spent waiting on upstreams so far (up to the reply's headers for a stream).
    pub upstream_time: Duration,
    /// Headers layers want on the response (such as `x-ratelimit-remaining-*`); the surface
    /// sets them, a later one of a name replacing an earlier. Layers extend the list rather
    /// than replace it. A list, not a map: it is only ever walked once.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Values layers attach for outer layers.
    pub extensions: http::Extensions,
}

impl Reply {
    /// A reply the gateway answers itself.
    pub fn local(body: ReplyBody) -> Self {
        Self {
            body,
            served_by: None,
            attempts: 0,
            upstream_time: Duration::ZERO,
            headers: Vec::new(),
            extensions: http::Extensions::new(),
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("served_by", &self.served_by)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The payload of a reply.
pub enum ReplyBody {
    /// A complete chat reply.
    Chat(ChatReply),
    /// A complete chat reply kept in the upstream's own bytes, for a caller that speaks the
    /// same format: forwarded without re-serialising. Usage and finish reasons were read on
    /// the way for accounting.
    Raw(RawReply),
    /// A streamed chat reply.
    Stream(EventStream),
    /// Embeddings.
    Embeddings(EmbeddingsReply),
    /// Token count for a `CountTokens` request.
    TokenCount(u64),
    /// Model list.
    Models(Vec<ModelInfo>),
}

/// A chat reply in its upstream wire format.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// The wire format of `body`.
    pub format: Format,
    /// The upstream's JSON, as received.
    pub body: bytes::Bytes,
    /// Usage read from it.
    pub usage: Option<Usage>,
    /// The model the upstream says answered.
    pub model: String,
    /// Finish reason per choice.
    pub finish_reasons: Vec<FinishReason>,
}

/// USD per million tokens of each kind.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached input.
    pub input: f64,
    /// Output (reasoning included).
    pub output: f64,
    /// Input read from a prompt cache; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Input written to a prompt cache; defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl Price {
    /// The cost of `usage` at this price (IR convention: cached and cache-write tokens are
    /// subsets of `input_tokens`).
    pub fn usd(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let written = usage.cache_write_tokens.min(usage.input_tokens - cached);
        let plain = usage.input_tokens - cached - written;
        (plain as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + written as f64 * self.cache_write.unwrap_or(self.input)
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }

    /// The same price for every kind of token.
    pub fn flat(usd_per_million: f64) -> Self {
        Self {
            input: usd_per_million,
            output: usd_per_million,
            cached_input: None,
            cache_write: None,
        }
    }

    /// Input and output averaged: the `cheapest` strategy's single number.
    pub fn blended(&self) -> f64 {
        (self.input + self.output) / 2.0
    }
}

/// A target's provider, model and price: made once per target when the config is loaded,
/// and shared by its attempts and by every reply it serves (a reply carries one pointer, not
/// the strings).
#[derive(Debug, Clone, PartialEq)]
pub struct ServedBy {
    /// Provider name from config.
    pub provider: Arc<str>,
    /// Upstream model name.
    pub model: Arc<str>,
    /// The model's price in the config generation that built the target, when priced: what
    /// its replies cost, and the `cheapest` strategy's order.
    pub price: Option<Price>,
    /// `gen_ai.provider.name` of the target (OpenTelemetry GenAI conventions).
    pub gen_ai_provider: Arc<str>,
    /// `provider` and `model` as header values (`x-switchyard-provider`, `-model`), when
    /// they are valid ones: made here once, not for every reply.
    pub headers: [Option<http::HeaderValue>; 2],
}

impl ServedBy {
    /// The target `provider/model`, priced at `price`.
    pub fn new(
        provider: Arc<str>,
        model: Arc<str>,
        price: Option<Price>,
        gen_ai_provider: Arc<str>,
    ) -> Self {
        let header = |s: &str| http::HeaderValue::from_str(s).ok();
        Self {
            headers: [header(&provider), header(&model)],
            provider,
            model,
            price,
            gen_ai_provider,
        }
    }
}

/// How a failure is classified: decides retry, status and the caller-facing error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller's request is malformed or unsupported (400).
    InvalidRequest,
    /// The caller's key is missing or wrong (401).
    Unauthenticated,
    /// The caller may not use this (403).
    Forbidden,
    /// Unknown model or path (404).
    NotFound,
    /// Wrong HTTP method (405).
    MethodNotAllowed,
    /// Body too large (413).
    PayloadTooLarge,
    /// A limit of the gateway or a provider (429).
    RateLimited,
    /// A spend budget is exhausted (429 with `insufficient_quota`-style type).
    BudgetExceeded,
    /// The provider rejected the gateway's credentials (502).
    UpstreamAuth,
    /// The provider answered with an error status (status kept when meaningful).
    UpstreamStatus,
    /// The provider is overloaded (Anthropic 529, 503).
    Overloaded,
    /// Could not connect to the provider (502).
    Connect,
    /// A timeout (504).
    Timeout,
    /// The provider's reply could not be understood (502).
    Protocol,
    /// A bug or an unexpected state in switchyard (500).
    Internal,
    /// No target could take the request (503).
    Unavailable,
}

/// A classified failure. Its `message` is always safe to show the caller: no secrets, no
/// upstream URLs with keys in them.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// Classification.
    pub kind: ErrorKind,
    /// HTTP status to answer with.
    pub status: u16,
    /// Caller-safe message.
    pub message: String,
    /// Which provider failed, if any.
    pub provider: Option<Arc<str>>,
    /// When the caller may retry; at most [`MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
    /// Offending parameter, when known (OpenAI `param`).
    pub param: Option<String>,
    /// A machine-readable code (OpenAI `code`), when known.
    pub code: Option<String>,
    /// Extra headers for the caller's error response (such as `x-ratelimit-*` on a 429);
    /// the surface copies them verbatim. Boxed: almost every error has none.
    pub headers: Option<Box<http::HeaderMap>>,
}

impl Error {
    /// A new error of `kind` with its default status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: kind.default_status(),
            message: message.into(),
            provider: None,
            retry_after: None,
            param: None,
            code: None,
            headers: None,
        }
    }

    /// Adds headers for the caller's error response (see [`Error::headers`]).
    pub fn with_headers(mut self, headers: http::HeaderMap) -> Self {
        match &mut self.headers {
            Some(h) => h.extend(headers),
            None => self.headers = Some(Box::new(headers)),
        }
        self
    }

    /// 400 invalid request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// Sets the offending parameter.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets the status explicitly.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Names the provider that failed.
    pub fn with_provider(mut self, provider: Arc<str>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Whether a different (or the same) target might succeed where this failed, provided no
    /// byte has reached the caller yet.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ErrorKind::RateLimited
            | ErrorKind::Overloaded
            | ErrorKind::Connect
            | ErrorKind::Timeout
            | ErrorKind::UpstreamAuth
            | ErrorKind::Unavailable => true,
            ErrorKind::UpstreamStatus => {
                matches!(self.status, 408 | 409 | 429) || self.status >= 500
            }
            // A reply we could not parse may be one broken replica; another target may do.
            ErrorKind::Protocol => true,
            _ => false,
        }
    }
}

impl ErrorKind {
    /// The status this kind answers with unless told otherwise.
    pub fn default_status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RateLimited | ErrorKind::BudgetExceeded => 429,
            ErrorKind::UpstreamAuth
            | ErrorKind::UpstreamStatus
            | ErrorKind::Connect
            | ErrorKind::Protocol => 502,
            ErrorKind::Overloaded | ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    /// Stable lowercase name for metrics labels and error listings.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::UpstreamAuth => "upstream_auth",
            ErrorKind::UpstreamStatus => "upstream_status",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Internal => "internal",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind.as_str(),
            self.status,
            self.message
        )
    }
}

impl std::error::Error for Error {}

/// One upstream attempt: the request (shared across attempts, never copied) and the upstream
/// model name of the target it goes to.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The caller's request.
    pub request: Arc<Request>,
    /// The target: provider, the model name the upstream knows, price.
    pub served: Arc<ServedBy>,
    /// 1 for the first attempt of a request, 2 for the next, ...
    pub number: u32,
    /// Headers for the upstream request beyond the provider's own: the W3C trace context of
    /// the attempt's span, when traces are exported.
    pub trace_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// The service that carries attempts to one target (provider + model): the per-target stack
/// built at config load, from breaker down to the provider adapter.
pub type TargetService = tower::util::BoxCloneSyncService<Attempt, Reply, Error>;

/// A place a request can be sent: a provider and the model name it knows.
#[derive(Clone)]
pub struct Target {
    /// Provider, upstream model and price: what its replies say served them.
    pub served: Arc<ServedBy>,
    /// The per-target stack.
    pub service: TargetService,
    /// Relative share for the `weighted` strategy.
    pub weight: u32,
    /// Labels a request can require (`zero-data-retention`, `eu`, ...).
    pub tags: Arc<[Arc<str>]>,
    /// Live health and latency, shared by every route that names this target.
    pub stats: Arc<TargetStats>,
}

impl Target {
    /// `provider/model`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.served.provider, self.served.model)
    }

    /// Whether the target may take new requests (breaker not open, provider not drained).
    pub fn is_available(&self) -> bool {
        self.stats.is_available()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.served.provider, self.served.model)
    }
}

/// Circuit breaker state of a target, as published for balancers, the admin plane and
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Traffic flows.
    Closed = 0,
    /// No traffic until the cool-down (or a `Retry-After`) has passed.
    Open = 1,
    /// A few probes decide whether to close again.
    HalfOpen = 2,
}

impl CircuitState {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// Live figures of one target. Written by the breaker and the attempt path; read lock-free by
/// balancers.
#[derive(Debug, Default)]
pub struct TargetStats {
    /// Peak-EWMA of time to first byte, in nanoseconds (0 = no sample yet).
    ewma_ttfb_ns: std::sync::atomic::AtomicU64,
    /// Attempts in flight.
    inflight: std::sync::atomic::AtomicU32,
    /// `CircuitState` as u8.
    circuit: std::sync::atomic::AtomicU8,
    /// Set by an operator: no new traffic.
    drained: std::sync::atomic::AtomicBool,
    /// While open: when probing may start, as nanoseconds since [`monotonic_epoch`].
    open_until_ns: std::sync::atomic::AtomicU64,
}

/// A process-wide reference instant, so instants fit in atomics.
pub fn monotonic_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(monotonic_epoch())
        .as_nanos()
        .min(u64::MAX as u128) as u64
}

use std::sync::atomic::Ordering as AtomicOrdering;

impl TargetStats {
    /// Whether new requests may be sent: not drained, and the breaker is closed, half-open,
    /// or open with its cool-down over (the next request is a probe).
    pub fn is_available(&self) -> bool {
        self.is_available_at(Instant::now())
    }

    /// [`Self::is_available`] at a given instant.
    pub fn is_available_at(&self, now: Instant) -> bool {
        if self.drained.load(AtomicOrdering::Relaxed) {
            return false;
        }
        self.circuit() != CircuitState::Open
            || since_epoch(now) >= self.open_until_ns.load(AtomicOrdering::Relaxed)
    }

    /// Publishes when an open breaker may be probed.
    pub fn set_open_until(&self, until: Instant) {
        self.open_until_ns
            .store(since_epoch(until), AtomicOrdering::Relaxed);
    }

    /// The published breaker state.
    pub fn circuit(&self) -> CircuitState {
        match self.circuit.load(AtomicOrdering::Relaxed) {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    /// Publishes the breaker state.
    pub fn set_circuit(&self, state: CircuitState) {
        self.circuit.store(state as u8, AtomicOrdering::Relaxed);
    }

    /// Whether an operator drained the target.
    pub fn is_drained(&self) -> bool {
        self.drained.load(AtomicOrdering::Relaxed)
    }

    /// Drains or undrains the target.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, AtomicOrdering::Relaxed);
    }

    /// Attempts in flight.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(AtomicOrdering::Relaxed)
    }

    /// Marks an attempt started; the guard marks it finished when dropped.
    pub fn start(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, AtomicOrdering::Relaxed);
        InflightGuard(self.clone())
    }

    /// The latency estimate in nanoseconds (0 when never measured).
    pub fn ewma_ttfb_ns(&self) -> u64 {
        self.ewma_ttfb_ns.load(AtomicOrdering::Relaxed)
    }

    /// Records a time to first byte: peak-EWMA (a slower sample is taken at once, a faster
    /// one decays in), as linkerd and Finagle do, so a target that turns slow loses traffic
    /// immediately and regains it gradually.
    pub fn observe_ttfb(&self, ttfb: Duration) {
        let sample = ttfb.as_nanos().min(u64::MAX as u128) as u64;
        let _ = self.ewma_ttfb_ns.fetch_update(
            AtomicOrdering::Relaxed,
            AtomicOrdering::Relaxed,
            |old| {
                Some(if old == 0 || sample > old {
                    sample
                } else {
                    // alpha = 1/8
                    old - (old - sample) / 8
                })
            },
        );
    }

    /// Load-weighted cost for least-latency balancing: latency × (in-flight + 1). Targets
    /// without a sample cost 0 so that they get probed.
    pub fn cost(&self) -> u64 {
        self.ewma_ttfb_ns()
            .saturating_mul(u64::from(self.inflight()) + 1)
    }
}

/// Decrements a target's in-flight count when dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<TargetStats>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, AtomicOrdering::Relaxed);
    }
}

/// How a route picks among its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// In order; the next one when one fails.
    #[default]
    Fallback,
    /// By weight (A/B splits, gradual migration); the rest in order as fallbacks.
    Weighted,
    /// Power of two choices over peak-EWMA time to first byte × load.
    LeastLatency,
    /// Lowest price per token among available targets.
    Cheapest,
    /// Send to the first; if it has not answered within the hedge delay, also to the second;
    /// keep the first reply, cancel the other.
    Hedge,
}

/// The targets a request may use, in the order they should be tried. Set in [`Meta::plan`] by
/// the route layer; reordered by the balance layer; taken by the retry layer.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The public route name that matched.
    pub route: Arc<str>,
    /// Candidate targets, best first.
    pub targets: Arc<[Target]>,
    /// How to order them.
    pub strategy: Strategy,
    /// Most attempts for one request (same-target retries included).
    pub max_attempts: u32,
    /// For `Hedge`: how long to wait before the second request (None: the route's p90).
    pub hedge_after: Option<Duration>,
    /// Degradation: targets (of another model) used only when every target above failed
    /// or is unavailable.
    pub degrade: Option<Arc<[Target]>>,
    /// The route's recent time-to-first-byte samples (for the hedge p90).
    pub latency: Arc<LatencyWindow>,
}

/// The most recent time-to-first-byte samples of a route, for percentile estimates.
#[derive(Debug, Default)]
pub struct LatencyWindow {
    samples: std::sync::Mutex<(usize, Vec<u64>)>,
}

/// Samples kept per route.
const LATENCY_SAMPLES: usize = 128;

impl LatencyWindow {
    /// Records a sample. The lock is held for a few nanoseconds and never across an await.
    pub fn record(&self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        if let Ok(mut g) = self.samples.lock() {
            let (next, v) = &mut *g;
            if v.len() < LATENCY_SAMPLES {
                v.push(ns);
            } else {
                v[*next] = ns;
            }
            *next = (*next + 1) % LATENCY_SAMPLES;
        }
    }

    /// The `q` quantile (0..=1) of recent samples; None with fewer than 8 samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut v = self.samples.lock().ok()?.1.clone();
        if v.len() < 8 {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(Duration::from_nanos(v[i]))
    }
}

/// Tags a request requires of its targets (`x-switchyard-tags: zero-data-retention`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredTags(pub Vec<String>);

impl ChatRequest {
    /// A cheap estimate of the input tokens (about four bytes per token, plus a few per
    /// message), for limits checked before a call and for `count_tokens` when no upstream
    /// counts. Reconciled with the upstream's real usage afterwards.
    pub fn estimate_input_tokens(&self) -> u64 {
        let mut bytes = 0usize;
        let mut overhead = 3u64;
        for m in &self.messages {
            overhead += 4;
            for p in &m.content {
                bytes += match p {
                    Part::Text(t) => t.len(),
                    // Providers bill images by size; a flat figure keeps the estimate bounded.
                    Part::Image(_) => 3000,
                    Part::Other(v) => v.to_string().len(),
                };
            }
            for c in &m.tool_calls {
                bytes += c.name.len() + c.arguments.len();
            }
        }
        for t in &self.tools {
            bytes += t.name.len() + t.description.as_deref().map_or(0, str::len);
            bytes += t.parameters.to_string().len();
        }
        overhead + (bytes as u64).div_ceil(4)
    }
}

/// The caller's credential as presented (`Authorization: Bearer`, `x-api-key` or `api-key`),
/// inserted by the surface, consumed by the auth layer. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct CallerKey(pub Arc<str>);

impl fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerKey(<redacted>)")
    }
}

/// Who is calling: set in [`Meta::principal`] by the auth layer (a default principal when auth
/// is off), read by limits, budgets, metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The key's name from config (`anonymous` when auth is off).
    pub key_name: Arc<str>,
    /// The team the key belongs to (a bounded metrics label).
    pub team: Arc<str>,
}

impl Principal {
    /// The principal of requests when auth is off.
    pub fn anonymous() -> Self {
        // Built once: every request of a sidecar without keys is this principal, and two
        // fresh `Arc<str>`s per request are two allocations for the same two words.
        static ANONYMOUS: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(|| Principal {
            key_name: Arc::from("anonymous"),
            team: Arc::from("default"),
        });
        ANONYMOUS.clone()
    }
}

/// The bytes of `w` (8 bytes of a JSON text, read little-endian) that end the plain run of a
/// string — a quote, a backslash, or a control byte below 0x20 — as the high bit of each such
/// byte; the lowest set bit marks the first. This is the classic zero-byte test:
/// `(v - 0x01..) & !v & 0x80..` flags every zero byte of `v`, and can flag a byte above a zero
/// one (the borrow runs upward) but never below, so its lowest flag is exact; with `0x20..`
/// in place of `0x01..` it flags bytes below 0x20 the same way.
#[inline(always)]
pub fn json_stop_mask(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let below_space = w.wrapping_sub(LO * 0x20) & !w & HI;
    zero(w ^ (LO * u64::from(b'"'))) | zero(w ^ (LO * u64::from(b'\\'))) | below_space
}

/// Whether `s` goes into a JSON string as it is (no quote, backslash or control byte), eight
/// bytes at a time: the last eight overlapping the words before them, a string shorter than
/// eight padded with spaces (a byte loop over the tail cost more than the words).
pub fn json_plain(s: &str) -> bool {
    let b = s.as_bytes();
    let plain = |c: &[u8]| {
        let mut w = [b' '; 8];
        w[..c.len()].copy_from_slice(c);
        json_stop_mask(u64::from_le_bytes(w)) == 0
    };
    if b.len() < 8 {
        return plain(b);
    }
    b.chunks_exact(8).all(plain) && plain(&b[b.len() - 8..])
}

/// `n` in decimal as a header value, in one allocation: `HeaderValue::from(u64)` makes two
/// (its buffer, then a shared handle for the buffer's spare capacity when it is frozen).
pub fn decimal_header(n: u64) -> http::HeaderValue {
    http::HeaderValue::from_bytes(itoa::Buffer::new().format(n).as_bytes())
        .unwrap_or_else(|_| http::HeaderValue::from_static("0"))
}

/// What [`ready_or_within`] returns: the output at once, or the boxed timed wait.
pub type Within<F> = futures_util::future::Either<
    std::future::Ready<Result<<F as std::future::Future>::Output, tokio::time::error::Elapsed>>,
    Pin<Box<tokio::time::Timeout<F>>>,
>;

/// `fut` bounded by `limit`, with no timer when it is ready at once (a body that came with
/// its head: nearly every request body and unary reply). It is polled once here; only when it
/// is still pending is a timer made, and the timed wait is boxed, so the future that awaits
/// this stays small (a timer inline is cache-line aligned, which made a request's boxed
/// handler an aligned allocation).
pub fn ready_or_within<F: std::future::Future + Unpin>(mut fut: F, limit: Duration) -> Within<F> {
    use futures_util::FutureExt as _;
    // Polled with a no-op waker: when pending, the timed wait below polls it again at once
    // with the task's own waker, so nothing that arrives in between is missed.
    match (&mut fut).now_or_never() {
        Some(out) => futures_util::future::Either::Left(std::future::ready(Ok(out))),
        None => futures_util::future::Either::Right(Box::pin(tokio::time::timeout(limit, fut))),
    }
}

/// How a reply ended, handed to every settlement hook exactly once.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// Token usage as reported by the upstream (for an aborted stream: what was reported
    /// before the abort, if anything).
    pub usage: Option<Usage>,
    /// Whether the reply completed normally (a full JSON reply, or a stream that reached its
    /// end). False for a stream that failed or whose caller went away.
    pub completed: bool,
    /// The failure that ended a stream, if one did.
    pub error: Option<ErrorKind>,
    /// When the first stream event arrived (time to first token); `None` for JSON replies.
    pub first_event_at: Option<Instant>,
    /// Output text/argument bytes seen on a stream, for estimating usage when a stream was
    /// aborted before the upstream reported it.
    pub streamed_bytes: u64,
    /// When the reply ended.
    pub ended_at: Instant,
}

type SettleFn = Box<dyn FnOnce(&Settlement) + Send>;

impl Reply {
    /// Runs `f` once when the reply is settled: at once for a complete reply; for a stream,
    /// when it ends, fails, or is dropped (a caller that hangs up is still settled).
    pub fn on_settle(mut self, f: impl FnOnce(&Settlement) + Send + 'static) -> Self {
        let usage = match &self.body {
            ReplyBody::Chat(c) => Some(c.usage),
            ReplyBody::Raw(r) => Some(r.usage),
            ReplyBody::Embeddings(e) => Some(e.usage),
            ReplyBody::TokenCount(_) | ReplyBody::Models(_) => Some(None),
            ReplyBody::Stream(_) => None,
        };
        match usage {
            Some(usage) => {
                f(&Settlement {
                    usage,
                    completed: true,
                    error: None,
                    first_event_at: None,
                    streamed_bytes: 0,
                    ended_at: Instant::now(),
                });
                self
            }
            None => {
                let ReplyBody::Stream(inner) = self.body else {
                    unreachable!("matched a stream above")
                };
                self.body = ReplyBody::Stream(Box::pin(SettledStream {
                    inner,
                    hook: Some(Box::new(f)),
                    usage: None,
                    first_event_at: None,
                    streamed_bytes: 0,
                    error: None,
                }));
                self
            }
        }
    }
}

/// A stream that reports its settlement when it ends or is dropped.
struct SettledStream {
    inner: EventStream,
    hook: Option<SettleFn>,
    usage: Option<Usage>,
    first_event_at: Option<Instant>,
    streamed_bytes: u64,
    error: Option<ErrorKind>,
}

impl SettledStream {
    fn settle(&mut self, completed: bool) {
        if let Some(hook) = self.hook.take() {
            hook(&Settlement {
                usage: self.usage,
                completed,
                error: self.error,
                first_event_at: self.first_event_at,
                streamed_bytes: self.streamed_bytes,
                ended_at: Instant::now(),
            });
        }
    }
}

impl Stream for SettledStream {
    type Item = Result<StreamEvent, Error>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(ev)) => {
                if self.first_event_at.is_none() {
                    self.first_event_at = Some(Instant::now());
                }
                let this = &mut *self;
                ev.for_each(|ev| match ev {
                    StreamEvent::Usage(u) => this.usage = Some(*u),
                    StreamEvent::TextDelta { text, .. } => this.streamed_bytes += text.len() as u64,
                    StreamEvent::ToolCallDelta { arguments, .. } => {
                        this.streamed_bytes += arguments.len() as u64
                    }
                    _ => {}
                });
            }
            Some(Err(e)) => {
                self.error = Some(e.kind);
                self.settle(false);
            }
            None => {
                let ok = self.error.is_none();
                self.settle(ok);
            }
        }
        std::task::Poll::Ready(item)
    }
}

impl Drop for SettledStream {
    fn drop(&mut self) {
        self.settle(false);
    }
}

#[cfg(test)]
mod header_tests {
    use super::decimal_header;

    #[test]
    fn decimal_headers_read_as_the_number() {
        for n in [0, 7, 10, 999_999, u64::MAX] {
            assert_eq!(decimal_header(n), http::HeaderValue::from(n));
            assert_eq!(decimal_header(n).to_str().unwrap(), n.to_string());
        }
    }
}

#[cfg(test)]
mod settle_tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::Mutex;

    fn stream_reply(events: Vec<Result<StreamEvent, Error>>) -> Reply {
        Reply::local(ReplyBody::Stream(Box::pin(futures_util::stream::iter(
            events,
        ))))
    }

    fn recorder() -> (
        Arc<Mutex<Vec<Settlement>>>,
        impl FnOnce(&Settlement) + Send + 'static,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (seen, move |st: &Settlement| {
            s.lock().unwrap().push(st.clone())
        })
    }

    fn events() -> Vec<Result<StreamEvent, Error>> {
        vec![
            Ok(StreamEvent::TextDelta {
                choice: 0,
                text: "hello".into(),
            }),
            Ok(StreamEvent::Usage(Usage {
                input_tokens: 3,
                output_tokens: 2,
                ..Usage::default()
            })),
        ]
    }

    #[tokio::test]
    async fn a_finished_stream_settles_once_with_its_usage() {
        let (seen, hook) = recorder();
        let reply = stream_reply(events()).on_settle(hook);
        let ReplyBody::Stream(mut s) = reply.body else {
            panic!()
        };
        while s.next().await.is_some() {}
        drop(s);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].completed);
        assert_eq!(seen[0].usage.unwrap().output_tokens, 2);
        assert_eq!(seen[0].streamed_bytes, 5);
    }

    #[tokio::test]
    async fn a_dropped_stream_settles_as_incomplete() {
        let (seen, hook) = recorder();
        let reply = stream_reply(events()).on_settle(hook);
        let ReplyBody::Stream(mut s) = reply.body else {
            panic!()
        };
        s.next().await;
        drop(s);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(!seen[0].completed);
        assert_eq!(seen[0].streamed_bytes, 5);
        assert!(seen[0].usage.is_none());
    }

    #[tokio::test]
    async fn a_failed_stream_settles_with_its_error() {
        let (seen, hook) = recorder();
        let reply = stream_reply(vec![Err(Error::new(ErrorKind::Timeout, "idle"))]).on_settle(hook);
        let ReplyBody::Stream(mut s) = reply.body else {
            panic!()
        };
        while s.next().await.is_some() {}
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].error, Some(ErrorKind::Timeout));
        assert!(!seen[0].completed);
    }

    #[test]
    fn a_json_reply_settles_at_once() {
        let (seen, hook) = recorder();
        let _ = Reply::local(ReplyBody::TokenCount(3)).on_settle(hook);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// A reply is moved through every layer of the stack. Past 256 bytes each move became a
    /// call to `memcpy` (a 264-byte reply cost 1.5k instructions more per request than a
    /// 248-byte one, bench/instructions.sh): keep it under.
    #[test]
    fn a_reply_stays_small_enough_to_move_inline() {
        assert!(std::mem::size_of::<Result<Reply, Error>>() <= 256);
        assert!(std::mem::size_of::<Option<Arc<ServedBy>>>() == 8);
    }
}
