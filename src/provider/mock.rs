//! The built-in mock provider: answers in-process, with no network and no key, so a fresh
//! `switchyard serve` has something to serve and tests and benchmarks have a 0 ms upstream.
//!
//! Models:
//! - `echo`: replies with the last user message. With tools offered (and `tool_choice` not
//!   `none`) it calls the chosen (or first) tool, arguments filled from its schema; after a
//!   tool result it reports that result. With a JSON `response_format` it answers JSON.
//! - `lorem`: streams `max_tokens` (default 16) words of lorem ipsum, one event per word
//!   (paced by the `token_interval_ms` fault, for long-lived streams in load runs).
//! - any model, for embeddings: a deterministic unit vector per input (`dimensions`, default
//!   16).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::ir::{
    ChatReply, ChatRequest, Choice, Embedding, EmbeddingsReply, EmbeddingsRequest, Error,
    ErrorKind, EventStream, FinishReason, Message, Operation, ReplyBody, ResponseFormat, Role,
    StreamEvent, ToolCall, ToolChoice, Usage,
};

const LOREM: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
];

/// Largest `lorem` reply, in words.
const MAX_LOREM: u32 = 100_000;

/// Faults the mock injects, for failure tests, demos and load runs during an outage. Set by
/// `switchyard mock` flags or at run time with `POST /mock/faults` on its admin plane.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer with this HTTP status (and an error body in the caller's format).
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with the status.
    pub retry_after_secs: Option<u64>,
    /// Apply the status to every Nth request (1 or absent: every request).
    pub every: Option<u64>,
    /// Apply the status to this many requests, then stop (absent: forever).
    pub count: Option<u64>,
    /// Added latency before answering, in milliseconds.
    pub latency_ms: u64,
    /// Streams stop sending (without ending) after this many events.
    pub stall_after_events: Option<usize>,
    /// Streams fail with an error event after this many events.
    pub fail_after_events: Option<usize>,
    /// Pause between stream events, in milliseconds (the first event is not delayed): paces a
    /// stream like a slow model, so a `lorem` reply of `max_tokens` words lasts about
    /// `max_tokens × token_interval_ms`. Taken when a request starts; a change affects only
    /// later requests.
    pub token_interval_ms: u64,
}

/// The mock provider.
#[derive(Debug, Default)]
pub struct Mock {
    counter: AtomicU64,
    faults: std::sync::RwLock<Faults>,
    faulted: AtomicU64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the mock decides to answer, before it is shaped as a reply or a stream.
struct Answer {
    text: Option<String>,
    tool_call: Option<ToolCall>,
    finish: FinishReason,
    usage: Usage,
}

fn fault_error(status: u16, retry_after: Option<u64>) -> Error {
    let kind = match status {
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::Overloaded,
        s if s >= 500 => ErrorKind::UpstreamStatus,
        _ => ErrorKind::InvalidRequest,
    };
    let mut e = Error::new(kind, format!("mock fault: status {status}")).with_status(status);
    e.retry_after = retry_after.map(std::time::Duration::from_secs);
    e
}

impl Mock {
    /// Replaces the fault plan.
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.faults.write() {
            *f = faults;
        }
        self.faulted.store(0, Ordering::Relaxed);
    }

