//! Prices per million tokens and the exact cost of a request's token usage.
//!
//! A price is a number of micro-credits per million tokens, so a cost is
//! `tokens × price / 1_000_000` micro-credits. The division is done once, on the sum of the
//! three parts, in `i128` (no intermediate can overflow or lose a digit) and rounded **up** to
//! the next micro-credit: the hub never charges less than the price table says, and never more
//! than one micro-credit above it.

use serde::{Deserialize, Serialize};

use crate::money::{Credits, MoneyError, AMOUNT_MAX};

/// Tokens in the unit that prices are quoted for.
pub const TOKENS_PER_PRICE_UNIT: i128 = 1_000_000;

/// What one model costs, per million tokens of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Price {
    /// Per million prompt tokens that were not served from the provider's cache.
    pub input_per_million: Credits,
    /// Per million generated tokens.
    pub output_per_million: Credits,
    /// Per million prompt tokens served from the provider's prompt cache.
    pub cached_input_per_million: Credits,
}

/// How many tokens one request used, as the provider reported them or as the hub counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Every prompt token, cached ones included.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// The part of `input_tokens` billed at the cached price.
    pub cached_input_tokens: u64,
    /// The part of `output_tokens` a reasoning model spent thinking: reported to the client,
    /// billed as the output it is part of (never added to it).
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl TokenUsage {
    /// Prompt tokens billed at the full input price: `input_tokens - cached_input_tokens`,
    /// never below zero.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens.saturating_sub(self.cached_input_tokens)
    }

    /// Prompt tokens billed at the cached price: `cached_input_tokens`, never more than
    /// `input_tokens` (a provider that reports more cached than prompt tokens is not believed
    /// beyond the prompt).
    pub fn billed_cached_input_tokens(&self) -> u64 {
        self.cached_input_tokens.min(self.input_tokens)
    }
}

impl Price {
    /// A price from micro-credits per million tokens (input, output, cached input).
    pub const fn from_micros(input: i64, output: i64, cached_input: i64) -> Self {
        Price {
            input_per_million: Credits::from_micros(input),
            output_per_million: Credits::from_micros(output),
            cached_input_per_million: Credits::from_micros(cached_input),
        }
    }

    /// Refuses a negative price: every cost computed from it would be meaningless.
    pub fn validate(&self) -> Result<(), MoneyError> {
        for part in [
            self.input_per_million,
            self.output_per_million,
            self.cached_input_per_million,
        ] {
            if part.is_negative() {
                return Err(MoneyError::Negative(part.micros()));
            }
        }
        Ok(())
    }

    /// The cost of `usage`:
    /// `(uncached_input × input + cached × cached_input + output × output) / 1_000_000`,
    /// computed exactly and **rounded up** to the micro-credit.
    ///
    /// Cached tokens count only up to `input_tokens` (see
    /// [`TokenUsage::billed_cached_input_tokens`]).
    ///
    /// # Errors
    /// [`MoneyError::Negative`] for a negative price; [`MoneyError::TooLarge`] when the cost
    /// exceeds [`AMOUNT_MAX`], the most a single command may move.
    pub fn cost(&self, usage: &TokenUsage) -> Result<Credits, MoneyError> {
        self.validate()?;
        let parts = [
            (usage.uncached_input_tokens(), self.input_per_million),
            (
                usage.billed_cached_input_tokens(),
                self.cached_input_per_million,
            ),
            (usage.output_tokens, self.output_per_million),
        ];
        let too_large = MoneyError::TooLarge(i64::MAX);
        let mut total: i128 = 0;
        for (tokens, price) in parts {
            // u64 × i64 always fits in i128; only the sum of three could overflow.
            let part = i128::from(tokens) * i128::from(price.micros());
            total = total.checked_add(part).ok_or_else(|| too_large.clone())?;
        }
        let rounded_up = total.div_euclid(TOKENS_PER_PRICE_UNIT)
            + i128::from(total.rem_euclid(TOKENS_PER_PRICE_UNIT) != 0);
        let micros = i64::try_from(rounded_up).map_err(|_| too_large)?;
        if micros > AMOUNT_MAX.micros() {
            return Err(MoneyError::TooLarge(micros));
        }
        Credits::non_negative(micros)
    }

