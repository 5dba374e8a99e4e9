//! Durations written by humans (`30s`, `5m`, `1h 30m`, or plain seconds).

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (expected such as 30s, 5m, 1h30m or a number of seconds)"
)]
pub struct ParseDurationError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses `30s`, `1500ms`, `5m`, `1h 30m` or a plain number of seconds. Zero is refused: a zero
/// timeout is never what anyone meant.
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let text = input.trim();
    let error = |reason: &str| ParseDurationError {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if text.starts_with('-') {
        return Err(error("durations must be positive"));
    }
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|e| error(&e.to_string()))?,
    };
    if duration.is_zero() {
        return Err(error("must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in ["", "-3s", "0", "0s", "soon", "3 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }
}
