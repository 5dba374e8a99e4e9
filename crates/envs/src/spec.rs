//! What an environment is: a Debian base, packages and setup steps ([`EnvSpec`]), read from a
//! TOML or JSON file or taken from the presets, validated once, and named by a content hash so
//! an unchanged spec is never rebuilt.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dockerfile::{self, Translation};
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
    /// Dockerfile text (seed 001's `environments: [{name, dockerfile}]`) in the subset
    /// [`crate::dockerfile`] translates: when set, `base`, `packages` and `setup` are its
    /// translation (filled in by [`EnvSpec::parse`], [`EnvSpec::from_dockerfile`] and
    /// [`EnvStore::resolve`](crate::EnvStore::resolve), checked by [`EnvSpec::validate`]).
    /// The text itself is not hashed: the translation is.
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
    /// A container image to start from instead of debootstrap: used as it is when docker or
    /// podman has it, pulled otherwise (which needs a reachable registry). Its root
    /// filesystem is exported and the packages (with the image's own apt) and setup steps go
    /// on top. Cached by the reference as written: `conductor env rm` rebuilds from a moved tag.
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
        let mut canonical = serde_json::json!({
            "builder": BUILDER_VERSION,
            "suite": self.suite,
            "variant": self.variant,
            "include": include,
        });
        // Only when set: debootstrap bases keep the hashes they always had.
        if let Some(image) = &self.image {
            canonical["image"] = serde_json::Value::String(image.clone());
        }
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
        let spec = spec
            .with_dockerfile_translated(true)
            .map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// The spec of environment `name` made from Dockerfile `text` (see [`crate::dockerfile`]
    /// for the subset), validated; the translation's notes (what was ignored or differs from
    /// Docker) come with it.
    pub fn from_dockerfile(name: &str, text: &str) -> Result<(Self, Vec<String>), EnvError> {
        validate_name(name)?;
        let translation = translate(name, text)?;
        let notes = translation.notes.clone();
        let spec = Self {
            name: name.to_owned(),
            description: String::new(),
            base: Base::default(),
            packages: Vec::new(),
            setup: Vec::new(),
            dockerfile: Some(text.to_owned()),
        }
        .with_translation(translation);
        spec.validate()?;
        Ok((spec, notes))
    }

    /// Fills `base`, `packages` and `setup` from `dockerfile` when it is set. With `strict`
    /// (text a user wrote) they must not be given too; otherwise (a saved spec) the
    /// translation replaces them, so a saved spec follows the current translator.
    pub(crate) fn with_dockerfile_translated(self, strict: bool) -> Result<Self, EnvError> {
        let Some(text) = &self.dockerfile else {
            return Ok(self);
        };
        if strict
            && (self.base != Base::default() || !self.packages.is_empty() || !self.setup.is_empty())
        {
            return Err(EnvError::InvalidSpec {
                source_name: self.name.clone(),
                reason: "give either dockerfile or base, packages and setup, not both".into(),
            });
        }
        let translation = translate(&self.name, text)?;
        Ok(self.with_translation(translation))
    }

    fn with_translation(self, translation: Translation) -> Self {
        let description = if self.description.is_empty() {
            translation
                .description
                .unwrap_or_else(|| "from a Dockerfile".to_owned())
        } else {
            self.description
        };
        Self {
            description,
            base: translation.base,
            packages: translation.packages,
            setup: translation.setup,
            ..self
        }
    }

    /// Checks names and refuses what the builder does not do yet.
    pub fn validate(&self) -> Result<(), EnvError> {
        validate_name(&self.name)?;
        if let Some(text) = &self.dockerfile {
            let t = translate(&self.name, text)?;
            if (&t.base, &t.packages, &t.setup) != (&self.base, &self.packages, &self.setup) {
                return Err(EnvError::InvalidSpec {
                    source_name: self.name.clone(),
                    reason: "base, packages and setup differ from the dockerfile's translation; give either dockerfile or base, packages and setup".into(),
                });
            }
        }
        if let Some(image) = &self.base.image {
            validate_image(&self.name, image)?;
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
    /// (in order); not the name, description or Dockerfile text (its translation is what
    /// counts). 12 hex digits of SHA-256.
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

/// An image reference as docker and podman take it: `[registry/]path[:tag][@digest]`, no
/// spaces, no option-like leading `-`.
fn validate_image(name: &str, image: &str) -> Result<(), EnvError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    if image.is_empty()
        || image.len() > 255
        || image.starts_with('-')
        || !image.chars().all(allowed)
    {
        return Err(EnvError::InvalidSpec {
            source_name: name.to_owned(),
            reason: format!(
                "base.image {image:?} is not an image reference (expected [REGISTRY/]NAME[:TAG][@DIGEST])"
            ),
        });
    }
    Ok(())
}

fn translate(name: &str, text: &str) -> Result<Translation, EnvError> {
    dockerfile::translate(text).map_err(|error| EnvError::Dockerfile {
        name: name.to_owned(),
        error,
    })
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
pub(crate) fn validate_package(package: &str) -> Result<(), EnvError> {
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

    const DOCKERFILE: &str = "FROM debian:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends jq\nRUN echo built > /etc/conductor-dockerfile-test\n";

    #[test]
    fn dockerfile_text_is_translated_and_its_translation_hashed() {
        let toml = format!("name = \"dfx\"\ndockerfile = '''\n{DOCKERFILE}'''\n");
        let spec = EnvSpec::parse(&toml, false).unwrap();
        assert_eq!(
            spec,
            EnvSpec {
                name: "dfx".into(),
                description: "from a Dockerfile".into(),
                base: Base::default(),
                packages: vec!["jq".into()],
                setup: vec!["echo built > /etc/conductor-dockerfile-test".into()],
                dockerfile: Some(DOCKERFILE.into()),
            }
        );
        let (from_cli, notes) = EnvSpec::from_dockerfile("dfx", DOCKERFILE).unwrap();
        assert_eq!(from_cli, spec);
        assert!(notes.is_empty());
        // Saved as JSON and read back (as the store does), it is the same spec.
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(EnvSpec::parse(&json, true).unwrap_err(), "invalid environment spec dfx: give either dockerfile or base, packages and setup, not both");
        let saved: EnvSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(saved.with_dockerfile_translated(false).unwrap(), spec);
        // The hash is the translation's: comments do not rebuild, and the equal hand-written
        // spec names the same build.
        let commented = format!("# tools\n{DOCKERFILE}CMD [\"sh\"]\n");
        let (other, _) = EnvSpec::from_dockerfile("dfx", &commented).unwrap();
        assert_eq!(other.content_hash(), spec.content_hash());
        let plain = EnvSpec::parse(
            "name = \"dfx\"\npackages = [\"jq\"]\nsetup = [\"echo built > /etc/conductor-dockerfile-test\"]",
            false,
        )
        .unwrap();
        assert_eq!(plain.content_hash(), spec.content_hash());
        let (changed, _) =
            EnvSpec::from_dockerfile("dfx", &DOCKERFILE.replace("jq", "curl")).unwrap();
        assert_ne!(changed.content_hash(), spec.content_hash());
        // A spec whose fields do not match its dockerfile is refused by validate.
        let mut tampered = spec.clone();
        tampered.packages.push("curl".into());
        assert_eq!(tampered.validate().unwrap_err().to_string(), "invalid environment spec dfx: base, packages and setup differ from the dockerfile's translation; give either dockerfile or base, packages and setup");
        assert_eq!(
            EnvSpec::from_dockerfile("dfx", "FROM debian:12\nCOPY . .").unwrap_err().to_string(),
            "environment dfx: Dockerfile line 2: COPY is not supported yet: there is no build context; fetch files in a RUN step or put them in the task's workspace"
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
        assert!(
            err("name = \"x\"\ndockerfile = \"FROM debian:12 AS a\\nFROM debian:12\"")
                .contains("a second FROM (multi-stage build)")
        );
        // An image Debian does not make offline is an image base.
        let image =
            EnvSpec::parse("name = \"x\"\ndockerfile = \"FROM python:3.12\"", false).unwrap();
        assert_eq!(image.base.image.as_deref(), Some("python:3.12"));
        assert_eq!(
            err("name = \"x\"\npackages = [\"jq\"]\ndockerfile = \"FROM debian:12\""),
            "invalid environment spec x: give either dockerfile or base, packages and setup, not both"
        );
        assert_eq!(
            err("name = \"x\"\n[base]\nimage = \"-v /:/h python\""),
            "invalid environment spec x: base.image \"-v /:/h python\" is not an image reference (expected [REGISTRY/]NAME[:TAG][@DIGEST])"
        );
        assert!(err("name = \"x\"\nunknown = 1").contains("unknown field `unknown`"));
        assert!(EnvSpec::parse(
            "name = \"x\"\npackages = [\"g++\", \"libc6=2.36-9\"]",
            false
        )
        .is_ok());
    }
}
