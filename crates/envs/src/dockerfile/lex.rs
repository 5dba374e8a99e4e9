//! The lexical side of the Dockerfile subset: instructions out of lines (parser directives,
//! comments, continuations), words and `KEY=VALUE` pairs, `&&` chains, and quoting for `sh`.

use std::collections::BTreeMap;

use super::DockerfileError;

/// One instruction after continuations are joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Instruction {
    /// The line it starts on (1-based).
    pub(super) line: usize,
    /// The keyword, upper case.
    pub(super) keyword: String,
    /// The rest, trimmed.
    pub(super) args: String,
}

/// Splits `text` into instructions: parser directives (only `escape` matters), comments,
/// blank lines and line continuations handled.
pub(super) fn instructions(text: &str) -> Result<Vec<Instruction>, DockerfileError> {
    let mut escape = '\\';
    let mut in_directives = true;
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim();
        if in_directives {
            if let Some((key, value)) = directive(trimmed) {
                if key == "escape" {
                    escape = match value.as_str() {
                        "\\" => '\\',
                        "`" => '`',
                        other => {
                            return Err(DockerfileError::Syntax {
                                line: number,
                                reason: format!("escape directive {other:?}: use \\ or `"),
                            })
                        }
                    };
                }
                continue;
            }
            in_directives = false;
        }
        // Comments and blank lines, also inside a continued instruction.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (body, continues) = match raw.trim_end().strip_suffix(escape) {
            Some(body) => (body, true),
            None => (raw.trim_end(), false),
        };
        let (start, mut joined) = current.take().unwrap_or((number, String::new()));
        joined.push_str(if joined.is_empty() {
            body.trim_start()
        } else {
            body
        });
        if continues {
            current = Some((start, joined));
        } else {
            out.push(split_keyword(start, &joined)?);
        }
    }
    if let Some((start, joined)) = current {
        out.push(split_keyword(start, &joined)?);
    }
    Ok(out)
}

/// `# key=value` at the top of the file.
pub(super) fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?;
    let (key, value) = rest.split_once('=')?;
    let key = key.trim().to_ascii_lowercase();
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| (key, value.trim().to_owned()))
}

pub(super) fn split_keyword(line: usize, joined: &str) -> Result<Instruction, DockerfileError> {
    let joined = joined.trim();
    let (keyword, args) = joined
        .split_once(char::is_whitespace)
        .unwrap_or((joined, ""));
    if !keyword.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(DockerfileError::Syntax {
            line,
            reason: format!("{keyword:?} is not an instruction"),
        });
    }
    Ok(Instruction {
        line,
        keyword: keyword.to_ascii_uppercase(),
        args: args.trim().to_owned(),
    })
}

/// The commands of `script`'s top-level `&&` chain, each with its byte offset; `&&` inside
/// quotes or after a backslash does not split.
pub(super) fn and_chain(script: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let bytes = script.as_bytes();
    for (i, c) in script.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => escaped = true,
            (Some('"'), '"') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '&') if bytes.get(i + 1) == Some(&b'&') => {
                out.push((start, &script[start..i]));
                start = i + 2;
            }
            _ => {}
        }
    }
    out.push((start, &script[start..]));
    out
}

/// Whether a shell-form `RUN` uses a heredoc (`<<EOF`, `<<-"EOF"`).
pub(super) fn heredoc(args: &str) -> bool {
    args.match_indices("<<").any(|(i, _)| {
        let rest = args[i + 2..].trim_start_matches('-');
        let rest = rest.trim_start_matches(['"', '\'']);
        rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
    })
}

/// `KEY=VALUE` (value raw, with its quotes, after a leading `=`) or bare `KEY` (value empty)
/// pairs of `ENV`, `ARG` and `LABEL`, split on whitespace outside quotes.
pub(super) fn pairs(line: usize, args: &str) -> Result<Vec<(String, String)>, DockerfileError> {
    let mut out = Vec::new();
    for word in words(line, args)? {
        let (key, value) = match word.find('=') {
            Some(at) => (&word[..at], &word[at..]),
            None => (word.as_str(), ""),
        };
        let key = unquote(key);
        if !key.contains('.') {
            check_name(line, &key)?;
        }
        out.push((key, value.to_owned()));
    }
    Ok(out)
}

/// Splits on whitespace outside quotes, keeping the quotes.
pub(super) fn words(line: usize, args: &str) -> Result<Vec<String>, DockerfileError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in args.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (Some('\''), c) => current.push(c),
            (_, '\\') => {
                escaped = true;
                current.push(c);
            }
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                current.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            (None, c) => current.push(c),
        }
    }
    if quote.is_some() {
        return Err(DockerfileError::Syntax {
            line,
            reason: format!("unterminated quote in {args:?}"),
        });
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

pub(super) fn check_name(line: usize, key: &str) -> Result<(), DockerfileError> {
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(DockerfileError::Syntax {
            line,
            reason: format!("{key:?} is not a variable name"),
        })
    }
}

/// Removes one level of surrounding quotes.
pub(super) fn unquote(value: &str) -> String {
    let value = value.trim();
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return value[1..value.len() - 1].to_owned();
        }
    }
    value.to_owned()
}

/// `$NAME` and `${NAME}` from `vars` (unknown ones are empty, as Docker does).
pub(super) fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(vars.get(name).map_or("", String::as_str));
            rest = &after[used..];
        }
    }
    out.push_str(rest);
    out
}

/// `"text"` for `sh`, keeping `$` expansion.
pub(super) fn double_quote(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// One word for `sh`, quoted when needed.
pub(super) fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(shell_quote("it's"), r#"'it'\''s'"#);
        assert_eq!(double_quote(r#"a"b$C"#), r#""a\"b$C""#);
        let vars = BTreeMap::from([("A".to_owned(), "x".to_owned())]);
        assert_eq!(substitute("$A-${A}-$B-$", &vars), "x-x--$");
        assert_eq!(
            and_chain("a && 'b && c' && d\\&&e"),
            [(0, "a "), (4, " 'b && c' "), (16, " d\\&&e")]
        );
    }
}
