//! The sidecar-injection webhook on an arbitrary `POST /mutate` body: `inject::review`, the
//! `AdmissionReview` decode and the JSONPatch it answers with.
//!
//! Beyond "no panic": the answer echoes the request's `uid`; a patch is base64 of a JSON Patch
//! that an independent RFC 6902 implementation (`json-patch`) applies to the pod it was made
//! for (the API server rejects the pod outright when a webhook's patch does not apply, whatever
//! the `failurePolicy`); the patched pod carries the sidecar first among its init containers
//! and the status annotation, and reviewed again it is left alone (idempotent); a denial names
//! the offending annotation.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard::inject::{self, Settings};

fn settings() -> Settings {
    Settings {
        image: "switchyard:fuzz".into(),
        namespace: Some("switchyard-system".into()),
        ..Settings::default()
    }
}

/// Reviews `body`; returns the response and, when there is a patch, the patched pod.
fn review(body: &[u8], settings: &Settings) -> Option<(Value, Option<Value>)> {
    let out = inject::review(body, settings).ok()?;
    // Whatever came in, the answer is a well-formed AdmissionReview.
    serde_json::to_vec(&out).expect("the answer serialises");
    assert_eq!(out["kind"], "AdmissionReview");
    assert!(out["apiVersion"].is_string());
    // (A body whose ignored parts a `Value` cannot hold, such as `1e999`, is left at that.)
    let input: Value = serde_json::from_slice(body).ok()?;
    let response = &out["response"];
    assert_eq!(response["uid"], input["request"]["uid"], "uid echoed");
    let allowed = response["allowed"].as_bool().expect("`allowed` is a bool");
    let Some(patch) = response.get("patch") else {
        assert!(response.get("patchType").is_none());
        if !allowed {
            let message = response["status"]["message"].as_str().expect("a message");
            assert!(message.contains(inject::PREFIX), "{message}");
            assert_eq!(response["status"]["code"], 400);
        }
        return Some((response.clone(), None));
    };
    assert!(allowed, "a patch on a denial");
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("patch is a string"))
        .expect("patch is base64");
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is a JSON Patch");
    let mut pod = input["request"]["object"].clone();
    if let Err(e) = json_patch::patch(&mut pod, &ops.0) {
        panic!(
            "the patch does not apply: {e}\npod: {}\npatch: {}",
            input["request"]["object"],
            String::from_utf8_lossy(&bytes)
        );
    }
    Some((response.clone(), Some(pod)))
}

fuzz_target!(|data: &[u8]| {
    let settings = settings();
    let Some((_, Some(pod))) = review(data, &settings) else {
        return;
    };
    // What the patch promised is there.
    assert_eq!(
        pod.pointer("/metadata/annotations")
            .and_then(|a| a.get(inject::STATUS)),
        Some(&Value::from("injected")),
        "status annotation"
    );
    assert_eq!(
        pod.pointer("/spec/initContainers/0/name"),
        Some(&Value::from(inject::CONTAINER)),
        "the sidecar is the first init container"
    );
    if let Some(containers) = pod.pointer("/spec/containers").and_then(Value::as_array) {
        // (A container that is not an object is left alone: the API server refuses the pod.)
        for c in containers.iter().filter(|c| c.is_object()) {
            let names: Vec<&str> = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["name"].as_str())
                .collect();
            for want in ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"] {
                assert!(names.contains(&want), "{want} not set on {c}");
            }
        }
    }
    // Idempotent: the injected pod, reviewed again, is left as it is.
    let Ok(mut again) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    again["request"]["object"] = pod;
    let body = serde_json::to_vec(&again).expect("serialises");
    let (response, patched) = review(&body, &settings).expect("the same review parses again");
    assert!(patched.is_none(), "patched twice: {response}");
    assert_eq!(response["allowed"], true);
});
