//! Criterion micro-benchmarks of the per-request pure functions: caller surfaces, provider
//! codecs, SSE parsing and writing, stream translation, route choice, the GCRA step, cost and
//! metric recording. Inputs are the golden files under `tests/golden/` where one fits, and
//! realistic provider payloads otherwise.
//!
//! `cargo bench --bench hot` runs them all (a few minutes); `cargo bench --bench hot -- sse`
//! runs those whose name contains `sse`. `cargo test --all-targets` runs each once as a smoke
//! test, so the setup assertions below are checked in CI.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt as _;

use switchyard::config::{self, Env};
use switchyard::cost::Prices;
use switchyard::ir::{
    self, Attempt, CircuitState, Error, Format, Reply, Strategy, StreamEvent, Target, TargetStats,
    Usage,
};
use switchyard::layer::balance;
use switchyard::layer::ratelimit::{Limiter, TokenEstimate};
use switchyard::route::Control;
use switchyard::sse;
use switchyard::state::{self, memory::MemoryState, SharedState, Take};
use switchyard::telemetry::metrics::{self, SeriesKey, StatusClass};
use switchyard::wire::{self, anthropic, gemini, openai};

// --- inputs ----------------------------------------------------------------------------------

const OPENAI_CHAT_REQUEST: &str = include_str!("../tests/golden/openai/chat_request.json");
const ANTHROPIC_REQUEST: &str = include_str!("../tests/golden/anthropic/request_tool_use.json");
const ANTHROPIC_STREAM: &str = include_str!("../tests/golden/anthropic/stream_tool_use.sse");
const GEMINI_REPLY_TEXT: &str = include_str!("../tests/golden/gemini/reply_text.json");
const GEMINI_REPLY_CALL: &str = include_str!("../tests/golden/gemini/reply_function_call.json");
const GEMINI_STREAM: &str = include_str!("../tests/golden/gemini/stream_tool.sse");

/// The request most callers send: a system prompt, a short history, a question.
const OPENAI_SMALL_REQUEST: &str = r#"{"model":"chat-default","messages":[{"role":"system","content":"You are a helpful assistant. Answer concisely."},{"role":"user","content":"What is the capital of France?"},{"role":"assistant","content":"Paris."},{"role":"user","content":"And how many people live there? Give the city and the metropolitan area."}],"temperature":0.7,"max_tokens":512}"#;

/// An OpenAI `chat.completion` as the API sends it today (a paragraph of text, usage details).
const OPENAI_REPLY: &str = r#"{
  "id": "chatcmpl-CXq5Rk9w3lB1yq8hX2v0aQ7mZp4sT",
  "object": "chat.completion",
  "created": 1763900000,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Paris itself has about 2.1 million inhabitants within the city limits (the 20 arrondissements). The wider metropolitan area, the aire d'attraction de Paris, counts roughly 13 million people, which makes it the largest urban area in the European Union. The population of the city proper has been slowly declining for a decade while the suburbs keep growing.",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 58,
    "completion_tokens": 74,
    "total_tokens": 132,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_560af6e559"
}"#;

