//! `[llm]` as written in `config.toml`, resolved once into a [`GatewayConfig`]: keys from
//! `api_key_file` or the environment (`ANTHROPIC_API_KEY`, `ANTHROPIC_API_KEY_FILE`; `OPENAI_…`
//! for `[llm.openai]`), prices merged over the built-in table, defaults filled in.
//!
//! ```toml
//! [llm]
//! upstream = "https://api.anthropic.com"      # as ANTHROPIC_BASE_URL; "/v1" is added
//! api_key_file = "/etc/conductor/anthropic.key"
//! [llm.limits]
//! rpm = 50
//! tpm = 400000
//! [llm.prices."claude-sonnet-4-5"]            # USD per million tokens; "default" = unknown models
//! input = 3.0
//! output = 15.0
//! [llm.openai]
//! upstream = "https://api.openai.com/v1"      # as OPENAI_BASE_URL
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{GatewayConfig, RateLimits, RetryPolicy, SecretKey, Upstream};
use crate::prices::{Price, PriceTable};

/// `[llm]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlmConfig {
    /// The Anthropic account.
    #[serde(flatten)]
    pub anthropic: RawUpstream,
    /// `[llm.openai]`: the OpenAI account, for Codex.
    pub openai: Option<RawUpstream>,
    /// `[llm.retry]`.
    pub retry: Option<RawRetry>,
    /// Put request and response bodies into the audit records.
    pub log_bodies: Option<bool>,
    /// `[llm.budget]`.
    pub budget: Option<RawBudget>,
}

/// `[llm.budget]`: agent tasks' default and maximum budgets.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Tokens of a task that names no `budget.tokens`.
    pub default_tokens: Option<u64>,
    /// US dollars of a task that names no `budget.usd`.
    pub default_usd: Option<f64>,
    /// The most `budget.tokens` may be.
    pub max_tokens: Option<u64>,
    /// The most `budget.usd` may be.
    pub max_usd: Option<f64>,
}

/// One account's table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// API base URL.
    pub upstream: Option<String>,
    /// File holding the key.
    pub api_key_file: Option<PathBuf>,
    /// `[….limits]`.
    pub limits: Option<RawLimits>,
    /// `[….prices."MODEL"]`.
    #[serde(default)]
    pub prices: BTreeMap<String, RawPrice>,
}

/// `[llm.limits]`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

/// A price override; absent fields keep the built-in (or default) price of that model.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    /// USD per million uncached input tokens.
    pub input: Option<f64>,
    /// USD per million output tokens.
    pub output: Option<f64>,
    /// USD per million cache-read tokens.
    pub cache_read: Option<f64>,
    /// USD per million cache-write tokens.
    pub cache_write: Option<f64>,
}

/// `[llm.retry]`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all.
    pub max_attempts: Option<u32>,
    /// First backoff, in milliseconds.
    pub base_delay_ms: Option<u64>,
    /// Longest delay, in seconds.
    pub max_delay_secs: Option<u64>,
}

/// A `[llm]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No key anywhere.
    #[error("no {provider} api key: set {table}.api_key_file, {env} or {env}_FILE")]
    MissingKey {
        /// The provider.
        provider: &'static str,
        /// The config table.
        table: &'static str,
        /// The environment variable.
        env: &'static str,
    },
    /// The key file cannot be read.
    #[error("cannot read the api key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An upstream URL that is not http(s).
    #[error("{key} = {value:?}: not an http:// or https:// url")]
    Url {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// A price that is negative or not a number.
    #[error("llm.prices.{model:?}: prices must be finite and not negative")]
    Price {
        /// The model.
        model: String,
    },
    /// A budget setting that cannot hold.
    #[error("llm.budget: {0}")]
    Budget(String),
}

/// How one account is named in config and in the environment.
struct Names {
    provider: &'static str,
    table: &'static str,
    env: &'static str,
}

