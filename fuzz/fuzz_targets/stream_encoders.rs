//! The caller-side stream encoders fed arbitrary IR event sequences (in any order, including
//! orders a decoder never produces), ended by `finish` or by an error. Whatever comes in, the
//! caller must get well-formed SSE: complete events, one JSON document per `data:` line,
//! OpenAI's `[DONE]` last on a normal end, Anthropic's `event:` name equal to the data's `type`.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::ir::{self, FinishReason, StreamEvent, Usage};
use switchyard::sse;
use switchyard::wire::{self, anthropic, openai};

#[derive(Debug, Arbitrary)]
enum Ev {
    Start {
        id: String,
        model: String,
        created: u64,
    },
    Text {
        choice: u8,
        text: String,
    },
    ToolStart {
        choice: u8,
        index: u8,
        id: String,
        name: String,
    },
    ToolDelta {
        choice: u8,
        index: u8,
        arguments: String,
    },
    Finish {
        choice: u8,
        reason: u8,
        other: String,
    },
    Usage {
        i: u64,
        o: u64,
        c: u64,
        w: u64,
        r: u64,
    },
}

impl Ev {
    fn ir(&self) -> StreamEvent {
        match self {
            Ev::Start { id, model, created } => StreamEvent::Start {
                id: id.clone(),
                model: model.clone(),
                created: *created,
            },
            Ev::Text { choice, text } => StreamEvent::TextDelta {
                choice: u32::from(*choice % 4),
                text: text.clone(),
            },
            Ev::ToolStart {
                choice,
                index,
                id,
                name,
            } => StreamEvent::ToolCallStart {
                choice: u32::from(*choice % 4),
                index: u32::from(*index % 8),
                id: id.clone(),
                name: name.clone(),
            },
            Ev::ToolDelta {
                choice,
                index,
                arguments,
            } => StreamEvent::ToolCallDelta {
                choice: u32::from(*choice % 4),
                index: u32::from(*index % 8),
                arguments: arguments.clone(),
            },
            Ev::Finish {
                choice,
                reason,
                other,
            } => StreamEvent::Finish {
                choice: u32::from(*choice % 4),
                reason: match reason % 5 {
                    0 => FinishReason::Stop,
                    1 => FinishReason::Length,
                    2 => FinishReason::ToolCalls,
                    3 => FinishReason::ContentFilter,
                    _ => FinishReason::Other(other.clone()),
                },
            },
            Ev::Usage { i, o, c, w, r } => StreamEvent::Usage(Usage {
                input_tokens: *i,
                output_tokens: *o,
                cached_input_tokens: *c,
                cache_write_tokens: *w,
                reasoning_tokens: *r,
            }),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    events: Vec<Ev>,
    include_usage: bool,
    model: String,
    /// `None`: a normal end; `Some`: the stream fails with this kind index and message.
    error: Option<(u8, String)>,
}

const KINDS: [ir::ErrorKind; 6] = [
    ir::ErrorKind::Timeout,
    ir::ErrorKind::Protocol,
    ir::ErrorKind::Connect,
    ir::ErrorKind::RateLimited,
    ir::ErrorKind::UpstreamStatus,
    ir::ErrorKind::Internal,
];

/// Parses the whole output as the caller would: every event complete, each data line JSON.
fn events(out: &[u8]) -> Vec<sse::Event> {
    let mut p = sse::Parser::default();
    p.push(out);
    let mut evs = Vec::new();
    while let Some(ev) = p.next_event().expect("encoder output parses as SSE") {
        evs.push(ev);
    }
    assert!(
        !p.has_partial(),
        "encoder left an unfinished event: {:?}",
        String::from_utf8_lossy(out)
    );
    assert!(out.is_empty() || out.ends_with(b"\n\n"));
    evs
}

fn drive(enc: &mut dyn wire::StreamEncoder, input: &Input) -> BytesMut {
    let mut out = BytesMut::new();
    for ev in &input.events {
        enc.event(&ev.ir(), &mut out);
    }
    match &input.error {
        None => enc.finish(&mut out),
        Some((k, msg)) => {
            let e = ir::Error::new(KINDS[*k as usize % KINDS.len()], msg.clone());
            enc.error(&e, &mut out);
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let mut enc = openai::StreamEncoder::new(input.include_usage);
    let out = drive(&mut enc, &input);
    let evs = events(&out);
    for (i, ev) in evs.iter().enumerate() {
        assert!(ev.event.is_empty(), "OpenAI events carry no name");
        if ev.data == "[DONE]" {
            assert_eq!(i, evs.len() - 1, "[DONE] is last");
            assert!(input.error.is_none(), "no [DONE] after an error");
        } else {
            serde_json::from_str::<serde_json::Value>(&ev.data).expect("chunk is JSON");
        }
    }
    if input.error.is_none() {
        assert_eq!(evs.last().map(|e| e.data.as_str()), Some("[DONE]"));
    }

    let mut enc = anthropic::StreamEncoder::new(&input.model);
    let out = drive(&mut enc, &input);
    let evs = events(&out);
    for ev in &evs {
        let v: serde_json::Value = serde_json::from_str(&ev.data).expect("event is JSON");
        assert_eq!(
            v["type"].as_str(),
            Some(ev.event.as_str()),
            "event name matches type"
        );
    }
    if input.error.is_none() {
        assert_eq!(evs.last().map(|e| e.event.as_str()), Some("message_stop"));
    } else {
        assert_eq!(evs.last().map(|e| e.event.as_str()), Some("error"));
    }
});
