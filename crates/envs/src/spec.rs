//! What an environment is: a Debian base, packages and setup steps ([`EnvSpec`]), read from a
//! TOML or JSON file or taken from the presets, validated once, and named by a content hash so
//! an unchanged spec is never rebuilt.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::EnvError;

/// Bumped whenever the builder changes what it makes from the same spec, so old builds are
/// not taken for current ones.
pub const BUILDER_VERSION: u32 = 1;

/// One environment: what to start from and what to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// Short name: lowercase letters, digits, `-`, `_`, `.`; names the build and the image.
    pub name: String,
    /// One line for `conductor env list`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The base system.
    #[serde(default)]
    pub base: Base,
    /// Debian packages installed with apt (no recommends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Shell lines run in order with `/bin/sh -c` inside the root filesystem, as root, with
    /// network access (pip, npm, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<String>,
    /// Dockerfile text (seed 001's `environments: [{name, dockerfile}]`): not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
}

/// The system an environment starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Debian suite given to debootstrap.
    #[serde(default = "default_suite")]
    pub suite: String,
    /// debootstrap variant.
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Packages debootstrap adds to the variant.
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// A registry image to start from instead (needs a reachable registry): not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

fn default_suite() -> String {
    "bookworm".to_owned()
}

fn default_variant() -> String {
    "minbase".to_owned()
}

fn default_include() -> Vec<String> {
    vec!["python3".to_owned(), "ca-certificates".to_owned()]
}

impl Default for Base {
    fn default() -> Self {
        Self {
            suite: default_suite(),
            variant: default_variant(),
            include: default_include(),
            image: None,
        }
    }
}

impl Base {
    /// The content hash of the base alone: builds of specs with the same base share it.
    pub fn hash(&self) -> String {
        let mut include = self.include.clone();
        include.sort();
        include.dedup();
        let canonical = serde_json::json!({
            "builder": BUILDER_VERSION,
            "suite": self.suite,
            "variant": self.variant,
            "include": include,
        });
        short_hash(&canonical.to_string())
    }
}

impl EnvSpec {
    /// Reads a spec from a `.toml` or `.json` file and validates it.
    pub fn from_file(path: &Path) -> Result<Self, EnvError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EnvError::io(format!("reading {}", path.display()), e))?;
        let is_json = path.extension().is_some_and(|e| e == "json");
        Self::parse(&text, is_json).map_err(|reason| EnvError::InvalidSpec {
            source_name: path.display().to_string(),
            reason,
        })
    }

    /// Parses TOML (or JSON when `json`) and validates the result; the error says what to fix.
    pub fn parse(text: &str, json: bool) -> Result<Self, String> {
        let spec: Self = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        } else {
            toml::from_str(text).map_err(|e| e.message().to_owned())?
        };
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// Checks names and refuses what the builder does not do yet.
    pub fn validate(&self) -> Result<(), EnvError> {
        validate_name(&self.name)?;
        if self.dockerfile.is_some() {
            return Err(EnvError::NotSupported {
                what: format!(
                    "environment {}: building from Dockerfile text (give base, packages and setup instead)",
                    self.name
                ),
            });
        }
        if let Some(image) = &self.base.image {
            return Err(EnvError::NotSupported {
                what: format!(
                    "environment {}: base image {image:?} (no registry is used; give base.suite instead)",
                    self.name
                ),
            });
        }
        validate_word("base.suite", &self.base.suite)?;
        validate_word("base.variant", &self.base.variant)?;
        for package in self.base.include.iter().chain(&self.packages) {
            validate_package(package)?;
        }
        if let Some(step) = self
            .setup
            .iter()
            .find(|s| s.trim().is_empty() || s.contains('\0'))
        {
            return Err(EnvError::InvalidSpec {
                source_name: self.name.clone(),
                reason: format!("setup step {step:?} is empty or contains a NUL byte"),
            });
        }
        Ok(())
    }

    /// The content hash naming this spec's build: base, packages (as a set) and setup steps
    /// (in order); not the name or description. 12 hex digits of SHA-256.
    pub fn content_hash(&self) -> String {
        let mut packages = self.packages.clone();
        packages.sort();
        packages.dedup();
        let canonical = serde_json::json!({
            "builder": BUILDER_VERSION,
            "base": self.base.hash(),
            "packages": packages,
            "setup": self.setup,
        });
        short_hash(&canonical.to_string())
    }

    /// The image tag a container engine knows the build by: `conductor-env/<name>:<hash>`.
    pub fn image_tag(&self) -> String {
        format!("conductor-env/{}:{}", self.name, self.content_hash())
    }
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..6])
}

