//! The cache of built environments under `envs/`: which specs exist (presets and saved custom
//! specs), which are built, their manifests, and removal.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::command::remove_build_dir;
use crate::presets::{preset, PRESET_NAMES};
use crate::spec::{validate_name, EnvSpec};
use crate::EnvError;

/// The record of one finished build, written last into the build directory before it is
/// renamed into place: a directory with a manifest is a complete build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The environment's name.
    pub name: String,
    /// The spec's content hash.
    pub hash: String,
    /// The spec built.
    pub spec: EnvSpec,
    /// The base's hash.
    pub base_hash: String,
    /// The Debian mirror used.
    pub mirror: String,
    /// Installed packages and versions (`dpkg-query`), sorted by name.
    pub packages: Vec<(String, String)>,
    /// Bytes used by the root filesystem.
    pub size_bytes: u64,
    /// When the build finished, in milliseconds since the Unix epoch.
    pub built_at_ms: u64,
    /// How long the build took, in milliseconds (base included when it was built too).
    pub build_ms: u64,
}

impl Manifest {
    /// The image tag a container engine knows this build by.
    pub fn image_tag(&self) -> String {
        format!("conductor-env/{}:{}", self.name, self.hash)
    }
}

/// A complete build on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltEnv {
    /// `envs/<name>/<hash>`.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl BuiltEnv {
    /// The root filesystem: the namespace executor's `--rootfs`, the image's contents.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

/// One environment as `conductor env list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvStatus {
    /// The current spec.
    pub spec: EnvSpec,
    /// Whether it is a preset.
    pub preset: bool,
    /// The build of the current spec, when there is one.
    pub built: Option<BuiltEnv>,
}

/// The `envs/` directory.
#[derive(Debug, Clone)]
pub struct EnvStore {
    dir: PathBuf,
}

impl EnvStore {
    /// The store at `dir` (normally `$CONDUCTOR_HOME/envs`); nothing is created yet.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `envs/<name>`.
    pub fn env_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The current spec of `name`: a saved custom spec wins over the preset of that name.
    pub fn resolve(&self, name: &str) -> Result<EnvSpec, EnvError> {
        validate_name(name)?;
        let saved = self.env_dir(name).join("spec.json");
        match std::fs::read_to_string(&saved) {
            Ok(text) => {
                let spec: EnvSpec =
                    serde_json::from_str(&text).map_err(|e| EnvError::InvalidSpec {
                        source_name: saved.display().to_string(),
                        reason: e.to_string(),
                    })?;
                let spec = spec.with_dockerfile_translated(false)?;
                spec.validate()?;
                return Ok(spec);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EnvError::io(format!("reading {}", saved.display()), e)),
        }
        preset(name).ok_or_else(|| EnvError::Unknown {
            name: name.to_owned(),
            presets: PRESET_NAMES.join(", "),
        })
    }

    /// Saves a custom spec so `resolve` finds it by name (presets and services are not saved).
    pub fn save_custom(&self, spec: &EnvSpec) -> Result<(), EnvError> {
        let service = spec
            .name
            .strip_prefix("service-")
            .and_then(crate::services::service);
        if preset(&spec.name).as_ref() == Some(spec)
            || service.map(|s| s.env).as_ref() == Some(spec)
        {
            return Ok(());
        }
        let dir = self.env_dir(&spec.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| EnvError::io(format!("creating {}", dir.display()), e))?;
        let text = serde_json::to_string_pretty(spec)
            .map_err(|e| EnvError::io("encoding the spec", std::io::Error::other(e)))?;
        write_atomic(&dir.join("spec.json"), text.as_bytes())
    }

