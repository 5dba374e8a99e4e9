//! Environments defined in a task request (seed 001's `environments: [{name, dockerfile}]`):
//! the Dockerfile translated ([`crate::dockerfile`]) and the build it names, decided without
//! I/O ([`define`]).
//!
//! The name in the request is the task's own name for the environment, not the build's: a
//! definition is built as `inline-<content hash>`, so every definition that translates alike
//! (whatever it is called, however it is laid out) shares one build, and two requests that
//! give the same name to different Dockerfiles never overwrite each other's build. A name that
//! is an existing environment's (a preset, a built custom environment) is accepted only when
//! the content is the same, and then names that environment's build; otherwise it is a
//! conflict, so a task never silently gets something other than what the name means on the
//! server.

use crate::spec::{validate_name, EnvSpec};
use crate::EnvError;

/// The name every inline build starts with (reserved: a definition may not use it).
pub const INLINE_PREFIX: &str = "inline-";
/// Longest Dockerfile text accepted in a request, in bytes.
pub const MAX_DOCKERFILE_BYTES: usize = 64 * 1024;

/// A definition, translated: the spec to build and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defined {
    /// The spec of the build: named `inline-<hash>`, or the existing environment's own spec
    /// when the definition has its content.
    pub spec: EnvSpec,
    /// What the translation ignored or does differently from Docker.
    pub notes: Vec<String>,
}

impl Defined {
    /// The name the environment is built (and cached) as.
    pub fn build_name(&self) -> &str {
        &self.spec.name
    }
}

/// Why a definition cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InlineError {
    /// The name, the Dockerfile or what it installs is invalid or outside the subset (the
    /// message names the line and what is supported).
    #[error(transparent)]
    Invalid(#[from] EnvError),
    /// The name is reserved for the server's own environments.
    #[error("environment name {name:?} is reserved ({why}): give the definition another name")]
    Reserved {
        /// The name.
        name: String,
        /// What it is reserved for.
        why: &'static str,
    },
    /// The name is an existing environment's, with other content.
    #[error("environment {name:?} already exists on the server ({kind}, content {existing}) and this definition has other content ({defined}): give the definition another name, or name {name:?} in `environment` without defining it")]
    Conflict {
        /// The name.
        name: String,
        /// `a preset` or `a custom environment`.
        kind: &'static str,
        /// The existing spec's content hash.
        existing: String,
        /// The definition's content hash.
        defined: String,
    },
}

/// An existing environment a definition's name may clash with.
#[derive(Debug, Clone, Copy)]
pub struct Existing<'a> {
    /// Its current spec.
    pub spec: &'a EnvSpec,
    /// Whether it is a preset (for the message).
    pub preset: bool,
}

