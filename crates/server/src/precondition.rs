//! Conditional requests on workspace files (RFC 9110 §13): `If-Match` and `If-None-Match` on a
//! file upload or delete, against the file's version (`conductor_workspace::version`, its
//! `ETag`). A client that read a file with its `ETag` and writes it back with `If-Match` is told
//! (412 `precondition_failed`) when the file changed underneath, and nothing is overwritten;
//! `If-None-Match: *` creates a file only where none is. Our tags are strong, so a weak one
//! (`W/"…"`) never matches `If-Match`.

use axum::http::{header, HeaderMap};

use crate::AppError;

/// One header's list: `*`, or entity tags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tags {
    Any,
    List(Vec<String>),
}

/// The preconditions of a request (both empty: unconditional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Precondition {
    if_match: Option<Tags>,
    if_none_match: Option<Tags>,
}

impl Precondition {
    /// The request's `If-Match` and `If-None-Match`; a header that is not `*` or a list of
    /// quoted tags is 400 `invalid_header`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, AppError> {
        Ok(Self {
            if_match: parse(headers, header::IF_MATCH)?,
            if_none_match: parse(headers, header::IF_NONE_MATCH)?,
        })
    }

    /// Whether the request has any precondition.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Checks the preconditions against the current version of the target (`None`: nothing is
    /// there).
    pub fn check(&self, current: Option<&str>, path: &str) -> Result<(), AppError> {
        if let Some(tags) = &self.if_match {
            let holds = match (tags, current) {
                (_, None) => false,
                (Tags::Any, Some(_)) => true,
                (Tags::List(tags), Some(now)) => tags.iter().any(|tag| tag == now),
            };
            if !holds {
                return Err(AppError::PreconditionFailed(match current {
                    None => format!("If-Match: {path:?} does not exist (any more); nothing was written"),
                    Some(now) => format!("If-Match: {path:?} changed since that version was read (it is {now} now); nothing was written: read it again and merge"),
                }));
            }
        }
        if let Some(tags) = &self.if_none_match {
            let matches = match (tags, current) {
                (_, None) => false,
                (Tags::Any, Some(_)) => true,
                // Weak comparison: `W/` is ignored.
                (Tags::List(tags), Some(now)) => {
                    tags.iter().any(|tag| tag.trim_start_matches("W/") == now)
                }
            };
            if matches {
                return Err(AppError::PreconditionFailed(format!(
                    "If-None-Match: {path:?} exists (version {}); nothing was written",
                    current.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

fn parse(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<Tags>, AppError> {
    let invalid = |message: String| AppError::BadRequest {
        code: "invalid_header",
        message,
    };
    // An empty header (`If-Match:`, or spaces and tabs only) names no tag: it is read as
    // absent. Anything else is `*` or a list of entity tags, exactly as the OpenAPI document's
    // pattern says (a fuzzer holds the two to each other).
    let ows = |c: char| c == ' ' || c == '\t';
    let mut tags = Vec::new();
    for value in headers.get_all(&name) {
        let text = value
            .to_str()
            .map_err(|_| invalid(format!("{name}: not visible ASCII")))?
            .trim_matches(ows);
        if text.is_empty() {
            continue;
        }
        if text == "*" {
            return Ok(Some(Tags::Any));
        }
        for item in text.split(',').map(|item| item.trim_matches(ows)) {
            if !is_entity_tag(item) {
                return Err(invalid(format!(
                    "{name}: {item:?} is not an entity tag: send `*` alone, or ETags as they were given (quotes included) separated by commas"
                )));
            }
            tags.push(item.to_owned());
        }
    }
    Ok((!tags.is_empty()).then_some(Tags::List(tags)))
}

/// `"…"` or `W/"…"`, visible ASCII inside but no quote and no comma (RFC 9110's `entity-tag`).
fn is_entity_tag(item: &str) -> bool {
    let opaque = item.strip_prefix("W/").unwrap_or(item);
    opaque.len() >= 2
        && opaque.starts_with('"')
        && opaque.ends_with('"')
        && opaque[1..opaque.len() - 1]
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b',')
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(pairs: &[(header::HeaderName, &str)]) -> Result<Precondition, AppError> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        Precondition::from_headers(&headers)
    }

    #[test]
    fn if_match_holds_only_for_the_current_version() {
        let pre = with(&[(header::IF_MATCH, "\"a\", \"b\"")]).unwrap();
        assert!(pre.check(Some("\"b\""), "f").is_ok());
        assert!(matches!(
            pre.check(Some("\"c\""), "f"),
            Err(AppError::PreconditionFailed(_))
        ));
        assert!(pre.check(None, "f").is_err());
        let any = with(&[(header::IF_MATCH, "*")]).unwrap();
        assert!(any.check(Some("\"c\""), "f").is_ok());
        assert!(any.check(None, "f").is_err());
        // A weak tag never matches If-Match.
        let weak = with(&[(header::IF_MATCH, "W/\"c\"")]).unwrap();
        assert!(weak.check(Some("\"c\""), "f").is_err());
    }

    #[test]
    fn if_none_match_star_creates_only_where_nothing_is() {
        let pre = with(&[(header::IF_NONE_MATCH, "*")]).unwrap();
        assert!(pre.check(None, "f").is_ok());
        assert!(pre.check(Some("\"a\""), "f").is_err());
        let tags = with(&[(header::IF_NONE_MATCH, "W/\"a\"")]).unwrap();
        assert!(tags.check(Some("\"a\""), "f").is_err());
        assert!(tags.check(Some("\"b\""), "f").is_ok());
    }

    #[test]
    fn no_headers_is_unconditional_and_junk_is_refused() {
        let none = with(&[]).unwrap();
        assert!(none.is_empty() && none.check(None, "f").is_ok());
        assert!(with(&[(header::IF_MATCH, "")]).unwrap().is_empty());
        assert!(with(&[(header::IF_MATCH, " \t ")]).unwrap().is_empty());
        assert!(with(&[(header::IF_MATCH, " \"a\" , W/\"b\" ")]).is_ok());
        // What the OpenAPI pattern refuses is refused: a star in a list, an empty item, a
        // space inside the quotes.
        for junk in [
            "abc",
            "\"unterminated",
            "\"a\"b\"",
            ",",
            "*, \"a\"",
            "\"a\",,\"b\"",
            "\"a b\"",
        ] {
            assert!(
                matches!(
                    with(&[(header::IF_MATCH, junk)]),
                    Err(AppError::BadRequest {
                        code: "invalid_header",
                        ..
                    })
                ),
                "{junk}"
            );
        }
    }
}
