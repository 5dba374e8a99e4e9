//! Cutting secrets (the task's token) out of an agent's raw stream before it is stored or logged.

use std::borrow::Cow;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Replaces every occurrence of a set of secrets.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor of `secrets` (empty strings are ignored: they would match everywhere).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret that contains another is cut whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    /// `line` with every secret replaced by [`REDACTED`] (borrowed when it holds none).
    pub fn redact<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(line);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_cut_and_clean_lines_borrowed() {
        let redactor = Redactor::new(["tok".to_owned(), "tok_long".to_owned(), String::new()]);
        assert_eq!(
            redactor.redact("a tok_long b tok"),
            "a [redacted] b [redacted]"
        );
        assert!(matches!(redactor.redact("clean"), Cow::Borrowed("clean")));
    }
}
