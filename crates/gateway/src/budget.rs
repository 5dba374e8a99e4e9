//! A task's budget ledger and the pure decision of whether (and with what `max_tokens`) a request
//! may go upstream. Output is reserved before forwarding (the capped `max_tokens`, and its price)
//! and settled with the upstream's real usage after. A request's input is known only once it is
//! answered, so a task with a budget has one request upstream at a time (the next waits for it
//! to settle): a task overshoots by at most one request's input. A task without one is not
//! held back.

use conductor_types::{Budget, Usage};

/// What a request needs from the budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Needs {
    /// The request's own output limit (`max_tokens`, `max_output_tokens`), if it set one.
    pub max_tokens: Option<u64>,
    /// The smallest output limit that keeps the request valid (above its thinking budget; at
    /// least 1, or the provider's floor).
    pub min_valid: u64,
    /// USD per output token of the request's model.
    pub output_price: f64,
}

/// The ledger's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Forward, with `max_tokens` lowered to `cap` when it is `Some`; reserve `tokens` and `usd`.
    Forward {
        /// The lowered output limit (`None`: the request's own stands).
        cap: Option<u64>,
        /// Output tokens held until the request settles.
        tokens: u64,
        /// Their price.
        usd: f64,
    },
    /// Requests in flight hold what is left: wait for one to settle, then ask again.
    Wait,
    /// The budget is spent (or what is left cannot make a valid request).
    Refuse(Refusal),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// `budget.tokens` is used up.
    Tokens {
        /// The budget.
        budget: u64,
        /// Used so far.
        used: u64,
    },
    /// `budget.usd` is used up.
    Usd {
        /// The budget.
        budget: f64,
        /// Spent so far.
        used: f64,
    },
    /// What is left is below what the request needs to be valid.
    TooLittleLeft {
        /// Output tokens the budget still allows.
        left: u64,
        /// What the request needs.
        needs: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tokens { budget, used } => write!(
                f,
                "budget exceeded: {used} of the task's {budget} tokens used"
            ),
            Self::Usd { budget, used } => write!(
                f,
                "budget exceeded: ${used:.4} of the task's ${budget:.4} spent"
            ),
            Self::TooLittleLeft { left, needs } => write!(
                f,
                "budget exceeded: {left} output tokens left, the request needs at least {needs}"
            ),
        }
    }
}

/// One task's spending: settled usage and what requests in flight hold.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    budget: Budget,
    used: Usage,
    reserved_tokens: u64,
    reserved_usd: f64,
    in_flight: u32,
}

impl Ledger {
    /// An empty ledger under `budget`.
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// Settled usage.
    pub fn used(&self) -> Usage {
        self.used
    }

    /// Decides on a request; on `Forward` the reservation is already taken.
    pub fn admit(&mut self, needs: Needs) -> Admission {
        if let Some(refusal) = self.spent() {
            return Admission::Refuse(refusal);
        }
        let bounded = self.budget.tokens.is_some() || self.budget.usd.is_some();
        if bounded && self.in_flight > 0 {
            return Admission::Wait;
        }
        let Some(left) = self.left(needs.output_price) else {
            let tokens = needs.max_tokens.unwrap_or(0);
            return self.reserve(None, tokens, needs.output_price);
        };
        let wanted = needs.max_tokens.unwrap_or(left);
        let cap = wanted.min(left);
        if cap < needs.min_valid.max(1) {
            if self.in_flight > 0 {
                return Admission::Wait;
            }
            return Admission::Refuse(Refusal::TooLittleLeft {
                left,
                needs: needs.min_valid.max(1),
            });
        }
        let lowered = (Some(cap) != needs.max_tokens).then_some(cap);
        self.reserve(lowered, cap, needs.output_price)
    }

    /// Settles a forwarded request: drops its reservation and adds what it really used.
    pub fn settle(&mut self, reserved: (u64, f64), used: &Usage) {
        self.reserved_tokens = self.reserved_tokens.saturating_sub(reserved.0);
        self.reserved_usd = (self.reserved_usd - reserved.1).max(0.0);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.used = self.used.add(used);
    }

    /// Adds the usage of a request outside the budget's admission (`count_tokens`).
    pub fn record(&mut self, used: &Usage) {
        self.used = self.used.add(used);
    }

    fn reserve(&mut self, cap: Option<u64>, tokens: u64, output_price: f64) -> Admission {
        let usd = tokens as f64 * output_price;
        self.reserved_tokens = self.reserved_tokens.saturating_add(tokens);
        self.reserved_usd += usd;
        self.in_flight += 1;
        Admission::Forward { cap, tokens, usd }
    }

    /// The refusal when settled usage reached a budget.
    fn spent(&self) -> Option<Refusal> {
        if let Some(budget) = self.budget.tokens {
            let used = self.used.budget_tokens();
            if used >= budget {
                return Some(Refusal::Tokens { budget, used });
            }
        }
        if let Some(budget) = self.budget.usd {
            let used = self.used.cost_usd;
            if used >= budget {
                return Some(Refusal::Usd { budget, used });
            }
        }
        None
    }

