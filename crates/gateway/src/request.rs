//! What the gateway reads from (and changes in) a request body: the model, whether it streams,
//! its output limit and the smallest limit that keeps it valid; and lowering that limit when
//! the budget says so. The body is re-serialized only when the limit changes.

use bytes::Bytes;
use serde_json::Value;

use crate::budget::Needs;
use crate::config::Provider;

/// OpenAI rejects a `max_output_tokens` below this.
const OPENAI_MIN_OUTPUT: u64 = 16;
/// The smallest `thinking.budget_tokens` Anthropic accepts.
const MIN_THINKING: u64 = 1024;

/// The parts of a model request the gateway acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    body: Value,
    /// The model asked for (empty when absent).
    pub model: String,
    /// `max_tokens` (Anthropic) or `max_output_tokens` (OpenAI).
    pub max_tokens: Option<u64>,
    /// The smallest valid output limit.
    pub min_valid: u64,
}

/// A body the gateway cannot act on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RequestError {
    /// Not a JSON object.
    #[error("request body is not a JSON object")]
    NotAnObject,
}

impl ModelRequest {
    /// Reads a Messages (Anthropic) or Responses (OpenAI) request.
    pub fn parse(provider: Provider, body: &[u8]) -> Result<Self, RequestError> {
        let body: Value = serde_json::from_slice(body).map_err(|_| RequestError::NotAnObject)?;
        if !body.is_object() {
            return Err(RequestError::NotAnObject);
        }
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        let (max_tokens, min_valid) = match provider {
            Provider::Anthropic => {
                // A thinking request stays valid with its thinking budget lowered (to at least
                // the API's minimum) below a lowered `max_tokens` (see `capped`).
                let thinking = &body["thinking"];
                let thinking_budget = (thinking["type"] == "enabled")
                    .then(|| thinking["budget_tokens"].as_u64())
                    .flatten();
                let min_valid =
                    thinking_budget.map_or(1, |b| b.min(MIN_THINKING).saturating_add(1));
                (body["max_tokens"].as_u64(), min_valid)
            }
            Provider::OpenAi => (body["max_output_tokens"].as_u64(), OPENAI_MIN_OUTPUT),
        };
        Ok(Self {
            body,
            model,
            max_tokens,
            min_valid,
        })
    }

    /// What the budget needs to know, at `output_price` USD per output token.
    pub fn needs(&self, output_price: f64) -> Needs {
        Needs {
            max_tokens: self.max_tokens,
            min_valid: self.min_valid,
            output_price,
        }
    }

    /// The body with its output limit set to `cap` (at least `min_valid`), and a thinking
    /// budget lowered below it where it was not already.
    pub fn capped(mut self, provider: Provider, cap: u64) -> Bytes {
        let field = match provider {
            Provider::Anthropic => "max_tokens",
            Provider::OpenAi => "max_output_tokens",
        };
        self.body[field] = Value::from(cap);
        let thinking = &mut self.body["thinking"];
        if provider == Provider::Anthropic && thinking["type"] == "enabled" {
            if let Some(budget) = thinking["budget_tokens"].as_u64() {
                thinking["budget_tokens"] = Value::from(budget.min(cap.saturating_sub(1)));
            }
        }
        Bytes::from(self.body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_limits_and_the_thinking_floor() {
        let body = br#"{"model":"claude-sonnet-4-5","max_tokens":32000,"stream":true,
            "thinking":{"type":"enabled","budget_tokens":10000},"messages":[]}"#;
        let request = ModelRequest::parse(Provider::Anthropic, body).unwrap();
        assert_eq!(request.model, "claude-sonnet-4-5");
        assert_eq!(request.max_tokens, Some(32000));
        assert_eq!(request.min_valid, 1025, "thinking can be lowered to 1024");
        let capped = request.clone().capped(Provider::Anthropic, 12000);
        let again = ModelRequest::parse(Provider::Anthropic, &capped).unwrap();
        assert_eq!(again.max_tokens, Some(12000));
        assert_eq!(again.body["thinking"]["budget_tokens"], 10000);
        let lowered = request.capped(Provider::Anthropic, 5000);
        let again = ModelRequest::parse(Provider::Anthropic, &lowered).unwrap();
        assert_eq!(again.max_tokens, Some(5000));
        assert_eq!(again.body["thinking"]["budget_tokens"], 4999);

        let plain = ModelRequest::parse(Provider::Anthropic, br#"{"max_tokens":5}"#).unwrap();
        assert_eq!((plain.model.as_str(), plain.min_valid), ("", 1));
        let openai = ModelRequest::parse(Provider::OpenAi, br#"{"model":"gpt-5"}"#).unwrap();
        assert_eq!((openai.max_tokens, openai.min_valid), (None, 16));
        let capped = openai.capped(Provider::OpenAi, 100);
        let again = ModelRequest::parse(Provider::OpenAi, &capped).unwrap();
        assert_eq!(again.max_tokens, Some(100));
        assert_eq!(
            ModelRequest::parse(Provider::Anthropic, b"[1]"),
            Err(RequestError::NotAnObject)
        );
    }
}
