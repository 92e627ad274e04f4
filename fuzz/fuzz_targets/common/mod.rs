//! Checks shared by several targets (included with `#[path]`; each target is its own binary).
#![allow(dead_code)]

use serde::de::{self, Deserialize as _, Deserializer, MapAccess, SeqAccess, Visitor};

/// Parses `body` as JSON and panics if any object in it has a key twice: an upstream reading
/// such a body takes the first or the last value or refuses it, depending on its parser.
pub fn assert_json_without_duplicate_keys(what: &str, body: &[u8]) {
    let mut de = serde_json::Deserializer::from_slice(body);
    if let Err(e) = NoDuplicates::deserialize(&mut de).and_then(|_| de.end()) {
        panic!("{what}: {e}\n{}", String::from_utf8_lossy(body));
    }
}

struct NoDuplicates;

impl<'de> de::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicates)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = NoDuplicates;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self, A::Error> {
        while a.next_element::<NoDuplicates>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = a.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(de::Error::custom(format!("key `{k}` written twice")));
            }
            a.next_value::<NoDuplicates>()?;
        }
        Ok(self)
    }
}

/// Equal as floats that went through JSON text: serde_json's default parser may be off by an
/// ulp on the way back.
pub fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b || (a - b).abs() <= a.abs().max(b.abs()) * 1e-15,
        (a, b) => a == b,
    }
}
