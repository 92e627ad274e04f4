//! Upstream SSE bodies (OpenAI, Anthropic, Gemini) as bytes split at arbitrary points, through
//! `sse::Parser` into each format's stream decoder. The IR events must not depend on where the
//! bytes were split, and nothing may panic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::sse;
use switchyard::wire::{self, anthropic, gemini, openai};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    format: u8,
    cuts: Vec<u16>,
    body: &'a [u8],
}

fn decoder(format: u8) -> Box<dyn wire::StreamDecoder> {
    match format % 3 {
        0 => Box::new(openai::StreamDecoder::new()),
        1 => Box::new(anthropic::StreamDecoder::new()),
        _ => Box::new(gemini::StreamDecoder::new("gemini-m")),
    }
}

/// What a stream yields: events until the first error, the error (as text), and whether the
/// decoder saw a proper end.
fn run(format: u8, pieces: &[&[u8]]) -> (Vec<switchyard::ir::StreamEvent>, Option<String>, bool) {
    let mut parser = sse::Parser::default();
    let mut dec = decoder(format);
    let mut out = Vec::new();
    for piece in pieces {
        parser.push(piece);
        loop {
            match parser.next_event() {
                Ok(Some(ev)) => {
                    if let Err(e) = dec.event(&ev, &mut out) {
                        assert!((400..600).contains(&e.status), "status {}", e.status);
                        return (normalize(out), Some(e.message), dec.is_done());
                    }
                }
                Ok(None) => break,
                Err(e) => return (normalize(out), Some(e.to_string()), dec.is_done()),
            }
        }
    }
    (normalize(out), None, dec.is_done())
}

/// A decoder invents an id and a timestamp when the upstream sends none (Gemini without
/// `responseId`): those differ between runs, not between splits.
fn normalize(mut out: Vec<switchyard::ir::StreamEvent>) -> Vec<switchyard::ir::StreamEvent> {
    for ev in &mut out {
        if let switchyard::ir::StreamEvent::Start { id, created, .. } = ev {
            if id.starts_with("gemini-") {
                id.clear();
            }
            *created = 0;
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let body = input.body;
    let whole = run(input.format, &[body]);
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| c as usize % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for c in cuts {
        pieces.push(&body[start..c]);
        start = c;
    }
    pieces.push(&body[start..]);
    let split = run(input.format, &pieces);
    assert_eq!(whole, split, "events depend on how the bytes were split");
});