/// An Anthropic Messages reply: thinking, text, a tool call, cache usage.
const ANTHROPIC_REPLY: &str = r#"{
  "id": "msg_01Aq9w938a90dw8qQW5fGZ9x",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5-20250929",
  "content": [
    {"type": "thinking", "thinking": "The user wants the weather in San Francisco; I should call the tool.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
    {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {"input_tokens": 472, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 89, "service_tier": "standard"}
}"#;

/// An OpenAI chat stream as the API sends it with `stream_options.include_usage`: a role
/// chunk, `deltas` content chunks of one word each, a finish chunk, a usage chunk, `[DONE]`.
fn openai_stream(deltas: usize) -> String {
    const HEAD: &str = r#"{"id":"chatcmpl-CXq5Rk9w3lB1yq8hX2v0aQ7mZp4sT","object":"chat.completion.chunk","created":1763900000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559","choices":[{"index":0,"delta":"#;
    const WORDS: [&str; 8] = [
        " The",
        " metropolitan",
        " area",
        " counts",
        " roughly",
        " 13",
        " million",
        " people.",
    ];
    let mut s = String::new();
    let mut chunk = |delta: &str, finish: &str, usage: &str| {
        s.push_str("data: ");
        s.push_str(HEAD);
        s.push_str(delta);
        s.push_str(r#","logprobs":null,"finish_reason":"#);
        s.push_str(finish);
        s.push_str(r#"}],"usage":"#);
        s.push_str(usage);
        s.push_str(r#","obfuscation":"kD3x9"}"#);
        s.push_str("\n\n");
    };
    chunk(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
        "null",
    );
    for i in 0..deltas {
        chunk(
            &format!(r#"{{"content":"{}"}}"#, WORDS[i % WORDS.len()]),
            "null",
            "null",
        );
    }
    chunk("{}", r#""stop""#, "null");
    s.push_str(
        r#"data: {"id":"chatcmpl-CXq5Rk9w3lB1yq8hX2v0aQ7mZp4sT","object":"chat.completion.chunk","created":1763900000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559","choices":[],"usage":{"prompt_tokens":58,"completion_tokens":256,"total_tokens":314,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"p0"}"#,
    );
    s.push_str("\n\ndata: [DONE]\n\n");
    s
}

/// Every event of a whole SSE body, pushed at once.
fn parse_all(body: &[u8]) -> Vec<sse::Event> {
    let mut p = sse::Parser::default();
    p.push(body);
    let mut out = Vec::new();
    while let Some(ev) = p.next_event().expect("valid SSE") {
        out.push(ev);
    }
    out
}

/// IR events of an upstream stream, through its decoder.
fn decode_stream(
    dec: &mut dyn wire::StreamDecoder,
    body: &[u8],
) -> Result<Vec<StreamEvent>, Error> {
    let mut p = sse::Parser::default();
    p.push(body);
    let mut out = Vec::new();
    while let Some(ev) = p.next_event().expect("valid SSE") {
        dec.event(&ev, &mut out)?;
    }
    Ok(out)
}

fn bytes_of(s: &str) -> Throughput {
    Throughput::Bytes(s.len() as u64)
}

// --- surfaces --------------------------------------------------------------------------------

fn surfaces(c: &mut Criterion) {
    let mut g = c.benchmark_group("surface");

    for (name, body) in [
        ("openai/decode_chat/golden", OPENAI_CHAT_REQUEST),
        ("openai/decode_chat/small", OPENAI_SMALL_REQUEST),
    ] {
        openai::decode_chat_request(body.as_bytes()).expect("decodes");
        g.throughput(bytes_of(body));
        g.bench_function(name, |b| {
            b.iter(|| openai::decode_chat_request(black_box(body.as_bytes())))
        });
    }

    let reply = openai::decode_chat_reply(OPENAI_REPLY.as_bytes()).expect("decodes");
    let out = openai::encode_chat_reply(&reply);
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function("openai/encode_reply", |b| {
        b.iter(|| openai::encode_chat_reply(black_box(&reply)))
    });

    anthropic::decode_request(ANTHROPIC_REQUEST.as_bytes()).expect("decodes");
    g.throughput(bytes_of(ANTHROPIC_REQUEST));
    g.bench_function("anthropic/decode_messages/golden", |b| {
        b.iter(|| anthropic::decode_request(black_box(ANTHROPIC_REQUEST.as_bytes())))
    });

    // The reply an Anthropic caller gets from an OpenAI upstream.
    let out = anthropic::encode_reply(&reply);
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function("anthropic/encode_reply", |b| {
        b.iter(|| anthropic::encode_reply(black_box(&reply)))
    });
    g.finish();
}

// --- provider codecs -------------------------------------------------------------------------

fn providers(c: &mut Criterion) {
    let mut g = c.benchmark_group("provider");
    let golden = openai::decode_chat_request(OPENAI_CHAT_REQUEST.as_bytes()).expect("decodes");
    let small = openai::decode_chat_request(OPENAI_SMALL_REQUEST.as_bytes()).expect("decodes");
    let from_anthropic = anthropic::decode_request(ANTHROPIC_REQUEST.as_bytes()).expect("decodes");
    let opts = openai::RequestOptions {
        max_completion_tokens: true,
        stream_usage: true,
    };

    for (name, req) in [("golden", &golden), ("small", &small)] {
        let out = openai::encode_chat_request(req, "gpt-4o-mini", opts);
        g.throughput(Throughput::Bytes(out.len() as u64));
        g.bench_function(format!("openai/encode/{name}"), |b| {
            b.iter(|| openai::encode_chat_request(black_box(req), "gpt-4o-mini", opts))
        });
    }
    // OpenAI caller → Anthropic upstream (translation), and Anthropic → Anthropic.
    for (name, req) in [
        ("golden", &golden),
        ("small", &small),
        ("same_format", &from_anthropic),
    ] {
        let out = anthropic::encode_request(req, "claude-sonnet-4-5", 4096).expect("encodes");
        g.throughput(Throughput::Bytes(out.len() as u64));
        g.bench_function(format!("anthropic/encode/{name}"), |b| {
            b.iter(|| anthropic::encode_request(black_box(req), "claude-sonnet-4-5", 4096))
        });
    }
    for (name, req) in [("golden", &golden), ("small", &small)] {
        let out = gemini::encode_request(req).expect("encodes");
        g.throughput(Throughput::Bytes(out.len() as u64));
        g.bench_function(format!("gemini/encode/{name}"), |b| {
            b.iter(|| gemini::encode_request(black_box(req)))
        });
    }

    g.throughput(bytes_of(OPENAI_REPLY));
    g.bench_function("openai/decode_reply", |b| {
        b.iter(|| openai::decode_chat_reply(black_box(OPENAI_REPLY.as_bytes())))
    });
    // Caller and upstream both OpenAI: usage is read, the bytes are forwarded as they came.
    let raw = Bytes::from_static(OPENAI_REPLY.as_bytes());
    openai::summarise_chat_reply(raw.clone()).expect("decodes");
    g.bench_function("openai/summarise_reply", |b| {
        b.iter(|| openai::summarise_chat_reply(black_box(raw.clone())))
    });
    anthropic::decode_reply(ANTHROPIC_REPLY.as_bytes()).expect("decodes");
    g.throughput(bytes_of(ANTHROPIC_REPLY));
    g.bench_function("anthropic/decode_reply", |b| {
        b.iter(|| anthropic::decode_reply(black_box(ANTHROPIC_REPLY.as_bytes())))
    });
    for (name, body) in [
        ("text", GEMINI_REPLY_TEXT),
        ("function_call", GEMINI_REPLY_CALL),
    ] {
        gemini::decode_reply(body.as_bytes(), "gemini-2.5-flash").expect("decodes");
        g.throughput(bytes_of(body));
        g.bench_function(format!("gemini/decode_reply/{name}"), |b| {
            b.iter(|| gemini::decode_reply(black_box(body.as_bytes()), "gemini-2.5-flash"))
        });
    }
    g.finish();
}

// --- SSE -------------------------------------------------------------------------------------

fn sse_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse/parse");
    for deltas in [16usize, 256] {
        let body = openai_stream(deltas);
        let events = parse_all(body.as_bytes()).len();
        assert_eq!(events, deltas + 4, "role, deltas, finish, usage, [DONE]");
        // One event per body frame, as a provider usually flushes them.
        let frames: Vec<&[u8]> = body.split_inclusive("\n\n").map(str::as_bytes).collect();
        g.throughput(bytes_of(&body));
        for (how, split) in [("whole", body.len()), ("split64", 64), ("split7", 7)] {
            g.bench_function(format!("openai_{deltas}/{how}"), |b| {
                b.iter(|| {
                    let mut p = sse::Parser::default();
                    let mut n = 0;
                    for piece in body.as_bytes().chunks(split) {
                        p.push(piece);
                        while let Some(ev) = p.next_event().expect("valid SSE") {
                            n += black_box(ev).data.len();
                        }
                    }
                    n
                })
            });
        }
        g.bench_function(format!("openai_{deltas}/frame_per_event"), |b| {
            b.iter(|| {
                let mut p = sse::Parser::default();
                let mut n = 0;
                for f in &frames {
                    p.push(f);
                    while let Some(ev) = p.next_event().expect("valid SSE") {
                        n += black_box(ev).data.len();
                    }
                }
                n
            })
        });
    }
    g.throughput(bytes_of(ANTHROPIC_STREAM));
    g.bench_function("anthropic_golden/whole", |b| {
        b.iter(|| parse_all(black_box(ANTHROPIC_STREAM.as_bytes())))
    });
    g.finish();
}

fn sse_write(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse/write");
    let events = parse_all(openai_stream(256).as_bytes());
    let total: usize = events.iter().map(|e| e.data.len() + 8).sum();
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("event/openai_256", |b| {
        let mut out = BytesMut::with_capacity(total * 2);
        b.iter(|| {
            out.clear();
            for e in &events {
                sse::write_event(&mut out, None, black_box(&e.data));
            }
            out.len()
        })
    });
    let values: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).expect("json"))
        .collect();
    g.bench_function("json_event/openai_256", |b| {
        let mut out = BytesMut::with_capacity(total * 2);
        b.iter(|| {
            out.clear();
            for v in &values {
                sse::write_json_event(&mut out, None, black_box(v));
            }
            out.len()
        })
    });
    g.finish();
}

// --- streams ---------------------------------------------------------------------------------

fn streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream");
    let openai_256 = openai_stream(256);
    let openai_events =
        decode_stream(&mut openai::StreamDecoder::new(), openai_256.as_bytes()).expect("decodes");
    let anthropic_events = decode_stream(
        &mut anthropic::StreamDecoder::new(),
        ANTHROPIC_STREAM.as_bytes(),
    )
    .expect("decodes");
    decode_stream(
        &mut gemini::StreamDecoder::new("gemini-2.5-flash"),
        GEMINI_STREAM.as_bytes(),
    )
    .expect("decodes");

    // Upstream bytes → IR events (SSE parse included), through the boxed decoder as the
    // provider adapter holds it.
    type MakeDecoder = fn() -> Box<dyn wire::StreamDecoder>;
    let decoders: [(&str, &[u8], MakeDecoder); 3] = [
        ("openai_256", openai_256.as_bytes(), || {
            Box::new(openai::StreamDecoder::new())
        }),
        ("anthropic_golden", ANTHROPIC_STREAM.as_bytes(), || {
            Box::new(anthropic::StreamDecoder::new())
        }),
        ("gemini_golden", GEMINI_STREAM.as_bytes(), || {
            Box::new(gemini::StreamDecoder::new("gemini-2.5-flash"))
        }),
    ];
    for (name, body, make) in decoders {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_stream(&mut *make(), black_box(body)))
        });
    }

    // IR events → caller bytes.
    let encode = |enc: &mut dyn wire::StreamEncoder, events: &[StreamEvent], out: &mut BytesMut| {
        for e in events {
            enc.event(e, out);
        }
        enc.finish(out);
    };
    for (name, events) in [
        ("openai_256", &openai_events),
        ("anthropic_golden", &anthropic_events),
    ] {
        let mut out = BytesMut::new();
        encode(&mut openai::StreamEncoder::new(true), events, &mut out);
        g.throughput(Throughput::Bytes(out.len() as u64));
        g.bench_function(format!("encode_openai/{name}"), |b| {
            let mut out = BytesMut::with_capacity(out.len() * 2);
            b.iter(|| {
                out.clear();
                encode(
                    &mut openai::StreamEncoder::new(true),
                    black_box(events),
                    &mut out,
                );
                out.len()
            })
        });
        let mut out = BytesMut::new();
        encode(
            &mut anthropic::StreamEncoder::new("chat-default"),
            events,
            &mut out,
        );
        g.throughput(Throughput::Bytes(out.len() as u64));
        g.bench_function(format!("encode_anthropic/{name}"), |b| {
            let mut out = BytesMut::with_capacity(out.len() * 2);
            b.iter(|| {
                out.clear();
                encode(
                    &mut anthropic::StreamEncoder::new("chat-default"),
                    black_box(events),
                    &mut out,
                );
                out.len()
            })
        });
    }

    // The whole translation of a stream: upstream bytes → parse → decode → encode → caller
    // bytes, one event at a time as the proxy does it.
    fn translate(
        body: &[u8],
        dec: &mut dyn wire::StreamDecoder,
        enc: &mut dyn wire::StreamEncoder,
        out: &mut BytesMut,
    ) {
        let mut p = sse::Parser::default();
        let mut evs = Vec::new();
        p.push(body);
        while let Some(ev) = p.next_event().expect("valid SSE") {
            evs.clear();
            dec.event(&ev, &mut evs).expect("decodes");
            for e in &evs {
                enc.event(e, out);
            }
        }
        enc.finish(out);
    }
    g.throughput(bytes_of(ANTHROPIC_STREAM));
    g.bench_function("translate/anthropic_to_openai", |b| {
        let mut out = BytesMut::with_capacity(8192);
        b.iter(|| {
            out.clear();
            translate(
                black_box(ANTHROPIC_STREAM.as_bytes()),
                &mut anthropic::StreamDecoder::new(),
                &mut openai::StreamEncoder::new(true),
                &mut out,
            );
            out.len()
        })
    });
    g.throughput(bytes_of(&openai_256));
    for (name, enc) in [
        ("openai_to_openai_256", Format::OpenAi),
        ("openai_to_anthropic_256", Format::Anthropic),
    ] {
        g.bench_function(format!("translate/{name}"), |b| {
            let mut out = BytesMut::with_capacity(openai_256.len() * 2);
            b.iter(|| {
                out.clear();
                let mut enc: Box<dyn wire::StreamEncoder> = match enc {
                    Format::Anthropic => Box::new(anthropic::StreamEncoder::new("chat-default")),
                    _ => Box::new(openai::StreamEncoder::new(true)),
                };
                translate(
                    black_box(openai_256.as_bytes()),
                    &mut openai::StreamDecoder::new(),
                    &mut *enc,
                    &mut out,
                );
                out.len()
            })
        });
    }
    g.finish();
}

