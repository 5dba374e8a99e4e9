//! One-line summaries of tool inputs and outputs, shared by the parsers.

use serde_json::Value;

/// Longest tool-input summary, in characters.
pub const INPUT_CHARS: usize = 160;
/// Longest tool-output excerpt, in characters.
pub const OUTPUT_CHARS: usize = 240;

/// The part of a tool's input that says what it does (a command, a path, a pattern), on one line;
/// the compact JSON when none of the known keys is there.
pub fn tool_input(input: &Value) -> String {
    const KEYS: [&str; 7] = [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "query",
        "description",
    ];
    let known = KEYS.iter().find_map(|key| match &input[*key] {
        Value::String(text) => Some(text.clone()),
        // Codex-style `command: ["bash", "-lc", "…"]`.
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    });
    let text = known.unwrap_or_else(|| input.to_string());
    one_line(&text, INPUT_CHARS)
}

/// The start of a tool's output on one line.
pub fn tool_output(output: &str) -> String {
    one_line(output, OUTPUT_CHARS)
}

/// `text` cut to at most `max` characters on one line (newlines become spaces, `…` marks a cut).
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .trim()
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    shorten(&flat, max)
}

/// `text` cut to at most `max` characters (`…` marks a cut).
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let mut short = text[..cut].to_owned();
            short.push('…');
            short
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lines_are_shortened_on_char_boundaries() {
        assert_eq!(one_line("  ls\n-la  ", 10), "ls -la");
        assert_eq!(shorten("ééééé", 3), "ééé…");
        assert_eq!(shorten("abc", 3), "abc");
    }

    #[test]
    fn inputs_are_summarized_by_their_telling_key() {
        assert_eq!(
            tool_input(&json!({"command": "cat a\nb", "description": "x"})),
            "cat a b"
        );
        assert_eq!(
            tool_input(&json!({"file_path": "/w/a.py", "content": "…"})),
            "/w/a.py"
        );
        assert_eq!(
            tool_input(&json!({"command": ["bash", "-lc", "ls"]})),
            "bash -lc ls"
        );
        assert_eq!(tool_input(&json!({"todos": []})), r#"{"todos":[]}"#);
        assert_eq!(
            tool_output(&"x".repeat(300)).chars().count(),
            OUTPUT_CHARS + 1
        );
    }
}
