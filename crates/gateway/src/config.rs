//! The gateway's resolved configuration: upstreams and their keys, per-account limits, prices,
//! the retry policy. Reading TOML and the environment into it is [`crate::raw`]'s job.

use std::fmt;
use std::time::Duration;

use crate::prices::PriceTable;

/// Which provider API a grant (and a route) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Anthropic's Messages API (Claude Code).
    Anthropic,
    /// OpenAI's Responses API (Codex).
    OpenAi,
}

impl Provider {
    /// The name used in metrics and records.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
        }
    }
}

/// A provider key. Its `Debug` and `Display` never show it; only [`SecretKey::expose`] does, at
/// the one place that sets the upstream's auth header.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps a key (surrounding whitespace, such as a key file's newline, is dropped).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into().trim().to_owned())
    }

    /// The key itself, for the upstream's auth header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// One upstream account: where its API lives and the key that pays for it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// API base including the version segment: `https://api.anthropic.com/v1`. The gateway's
    /// `/v1/messages` goes to `{url}/messages`.
    pub url: String,
    /// The account's key.
    pub key: SecretKey,
    /// Requests and tokens per minute this account may use.
    pub limits: RateLimits,
}

impl Upstream {
    /// The public Anthropic API.
    pub const ANTHROPIC_URL: &'static str = "https://api.anthropic.com/v1";
    /// The public OpenAI API.
    pub const OPENAI_URL: &'static str = "https://api.openai.com/v1";

    /// An upstream without limits.
    pub fn new(url: impl Into<String>, key: SecretKey) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_owned(),
            key,
            limits: RateLimits::default(),
        }
    }
}

/// Per-account limits; requests over them wait, they do not fail. `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (input + output + cache writes) per minute.
    pub tpm: Option<u64>,
}

/// How an upstream 429/529/503 or a refused connection is retried before the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// Delay before the first retry when the upstream gives no `retry-after`; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of any one delay, `retry-after` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Everything the gateway needs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The Anthropic account (Claude Code).
    pub anthropic: Upstream,
    /// The OpenAI account (Codex), if configured.
    pub openai: Option<Upstream>,
    /// Prices per model, for cost and `budget.usd`.
    pub prices: PriceTable,
    /// Retries of an upstream's transient refusals.
    pub retry: RetryPolicy,
    /// Put request and response bodies into the audit records (debugging only).
    pub log_bodies: bool,
    /// Largest request body accepted from the sandbox.
    pub max_body_bytes: usize,
    /// `[llm.budget]`: what an agent task may spend.
    pub budget_policy: BudgetPolicy,
}

/// `[llm.budget]`: the budget of an agent task that names none, and the most any may ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetPolicy {
    /// A task's budget when it names none (each part separately).
    pub default: conductor_types::Budget,
    /// The most a task may ask for (each part separately).
    pub max: conductor_types::Budget,
}

impl BudgetPolicy {
    /// The budget a task runs under: each part as the task asked, else the default, else the
    /// maximum; `Err` names a part asked above the maximum.
    pub fn apply(
        &self,
        asked: Option<conductor_types::Budget>,
    ) -> Result<conductor_types::Budget, String> {
        let asked = asked.unwrap_or_default();
        let tokens = asked.tokens.or(self.default.tokens).or(self.max.tokens);
        let usd = asked.usd.or(self.default.usd).or(self.max.usd);
        if let (Some(value), Some(max)) = (tokens, self.max.tokens) {
            if value > max {
                return Err(format!("tokens: {value} is above this server's maximum of {max} ([llm.budget] max_tokens)"));
            }
        }
        if let (Some(value), Some(max)) = (usd, self.max.usd) {
            if value > max {
                return Err(format!(
                    "usd: {value} is above this server's maximum of {max} ([llm.budget] max_usd)"
                ));
            }
        }
        Ok(conductor_types::Budget { tokens, usd })
    }
}

impl GatewayConfig {
    /// A configuration with the Anthropic upstream only and defaults elsewhere.
    pub fn new(anthropic: Upstream) -> Self {
        Self {
            anthropic,
            openai: None,
            prices: PriceTable::builtin(),
            retry: RetryPolicy::default(),
            log_bodies: false,
            max_body_bytes: 64 << 20,
            budget_policy: BudgetPolicy::default(),
        }
    }

    /// The upstream of `provider`, if configured.
    pub fn upstream(&self, provider: Provider) -> Option<&Upstream> {
        match provider {
            Provider::Anthropic => Some(&self.anthropic),
            Provider::OpenAi => self.openai.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_gets_the_default_where_it_names_nothing_and_never_more_than_the_max() {
        use conductor_types::Budget;
        let policy = BudgetPolicy {
            default: Budget {
                tokens: Some(100_000),
                usd: None,
            },
            max: Budget {
                tokens: Some(1_000_000),
                usd: Some(5.0),
            },
        };
        assert_eq!(
            policy.apply(None),
            Ok(Budget {
                tokens: Some(100_000),
                usd: Some(5.0)
            })
        );
        let asked = Budget {
            tokens: Some(500_000),
            usd: Some(1.0),
        };
        assert_eq!(policy.apply(Some(asked)), Ok(asked));
        let too_much = Budget {
            tokens: Some(2_000_000),
            usd: None,
        };
        assert!(policy
            .apply(Some(too_much))
            .unwrap_err()
            .contains("max_tokens"));
        assert_eq!(BudgetPolicy::default().apply(None), Ok(Budget::default()));
    }

    #[test]
    fn keys_never_show_in_debug() {
        let upstream = Upstream::new("http://x/v1/", SecretKey::new("sk-ant-secret\n"));
        let debug = format!("{:?}", GatewayConfig::new(upstream.clone()));
        assert!(!debug.contains("sk-ant-secret"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(upstream.key.expose(), "sk-ant-secret");
        assert_eq!(upstream.url, "http://x/v1");
    }
}