// --- route choice ----------------------------------------------------------------------------

fn target(name: &str, weight: u32, price: Option<f64>, ttfb_ms: u64) -> Target {
    let svc =
        tower::service_fn(|_: Attempt| async { Err::<Reply, Error>(Error::invalid("unused")) });
    let stats = Arc::new(TargetStats::default());
    stats.observe_ttfb(Duration::from_millis(ttfb_ms));
    let price = price.map(switchyard::cost::Price::flat);
    Target {
        served: Arc::new(switchyard::ir::ServedBy::new(
            Arc::from(name),
            Arc::from("gpt-4o-mini"),
            price,
            Arc::from("openai"),
        )),
        service: tower::util::BoxCloneSyncService::new(svc),
        weight,
        tags: Arc::from([]),
        stats,
    }
}

const ROUTES_YAML: &str = r#"
providers:
  - {name: primary, kind: openai_compatible, base_url: "http://127.0.0.1:1/v1", models: ["gpt-*"]}
  - {name: secondary, kind: openai_compatible, base_url: "http://127.0.0.1:2/v1", models: ["gpt-*"]}
  - {name: tertiary, kind: openai_compatible, base_url: "http://127.0.0.1:3/v1", models: ["gpt-*"]}
models:
  - name: chat-default
    targets: [primary/gpt-4o-mini, secondary/gpt-4o-mini, tertiary/gpt-4o-mini]
  - name: chat-weighted
    strategy: weighted
    targets:
      - {target: primary/gpt-4o-mini, weight: 80}
      - {target: secondary/gpt-4o-mini, weight: 20}
