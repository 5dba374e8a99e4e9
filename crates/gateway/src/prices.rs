//! Prices per model (USD per million tokens) and the cost of a [`Usage`]. A model is priced by
//! the longest table entry its name starts with (`claude-sonnet-4-5-20250929` →
//! `claude-sonnet-4-5`); a model the table does not know gets the default price, and the caller
//! is told so.

use std::collections::BTreeMap;

use conductor_types::Usage;

/// USD per million tokens of each kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Uncached input.
    pub input: f64,
    /// Output.
    pub output: f64,
    /// Input read from the prompt cache.
    pub cache_read: f64,
    /// Input written to the prompt cache.
    pub cache_write: f64,
}

impl Price {
    const fn new(input: f64, output: f64, cache_read: f64, cache_write: f64) -> Self {
        Self {
            input,
            output,
            cache_read,
            cache_write,
        }
    }

    /// The cost of `usage`'s tokens at this price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input
            + usage.output_tokens as f64 * self.output
            + usage.cache_read_input_tokens as f64 * self.cache_read
            + usage.cache_creation_input_tokens as f64 * self.cache_write)
            / 1e6
    }
}

/// Built-in prices (list prices, USD per million tokens; cache writes at the 5-minute rate).
const BUILTIN: [(&str, Price); 14] = [
    ("claude-opus-4-5", Price::new(5.0, 25.0, 0.5, 6.25)),
    ("claude-opus-4-1", Price::new(15.0, 75.0, 1.5, 18.75)),
    ("claude-opus-4", Price::new(15.0, 75.0, 1.5, 18.75)),
    ("claude-sonnet-4-5", Price::new(3.0, 15.0, 0.3, 3.75)),
    ("claude-sonnet-4", Price::new(3.0, 15.0, 0.3, 3.75)),
    ("claude-3-7-sonnet", Price::new(3.0, 15.0, 0.3, 3.75)),
    ("claude-haiku-4-5", Price::new(1.0, 5.0, 0.1, 1.25)),
    ("claude-3-5-haiku", Price::new(0.8, 4.0, 0.08, 1.0)),
    ("gpt-5", Price::new(1.25, 10.0, 0.125, 0.0)),
    ("gpt-5-codex", Price::new(1.25, 10.0, 0.125, 0.0)),
    ("gpt-5-mini", Price::new(0.25, 2.0, 0.025, 0.0)),
    ("gpt-5.1", Price::new(1.25, 10.0, 0.125, 0.0)),
    ("gpt-5.1-codex", Price::new(1.25, 10.0, 0.125, 0.0)),
    ("gpt-4.1", Price::new(2.0, 8.0, 0.5, 0.0)),
];

/// The default for a model the table does not know: the dearest built-in price, so that a
/// `budget.usd` errs on the side of stopping early.
const DEFAULT: Price = Price::new(15.0, 75.0, 1.5, 18.75);

/// Prices by model-name prefix, and the price of everything else.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    models: BTreeMap<String, Price>,
    default: Price,
}

impl PriceTable {
    /// The built-in table.
    pub fn builtin() -> Self {
        Self {
            models: BUILTIN
                .iter()
                .map(|(name, price)| ((*name).to_owned(), *price))
                .collect(),
            default: DEFAULT,
        }
    }

    /// Sets (or overrides) the price of models whose names start with `prefix`.
    pub fn set(&mut self, prefix: impl Into<String>, price: Price) {
        self.models.insert(prefix.into(), price);
    }

    /// Sets the price of unknown models.
    pub fn set_default(&mut self, price: Price) {
        self.default = price;
    }

    /// The price of models the table does not know.
    pub fn default_price(&self) -> Price {
        self.default
    }

    /// The price of `model`, and whether the table knew it (`false`: the default price).
    pub fn price(&self, model: &str) -> (Price, bool) {
        self.models
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or((self.default, false), |(_, price)| (*price, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_prices_a_model_and_unknown_ones_get_the_default() {
        let table = PriceTable::builtin();
        assert_eq!(
            table.price("claude-sonnet-4-5-20250929"),
            (Price::new(3.0, 15.0, 0.3, 3.75), true)
        );
        assert_eq!(
            table.price("claude-opus-4-5-20251101"),
            (Price::new(5.0, 25.0, 0.5, 6.25), true)
        );
        assert_eq!(
            table.price("claude-opus-4-20250514"),
            (Price::new(15.0, 75.0, 1.5, 18.75), true)
        );
        assert_eq!(table.price("gpt-5-mini").0.output, 2.0);
        assert_eq!(table.price("llama-3"), (DEFAULT, false));
    }

    #[test]
    fn cost_prices_every_kind_and_overrides_win() {
        let mut table = PriceTable::builtin();
        table.set("claude-sonnet-4-5", Price::new(1.0, 2.0, 0.5, 4.0));
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 500_000,
            cache_read_input_tokens: 2_000_000,
            cache_creation_input_tokens: 250_000,
            requests: 1,
            cost_usd: 0.0,
        };
        let (price, known) = table.price("claude-sonnet-4-5");
        assert!(known);
        assert_eq!(price.cost(&usage), 1.0 + 1.0 + 1.0 + 1.0);
    }
}
