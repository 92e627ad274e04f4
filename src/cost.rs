//! Prices × usage → USD.
//!
//! The pricing table ships as data (`data/prices.json`, per million tokens) and can be
//! overridden per model in config. Models are matched by exact name first, then by the longest
//! table entry that is a prefix of the name (so dated snapshots such as
//! `gpt-4o-mini-2024-07-18` price as `gpt-4o-mini`). A name written `provider/model` that
//! matches nothing is looked up again without its provider part.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::config::PriceConfig;
pub use crate::ir::Price;
use crate::ir::Usage;

/// The pricing table.
#[derive(Debug, Default)]
pub struct Prices {
    /// Hashed with foldhash, like `memo`: both are read for every priced reply, and their
    /// keys come from config and the shipped table, or are bounded (`MEMO_MAX`).
    by_model: foldhash::HashMap<String, Price>,
    /// Answers already worked out (a prefix search walks the whole table), per model name
    /// seen; bounded, since model names come from upstream replies.
    memo: RwLock<foldhash::HashMap<Box<str>, Option<Price>>>,
}

impl Clone for Prices {
    fn clone(&self) -> Self {
        Self {
            by_model: self.by_model.clone(),
            memo: RwLock::default(),
        }
    }
}

/// Most model names remembered by one table.
const MEMO_MAX: usize = 4096;

const SHIPPED: &str = include_str!("../data/prices.json");

impl Prices {
    /// The shipped table. Keys starting with `_` are comments.
    pub fn builtin() -> Self {
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_str(SHIPPED).unwrap_or_default();
        let by_model = raw
            .into_iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?)))
            .collect();
        Self {
            by_model,
            memo: RwLock::default(),
        }
    }

    /// The shipped table with a config's `prices:` overrides applied.
    pub fn from_config<'a>(
        overrides: impl IntoIterator<Item = (&'a String, &'a PriceConfig)>,
    ) -> Self {
        Self::builtin().with_overrides(overrides.into_iter().map(|(m, p)| {
            (
                m.clone(),
                Price {
                    input: p.input,
                    output: p.output,
                    cached_input: p.cached_input,
                    cache_write: p.cache_write,
                },
            )
        }))
    }

    /// Adds or replaces prices (config overrides).
    pub fn with_overrides(mut self, overrides: impl IntoIterator<Item = (String, Price)>) -> Self {
        self.by_model.extend(overrides);
        self.memo = RwLock::default();
        self
    }

    /// The price of a model, by exact name or longest prefix.
    pub fn lookup(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.by_model.get(model) {
            return Some(*p);
        }
        if let Some(p) = self.memo.read().ok().and_then(|m| m.get(model).copied()) {
            return p;
        }
        let found = self.search(model);
        if let Ok(mut m) = self.memo.write() {
            if m.len() < MEMO_MAX {
                m.insert(model.into(), found);
            }
        }
        found
    }

    fn search(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.by_model.get(model) {
            return Some(*p);
        }
        let by_prefix = self
            .by_model
            .iter()
            .filter(|(k, _)| model.starts_with(k.as_str()))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| *p);
        match (by_prefix, model.split_once('/')) {
            (Some(p), _) => Some(p),
            (None, Some((_, rest))) if !rest.is_empty() => self.search(rest),
            _ => None,
        }
    }

    /// The cost of a reply, when the model is priced.
    pub fn usd(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.lookup(model).map(|p| p.usd(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_are_priced_at_the_cached_rate() {
        let p = Price {
            input: 2.0,
            output: 8.0,
            cached_input: Some(0.5),
            cache_write: None,
        };
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 500_000,
            cached_input_tokens: 400_000,
            ..Usage::default()
        };
        assert!((p.usd(&u) - (0.6 * 2.0 + 0.4 * 0.5 + 0.5 * 8.0)).abs() < 1e-9);
    }

    #[test]
    fn the_shipped_table_parses_whole() {
        let raw: HashMap<String, serde_json::Value> = serde_json::from_str(SHIPPED).unwrap();
        let prices = Prices::builtin();
        assert_eq!(
            prices.by_model.len(),
            raw.keys().filter(|k| !k.starts_with('_')).count(),
            "an entry of data/prices.json does not parse"
        );
        for model in [
            "gpt-4o-mini",
            "gpt-5",
            "o4-mini",
            "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5",
            "gemini-2.5-flash",
            "mistral-large-latest",
            "llama-3.3-70b-versatile",
            "openai/gpt-oss-120b",
            "deepseek-chat",
        ] {
            assert!(prices.lookup(model).is_some(), "{model} is not priced");
        }
        for p in prices.by_model.values() {
            assert!(
                p.output >= p.input || p.output == 0.0 || p.input <= 1.0,
                "{p:?}"
            );
            assert!(p.cached_input.unwrap_or(p.input) <= p.input, "{p:?}");
        }
    }

    #[test]
    fn provider_prefixed_names_and_overrides() {
        let mut overrides = std::collections::BTreeMap::new();
        overrides.insert(
            "echo".to_string(),
            PriceConfig {
                input: 1.0,
                output: 2.0,
                cached_input: None,
                cache_write: None,
            },
        );
        let prices = Prices::from_config(&overrides);
        assert_eq!(prices.lookup("mock/echo"), prices.lookup("echo"));
        let u = Usage {
            input_tokens: 3,
            output_tokens: 5,
            ..Usage::default()
        };
        assert!((prices.usd("echo", &u).unwrap() - 13e-6).abs() < 1e-12);
        // The longest prefix wins over a shorter family name.
        assert_eq!(prices.lookup("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(prices.lookup("o3-mini-2025-01-31").unwrap().input, 1.1);
    }

    #[test]
    fn dated_snapshots_price_as_their_family() {
        let prices = Prices::builtin();
        assert_eq!(
            prices.lookup("gpt-4o-mini-2024-07-18"),
            prices.lookup("gpt-4o-mini")
        );
        assert!(prices.lookup("gpt-4o-mini").is_some());
        assert!(prices.lookup("no-such-model").is_none());
    }
}
