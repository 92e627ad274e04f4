//! The config loader on arbitrary YAML text, with `${VAR}` and `file:` references answered
//! from a map. It must return a config or an error, never panic (a panic at startup or on
//! reload takes the sidecar down); a config that loads must also build a stack.
//!
//! Text after a line `#keys` is the content of the file `/keys`, so that a `keys_file: /keys`
//! in the config reads fuzzed keys too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::{self, Strings};

struct Map<'a> {
    keys: &'a str,
}

impl Strings for Map<'_> {
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
            "/keys" => Ok(self.keys.to_owned()),
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
    let (text, keys) = text.split_once("\n#keys\n").unwrap_or((text, ""));
    if let Ok(cfg) = config::load_str(text, &Map { keys }) {
        let _ = switchyard::stack::build(&cfg, Default::default());
    }
});
