//! Every metric switchyard exports, named in this one file.

use std::sync::OnceLock;

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let r = Registry::new();
        let info = IntGaugeVec::new(
            Opts::new("switchyard_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("static metric definition is valid");
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let _ = r.register(Box::new(info));
        r
    })
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry().gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
