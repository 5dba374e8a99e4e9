//! The server's [`EnvironmentPort`] ([`EnvPort`]): environments a task defines in its request
//! (translated at submission, built before the task's first command, keyed by content so an
//! unchanged definition is never rebuilt) and environments built after the server started, each
//! on the executor its name's config says, made by the same [`Factory`] as the server's own.

use std::sync::Arc;

use async_trait::async_trait;
use conductor_core::{Executor, DEFAULT_ENVIRONMENT};
use conductor_envs::{
    define_inline, BuildEvent, Builder, EnvError, EnvSpec, EnvStore, Existing, InlineError,
    INLINE_PREFIX,
};
use conductor_server::config::Config;
use conductor_server::{DefineError, EnvironmentPort, Progress};
use conductor_types::{EnvironmentDefinition, InlineEnvironment};

use super::{built_envs, Factory};

/// The server's [`EnvironmentPort`]: `conductor-envs` builds, the [`Factory`] makes the
/// executors (sharing the namespace executor and the engines with the server's own
/// environments).
pub struct EnvPort {
    pub(super) config: Config,
    pub(super) builder: Builder,
    pub(super) factory: tokio::sync::Mutex<Factory>,
}

impl std::fmt::Debug for EnvPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvPort")
            .field("envs", &self.builder.store().dir())
            .finish_non_exhaustive()
    }
}

impl EnvPort {
    fn store(&self) -> &EnvStore {
        self.builder.store()
    }

    /// The environment called `name` now, and whether it is a preset; `None` when there is none.
    fn existing(&self, name: &str) -> Result<Option<(EnvSpec, bool)>, EnvError> {
        match self.store().resolve(name) {
            Ok(spec) => {
                let preset = conductor_envs::preset(name).as_ref() == Some(&spec);
                Ok(Some((spec, preset)))
            }
            Err(EnvError::Unknown { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The spec `inline` builds: its translation (named by its content), or the existing
    /// environment of its name, which must still have the definition's content.
    fn spec_of(&self, inline: &InlineEnvironment) -> Result<EnvSpec, String> {
        let error = |e: InlineError| format!("environment {}: {e}", inline.name);
        if inline.build.starts_with(INLINE_PREFIX) {
            return define_inline(&inline.name, &inline.dockerfile, None)
                .map(|defined| defined.spec)
                .map_err(error);
        }
        let existing = self.existing(&inline.build).map_err(|e| e.to_string())?;
        let existing = existing.as_ref().map(|(spec, preset)| Existing {
            spec,
            preset: *preset,
        });
        define_inline(&inline.name, &inline.dockerfile, existing)
            .map(|defined| defined.spec)
            .map_err(error)
    }

    async fn executor_for(&self, name: &str, spec: &EnvSpec) -> Arc<dyn Executor> {
        let settings = self.config.environment(name);
        self.factory.lock().await.configured(&settings, spec).await
    }
}

#[async_trait]
impl EnvironmentPort for EnvPort {
    fn define(&self, definition: &EnvironmentDefinition) -> Result<InlineEnvironment, DefineError> {
        let existing = match conductor_envs::validate_name(&definition.name) {
            Ok(()) => self.existing(&definition.name).map_err(|e| {
                DefineError::Conflict(format!(
                    "environment {:?} exists and cannot be read: {e}",
                    definition.name
                ))
            })?,
            // `define_inline` says what is wrong with it.
            Err(_) => None,
        };
        let existing = existing.as_ref().map(|(spec, preset)| Existing {
            spec,
            preset: *preset,
        });
        match define_inline(&definition.name, &definition.dockerfile, existing) {
            Ok(defined) => Ok(InlineEnvironment {
                name: definition.name.clone(),
                dockerfile: definition.dockerfile.clone(),
                build: defined.spec.name,
            }),
            Err(InlineError::Invalid(error)) => Err(DefineError::Invalid(error.to_string())),
            Err(error @ (InlineError::Reserved { .. } | InlineError::Conflict { .. })) => {
                Err(DefineError::Conflict(error.to_string()))
            }
        }
    }

    async fn find(&self, name: &str) -> Result<Option<Arc<dyn Executor>>, String> {
        if name == DEFAULT_ENVIRONMENT || conductor_envs::validate_name(name).is_err() {
            return Ok(None);
        }
        let store = self.store().clone();
        let wanted = name.to_owned();
        let built = tokio::task::spawn_blocking(move || {
            store.resolve(&wanted).and_then(|spec| store.built(&spec))
        })
        .await
        .map_err(|e| e.to_string())?;
        match built {
            Ok(Some(built)) => Ok(Some(self.executor_for(name, &built.manifest.spec).await)),
            Ok(None) | Err(EnvError::Unknown { .. }) => Ok(None),
            // Left out as at the start (`built_envs`): the task is told what exists.
            Err(error) => {
                tracing::warn!(environment = name, %error, "an environment is left out");
                Ok(None)
            }
        }
    }

    async fn executor(&self, inline: &InlineEnvironment) -> Result<Arc<dyn Executor>, String> {
        let spec = self.spec_of(inline)?;
        Ok(self.executor_for(&inline.name, &spec).await)
    }

    async fn build(&self, inline: &InlineEnvironment, progress: Progress) -> Result<(), String> {
        let spec = self.spec_of(inline)?;
        let builder = self.builder.clone();
        let name = inline.name.clone();
        tokio::task::spawn_blocking(move || {
            builder
                .build(&spec, &mut |event| progress(describe(&name, event)))
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the build stopped: {e}"))?
    }

    async fn built_names(&self) -> Vec<String> {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || {
            built_envs(&store)
                .into_iter()
                .map(|built| built.manifest.name)
                .filter(|name| !name.starts_with(INLINE_PREFIX))
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}

/// One line of a build's progress, for the task's log.
fn describe(name: &str, event: BuildEvent) -> String {
    match event {
        BuildEvent::Cached { name: build, hash } => {
            format!("environment {name}: using the cached build {build} ({hash})")
        }
        BuildEvent::Step {
            index,
            total,
            title,
        } => format!("environment {name}: step {index}/{total}: {title}"),
        BuildEvent::Output(line) => format!("  {line}"),
        BuildEvent::Built {
            name: build,
            hash,
            duration_ms,
        } => format!(
            "environment {name}: built {build} ({hash}) in {:.1} s",
            duration_ms as f64 / 1000.0
        ),
    }
}