    /// The build of `spec`'s current content, if complete.
    pub fn built(&self, spec: &EnvSpec) -> Result<Option<BuiltEnv>, EnvError> {
        let dir = self.env_dir(&spec.name).join(spec.content_hash());
        let path = dir.join("manifest.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(EnvError::io(format!("reading {}", path.display()), e)),
        };
        let manifest = serde_json::from_str(&text).map_err(|e| EnvError::InvalidSpec {
            source_name: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some(BuiltEnv { dir, manifest }))
    }

    /// The build of `name`'s current spec, or why there is none.
    pub fn find_built(&self, name: &str) -> Result<BuiltEnv, EnvError> {
        let spec = self.resolve(name)?;
        self.built(&spec)?.ok_or_else(|| EnvError::NotBuilt {
            name: spec.name.clone(),
            hash: spec.content_hash(),
        })
    }

    /// The names of the presets, then of the custom environments (those with a saved spec;
    /// service builds have none), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = PRESET_NAMES.iter().map(|s| (*s).to_owned()).collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            let mut custom: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.') && !names.contains(n))
                .filter(|n| self.env_dir(n).join("spec.json").is_file())
                .collect();
            custom.sort();
            names.extend(custom);
        }
        names
    }

    /// The presets, then custom environments, each with its build if any.
    pub fn list(&self) -> Result<Vec<EnvStatus>, EnvError> {
        self.names()
            .iter()
            .map(|name| {
                let spec = self.resolve(name)?;
                let built = self.built(&spec)?;
                Ok(EnvStatus {
                    preset: preset(name).is_some(),
                    spec,
                    built,
                })
            })
            .collect()
    }

    /// Removes every build of `name` and its saved spec. Returns whether anything was there.
    pub fn remove(&self, name: &str) -> Result<bool, EnvError> {
        validate_name(name)?;
        let dir = self.env_dir(name);
        if !dir.exists() {
            return Ok(false);
        }
        remove_build_dir(&dir)?;
        Ok(true)
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EnvError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .map_err(|e| EnvError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| EnvError::io(format!("renaming {} into place", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(spec: &EnvSpec) -> Manifest {
        Manifest {
            name: spec.name.clone(),
            hash: spec.content_hash(),
            spec: spec.clone(),
            base_hash: spec.base.hash(),
            mirror: "http://mirror.example/debian".into(),
            packages: vec![("bash".into(), "5.2".into())],
            size_bytes: 1,
            built_at_ms: 2,
            build_ms: 3,
        }
    }

    #[test]
    fn only_a_directory_with_a_manifest_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let store = EnvStore::new(dir.path());
        let spec = store.resolve("minimal").unwrap();
        assert_eq!(store.built(&spec).unwrap(), None);
        let build = store.env_dir("minimal").join(spec.content_hash());
        std::fs::create_dir_all(build.join("rootfs")).unwrap();
        assert_eq!(store.built(&spec).unwrap(), None);
        assert_eq!(
            store.find_built("minimal").unwrap_err().to_string(),
            format!(
                "environment minimal ({}) is not built: run `conductor env build minimal`",
                spec.content_hash()
            )
        );
        let m = manifest(&spec);
        std::fs::write(
            build.join("manifest.json"),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
        let built = store.find_built("minimal").unwrap();
        assert_eq!(built.manifest, m);
        assert_eq!(built.rootfs(), build.join("rootfs"));
        assert_eq!(
            m.image_tag(),
            format!("conductor-env/minimal:{}", spec.content_hash())
        );
    }

    #[test]
    fn custom_specs_are_saved_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = EnvStore::new(dir.path());
        let spec = EnvSpec::parse("name = \"mine\"\npackages = [\"jq\"]", false).unwrap();
        store.save_custom(&spec).unwrap();
        assert_eq!(store.resolve("mine").unwrap(), spec);
        let names: Vec<_> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|s| (s.spec.name, s.preset, s.built.is_some()))
            .collect();
        assert_eq!(names.len(), PRESET_NAMES.len() + 1);
        assert_eq!(names.last(), Some(&("mine".to_owned(), false, false)));
        let (from_dockerfile, _) =
            EnvSpec::from_dockerfile("df", "FROM debian:12\nRUN apt-get install -y jq").unwrap();
        store.save_custom(&from_dockerfile).unwrap();
        assert_eq!(store.resolve("df").unwrap(), from_dockerfile);
        assert!(store.remove("df").unwrap());
        assert!(store.remove("mine").unwrap());
        assert!(!store.remove("mine").unwrap());
        assert!(matches!(
            store.resolve("mine"),
            Err(EnvError::Unknown { .. })
        ));
    }
}
