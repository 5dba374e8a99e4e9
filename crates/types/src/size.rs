//! Byte sizes written by humans (`512m`, `2g`, `1.5GiB`), parsed once into [`Bytes`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// A number of bytes. Parses `1024`, `100k`, `512m`, `512MiB`, `1.5g`, `2GB` (units are powers of
/// 1024, as Docker's `--memory`). Serialises as a plain integer; deserialises from an integer or a
/// string in the same syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl Bytes {
    /// One kibibyte.
    pub const KIB: u64 = 1024;
    /// One mebibyte.
    pub const MIB: u64 = 1024 * 1024;
    /// One gibibyte.
    pub const GIB: u64 = 1024 * 1024 * 1024;

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * Self::MIB)
    }

    /// The value in bytes.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseSizeError {
    /// Nothing was given.
    #[error("empty size: expected a number with an optional unit, such as 512m or 2g")]
    Empty,
    /// A minus sign.
    #[error("size {input:?} is negative: sizes must be zero or more")]
    Negative {
        /// What was given.
        input: String,
    },
    /// The number part is not a number.
    #[error("size {input:?} does not start with a number: expected such as 512m or 2g")]
    NotANumber {
        /// What was given.
        input: String,
    },
    /// The unit is not one we know.
    #[error("size {input:?} has unknown unit {unit:?}: use b, k, m, g or t (KiB, MiB, GiB, TiB also work)")]
    UnknownUnit {
        /// What was given.
        input: String,
        /// The unit part.
        unit: String,
    },
    /// Larger than 2^64 - 1 bytes.
    #[error("size {input:?} is too large")]
    TooLarge {
        /// What was given.
        input: String,
    },
}

impl FromStr for Bytes {
    type Err = ParseSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let input = s.trim();
        if input.is_empty() {
            return Err(ParseSizeError::Empty);
        }
        if input.starts_with('-') {
            return Err(ParseSizeError::Negative {
                input: input.to_owned(),
            });
        }
        let split = input
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(input.len());
        let (number, unit) = input.split_at(split);
        let unit = unit.trim();
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => Self::KIB,
            "m" | "mb" | "mib" => Self::MIB,
            "g" | "gb" | "gib" => Self::GIB,
            "t" | "tb" | "tib" => Self::GIB * 1024,
            _ => {
                return Err(ParseSizeError::UnknownUnit {
                    input: input.to_owned(),
                    unit: unit.to_owned(),
                })
            }
        };
        let not_a_number = || ParseSizeError::NotANumber {
            input: input.to_owned(),
        };
        let too_large = || ParseSizeError::TooLarge {
            input: input.to_owned(),
        };
        if number.is_empty() {
            return Err(not_a_number());
        }
        if number.contains('.') {
            let value: f64 = number.parse().map_err(|_| not_a_number())?;
            let bytes = (value * multiplier as f64).round();
            if !bytes.is_finite() || bytes >= u64::MAX as f64 {
                return Err(too_large());
            }
            Ok(Self(bytes as u64))
        } else {
            let value: u64 = number.parse().map_err(|_| too_large())?;
            value
                .checked_mul(multiplier)
                .map(Self)
                .ok_or_else(too_large)
        }
    }
}

impl fmt::Display for Bytes {
    /// The shortest exact form: `512m`, `2g`, `1536k`, `1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (Self::GIB * 1024, "t"),
            (Self::GIB, "g"),
            (Self::MIB, "m"),
            (Self::KIB, "k"),
        ];
        for (size, suffix) in units {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{suffix}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_sizes() {
        let cases = [
            ("1024", 1024),
            ("0", 0),
            ("100k", 100 * 1024),
            ("512m", 512 * Bytes::MIB),
            ("512MiB", 512 * Bytes::MIB),
            ("2g", 2 * Bytes::GIB),
            ("2GB", 2 * Bytes::GIB),
            ("1.5g", 3 * Bytes::GIB / 2),
            (" 64 m ", 64 * Bytes::MIB),
            ("1t", 1024 * Bytes::GIB),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<Bytes>(), Ok(Bytes(bytes)), "{text}");
        }
    }

    #[test]
    fn rejects_bad_sizes_with_a_reason() {
        assert_eq!("".parse::<Bytes>(), Err(ParseSizeError::Empty));
        assert_eq!(
            "-5g".parse::<Bytes>(),
            Err(ParseSizeError::Negative {
                input: "-5g".into()
            })
        );
        assert_eq!(
            "5x".parse::<Bytes>(),
            Err(ParseSizeError::UnknownUnit {
                input: "5x".into(),
                unit: "x".into()
            })
        );
        assert_eq!(
            "g".parse::<Bytes>(),
            Err(ParseSizeError::NotANumber { input: "g".into() })
        );
        assert_eq!(
            "99999999999999t".parse::<Bytes>(),
            Err(ParseSizeError::TooLarge {
                input: "99999999999999t".into()
            })
        );
        assert_eq!(
            "1.2.3m".parse::<Bytes>(),
            Err(ParseSizeError::NotANumber {
                input: "1.2.3m".into()
            })
        );
    }

    #[test]
    fn displays_shortest_exact_form() {
        assert_eq!(Bytes(512 * Bytes::MIB).to_string(), "512m");
        assert_eq!(Bytes(1536 * Bytes::KIB).to_string(), "1536k");
        assert_eq!(Bytes(1000).to_string(), "1000");
    }

    #[test]
    fn deserialises_numbers_and_strings() {
        assert_eq!(
            serde_json::from_str::<Bytes>("\"256m\"").unwrap(),
            Bytes::mib(256)
        );
        assert_eq!(serde_json::from_str::<Bytes>("42").unwrap(), Bytes(42));
        let err = serde_json::from_str::<Bytes>("\"-5g\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("size \"-5g\" is negative"), "{err}");
    }
}