/// Translates the definition `name` = `dockerfile` and decides its build. `existing` is the
/// environment already called `name`, if any (the caller looks it up). Pure.
pub fn define(
    name: &str,
    dockerfile: &str,
    existing: Option<Existing<'_>>,
) -> Result<Defined, InlineError> {
    validate_name(name)?;
    if name.starts_with(INLINE_PREFIX) {
        return Err(InlineError::Reserved {
            name: name.to_owned(),
            why: "inline-… names the builds of request-defined environments",
        });
    }
    if name.starts_with("service-") {
        return Err(InlineError::Reserved {
            name: name.to_owned(),
            why: "service-… names the service sidecars' builds",
        });
    }
    if dockerfile.len() > MAX_DOCKERFILE_BYTES {
        return Err(InlineError::Invalid(EnvError::InvalidSpec {
            source_name: name.to_owned(),
            reason: format!(
                "the dockerfile is {} bytes; at most {MAX_DOCKERFILE_BYTES} are accepted",
                dockerfile.len()
            ),
        }));
    }
    let (spec, notes) = EnvSpec::from_dockerfile(name, dockerfile)?;
    let hash = spec.content_hash();
    if let Some(existing) = existing {
        let existing_hash = existing.spec.content_hash();
        if existing_hash != hash {
            return Err(InlineError::Conflict {
                name: name.to_owned(),
                kind: if existing.preset {
                    "a preset"
                } else {
                    "a custom environment"
                },
                existing: existing_hash,
                defined: hash,
            });
        }
        return Ok(Defined {
            spec: existing.spec.clone(),
            notes,
        });
    }
    let description = format!("{name}, defined in a task request");
    let spec = EnvSpec {
        name: format!("{INLINE_PREFIX}{hash}"),
        description,
        ..spec
    };
    Ok(Defined { spec, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset;

    const JQ: &str = "FROM debian:bookworm\nRUN apt-get update && apt-get install -y jq\nRUN echo ok > /etc/marker\n";

    #[test]
    fn definitions_are_keyed_by_their_translation() {
        let defined = define("custom-env", JQ, None).unwrap();
        let hash = defined.spec.content_hash();
        assert_eq!(defined.build_name(), format!("inline-{hash}"));
        assert_eq!(
            defined.spec,
            EnvSpec {
                name: format!("inline-{hash}"),
                description: "custom-env, defined in a task request".into(),
                base: crate::Base::default(),
                packages: vec!["jq".into()],
                setup: vec!["echo ok > /etc/marker".into()],
                dockerfile: Some(JQ.into()),
            }
        );
        defined.spec.validate().unwrap();
        // Another name, comments and ignored instructions: the same build.
        let other = define(
            "tools",
            &format!("# jq and a marker\n{JQ}CMD [\"bash\"]\n"),
            None,
        )
        .unwrap();
        assert_eq!(other.build_name(), defined.build_name());
        assert_eq!(
            other.notes,
            [
                "line 3: packages are installed without recommended packages (as with --no-install-recommends)",
                "line 5: CMD is ignored: a task gives its own command, ports and volumes"
            ]
        );
        // Other content: another build.
        let changed = define("custom-env", &JQ.replace("jq", "curl"), None).unwrap();
        assert_ne!(changed.build_name(), defined.build_name());
    }

    #[test]
    fn a_name_that_exists_must_have_its_content() {
        let minimal = preset("minimal").unwrap();
        let existing = Existing {
            spec: &minimal,
            preset: true,
        };
        let same = "FROM debian:bookworm\nRUN apt-get update && apt-get install -y git curl\n";
        let defined = define("minimal", same, Some(existing)).unwrap();
        assert_eq!(defined.spec, minimal);
        assert_eq!(defined.build_name(), "minimal");
        let error = define("minimal", JQ, Some(existing)).unwrap_err();
        let jq_hash = define("x", JQ, None).unwrap().spec.content_hash();
        assert_eq!(
            error.to_string(),
            format!("environment \"minimal\" already exists on the server (a preset, content {}) and this definition has other content ({jq_hash}): give the definition another name, or name \"minimal\" in `environment` without defining it", minimal.content_hash())
        );
        assert!(matches!(error, InlineError::Conflict { .. }));
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        let err = |name: &str, text: &str| define(name, text, None).unwrap_err().to_string();
        assert_eq!(
            err("custom-env", "FROM debian:bookworm\nCOPY . /src\n"),
            "environment custom-env: Dockerfile line 2: COPY is not supported yet: there is no build context; fetch files in a RUN step or put them in the task's workspace"
        );
        let flagged = err("custom-env", "FROM --platform=linux/amd64 ubuntu:22.04\n");
        assert!(
            flagged.starts_with("environment custom-env: Dockerfile line 1: FROM --platform")
                && flagged.contains("FROM takes no flags here"),
            "{flagged}"
        );
        // Another image is an image base (pulled where a registry is reachable).
        let ubuntu = define("custom-env", "FROM ubuntu:22.04\n", None).unwrap();
        assert_eq!(ubuntu.spec.base.image.as_deref(), Some("ubuntu:22.04"));
        assert_eq!(
            err("Custom", JQ),
            "invalid environment name \"Custom\": use 1 to 64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit"
        );
        assert_eq!(
            err("inline-abc", JQ),
            "environment name \"inline-abc\" is reserved (inline-… names the builds of request-defined environments): give the definition another name"
        );
        assert!(err("service-x", JQ).contains("is reserved"));
        let huge = format!(
            "FROM debian:bookworm\n{}",
            "#\n".repeat(MAX_DOCKERFILE_BYTES)
        );
        assert_eq!(
            err("big", &huge),
            format!(
                "invalid environment spec big: the dockerfile is {} bytes; at most 65536 are accepted",
                huge.len()
            )
        );
    }
}
