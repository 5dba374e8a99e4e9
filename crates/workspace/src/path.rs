//! `RelPath`: a path inside a workspace as the manifest stores it — raw bytes, `/`-separated,
//! never absolute, never `.` or `..`. Names need not be UTF-8; in JSON a UTF-8 path is a string
//! and any other path is `{"hex": "…"}`, so every name round-trips exactly.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest [`RelPath`], in bytes: one less than Linux's `PATH_MAX`, so that every path a
/// manifest holds can be opened beneath the workspace in one `openat2`, and a manifest grows
/// linearly with its entries however deep the tree (a deeper tree is refused with
/// [`crate::Error::TooDeep`], never walked further).
pub const MAX_PATH_LEN: usize = 4095;

/// A relative path inside a workspace: one or more non-empty components separated by single
/// `/`, none of them `.` or `..`, no NUL byte, at most [`MAX_PATH_LEN`] bytes. Ordered by its bytes, so a directory sorts
/// before everything inside it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<u8>);

/// Why some bytes are not a [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid workspace path {path:?}: {reason}")]
pub struct InvalidPath {
    /// The offending path, lossily decoded.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl RelPath {
    /// Checks and wraps `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, InvalidPath> {
        let bytes = bytes.into();
        let fail = |reason| {
            Err(InvalidPath {
                path: String::from_utf8_lossy(&bytes).into_owned(),
                reason,
            })
        };
        if bytes.is_empty() {
            return fail("empty");
        }
        if bytes.len() > MAX_PATH_LEN {
            return fail("longer than 4095 bytes");
        }
        if bytes[0] == b'/' {
            return fail("absolute");
        }
        if bytes.contains(&0) {
            return fail("contains a NUL byte");
        }
        for component in bytes.split(|&b| b == b'/') {
            match component {
                b"" => return fail("empty component"),
                b"." | b".." => return fail("`.` or `..` component"),
                _ => {}
            }
        }
        Ok(Self(bytes))
    }

    /// `self/name`, where `name` is one valid component.
    pub(crate) fn join(&self, name: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(self.0.len() + 1 + name.len());
        bytes.extend_from_slice(&self.0);
        bytes.push(b'/');
        bytes.extend_from_slice(name);
        Self(bytes)
    }

    /// Wraps bytes known to be valid (a prefix of a valid path at a `/`).
    pub(crate) fn from_bytes_unchecked(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// A one-component path from a directory entry name (never `.`, `..`, empty, or with `/`).
    pub(crate) fn from_name(name: &[u8]) -> Self {
        Self(name.to_vec())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As an OS path, relative.
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// `root` joined with this path.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(self.as_path())
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(slash) => &self.0[slash + 1..],
            None => &self.0,
        }
    }

    /// The bytes of the parent directory, empty for a top-level entry.
    pub fn parent_bytes(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(slash) => &self.0[..slash],
            None => b"",
        }
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/')
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// JSON spelling of arbitrary bytes: a string when they are UTF-8, `{"hex": "…"}` otherwise.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum WireBytes {
    Text(String),
    Hex { hex: String },
}

impl WireBytes {
    pub(crate) fn encode(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(text.to_owned()),
            Err(_) => Self::Hex {
                hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
    }

    pub(crate) fn decode(self) -> Result<Vec<u8>, String> {
        match self {
            Self::Text(text) => Ok(text.into_bytes()),
            Self::Hex { hex } => {
                if hex.len() % 2 != 0 {
                    return Err(format!("odd-length hex {hex:?}"));
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                            .ok_or_else(|| format!("invalid hex {hex:?}"))
                    })
                    .collect()
            }
        }
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireBytes::encode(&self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = WireBytes::deserialize(deserializer)?
            .decode()
            .map_err(serde::de::Error::custom)?;
        Self::new(bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unsafe_spellings() {
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"a/../b",
            b"..",
            b"./a",
            b"a//b",
            b"a/",
            b"a\0b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
        let ok = RelPath::new(&b"dir/sub/f\xffile"[..]).unwrap();
        assert_eq!(ok.file_name(), b"f\xffile");
        assert_eq!(ok.parent_bytes(), b"dir/sub");
        assert_eq!(ok.components().count(), 3);
    }

    #[test]
    fn refuses_paths_past_the_limit() {
        let at_limit = vec![b'a'; MAX_PATH_LEN];
        assert!(RelPath::new(at_limit.clone()).is_ok());
        let mut past = at_limit;
        past.push(b'a');
        assert_eq!(
            RelPath::new(past).unwrap_err().reason,
            "longer than 4095 bytes"
        );
    }

    #[test]
    fn json_round_trips_utf8_and_other_bytes() {
        let text = RelPath::new("répertoire/файл 🦀.txt").unwrap();
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, "\"répertoire/файл 🦀.txt\"");
        assert_eq!(serde_json::from_str::<RelPath>(&json).unwrap(), text);

        let raw = RelPath::new(&b"bad\xff\xfename"[..]).unwrap();
        let json = serde_json::to_string(&raw).unwrap();
        assert_eq!(json, r#"{"hex":"626164fffe6e616d65"}"#);
        assert_eq!(serde_json::from_str::<RelPath>(&json).unwrap(), raw);

        assert!(serde_json::from_str::<RelPath>("\"../x\"").is_err());
    }
}