"#;

fn route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    let targets = vec![
        target("primary", 60, Some(0.375), 300),
        target("secondary", 30, Some(0.15), 120),
        target("tertiary", 10, None, 900),
    ];
    let mut rng = fastrand::Rng::with_seed(9);
    for (name, s) in [
        ("fallback", Strategy::Fallback),
        ("weighted", Strategy::Weighted),
        ("least_latency", Strategy::LeastLatency),
        ("cheapest", Strategy::Cheapest),
    ] {
        assert_eq!(balance::order(s, &targets, &mut rng).len(), 3);
        g.bench_function(format!("order3/{name}"), |b| {
            b.iter(|| balance::order(black_box(s), black_box(&targets), &mut rng))
        });
    }
    // The first target's breaker is open: fallback skips it.
    let open = targets.clone();
    open[0].stats.set_circuit(CircuitState::Open);
    open[0]
        .stats
        .set_open_until(std::time::Instant::now() + Duration::from_secs(3600));
    assert_eq!(
        &*balance::order(Strategy::Fallback, &open, &mut rng)[0]
            .served
            .provider,
        "secondary"
    );
    g.bench_function("order3/fallback_first_open", |b| {
        b.iter(|| balance::order(Strategy::Fallback, black_box(&open), &mut rng))
    });
    drop(open);
    targets[0].stats.set_circuit(CircuitState::Closed);

    // Model name → plan, as the route layer resolves it per request.
    let cfg = config::load_str(ROUTES_YAML, &Env).expect("config");
    let local: SharedState = Arc::new(MemoryState::new());
    let make = switchyard::stack::target_maker(&cfg, &local);
    let routes =
        switchyard::stack::routes_with(&cfg, Arc::new(Control::default()), &make).expect("routes");
    for model in [
        "chat-default",
        "chat-weighted",
        "primary/gpt-4o-mini",
        "gpt-4o-mini",
    ] {
        let plan = routes.resolve(model, None, &*make).expect("resolves");
        assert!(!plan.targets.is_empty());
        g.bench_function(format!("resolve/{model}"), |b| {
            b.iter(|| routes.resolve(black_box(model), None, &*make))
        });
    }
    g.finish();
}

