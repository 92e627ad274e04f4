//! The config loader on arbitrary YAML text, with `${VAR}` and `file:` references answered
//! from a map. It must return a config or an error, never panic (a panic at startup or on
//! reload takes the sidecar down); a config that loads must also build a stack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::{self, Strings};

struct Map;

impl Strings for Map {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-fuzz".into()),
            "EMPTY" => Some(String::new()),
            "CRLF" => Some("a\r\nb".into()),
            _ => None,
        }
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        match path {
            "/key" => Ok("sk-file\n".into()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            )),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = config::load_str(text, &Map) {
        let _ = switchyard::stack::build(&cfg, Default::default());
    }
});
