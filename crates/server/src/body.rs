//! Reading JSON request bodies: bounded in size, and with errors that name the field
//! (`resources.memory: size "-5g" is negative …`) instead of axum's plain-text rejections.

use axum::body::Body;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::AppError;

/// Reads at most `limit` bytes of `body` and decodes them as `T`.
pub async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, AppError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| AppError::PayloadTooLarge { limit })?;
    decode_json(&bytes)
}

/// Decodes `bytes` as `T`: syntax errors are 400, wrong or unknown fields 422 with their path.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::MalformedJson(
            "the request body is empty: send a JSON object".to_owned(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Data => AppError::InvalidField {
                field: if path == "." { "body".to_owned() } else { path },
                message: inner.to_string(),
            },
            Category::Syntax | Category::Eof | Category::Io => {
                AppError::MalformedJson(inner.to_string())
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|e| AppError::MalformedJson(e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use conductor_types::TaskRequest;

    use super::*;

    fn error(json: &str) -> String {
        match decode_json::<TaskRequest>(json.as_bytes()) {
            Ok(_) => "accepted".to_owned(),
            Err(e) => format!("{} {e}", e.status_and_code().1),
        }
    }

    #[test]
    fn names_the_field() {
        assert_eq!(
            error(r#"{"commands": ["ls"], "resources": {"memory": "-5g"}}"#),
            "invalid_field resources.memory: size \"-5g\" is negative: sizes must be zero or more at line 1 column 51"
        );
        assert_eq!(
            error(r#"{"commands": ["ls"], "colour": 1}"#),
            "invalid_field colour: unknown field `colour`, expected one of `task_type`, `description`, `environment`, `commands`, `continue_on_error`, `resources`, `network`, `timeout`, `env`, `secrets`, `workspace`, `git`, `priority`, `labels`, `retries`, `services`, `environments`, `agent`, `budget`, `files` at line 1 column 29"
        );
        assert_eq!(
            error(r#"{"commands": "ls"}"#),
            "invalid_field commands: invalid type: string \"ls\", expected a sequence at line 1 column 17"
        );
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        assert_eq!(
            error(r#"{"commands": ["#),
            "malformed_json malformed JSON: EOF while parsing a list at line 1 column 14"
        );
        assert_eq!(
            error(""),
            "malformed_json malformed JSON: the request body is empty: send a JSON object"
        );
        assert_eq!(
            error(r#"{"commands": []} x"#),
            "malformed_json malformed JSON: trailing characters at line 1 column 18"
        );
    }
}
