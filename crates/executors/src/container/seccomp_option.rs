//! How the seccomp profile ([`super::seccomp`]) reaches the engine: Docker takes the profile's
//! JSON in the `seccomp=` security option; Podman's compatible API (4.3) opens the option's value
//! as a path, so for Podman the profile is written to `seccomp_dir/profile-<hash>.json` (before
//! each create, when missing) and the option names that file.

use std::io;
use std::path::{Path, PathBuf};

use conductor_core::ExecutorError;

use super::engine::EngineKind;
use super::seccomp;

/// How the seccomp profile reaches the engine.
#[derive(Debug)]
pub(crate) struct SeccompOption {
    /// What follows `seccomp=`: the profile, or the path of the file holding it.
    pub(crate) value: String,
    /// The file to write (path and contents) when `value` is its path.
    file: Option<(PathBuf, String)>,
}

impl SeccompOption {
    /// Docker takes the profile itself, Podman a path (see the module docs).
    pub(crate) fn new(engine: EngineKind, dir: &Path) -> Result<Self, serde_json::Error> {
        let profile = seccomp::profile_json()?;
        Ok(match engine {
            EngineKind::Docker => Self {
                value: profile,
                file: None,
            },
            EngineKind::Podman => {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                profile.hash(&mut hasher);
                let path = dir.join(format!("profile-{:016x}.json", hasher.finish()));
                Self {
                    value: path.display().to_string(),
                    file: Some((path, profile)),
                }
            }
        })
    }

    /// Writes the file the option names, unless it is there (written whole: a temporary file of
    /// this call's own renamed into place, so a concurrent create never reads half of it).
    pub(crate) async fn write(&self) -> Result<(), ExecutorError> {
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let Some((path, contents)) = self.file.clone() else {
            return Ok(());
        };
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        let context = format!("writing the seccomp profile {}", path.display());
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let temporary = path.with_extension(format!("json.{}-{write}", std::process::id()));
            std::fs::write(&temporary, contents)?;
            std::fs::rename(&temporary, &path)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|written| written)
        .map_err(|e| ExecutorError::io(context, e))
    }
}