// --- rate limit ------------------------------------------------------------------------------

fn ratelimit(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit");
    g.bench_function("gcra", |b| {
        let mut tat = None;
        let mut now = 1_000_000_000u64;
        b.iter(|| {
            now += 10;
            let (d, t) = state::gcra(black_box(tat), now, 600, 1, false);
            tat = Some(t);
            d
        })
    });
    // One admission on the in-process state: the request cell and the token cell of a key.
    // Limits are high enough that nothing is refused during a run.
    let mem = MemoryState::new();
    let takes = vec![
        Take {
            key: "{sy:k:team-a}:rpm".into(),
            limit: u64::MAX / 4,
            cost: 1,
        },
        Take {
            key: "{sy:k:team-a}:tpm".into(),
            limit: u64::MAX / 4,
            cost: 700,
        },
    ];
    assert!(mem.step(&takes, false).iter().all(|d| d.allowed));
    g.bench_function("memory_step/rpm_tpm", |b| {
        b.iter(|| mem.step(black_box(&takes), false))
    });
    // The same admission on the Redis backend's copy (`state.sync_ms`), whose cells were read
    // from Redis a moment ago: the step is made here, with no round trip.
    let copy = MemoryState::new();
    let read = copy.step(&takes, false);
    copy.absorb(&takes, &[], &read, &[]);
    let fresh = Duration::from_secs(3600);
    assert!(copy.admit_on_copy(&takes, &[], 0, fresh).is_some());
    g.bench_function("copy_step/rpm_tpm", |b| {
        b.iter(|| copy.admit_on_copy(black_box(&takes), &[], 0, fresh))
    });
    // The layer's admission: builds the takes, steps the state, writes `x-ratelimit-*`.
    let shared: SharedState = Arc::new(MemoryState::new());
    let limiter = Limiter::new(
        shared,
        "sy",
        "k",
        "team-a",
        Some(u64::MAX / 4),
        Some(u64::MAX / 4),
    )
    .expect("limited");
    let admit = || {
        limiter
            .admit(700)
            .now_or_never()
            .expect("memory state is ready")
    };
    assert!(admit().is_ok());
    g.bench_function("limiter_admit/rpm_tpm", |b| b.iter(admit));
    // The up-front token estimate the limiter charges (input estimate + capped max_tokens).
    for (name, body) in [
        ("small", OPENAI_SMALL_REQUEST),
        ("golden", OPENAI_CHAT_REQUEST),
    ] {
        let op = ir::Operation::Chat(Box::new(
            openai::decode_chat_request(body.as_bytes()).expect("decodes"),
        ));
        g.bench_function(format!("token_estimate/{name}"), |b| {
            b.iter(|| TokenEstimate::of(black_box(&op)))
        });
    }
    g.finish();
}

