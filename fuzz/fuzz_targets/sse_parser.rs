//! `sse::Parser` on arbitrary bytes split at arbitrary points: the events (and the first error)
//! must be the same however the bytes were cut, and a small line bound must hold.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::sse;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    cuts: Vec<u16>,
    body: &'a [u8],
}

fn run(pieces: &[&[u8]], max_line: usize) -> (Vec<sse::Event>, Option<sse::ParseError>, bool) {
    let mut p = sse::Parser::new(max_line);
    let mut out = Vec::new();
    for piece in pieces {
        p.push(piece);
        loop {
            match p.next_event() {
                Ok(Some(ev)) => out.push(ev),
                Ok(None) => break,
                Err(e) => return (out, Some(e), true),
            }
        }
    }
    (out, None, p.has_partial())
}

fuzz_target!(|input: Input| {
    let body = input.body;
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
    let whole = run(&[body], sse::DEFAULT_MAX_LINE);
    let split = run(&pieces, sse::DEFAULT_MAX_LINE);
    assert_eq!(whole, split, "parse depends on how the bytes were split");
    for ev in &whole.0 {
        // Written back and parsed again, an event is the same event.
        let bytes = sse::event_bytes((!ev.event.is_empty()).then_some(&*ev.event), &ev.data);
        let again = run(&[&bytes], sse::DEFAULT_MAX_LINE);
        let name_ok = !ev.event.contains(['\n', '\r']);
        if name_ok {
            assert_eq!(again.0.len(), 1, "{ev:?} round-trips as one event");
            assert_eq!(again.0[0].data, ev.data);
        }
    }
    // A tiny line bound, bytes arriving one at a time: no line longer than the bound is
    // buffered without an error.
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    let (_, err, _) = run(&bytes, 8);
    let longest = body
        .split(|&b| b == b'\n' || b == b'\r')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    if longest > 8 && whole.1.is_none() {
        assert!(
            err.is_some(),
            "a {longest}-byte line passed an 8-byte bound"
        );
    }
});
