//! Upstream error bodies with any status: classified into an IR error whose rendering in
//! both caller formats is JSON, with a status switchyard can send. The body doubles as the
//! `Retry-After` / `retry-after-ms` header value, which must come out bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::provider::client::{retry_after, MAX_RETRY_AFTER};
use switchyard::wire::{anthropic, gemini, openai};

fuzz_target!(|input: (u16, &[u8])| {
    let (status, body) = input;
    for e in [
        openai::decode_error(status, body),
        anthropic::decode_error(status, body),
        gemini::decode_error(status, body),
    ] {
        assert!(
            http_status_ok(e.status),
            "status {} from upstream {status}",
            e.status
        );
        serde_json::from_slice::<serde_json::Value>(&openai::encode_error(&e))
            .expect("openai error is JSON");
        serde_json::from_slice::<serde_json::Value>(&anthropic::encode_error(&e))
            .expect("anthropic error is JSON");
        let _ = e.is_retryable();
        if let Some(d) = e.retry_after {
            assert!(d <= MAX_RETRY_AFTER, "Retry-After {d:?} from a body");
        }
    }
    if let Ok(v) = http::HeaderValue::from_bytes(body) {
        for name in ["retry-after", "retry-after-ms"] {
            let mut h = http::HeaderMap::new();
            h.insert(name, v.clone());
            if let Some(d) = retry_after(&h) {
                assert!(d <= MAX_RETRY_AFTER, "{name}: {v:?} → {d:?}");
            }
        }
    }
});

/// An error status: never a 2xx/3xx that would tell the caller an error body is a success.
fn http_status_ok(s: u16) -> bool {
    (400..600).contains(&s)
}