    /// The most a request can cost: `prompt_tokens` all billed at the higher of the input and
    /// cached-input prices, plus `max_output_tokens` at the output price. Whatever part of the
    /// prompt the provider then reports as cached, and however few tokens it generates,
    /// [`Price::cost`] of the actual usage is never above this — the amount to reserve.
    pub fn max_cost(
        &self,
        prompt_tokens: u64,
        max_output_tokens: u64,
    ) -> Result<Credits, MoneyError> {
        let worst_input = Price {
            input_per_million: self.input_per_million.max(self.cached_input_per_million),
            ..*self
        };
        worst_input.cost(&TokenUsage {
            input_tokens: prompt_tokens,
            output_tokens: max_output_tokens,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usage(input: u64, output: u64, cached: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: cached,
            reasoning_tokens: 0,
        }
    }

    /// 3 credits per million input, 15 per million output, 0.3 per million cached input.
    const PRICE: Price = Price::from_micros(3_000_000, 15_000_000, 300_000);

    #[test]
    fn a_cost_applies_each_price_to_its_tokens() {
        // 1,000 input tokens at 3 credits per million are 3,000 micros; 1,000 output tokens
        // at 15 per million, 15,000.
        assert_eq!(
            PRICE.cost(&usage(1_000, 1_000, 0)).map(Credits::micros),
            Ok(3_000 + 15_000)
        );
        // 600 of the 1,000 input tokens cached: 400 × 3 + 600 × 0.3 = 1,200 + 180 micros.
        assert_eq!(
            PRICE.cost(&usage(1_000, 0, 600)).map(Credits::micros),
            Ok(1_200 + 180)
        );
    }

    #[test]
    fn a_cost_is_rounded_up_to_the_micro_credit() {
        // One token at 3 credits per million is 3 micros exactly; at 0.3 it is 0.3 → 1 micro.
        assert_eq!(PRICE.cost(&usage(1, 0, 0)).map(Credits::micros), Ok(3));
        assert_eq!(PRICE.cost(&usage(1, 0, 1)).map(Credits::micros), Ok(1));
        // The division happens once, on the sum: 3 × 0.3 = 0.9 → 1, not 3 × 1.
        assert_eq!(PRICE.cost(&usage(3, 0, 3)).map(Credits::micros), Ok(1));
    }

    #[test]
    fn no_tokens_cost_nothing() {
        assert_eq!(PRICE.cost(&TokenUsage::default()), Ok(Credits::ZERO));
        assert_eq!(Price::default().cost(&usage(5, 5, 5)), Ok(Credits::ZERO));
    }

    #[test]
    fn cached_tokens_beyond_the_prompt_are_not_believed() {
        assert_eq!(
            PRICE.cost(&usage(10, 0, 1_000)),
            PRICE.cost(&usage(10, 0, 10))
        );
    }

    #[test]
    fn a_negative_price_is_refused() {
        let price = Price::from_micros(1, -2, 0);
        assert_eq!(price.cost(&usage(1, 1, 0)), Err(MoneyError::Negative(-2)));
        assert_eq!(price.max_cost(1, 1), Err(MoneyError::Negative(-2)));
    }

    #[test]
    fn a_cost_above_the_largest_amount_is_refused() {
        let price = Price::from_micros(i64::MAX, i64::MAX, i64::MAX);
        assert!(matches!(
            price.cost(&usage(u64::MAX, u64::MAX, 0)),
            Err(MoneyError::TooLarge(_))
        ));
        assert!(matches!(
            PRICE.cost(&usage(u64::MAX, 0, 0)),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn max_cost_bills_the_prompt_at_the_dearer_input_price() {
        assert_eq!(
            PRICE.max_cost(1_000, 1_000),
            PRICE.cost(&usage(1_000, 1_000, 0))
        );
        // A cached price above the input price (odd, but configurable) still bounds the cost.
        let odd = Price::from_micros(1_000_000, 0, 5_000_000);
        assert_eq!(odd.max_cost(1_000, 0).map(Credits::micros), Ok(5_000));
        assert_eq!(
            odd.cost(&usage(1_000, 0, 1_000)).map(Credits::micros),
            Ok(5_000)
        );
    }

    fn price_strategy() -> impl Strategy<Value = Price> {
        // Up to 1,000 credits per million tokens of each kind.
        let micros = 0i64..=1_000_000_000;
        (micros.clone(), micros.clone(), micros).prop_map(|(i, o, c)| Price::from_micros(i, o, c))
    }

    /// Limits `(prompt, max_output)` and a usage `(input, output, cached)` within them.
    fn limits_and_usage() -> impl Strategy<Value = (u64, u64, u64, u64, u64)> {
        (0u64..1_000_000, 0u64..1_000_000)
            .prop_flat_map(|(prompt, max_output)| {
                (Just(prompt), Just(max_output), 0..=prompt, 0..=max_output)
            })
            .prop_flat_map(|(prompt, max_output, input, output)| {
                (
                    Just(prompt),
                    Just(max_output),
                    Just(input),
                    Just(output),
                    0..=input,
                )
            })
    }

    proptest! {
        #[test]
        fn cost_is_never_negative_and_grows_with_every_count(
            price in price_strategy(),
            input in 0u64..10_000_000,
            output in 0u64..10_000_000,
            cached_part in 0u64..10_000_000,
            more in 1u64..1_000_000,
        ) {
            let cached = cached_part.min(input);
            let base = price.cost(&usage(input, output, cached));
            prop_assert!(base.is_ok());
            let base = base.map(Credits::micros).unwrap_or(-1);
            prop_assert!(base >= 0);
            let more_input = price.cost(&usage(input + more, output, cached)).map(Credits::micros);
            let more_output = price.cost(&usage(input, output + more, cached)).map(Credits::micros);
            // More cached input tokens: more prompt tokens, all of them served from the cache.
            let more_cached = price
                .cost(&usage(input + more, output, cached + more))
                .map(Credits::micros);
            prop_assert!(more_input.is_ok_and(|c| c >= base));
            prop_assert!(more_output.is_ok_and(|c| c >= base));
            prop_assert!(more_cached.is_ok_and(|c| c >= base));
        }

        #[test]
        fn cost_is_exact_for_whole_millions_of_tokens(
            price in price_strategy(),
            input_m in 0u64..1_000,
            output_m in 0u64..1_000,
            cached_m in 0u64..1_000,
        ) {
            let cached_m = cached_m.min(input_m);
            let expected = (input_m - cached_m) as i64 * price.input_per_million.micros()
                + cached_m as i64 * price.cached_input_per_million.micros()
                + output_m as i64 * price.output_per_million.micros();
            let cost = price.cost(&usage(input_m * 1_000_000, output_m * 1_000_000, cached_m * 1_000_000));
            prop_assert_eq!(cost.map(Credits::micros), Ok(expected));
        }

        #[test]
        fn max_cost_bounds_the_cost_of_any_usage_within_its_limits(
            price in price_strategy(),
            (prompt, max_output, input, output, cached) in limits_and_usage(),
        ) {
            let bound = price.max_cost(prompt, max_output).map(Credits::micros);
            let cost = price.cost(&usage(input, output, cached)).map(Credits::micros);
            prop_assert!(bound.is_ok() && cost.is_ok());
            prop_assert!(cost.unwrap_or(i64::MAX) <= bound.unwrap_or(-1));
        }
    }
}