    /// Requests answered (or failed) so far.
    pub fn calls(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// The fault plan in force.
    pub fn faults(&self) -> Faults {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// Answers one operation for `model`.
    pub async fn call(&self, op: &Operation, model: &str) -> Result<ReplyBody, Error> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let faults = self.faults();
        if faults.latency_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
        }
        if let Some(status) = faults.status {
            let every = faults.every.unwrap_or(1).max(1);
            if n % every == 0 {
                let k = self.faulted.fetch_add(1, Ordering::Relaxed);
                if faults.count.is_none_or(|c| k < c) {
                    return Err(fault_error(status, faults.retry_after_secs));
                }
            }
        }
        match op {
            Operation::Chat(req) => {
                let answer = answer(req, model)?;
                let id = format!("chatcmpl-mock{n}");
                if req.stream {
                    let interval = std::time::Duration::from_millis(faults.token_interval_ms);
                    let events = stream_events(id, model, answer);
                    let cut = faults.stall_after_events.or(faults.fail_after_events);
                    let Some(cut) = cut.filter(|c| *c < events.len()) else {
                        return Ok(ReplyBody::Stream(paced(
                            Box::pin(futures_util::stream::iter(events.into_iter().map(Ok))),
                            interval,
                        )));
                    };
                    let head = futures_util::stream::iter(events.into_iter().take(cut).map(Ok));
                    use futures_util::StreamExt as _;
                    if faults.stall_after_events.is_some() {
                        Ok(ReplyBody::Stream(paced(
                            Box::pin(head.chain(futures_util::stream::pending())),
                            interval,
                        )))
                    } else {
                        let fail = Error::new(
                            ErrorKind::UpstreamStatus,
                            "mock fault: stream failed mid-way",
                        )
                        .with_status(500);
                        Ok(ReplyBody::Stream(paced(
                            Box::pin(
                                head.chain(futures_util::stream::once(async move { Err(fail) })),
                            ),
                            interval,
                        )))
                    }
                } else {
                    Ok(ReplyBody::Chat(reply(id, model, answer)))
                }
            }
            Operation::Embeddings(req) => Ok(ReplyBody::Embeddings(embed(req, model)?)),
            _ => Err(Error::new(
                ErrorKind::Internal,
                "operation has no upstream call",
            )),
        }
    }
}

/// Waits `interval` before every item of `events` but the first (none when zero). Each
/// stream owns its own timer: nothing is shared or locked while it waits.
fn paced(events: EventStream, interval: std::time::Duration) -> EventStream {
    use futures_util::StreamExt as _;
    if interval.is_zero() {
        return events;
    }
    Box::pin(events.enumerate().then(move |(i, item)| async move {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        item
    }))
}

fn answer(req: &ChatRequest, model: &str) -> Result<Answer, Error> {
    let input_tokens = req.estimate_input_tokens();
    let last = req.messages.last();
    let last_user_text = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(Message::joined_text)
        .unwrap_or_default();
    let (text, tool_call, finish) = match model {
        "echo" => {
            let tool = match (&req.tool_choice, req.tools.first()) {
                (Some(ToolChoice::None), _) | (_, None) => None,
                (Some(ToolChoice::Tool(name)), _) => req.tools.iter().find(|t| &t.name == name),
                (_, Some(first)) => Some(first),
            };
            if let (Some(tool), Some(Role::User)) = (tool, last.map(|m| m.role)) {
                let args = fill(&tool.parameters, &last_user_text, 0);
                let call = ToolCall {
                    id: format!("call_mock_{}", tool.name),
                    name: tool.name.clone(),
                    arguments: args.to_string(),
                };
                (None, Some(call), FinishReason::ToolCalls)
            } else if let Some(m) = last.filter(|m| m.role == Role::Tool) {
                (
                    Some(format!("tool result: {}", m.joined_text())),
                    None,
                    FinishReason::Stop,
                )
            } else {
                let text = match &req.response_format {
                    Some(ResponseFormat::JsonObject) => {
                        json!({ "echo": last_user_text }).to_string()
                    }
                    Some(ResponseFormat::JsonSchema { schema, .. }) => {
                        fill(schema, &last_user_text, 0).to_string()
                    }
                    _ => last_user_text,
                };
                (Some(text), None, FinishReason::Stop)
            }
        }
        "lorem" => {
            let n = req.max_tokens.unwrap_or(16).min(MAX_LOREM) as usize;
            let words: Vec<&str> = (0..n).map(|i| LOREM[i % LOREM.len()]).collect();
            let finish = if req.max_tokens.is_some() {
                FinishReason::Length
            } else {
                FinishReason::Stop
            };
            (Some(words.join(" ")), None, finish)
        }
        other => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("the mock provider has no chat model '{other}' (it has echo and lorem)"),
            ))
        }
    };
    let output_tokens = match (&text, &tool_call) {
        (_, Some(c)) => (c.arguments.len() as u64).div_ceil(4).max(1),
        (Some(t), None) => t.split_whitespace().count().max(1) as u64,
        (None, None) => 0,
    };
    Ok(Answer {
        text,
        tool_call,
        finish,
        usage: Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        },
    })
}

