//! Inputs kept from fuzzing and from bugs found by hand, replayed through the parsers they
//! broke. `tests/regressions/<target>/<file>` holds raw inputs named after the fuzz target
//! that found them; every file is run through that target's parsers here (no panic, a
//! classified result), so a fix stays fixed without cargo-fuzz.

use std::path::Path;

use switchyard::config::{self, Strings};
use switchyard::sse;
use switchyard::wire::{self, anthropic, gemini, openai};

struct NoEnv;

impl Strings for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn file(&self, _: &str) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "none"))
    }
}

/// Every decoder the outside world feeds, on one input.
fn all_decoders(data: &[u8]) {
    let _ = openai::decode_chat_request(data);
    let _ = openai::decode_embeddings_request(data);
    let _ = anthropic::decode_request(data);
    let _ = openai::decode_chat_reply(data);
    let _ = openai::decode_embeddings_reply(data);
    let _ = anthropic::decode_reply(data);
    let _ = gemini::decode_reply(data, "m");
    let _ = gemini::decode_embeddings(data, "m");
    for status in [200, 400, 401, 429, 500, 529] {
        for e in [
            openai::decode_error(status, data),
            anthropic::decode_error(status, data),
            gemini::decode_error(status, data),
        ] {
            assert!((400..600).contains(&e.status), "error status {}", e.status);
        }
    }
    let decoders: [Box<dyn wire::StreamDecoder>; 3] = [
        Box::new(openai::StreamDecoder::new()),
        Box::new(anthropic::StreamDecoder::new()),
        Box::new(gemini::StreamDecoder::new("m")),
    ];
    for mut d in decoders {
        let mut p = sse::Parser::default();
        p.push(data);
        let mut out = Vec::new();
        while let Ok(Some(ev)) = p.next_event() {
            if d.event(&ev, &mut out).is_err() {
                break;
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = config::load_str(text, &NoEnv) {
            let _ = switchyard::stack::build(&cfg, Default::default());
        }
    }
}

#[test]
fn every_kept_input_runs_through_every_parser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut n = 0;
    for dir in std::fs::read_dir(&root).expect("tests/regressions") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).expect("target dir") {
            let path = file.expect("entry").path();
            let data = std::fs::read(&path).expect("input");
            let r = std::panic::catch_unwind(|| all_decoders(&data));
            assert!(r.is_ok(), "{} panicked", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "no kept inputs under {}", root.display());
}

#[test]
fn absurd_durations_in_config_are_refused_not_a_panic() {
    // Finite but huge, infinite and NaN seconds passed validation and then panicked in
    // `Duration::from_secs_f64` at startup (provider timeouts) or on the request path
    // (`retry.deadline_secs`, `breaker.cooldown_secs`).
    let provider = |field: &str, v: &str| {
        format!(
            "providers:\n  - name: p\n    kind: openai_compatible\n    base_url: http://127.0.0.1:1/v1\n    {field}: {v}\n"
        )
    };
    let mut cases = Vec::new();
    for v in ["1e300", ".inf", ".nan", "-1", "0"] {
        for f in [
            "connect_timeout_secs",
            "first_byte_timeout_secs",
            "total_timeout_secs",
            "idle_timeout_secs",
        ] {
            cases.push(provider(f, v));
        }
        cases.push(provider("breaker", &format!("{{cooldown_secs: {v}}}")));
        cases.push(format!("retry:\n  deadline_secs: {v}\n"));
        cases.push(format!("header_read_timeout_secs: {v}\n"));
        cases.push(format!("body_read_timeout_secs: {v}\n"));
    }
    for yaml in cases {
        let r = std::panic::catch_unwind(|| config::load_str(&yaml, &NoEnv).map(|_| ()));
        match r {
            Ok(Err(e)) => assert!(!e.to_string().is_empty()),
            Ok(Ok(())) => panic!("accepted:\n{yaml}"),
            Err(_) => panic!("panicked:\n{yaml}"),
        }
    }
}
