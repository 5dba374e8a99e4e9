//! Environments: declarative specs ([`EnvSpec`]: a Debian base, packages, setup steps, or
//! Dockerfile text in the subset [`dockerfile`] translates into them), the presets, and the builder that turns a spec into a root filesystem with no container
//! registry — `debootstrap` for the base (cached and shared by every spec with the same base),
//! `apt-get` and the setup steps in a chroot — cached under `$CONDUCTOR_HOME/envs`:
//!
//! ```text
//! envs/.base/<base hash>/{rootfs,manifest.json}     one debootstrap per base
//! envs/<name>/<spec hash>/{rootfs,manifest.json}    one build per spec content
//! envs/<name>/spec.json                             the spec of a custom (non-preset) env
//! envs/inline-<hash>/…                              an env a task defined in its request
//! ```
//!
//! A build is made in a `.build-*` directory and renamed into place with its manifest, so a
//! crash never leaves a half environment that looks built. The same rootfs is the namespace
//! executor's `--rootfs` and, imported by a container engine, the image
//! `conductor-env/<name>:<hash>` (the import lives with the container executors).
//!
//! Service sidecars (`postgres`, `redis`) are environments too, named `service-<name>`, with
//! what runs them ([`ServiceSpec`]); their images are `conductor-service/<name>:<hash>`.

mod build;
mod command;
pub mod dockerfile;
mod image;
pub mod inline;
mod mirror;
mod presets;
mod services;
mod spec;
mod store;

use std::path::PathBuf;

pub use build::{BuildConfig, BuildEvent, Builder};
pub use inline::{define as define_inline, Defined, Existing, InlineError, INLINE_PREFIX};
pub use mirror::from_apt_sources;
pub use presets::{preset, presets, PRESET_NAMES};
pub use services::{
    resolve as resolve_services, service, services, ResolvedService, ServiceError, ServiceSpec,
    POSTGRES_PASSWORD, SERVICE_NAMES,
};
pub use spec::{validate_name, Base, EnvSpec, BUILDER_VERSION};
pub use store::{BuiltEnv, EnvStatus, EnvStore, Manifest};

/// Why an environment could not be read, built or found.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A spec file or text that does not parse or validate.
    #[error("invalid environment spec {source_name}: {reason}")]
    InvalidSpec {
        /// The file or field.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A name that is not allowed.
    #[error("invalid environment name {0:?}: use 1 to 64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit")]
    InvalidName(String),
    /// A package name that is not a Debian package name.
    #[error("invalid package name {0:?}: expected a Debian package name such as python3-pip (optionally =VERSION or /SUITE)")]
    InvalidPackage(String),
    /// Dockerfile text outside the supported subset.
    #[error("environment {name}: {error}")]
    Dockerfile {
        /// The environment.
        name: String,
        /// What is wrong, with the line (shown in the message, so not a `source`).
        error: dockerfile::DockerfileError,
    },
    /// Something the builder does not do yet.
    #[error("{what} is not supported yet")]
    NotSupported {
        /// What was asked for.
        what: String,
    },
    /// Neither a preset nor a custom environment of that name exists.
    #[error("unknown environment {name:?}: use one of the presets ({presets}) or build a spec file with `conductor env build --file SPEC`")]
    Unknown {
        /// The name.
        name: String,
        /// The preset names, comma-separated.
        presets: String,
    },
    /// The environment exists but its current spec has not been built.
    #[error("environment {name} ({hash}) is not built: run `conductor env build {name}`")]
    NotBuilt {
        /// The name.
        name: String,
        /// The current spec's hash.
        hash: String,
    },
    /// A program the builder needs is missing.
    #[error("{program} is not installed: {hint}")]
    MissingTool {
        /// The program.
        program: &'static str,
        /// How to get it.
        hint: &'static str,
    },
    /// No Debian mirror for the suite in the machine's apt sources and none given.
    #[error(
        "no Debian mirror for suite {suite} in /etc/apt/sources.list*: set CONDUCTOR_DEBIAN_MIRROR"
    )]
    NoMirror {
        /// The suite.
        suite: String,
    },
    /// A base image is in neither engine and could not be pulled.
    #[error("base image {image}: not in docker or podman, and pulling it failed ({reason}); with no registry reachable, build from Debian (remove base.image) or load the image into docker or podman first")]
    BaseImage {
        /// The reference.
        image: String,
        /// What each engine said.
        reason: String,
    },
    /// A build step's command failed.
    #[error("{step} failed ({status}); last output:\n{tail}")]
    StepFailed {
        /// The step.
        step: String,
        /// How the command ended.
        status: String,
        /// Its last lines of output.
        tail: String,
    },
    /// Another process holds the build lock too long, or a mount could not be cleaned up.
    #[error("{0}")]
    Busy(String),
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl EnvError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// `<home>/envs`: where builds are cached.
pub fn envs_dir(conductor_home: &std::path::Path) -> PathBuf {
    conductor_home.join("envs")
}