// --- cost ------------------------------------------------------------------------------------

fn cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("cost");
    let prices = Prices::builtin();
    let usage = Usage {
        input_tokens: 2_572,
        output_tokens: 89,
        cached_input_tokens: 2_000,
        cache_write_tokens: 100,
        reasoning_tokens: 0,
    };
    for (name, model) in [
        ("exact", "gpt-4o-mini"),
        ("dated_snapshot", "gpt-4o-mini-2024-07-18"),
        ("provider_prefixed", "openai/gpt-4o-mini"),
        ("unpriced", "echo"),
    ] {
        assert_eq!(prices.usd(model, &usage).is_some(), name != "unpriced");
        g.bench_function(format!("usd/{name}"), |b| {
            b.iter(|| prices.usd(black_box(model), black_box(&usage)))
        });
    }
    g.bench_function("builtin_table", |b| b.iter(Prices::builtin));
    g.finish();
}

// --- metrics ---------------------------------------------------------------------------------

fn metrics(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    let prices = Prices::builtin();
    let key = SeriesKey {
        route: Arc::from("chat-default"),
        provider: Arc::from("primary"),
        model: Arc::from("gpt-4o-mini"),
        team: Arc::from("team-a"),
        class: StatusClass::Success,
    };
    let usage = Usage {
        input_tokens: 58,
        output_tokens: 74,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
    };
    g.bench_function("series_lookup", |b| {
        b.iter(|| metrics::series(black_box(&key)))
    });
    // What the usage layer records when one streamed request settles (access log and trace
    // span excluded): in-flight gauge, the series, counters, histograms, cost.
    g.bench_function("record_request", |b| {
        b.iter(|| {
            metrics::inflight().inc();
            metrics::inflight().dec();
            let series = metrics::series(black_box(&key));
            series.requests.inc();
            series.duration.observe(black_box(1.234));
            series.ttft.observe(black_box(0.321));
            series.input_tokens.inc_by(usage.input_tokens);
            series.output_tokens.inc_by(usage.output_tokens);
            series.cached_tokens.inc_by(usage.cached_input_tokens);
            if let Some(c) = prices.usd(&key.model, &usage).filter(|c| *c > 0.0) {
                series.cost.inc_by(c);
            }
        })
    });
    g.bench_function("status_class", |b| {
        b.iter(|| metrics::status_class(black_box(429)).as_str())
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = hot;
    config = config();
    targets = surfaces, providers, sse_parse, sse_write, streams, route, ratelimit, cost, metrics
}
criterion_main!(hot);