/// A value that satisfies (the common subset of) a JSON schema, strings filled with `text`.
fn fill(schema: &Value, text: &str, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(v) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return v.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), fill(v, text, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let item = schema
                .get("items")
                .map_or(Value::Null, |i| fill(i, text, depth + 1));
            Value::Array(vec![item])
        }
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => Value::String(text.to_owned()),
    }
}

fn reply(id: String, model: &str, a: Answer) -> ChatReply {
    let mut message = Message::text(Role::Assistant, "");
    message.content = a
        .text
        .map(|t| vec![crate::ir::Part::Text(t)])
        .unwrap_or_default();
    message.tool_calls = a.tool_call.into_iter().collect();
    ChatReply {
        id,
        model: model.to_owned(),
        created: now(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(a.finish),
        }],
        usage: Some(a.usage),
    }
}

fn stream_events(id: String, model: &str, a: Answer) -> Vec<StreamEvent> {
    let mut out = vec![StreamEvent::Start {
        id,
        model: model.to_owned(),
        created: now(),
    }];
    if let Some(text) = a.text {
        // One event per word (with its following space), like a token stream.
        let mut start = 0;
        for (i, _) in text.match_indices(' ') {
            out.push(StreamEvent::TextDelta {
                choice: 0,
                text: text[start..=i].to_owned(),
            });
            start = i + 1;
        }
        if start < text.len() || text.is_empty() {
            out.push(StreamEvent::TextDelta {
                choice: 0,
                text: text[start..].to_owned(),
            });
        }
    }
    if let Some(call) = a.tool_call {
        out.push(StreamEvent::ToolCallStart {
            choice: 0,
            index: 0,
            id: call.id,
            name: call.name,
        });
        // Split the arguments so callers see real fragment reassembly.
        let mid = (0..=call.arguments.len() / 2)
            .rev()
            .find(|i| call.arguments.is_char_boundary(*i))
            .unwrap_or(0);
        for frag in [&call.arguments[..mid], &call.arguments[mid..]] {
            if !frag.is_empty() {
                out.push(StreamEvent::ToolCallDelta {
                    choice: 0,
                    index: 0,
                    arguments: frag.to_owned(),
                });
            }
        }
    }
    out.push(StreamEvent::Finish {
        choice: 0,
        reason: a.finish,
    });
    out.push(StreamEvent::Usage(a.usage));
    out
}

fn embed(req: &EmbeddingsRequest, model: &str) -> Result<EmbeddingsReply, Error> {
    let inputs: Vec<String> = match &req.input {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => return Err(Error::invalid("'input' must be a string or an array").with_param("input")),
    };
    let dims = req.dimensions.unwrap_or(16).clamp(1, 8192) as usize;
    let mut tokens = 0u64;
    let data = inputs
        .iter()
        .map(|s| {
            tokens += (s.len() as u64).div_ceil(4).max(1);
            Embedding::Float(vector(s, dims))
        })
        .collect();
    Ok(EmbeddingsReply {
        model: model.to_owned(),
        data,
        usage: Some(Usage {
            input_tokens: tokens,
            ..Usage::default()
        }),
    })
}

