//! The configs shipped for Kubernetes (the chart's default, the plain manifests' example)
//! load and validate, with the Secret's key files as the sidecar would see them.

use std::collections::HashMap;

use switchyard::config::{self, Strings};

struct Mounted(HashMap<String, String>);

impl Strings for Mounted {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, path.to_owned()))
    }
}

fn keys() -> Mounted {
    Mounted(
        ["openai-api-key", "anthropic-api-key"]
            .iter()
            .map(|k| {
                (
                    format!("/var/run/secrets/switchyard/{k}"),
                    "sk-test\n".into(),
                )
            })
            .collect(),
    )
}

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn chart_default_config_loads() {
    let values: serde_json::Value =
        serde_saphyr::from_str(&read("charts/switchyard/values.yaml")).unwrap();
    let text = values["config"]["switchyard.yaml"].as_str().unwrap();
    let c = config::load_str(text, &keys()).unwrap();
    assert_eq!(
        c.listen.to_string(),
        "127.0.0.1:4000",
        "data plane on loopback"
    );
    assert!(!c.providers.is_empty());
}

#[test]
fn deploy_example_config_loads() {
    let manifests = read("deploy/example-app.yaml");
    let cm = manifests
        .split("\n---\n")
        .find(|d| d.contains("kind: ConfigMap"))
        .unwrap();
    let cm: serde_json::Value = serde_saphyr::from_str(cm).unwrap();
    let text = cm["data"]["switchyard.yaml"].as_str().unwrap();
    config::load_str(text, &keys()).unwrap();
    // Without the keys mounted, the sidecar refuses to start and says which file is missing.
    let e = config::load_str(text, &Mounted(HashMap::new())).unwrap_err();
    assert!(e.to_string().contains("openai-api-key"), "{e}");
}