impl RawLlmConfig {
    /// Resolves into a [`GatewayConfig`], reading keys through `env` (the process environment
    /// in the server, a map in tests) and the key files.
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, ConfigError> {
        let anthropic_names = Names {
            provider: "anthropic",
            table: "llm",
            env: "ANTHROPIC_API_KEY",
        };
        let url = self
            .anthropic
            .upstream
            .as_deref()
            .unwrap_or(Upstream::ANTHROPIC_URL);
        check_url("llm.upstream", url)?;
        let url = url.trim_end_matches('/');
        let url = if url.ends_with("/v1") {
            url.to_owned()
        } else {
            format!("{url}/v1")
        };
        let anthropic = self.anthropic.upstream(url, &anthropic_names, env)?;
        let openai = match &self.openai {
            Some(raw) => {
                let names = Names {
                    provider: "openai",
                    table: "llm.openai",
                    env: "OPENAI_API_KEY",
                };
                let url = raw.upstream.as_deref().unwrap_or(Upstream::OPENAI_URL);
                check_url("llm.openai.upstream", url)?;
                Some(raw.upstream(url.to_owned(), &names, env)?)
            }
            None => None,
        };
        let mut prices = PriceTable::builtin();
        let overrides = self.openai.iter().flat_map(|o| &o.prices);
        for (model, raw) in self.anthropic.prices.iter().chain(overrides) {
            apply_price(&mut prices, model, raw)?;
        }
        let mut config = GatewayConfig::new(anthropic);
        config.openai = openai;
        config.prices = prices;
        config.retry = self.retry.unwrap_or_default().resolve();
        config.log_bodies = self.log_bodies.unwrap_or(false);
        config.budget_policy = self.budget.unwrap_or_default().resolve()?;
        Ok(config)
    }
}

impl RawBudget {
    fn resolve(self) -> Result<crate::config::BudgetPolicy, ConfigError> {
        for (name, usd) in [("default_usd", self.default_usd), ("max_usd", self.max_usd)] {
            if usd.is_some_and(|usd| !usd.is_finite() || usd <= 0.0) {
                return Err(ConfigError::Budget(format!(
                    "{name} must be a positive number"
                )));
            }
        }
        for (name, tokens) in [
            ("default_tokens", self.default_tokens),
            ("max_tokens", self.max_tokens),
        ] {
            if tokens == Some(0) {
                return Err(ConfigError::Budget(format!("{name} must be above 0")));
            }
        }
        let policy = crate::config::BudgetPolicy {
            default: conductor_types::Budget {
                tokens: self.default_tokens,
                usd: self.default_usd,
            },
            max: conductor_types::Budget {
                tokens: self.max_tokens,
                usd: self.max_usd,
            },
        };
        // The default must itself be allowed.
        policy
            .apply(None)
            .map_err(|e| ConfigError::Budget(format!("the default is above the maximum: {e}")))?;
        Ok(policy)
    }
}

impl RawUpstream {
    fn upstream(
        &self,
        url: String,
        names: &Names,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Upstream, ConfigError> {
        let key = self.key(names, env)?;
        let mut upstream = Upstream::new(url, key);
        let limits = self.limits.unwrap_or_default();
        upstream.limits = RateLimits {
            rpm: limits.rpm,
            tpm: limits.tpm,
        };
        Ok(upstream)
    }

    /// The key: `api_key_file`, else `{ENV}`, else the file `{ENV}_FILE` names.
    fn key(
        &self,
        names: &Names,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SecretKey, ConfigError> {
        let from_env = env(names.env).filter(|key| !key.trim().is_empty());
        let file = match (&self.api_key_file, &from_env) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(_)) => None,
            (None, None) => env(&format!("{}_FILE", names.env)).map(PathBuf::from),
        };
        let key = match file {
            Some(path) => std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::KeyFile { path, source })?,
            None => from_env.unwrap_or_default(),
        };
        if key.trim().is_empty() {
            return Err(ConfigError::MissingKey {
                provider: names.provider,
                table: names.table,
                env: names.env,
            });
        }
        Ok(SecretKey::new(key))
    }
}