/// Environment names: 1 to 64 of `a-z 0-9 - _ .`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), EnvError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(EnvError::InvalidName(name.to_owned()))
    }
}

/// Debian package names (policy 5.6.1), optionally with `=version` or `/suite`.
fn validate_package(package: &str) -> Result<(), EnvError> {
    let name = package
        .split_once(['=', '/'])
        .map_or(package, |(name, _)| name);
    let rest_ok = package[name.len()..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+.~:-=/".contains(c));
    let valid = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        && rest_ok;
    if valid {
        Ok(())
    } else {
        Err(EnvError::InvalidPackage(package.to_owned()))
    }
}

fn validate_word(field: &'static str, value: &str) -> Result<(), EnvError> {
    let valid = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(EnvError::InvalidSpec {
            source_name: field.to_owned(),
            reason: format!("{value:?} is not a plain word"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
name = "api-tests"
description = "what the API tests need"
packages = ["curl", "python3-requests"]
setup = ["pip install --break-system-packages httpx"]

[base]
suite = "bookworm"
"#;

    #[test]
    fn parses_toml_and_json_with_defaults() {
        let spec = EnvSpec::parse(TOML, false).unwrap();
        assert_eq!(
            spec,
            EnvSpec {
                name: "api-tests".into(),
                description: "what the API tests need".into(),
                base: Base::default(),
                packages: vec!["curl".into(), "python3-requests".into()],
                setup: vec!["pip install --break-system-packages httpx".into()],
                dockerfile: None,
            }
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(EnvSpec::parse(&json, true).unwrap(), spec);
    }

    #[test]
    fn hash_ignores_package_order_and_name_but_not_setup_order() {
        let spec = EnvSpec::parse(TOML, false).unwrap();
        let mut reordered = spec.clone();
        reordered.packages.reverse();
        reordered.name = "other".into();
        reordered.description.clear();
        assert_eq!(spec.content_hash(), reordered.content_hash());
        let mut more = spec.clone();
        more.setup.push("true".into());
        assert_ne!(spec.content_hash(), more.content_hash());
        let mut other_base = spec.clone();
        other_base.base.suite = "trixie".into();
        assert_ne!(spec.content_hash(), other_base.content_hash());
        assert_eq!(spec.content_hash().len(), 12);
        assert_eq!(
            spec.image_tag(),
            format!("conductor-env/api-tests:{}", spec.content_hash())
        );
    }

    #[test]
    fn refuses_bad_names_packages_and_unsupported_sources() {
        let err = |text: &str| EnvSpec::parse(text, false).unwrap_err();
        assert_eq!(
            err("name = \"Bad Name\""),
            "invalid environment name \"Bad Name\": use 1 to 64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit"
        );
        assert_eq!(
            err("name = \"x\"\npackages = [\"curl; rm -rf /\"]"),
            "invalid package name \"curl; rm -rf /\": expected a Debian package name such as python3-pip (optionally =VERSION or /SUITE)"
        );
        assert_eq!(
            err("name = \"x\"\ndockerfile = \"FROM python:3.12\""),
            "environment x: building from Dockerfile text (give base, packages and setup instead) is not supported yet"
        );
        assert_eq!(
            err("name = \"x\"\n[base]\nimage = \"python:3.12\""),
            "environment x: base image \"python:3.12\" (no registry is used; give base.suite instead) is not supported yet"
        );
        assert!(err("name = \"x\"\nunknown = 1").contains("unknown field `unknown`"));
        assert!(EnvSpec::parse(
            "name = \"x\"\npackages = [\"g++\", \"libc6=2.36-9\"]",
            false
        )
        .is_ok());
    }
}