    /// Output tokens the budget still allows beside the reservations (`None`: unbounded).
    fn left(&self, output_price: f64) -> Option<u64> {
        let by_tokens = self.budget.tokens.map(|budget| {
            budget
                .saturating_sub(self.used.budget_tokens())
                .saturating_sub(self.reserved_tokens)
        });
        let by_usd = self
            .budget
            .usd
            .filter(|_| output_price > 0.0)
            .map(|budget| {
                let left = budget - self.used.cost_usd - self.reserved_usd;
                (left.max(0.0) / output_price).floor() as u64
            });
        match (by_tokens, by_usd) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(max_tokens: u64) -> Needs {
        Needs {
            max_tokens: Some(max_tokens),
            min_valid: 1,
            output_price: 0.0,
        }
    }

    fn used(input: u64, output: u64, cost_usd: f64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            requests: 1,
            cost_usd,
            ..Usage::default()
        }
    }

    #[test]
    fn max_tokens_is_capped_to_what_is_left_and_spent_budgets_refuse() {
        let mut ledger = Ledger::new(Budget {
            tokens: Some(1000),
            usd: None,
        });
        let first = ledger.admit(needs(600));
        assert_eq!(
            first,
            Admission::Forward {
                cap: None,
                tokens: 600,
                usd: 0.0
            }
        );
        ledger.settle((600, 0.0), &used(300, 400, 0.0));
        assert_eq!(
            ledger.admit(needs(600)),
            Admission::Forward {
                cap: Some(300),
                tokens: 300,
                usd: 0.0
            }
        );
        ledger.settle((300, 0.0), &used(50, 300, 0.0));
        assert_eq!(
            ledger.admit(needs(10)),
            Admission::Refuse(Refusal::Tokens {
                budget: 1000,
                used: 1050
            })
        );
    }

    #[test]
    fn a_budgeted_task_has_one_request_in_flight_and_the_next_gets_what_is_left() {
        let mut ledger = Ledger::new(Budget {
            tokens: Some(100),
            usd: None,
        });
        assert_eq!(
            ledger.admit(needs(80)),
            Admission::Forward {
                cap: None,
                tokens: 80,
                usd: 0.0
            }
        );
        assert_eq!(ledger.admit(needs(80)), Admission::Wait);
        ledger.settle((80, 0.0), &used(10, 5, 0.0));
        assert_eq!(
            ledger.admit(needs(90)),
            Admission::Forward {
                cap: Some(85),
                tokens: 85,
                usd: 0.0
            }
        );
        // Without a budget nothing waits.
        let mut open = Ledger::new(Budget::default());
        assert!(matches!(open.admit(needs(80)), Admission::Forward { .. }));
        assert!(matches!(open.admit(needs(80)), Admission::Forward { .. }));
    }

    #[test]
    fn a_thinking_budget_above_what_is_left_refuses_instead_of_capping() {
        let mut ledger = Ledger::new(Budget {
            tokens: Some(5000),
            usd: None,
        });
        ledger.settle((0, 0.0), &used(4000, 0, 0.0));
        let thinking = Needs {
            max_tokens: Some(8000),
            min_valid: 2049,
            output_price: 0.0,
        };
        assert_eq!(
            ledger.admit(thinking),
            Admission::Refuse(Refusal::TooLittleLeft {
                left: 1000,
                needs: 2049
            })
        );
        assert_eq!(
            ledger.admit(Needs {
                min_valid: 0,
                ..needs(2000)
            }),
            Admission::Forward {
                cap: Some(1000),
                tokens: 1000,
                usd: 1000.0 * 0.0
            }
        );
    }

    #[test]
    fn usd_budgets_cap_output_by_its_price_and_count_cache_reads() {
        let mut ledger = Ledger::new(Budget {
            tokens: None,
            usd: Some(1.0),
        });
        let per_token = 15.0 / 1e6;
        let needs = Needs {
            max_tokens: Some(100_000),
            min_valid: 1,
            output_price: per_token,
        };
        ledger.settle(
            (0, 0.0),
            &Usage {
                cache_read_input_tokens: 1_000_000,
                cost_usd: 0.4,
                ..Usage::default()
            },
        );
        let Admission::Forward { cap, tokens, usd } = ledger.admit(needs) else {
            panic!("refused")
        };
        assert_eq!(cap, Some(40_000));
        assert_eq!(tokens, 40_000);
        assert!((usd - 0.6).abs() < 1e-9);
        ledger.settle((tokens, usd), &used(0, 40_000, 0.6));
        assert!(matches!(
            ledger.admit(needs),
            Admission::Refuse(Refusal::Usd { .. })
        ));
        assert!(Refusal::Usd {
            budget: 1.0,
            used: 1.0
        }
        .to_string()
        .starts_with("budget exceeded"));
    }
}