impl RawRetry {
    fn resolve(self) -> RetryPolicy {
        let default = RetryPolicy::default();
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(default.max_attempts).max(1),
            base_delay: self
                .base_delay_ms
                .map_or(default.base_delay, Duration::from_millis),
            max_delay: self
                .max_delay_secs
                .map_or(default.max_delay, Duration::from_secs),
        }
    }
}

/// Fails unless `value` is an http(s) URL.
fn check_url(key: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        return Ok(());
    }
    Err(ConfigError::Url {
        key,
        value: value.to_owned(),
    })
}

/// Merges one override into the table (`default` sets the price of unknown models).
fn apply_price(table: &mut PriceTable, model: &str, raw: &RawPrice) -> Result<(), ConfigError> {
    let base = if model == "default" {
        table.default_price()
    } else {
        table.price(model).0
    };
    let price = Price {
        input: raw.input.unwrap_or(base.input),
        output: raw.output.unwrap_or(base.output),
        cache_read: raw.cache_read.unwrap_or(base.cache_read),
        cache_write: raw.cache_write.unwrap_or(base.cache_write),
    };
    let fields = [
        price.input,
        price.output,
        price.cache_read,
        price.cache_write,
    ];
    if fields.iter().any(|p| !p.is_finite() || *p < 0.0) {
        return Err(ConfigError::Price {
            model: model.to_owned(),
        });
    }
    if model == "default" {
        table.set_default(price);
    } else {
        table.set(model, price);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RawLlmConfig {
        #[derive(Deserialize)]
        struct File {
            llm: RawLlmConfig,
        }
        toml::from_str::<File>(text).unwrap().llm
    }

    #[test]
    fn resolves_urls_keys_limits_and_prices() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "sk-ant-file\n").unwrap();
        let raw = parse(&format!(
            r#"[llm]
            upstream = "http://127.0.0.1:9/"
            api_key_file = "{}"
            [llm.limits]
            rpm = 5
            [llm.prices."claude-sonnet-4-5"]
            output = 20.0
            [llm.prices.default]
            input = 1.0
            [llm.openai]
            [llm.openai.prices."my-model"]
            input = 1.0
            output = 2.0
            cache_read = 0.5
            cache_write = 0.0
            "#,
            key_file.display()
        ));
        let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-openai".to_owned());
        let config = raw.resolve(&env).unwrap();
        assert_eq!(config.anthropic.url, "http://127.0.0.1:9/v1");
        assert_eq!(config.anthropic.key.expose(), "sk-ant-file");
        assert_eq!(
            config.anthropic.limits,
            RateLimits {
                rpm: Some(5),
                tpm: None
            }
        );
        let openai = config.openai.unwrap();
        assert_eq!(openai.url, Upstream::OPENAI_URL);
        assert_eq!(openai.key.expose(), "sk-openai");
        let (sonnet, _) = config.prices.price("claude-sonnet-4-5-20250929");
        assert_eq!((sonnet.input, sonnet.output), (3.0, 20.0));
        assert_eq!(
            config.prices.price("my-model-1"),
            (
                Price {
                    input: 1.0,
                    output: 2.0,
                    cache_read: 0.5,
                    cache_write: 0.0
                },
                true
            )
        );
        let (unknown, known) = config.prices.price("mystery");
        assert_eq!((unknown.input, unknown.output, known), (1.0, 75.0, false));
    }

    #[test]
    fn a_missing_key_and_a_bad_url_fail_with_the_setting_named() {
        let none = |_: &str| None;
        let error = RawLlmConfig::default().resolve(&none).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no anthropic api key: set llm.api_key_file, ANTHROPIC_API_KEY or ANTHROPIC_API_KEY_FILE"
        );
        let env = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| "k".to_owned());
        let raw = parse("[llm]\nupstream = \"ftp://x\"");
        assert_eq!(
            raw.resolve(&env).unwrap_err().to_string(),
            "llm.upstream = \"ftp://x\": not an http:// or https:// url"
        );
        let from_env = RawLlmConfig::default().resolve(&env).unwrap();
        assert_eq!(from_env.anthropic.url, Upstream::ANTHROPIC_URL);
        assert_eq!(from_env.anthropic.key.expose(), "k");
    }
}
