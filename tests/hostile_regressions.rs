//! Inputs kept from fuzzing and from bugs found by hand, replayed through the parsers they
//! broke. `tests/regressions/<target>/<file>` holds raw inputs named after the fuzz target
//! that found them; every file is run through that target's parsers here (no panic, a
//! classified result), so a fix stays fixed without cargo-fuzz.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value;
use switchyard::config::{self, Strings};
use switchyard::inject;
use switchyard::provider::client::MAX_RETRY_AFTER;
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

/// Every decoder the outside world feeds, on one input, and the caller-side encoders on what
/// decodes.
fn all_decoders(data: &[u8]) {
    let requests = [
        openai::decode_chat_request(data),
        anthropic::decode_request(data),
    ];
    for req in requests.iter().flatten() {
        // What goes upstream is a request the upstream can take: for Anthropic, one our own
        // decoder (which follows Anthropic's rules) accepts; for Gemini, one with contents.
        if let Ok(body) = anthropic::encode_request(req, "m", 1024) {
            if let Err(e) = anthropic::decode_request(&body) {
                panic!("Anthropic request refused: {}", e.message);
            }
        }
        if let Ok(body) = gemini::encode_request(req) {
            let v: Value = serde_json::from_slice(&body).expect("JSON");
            assert!(
                v["contents"].as_array().is_some_and(|c| !c.is_empty()),
                "Gemini request without contents"
            );
        }
    }
    let _ = openai::decode_embeddings_request(data);
    let replies = [
        openai::decode_chat_reply(data),
        anthropic::decode_reply(data),
        gemini::decode_reply(data, "m"),
    ];
    for r in replies.iter().flatten() {
        let _ = openai::encode_chat_reply(r);
        let _ = anthropic::encode_reply(r);
    }
    let _ = openai::summarise_chat_reply(bytes::Bytes::copy_from_slice(data));
    let _ = openai::decode_embeddings_reply(data);
    let _ = gemini::decode_embeddings(data, "m");
    for status in [200, 400, 401, 429, 500, 529] {
        for e in [
            openai::decode_error(status, data),
            anthropic::decode_error(status, data),
            gemini::decode_error(status, data),
        ] {
            assert!((400..600).contains(&e.status), "error status {}", e.status);
            assert!(
                e.retry_after.is_none_or(|d| d <= MAX_RETRY_AFTER),
                "Retry-After {:?}",
                e.retry_after
            );
        }
    }
    let _ = inject::review(data, &inject::Settings::default());
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

/// The admission webhook's own promise on a kept input: a patch it answers with applies to
/// the pod (the API server refuses a pod whose patch does not, whatever the failurePolicy).
fn admission_review(data: &[u8]) {
    let Ok(out) = inject::review(data, &inject::Settings::default()) else {
        return;
    };
    let Some(patch) = out["response"]["patch"].as_str() else {
        return;
    };
    let input: Value = serde_json::from_slice(data).expect("a review that parsed is JSON");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("base64");
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
    let mut pod = input["request"]["object"].clone();
    json_patch::patch(&mut pod, &ops.0).expect("the patch applies to the pod");
}

/// A kept input as its fuzz target reads it: the surface target's inputs start with an
/// endpoint selector and a path segment before the body.
fn replay(target: &str, data: &[u8]) {
    match target {
        "admission_review" => admission_review(data),
        "anthropic_request" => {
            // Anthropic to Anthropic: the caller's unknown fields arrive as sent.
            let Ok(req) = anthropic::decode_request(data) else {
                return;
            };
            let Ok(body) = anthropic::encode_request(&req, &req.model, 1024) else {
                return;
            };
            let again = anthropic::decode_request(&body).expect("our own request decodes");
            assert_eq!(again.extra, req.extra, "extra");
            for (a, b) in again.messages.iter().zip(&req.messages) {
                assert_eq!(a.extra, b.extra, "a message's extra");
            }
        }
        "surface" => {
            let rest = data.get(1..).unwrap_or_default();
            let (n, rest) = rest.split_first().map_or((0, rest), |(n, r)| (*n, r));
            all_decoders(&rest[usize::from(n).min(rest.len())..]);
        }
        _ => {}
    }
}

#[test]
fn every_kept_input_runs_through_every_parser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut n = 0;
    let mut failed = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/regressions") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).expect("target dir") {
            let path = file.expect("entry").path();
            let data = std::fs::read(&path).expect("input");
            let target = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let r = std::panic::catch_unwind(|| {
                all_decoders(&data);
                replay(target, &data);
            });
            if r.is_err() {
                failed.push(path.display().to_string());
            }
            n += 1;
        }
    }
    assert!(n > 0, "no kept inputs under {}", root.display());
    // Every failing input named at once (each panic's message is printed above).
    assert!(failed.is_empty(), "panicked: {failed:#?}");
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