/// A deterministic unit vector derived from the text (FNV-1a seeded xorshift).
fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Format, Tool};

    fn chat(model: &str, text: &str) -> ChatRequest {
        let mut r = ChatRequest::new(model, Format::OpenAi);
        r.messages.push(Message::text(Role::User, text));
        r
    }

    #[test]
    fn echo_echoes_last_user_message() {
        let a = answer(&chat("echo", "hello there"), "echo").unwrap();
        assert_eq!(a.text.as_deref(), Some("hello there"));
        assert_eq!(a.finish, FinishReason::Stop);
    }

    #[test]
    fn echo_calls_a_tool_with_schema_filled_arguments() {
        let mut r = chat("echo", "Paris");
        r.tools.push(Tool {
            name: "get_weather".into(),
            description: None,
            parameters: json!({"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"},"unit":{"enum":["c","f"]}}}),
            strict: None,
        });
        let a = answer(&r, "echo").unwrap();
        let call = a.tool_call.unwrap();
        assert_eq!(call.name, "get_weather");
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args, json!({"city":"Paris","days":1,"unit":"c"}));
        assert_eq!(a.finish, FinishReason::ToolCalls);
    }

    #[test]
    fn lorem_streams_max_tokens_words() {
        let mut r = chat("lorem", "x");
        r.max_tokens = Some(5);
        let events = stream_events("id".into(), "lorem", answer(&r, "lorem").unwrap());
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::TextDelta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text.split_whitespace().count(), 5);
        assert!(matches!(events.last(), Some(StreamEvent::Usage(u)) if u.output_tokens == 5));
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = vector("abc", 8);
        assert_eq!(a, vector("abc", 8));
        assert_ne!(a, vector("abd", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[tokio::test]
    async fn faults_fail_every_nth_request_for_a_count() {
        let m = Mock::default();
        m.set_faults(Faults {
            status: Some(503),
            every: Some(2),
            count: Some(2),
            retry_after_secs: Some(1),
            ..Faults::default()
        });
        let op = Operation::Chat(Box::new(chat("echo", "x")));
        let mut statuses = Vec::new();
        for _ in 0..8 {
            statuses.push(
                m.call(&op, "echo")
                    .await
                    .err()
                    .map(|e| (e.status, e.retry_after)),
            );
        }
        let d = Some(std::time::Duration::from_secs(1));
        assert_eq!(
            statuses,
            vec![
                Some((503, d)),
                None,
                Some((503, d)),
                None,
                None,
                None,
                None,
                None
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn streams_can_fail_mid_way_paced_or_not() {
        use futures_util::StreamExt;
        for interval_ms in [0, 50] {
            let m = Mock::default();
            m.set_faults(Faults {
                fail_after_events: Some(2),
                token_interval_ms: interval_ms,
                ..Faults::default()
            });
            let mut req = chat("lorem", "x");
            req.stream = true;
            let Ok(ReplyBody::Stream(s)) = m.call(&Operation::Chat(Box::new(req)), "lorem").await
            else {
                panic!()
            };
            let t0 = tokio::time::Instant::now();
            let items: Vec<_> = s.collect().await;
            assert_eq!(items.len(), 3);
            assert!(items[2].is_err());
            assert!(t0.elapsed() >= std::time::Duration::from_millis(2 * interval_ms));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paced_streams_space_their_events_and_keep_the_pace_they_started_with() {
        use futures_util::StreamExt;
        use tokio::time::{Duration, Instant};
        let m = Mock::default();
        m.set_faults(Faults {
            token_interval_ms: 100,
            ..Faults::default()
        });
        let mut req = chat("lorem", "x");
        req.stream = true;
        req.max_tokens = Some(5);
        let op = Operation::Chat(Box::new(req));
        let Ok(ReplyBody::Stream(mut paced)) = m.call(&op, "lorem").await else {
            panic!()
        };
        // Cleared while the first stream runs: only later requests go unpaced.
        m.set_faults(Faults::default());
        let t0 = Instant::now();
        let mut at = Vec::new();
        while let Some(item) = paced.next().await {
            assert!(item.is_ok());
            at.push(t0.elapsed());
        }
        // Start, 5 words, finish, usage.
        assert_eq!(at.len(), 8);
        assert_eq!(at[0], Duration::ZERO, "the first event is not delayed");
        for w in at.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(100), "{at:?}");
        }
        assert!(at[7] >= Duration::from_millis(700), "{at:?}");

        let Ok(ReplyBody::Stream(unpaced)) = m.call(&op, "lorem").await else {
            panic!()
        };
        let t1 = Instant::now();
        assert_eq!(unpaced.collect::<Vec<_>>().await.len(), 8);
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }

    #[test]
    fn unknown_model_is_not_found() {
        let e = answer(&chat("nope", "x"), "nope").err().unwrap();
        assert_eq!(e.kind, ErrorKind::NotFound);
    }
}
