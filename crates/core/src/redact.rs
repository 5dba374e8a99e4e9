//! Deciding what output is stored: [`LineAssembler`] cuts a byte stream into whole lines (so a
//! secret split across two reads is still seen whole), [`Redactor`] replaces every secret value
//! in a line, and [`OutputBudget`] caps how much of a task's output is kept.

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Replaces secret values in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these values (empty values are ignored).
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s| !s.is_empty())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

/// Collects output bytes into complete lines (lossy UTF-8). A line longer than `max_line` is
/// cut there, so memory stays bounded; a secret straddling such a cut is the one case redaction
/// can miss.
#[derive(Debug, Clone)]
pub struct LineAssembler {
    pending: Vec<u8>,
    max_line: usize,
}

impl LineAssembler {
    /// An assembler that cuts lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            pending: Vec::new(),
            max_line: max_line.max(1),
        }
    }

    /// Adds bytes; returns the complete lines (with their `\n`) now available, if any.
    pub fn push(&mut self, data: &[u8]) -> Option<String> {
        self.pending.extend_from_slice(data);
        let cut = match self.pending.iter().rposition(|b| *b == b'\n') {
            Some(newline) => newline + 1,
            None if self.pending.len() >= self.max_line => self.pending.len(),
            None => return None,
        };
        let rest = self.pending.split_off(cut);
        let lines = std::mem::replace(&mut self.pending, rest);
        Some(String::from_utf8_lossy(&lines).into_owned())
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.pending);
        Some(String::from_utf8_lossy(&rest).into_owned())
    }
}

/// Caps how much output of one task attempt is stored: past the limit, one marker line is kept
/// and the rest is dropped (the executor's spool file still has it), so a runaway command cannot
/// fill the database.
#[derive(Debug, Clone)]
pub struct OutputBudget {
    limit: u64,
    stored: u64,
    dropped: u64,
}

impl OutputBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            stored: 0,
            dropped: 0,
        }
    }

    /// What of `text` to store: all of it, the part that fits plus a marker line, or nothing.
    pub fn admit(&mut self, text: String) -> Option<String> {
        if self.dropped > 0 {
            self.dropped += text.len() as u64;
            return None;
        }
        let room = self.limit.saturating_sub(self.stored);
        if text.len() as u64 <= room {
            self.stored += text.len() as u64;
            return Some(text);
        }
        let mut cut = usize::try_from(room).unwrap_or(usize::MAX).min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.stored += cut as u64;
        self.dropped = (text.len() - cut) as u64;
        let mut kept = text[..cut].to_owned();
        if !kept.is_empty() && !kept.ends_with('\n') {
            kept.push('\n');
        }
        kept.push_str(&format!(
            "[conductor: output past {} bytes is not stored]\n",
            self.limit
        ));
        Some(kept)
    }

    /// Counts `bytes` of something stored whole or not at all (an agent's step): `true` when it
    /// fits in what is left (and is then counted), `false` otherwise.
    pub fn take(&mut self, bytes: u64) -> bool {
        if self.dropped > 0 || bytes > self.limit.saturating_sub(self.stored) {
            return false;
        }
        self.stored += bytes;
        true
    }

    /// Bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_steps_are_taken_while_they_fit() {
        let mut budget = OutputBudget::new(10);
        assert!(budget.take(6));
        assert!(!budget.take(5));
        assert!(budget.take(4));
        assert!(!budget.take(1));
        assert_eq!(
            budget.admit("x".into()),
            Some("[conductor: output past 10 bytes is not stored]\n".into())
        );
    }

    #[test]
    fn output_past_the_budget_is_dropped_with_one_marker() {
        let mut budget = OutputBudget::new(10);
        assert_eq!(budget.admit("12345\n".into()), Some("12345\n".into()));
        assert_eq!(
            budget.admit("abcdefgh\n".into()),
            Some("abcd\n[conductor: output past 10 bytes is not stored]\n".into())
        );
        assert_eq!(budget.admit("more\n".into()), None);
        assert_eq!(budget.dropped(), 10);
        let mut budget = OutputBudget::new(2);
        assert_eq!(
            budget.admit("☃☃".into()),
            Some("[conductor: output past 2 bytes is not stored]\n".into())
        );
    }

    #[test]
    fn replaces_every_secret_longest_first() {
        let redactor = Redactor::new(["abc", "abcdef", ""]);
        assert_eq!(
            redactor.redact("key=abcdef other=abc abc"),
            "key=[REDACTED] other=[REDACTED] [REDACTED]"
        );
        assert_eq!(Redactor::default().redact("plain"), "plain");
    }

    #[test]
    fn a_secret_split_across_reads_is_still_redacted() {
        let redactor = Redactor::new(["hunter2"]);
        let mut lines = LineAssembler::new(1024);
        let mut out = String::new();
        for chunk in [&b"password: hun"[..], b"ter2\nnext", b" line"] {
            if let Some(text) = lines.push(chunk) {
                out.push_str(&redactor.redact(&text));
            }
        }
        if let Some(text) = lines.finish() {
            out.push_str(&redactor.redact(&text));
        }
        assert_eq!(out, "password: [REDACTED]\nnext line");
    }

    #[test]
    fn long_lines_are_cut_and_utf8_split_across_reads_survives() {
        let mut lines = LineAssembler::new(4);
        assert_eq!(lines.push(b"abcdef"), Some("abcdef".into()));
        let snowman = "☃\n".as_bytes();
        let mut lines = LineAssembler::new(64);
        assert_eq!(lines.push(&snowman[..1]), None);
        assert_eq!(lines.push(&snowman[1..]), Some("☃\n".into()));
        assert_eq!(lines.finish(), None);
    }
}
