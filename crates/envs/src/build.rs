//! The builder: spec → root filesystem, offline from any container registry.
//!
//! 1. The base (`debootstrap --variant=V --include=… SUITE`) is built once per base hash under
//!    `envs/.base/` and shared: each environment starts from a copy (`cp -a --reflink=auto`,
//!    so copy-on-write file systems share the blocks).
//! 2. Packages are installed with `apt-get` chrooted into the copy, then the setup steps run
//!    there with `/bin/sh -c`. Every chroot command runs in a private mount namespace with its
//!    own `/proc`, so no mount outlives it, even when the build is killed.
//! 3. The manifest (spec, installed package versions, size) is written last, and the build
//!    directory is renamed into place: a crash leaves only a `.build-*` directory, which the
//!    next build of that name removes. A per-name `flock` keeps two builds from racing.
//!
//! Builds run as root (debootstrap, chroot, mount). They are blocking: call them from a thread.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use crate::command::{clean_command, in_chroot, in_private_mounts, remove_build_dir, run};
use crate::spec::{Base, EnvSpec};
use crate::store::{write_atomic, BuiltEnv, EnvStore, Manifest};
use crate::{image, mirror, EnvError};

/// Where the builder gets its Debian packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// The Debian mirror; `None` reads the one apt uses from [`BuildConfig::etc_apt`].
    pub mirror: Option<String>,
    /// The apt configuration directory read for the mirror (normally `/etc/apt`).
    pub etc_apt: PathBuf,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            mirror: std::env::var("CONDUCTOR_DEBIAN_MIRROR")
                .ok()
                .filter(|m| !m.is_empty()),
            etc_apt: PathBuf::from("/etc/apt"),
        }
    }
}

/// What a build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// The spec's current content is already built; nothing to do.
    Cached {
        /// The environment.
        name: String,
        /// Its hash.
        hash: String,
    },
    /// A step begins (`index` counts from 1).
    Step {
        /// Which step.
        index: usize,
        /// How many steps this build has.
        total: usize,
        /// What it does.
        title: String,
    },
    /// One line of the current step's output.
    Output(String),
    /// The build is complete and in place.
    Built {
        /// The environment.
        name: String,
        /// Its hash.
        hash: String,
        /// How long it took.
        duration_ms: u64,
    },
}

/// Builds environments into an [`EnvStore`].
#[derive(Debug, Clone)]
pub struct Builder {
    store: EnvStore,
    config: BuildConfig,
}

/// Installed as `/usr/sbin/policy-rc.d` during a build: packages start no services.
const POLICY_RC_D: &str =
    "#!/bin/sh\n# No service starts while an environment is built.\nexit 101\n";

impl Builder {
    /// A builder writing into `store`.
    pub fn new(store: EnvStore, config: BuildConfig) -> Self {
        Self { store, config }
    }

    /// The store.
    pub fn store(&self) -> &EnvStore {
        &self.store
    }

    /// Builds `spec` unless its current content is built already; reports progress through
    /// `progress`. Custom specs are saved so they can be found by name afterwards.
    pub fn build(
        &self,
        spec: &EnvSpec,
        progress: &mut dyn FnMut(BuildEvent),
    ) -> Result<BuiltEnv, EnvError> {
        spec.validate()?;
        let hash = spec.content_hash();
        if let Some(built) = self.store.built(spec)? {
            progress(BuildEvent::Cached {
                name: spec.name.clone(),
                hash,
            });
            return Ok(built);
        }
        let started = Instant::now();
        let env_dir = self.store.env_dir(&spec.name);
        create_dir(&env_dir)?;
        let _lock = lock(&env_dir.join(".lock"))?;
        // Someone else may have finished it while we waited for the lock.
        if let Some(built) = self.store.built(spec)? {
            progress(BuildEvent::Cached {
                name: spec.name.clone(),
                hash,
            });
            return Ok(built);
        }
        self.store.save_custom(spec)?;
        remove_stale_builds(&env_dir)?;
        let mirror = match &spec.base.image {
            Some(image) => format!("image {image}"),
            None => self.mirror(&spec.base.suite)?,
        };
        let base_dir = self.base_dir(&spec.base);
        let base_built = base_dir.join("manifest.json").is_file();

        let mut steps = Steps::new(progress);
        let setup_titles: Vec<String> = spec
            .setup
            .iter()
            .enumerate()
            .map(|(i, step)| format!("setup {}/{}: {step}", i + 1, spec.setup.len()))
            .collect();
        steps.total = 2
            + usize::from(!base_built)
            + usize::from(!spec.packages.is_empty())
            + setup_titles.len();

        if !base_built {
            steps.next(match &spec.base.image {
                Some(image) => format!("exporting the image {image}"),
                None => format!(
                    "debootstrap {} ({}, with {})",
                    spec.base.suite,
                    spec.base.variant,
                    spec.base.include.join(" ")
                ),
            });
            self.build_base(&spec.base, &mirror, &mut steps)?;
        }

        let build = env_dir.join(format!(".build-{hash}-{}", std::process::id()));
        create_dir(&build)?;
        let rootfs = build.join("rootfs");
        steps.next(format!("copying the base {}", spec.base.hash()));
        let mut cp = clean_command("cp");
        cp.arg("-a")
            .arg("--reflink=auto")
            .arg(base_dir.join("rootfs"))
            .arg(&rootfs);
        steps.run("copying the base", cp)?;
        prepare_chroot(&rootfs)?;
        // An image base may have no apt (or no dpkg): then it takes no packages.
        let has_apt = rootfs.join("usr/bin/apt-get").exists();
        if !spec.packages.is_empty() && !has_apt {
            return Err(EnvError::InvalidSpec {
                source_name: spec.name.clone(),
                reason: format!(
                    "packages need apt-get, which the base image {} does not have: install them in setup steps with its own package manager",
                    spec.base.image.as_deref().unwrap_or("?")
                ),
            });
        }

        if !spec.packages.is_empty() {
            steps.next(format!(
                "apt-get install {} package(s): {}",
                spec.packages.len(),
                spec.packages.join(" ")
            ));
            steps.run(
                "apt-get update",
                in_chroot(&rootfs, &["apt-get", "update", "-q"]),
            )?;
            let mut install = vec![
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "--",
            ];
            install.extend(spec.packages.iter().map(String::as_str));
            steps.run("apt-get install", in_chroot(&rootfs, &install))?;
        }
        let trust = (!spec.setup.is_empty())
            .then(|| BuildTrust::install(&rootfs))
            .transpose()?
            .flatten();
        for (step, title) in spec.setup.iter().zip(setup_titles) {
            steps.next(title.clone());
            let mut command = in_chroot(&rootfs, &["/bin/sh", "-c", step]);
            if let Some(trust) = &trust {
                trust.apply(&mut command);
            }
            steps.run(&title, command)?;
        }
        if let Some(trust) = trust {
            trust.remove()?;
        }

        steps.next("recording the manifest".to_owned());
        if has_apt {
            steps.run("apt-get clean", in_chroot(&rootfs, &["apt-get", "clean"]))?;
        }
        let mut packages = Vec::new();
        if rootfs.join("usr/bin/dpkg-query").exists() {
            run(
                "listing installed packages",
                in_chroot(
                    &rootfs,
                    &["dpkg-query", "-W", "-f", "${Package}\\t${Version}\\n"],
                ),
                &mut |line| {
                    if let Some((name, version)) = line.split_once('\t') {
                        packages.push((name.to_owned(), version.to_owned()));
                    }
                },
            )?;
        }
        packages.sort();
        finish_chroot(&rootfs)?;
        let manifest = Manifest {
            name: spec.name.clone(),
            hash: hash.clone(),
            spec: spec.clone(),
            base_hash: spec.base.hash(),
            mirror,
            packages,
            size_bytes: dir_size(&rootfs),
            built_at_ms: now_ms(),
            build_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        write_json(&build.join("manifest.json"), &manifest)?;
        let done = env_dir.join(&hash);
        std::fs::rename(&build, &done).map_err(|e| {
            EnvError::io(
                format!("renaming {} to {}", build.display(), done.display()),
                e,
            )
        })?;
        remove_other_builds(&env_dir, &hash)?;
        steps.progress(BuildEvent::Built {
            name: spec.name.clone(),
            hash,
            duration_ms: manifest.build_ms,
        });
        Ok(BuiltEnv {
            dir: done,
            manifest,
        })
    }

    fn mirror(&self, suite: &str) -> Result<String, EnvError> {
        if let Some(mirror) = &self.config.mirror {
            return Ok(mirror.clone());
        }
        mirror::from_apt_sources(&self.config.etc_apt, suite).ok_or_else(|| EnvError::NoMirror {
            suite: suite.to_owned(),
        })
    }

    fn base_dir(&self, base: &Base) -> PathBuf {
        self.store.dir().join(".base").join(base.hash())
    }

    /// Makes the base in `.base/<hash>` (under the base lock, atomically): debootstraps it, or
    /// exports its image.
    fn build_base(&self, base: &Base, mirror: &str, steps: &mut Steps<'_>) -> Result<(), EnvError> {
        if base.image.is_none() && which("debootstrap").is_none() {
            return Err(EnvError::MissingTool {
                program: "debootstrap",
                hint: "apt-get install debootstrap (scripts/services installs it)",
            });
        }
        let bases = self.store.dir().join(".base");
        create_dir(&bases)?;
        let _lock = lock(&bases.join(".lock"))?;
        let done = self.base_dir(base);
        if done.join("manifest.json").is_file() {
            return Ok(());
        }
        remove_stale_builds(&bases)?;
        let build = bases.join(format!(".build-{}-{}", base.hash(), std::process::id()));
        create_dir(&build)?;
        let rootfs = build.join("rootfs");
        let mut image_id = None;
        if let Some(image) = &base.image {
            image_id = Some(image::export(image, &rootfs, steps)?);
        } else {
            let variant = format!("--variant={}", base.variant);
            let include = format!("--include={}", base.include.join(","));
            let rootfs_arg = rootfs.to_string_lossy();
            let mut argv = vec!["debootstrap", variant.as_str()];
            if !base.include.is_empty() {
                argv.push(include.as_str());
            }
            argv.extend([base.suite.as_str(), rootfs_arg.as_ref(), mirror]);
            steps.run("debootstrap", in_private_mounts(&argv))?;
        }
        // Downloaded .deb files are not part of the environment.
        let archives = rootfs.join("var/cache/apt/archives");
        if let Ok(entries) = std::fs::read_dir(&archives) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "deb") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        write_json(
            &build.join("manifest.json"),
            &serde_json::json!({
                "hash": base.hash(),
                "base": base,
                "mirror": mirror,
                "image_id": image_id,
                "built_at_ms": now_ms(),
            }),
        )?;
        std::fs::rename(&build, &done).map_err(|e| {
            EnvError::io(
                format!("renaming {} to {}", build.display(), done.display()),
                e,
            )
        })
    }
}

/// Numbered steps, reported through the progress callback.
pub(crate) struct Steps<'a> {
    progress: &'a mut dyn FnMut(BuildEvent),
    index: usize,
    total: usize,
}

impl<'a> Steps<'a> {
    fn new(progress: &'a mut dyn FnMut(BuildEvent)) -> Self {
        Self {
            progress,
            index: 0,
            total: 0,
        }
    }

    fn next(&mut self, title: String) {
        self.index += 1;
        self.total = self.total.max(self.index);
        (self.progress)(BuildEvent::Step {
            index: self.index,
            total: self.total,
            title,
        });
    }

    pub(crate) fn run(
        &mut self,
        step: &str,
        command: std::process::Command,
    ) -> Result<(), EnvError> {
        let progress = &mut self.progress;
        run(step, command, &mut |line| {
            progress(BuildEvent::Output(line.to_owned()))
        })
    }

    fn progress(&mut self, event: BuildEvent) {
        (self.progress)(event);
    }
}

/// Lets the chroot resolve names like the host and keeps packages from starting services.
fn prepare_chroot(rootfs: &Path) -> Result<(), EnvError> {
    let resolv = rootfs.join("etc/resolv.conf");
    let host = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    // It may be a symlink (to a path inside the rootfs or a dangling one): replace it.
    let _ = std::fs::remove_file(&resolv);
    std::fs::write(&resolv, host)
        .map_err(|e| EnvError::io(format!("writing {}", resolv.display()), e))?;
    let policy = rootfs.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, POLICY_RC_D)
        .map_err(|e| EnvError::io(format!("writing {}", policy.display()), e))?;
    set_mode(&policy, 0o755)
}

/// The host's CA bundle, present in the chroot while setup steps run (so `npm` and `pip` reach
/// their registries through a TLS-inspecting proxy the host trusts), and removed before the
/// build is recorded: the environment itself trusts only its own CA certificates.
struct BuildTrust {
    /// The bundle's path in the rootfs.
    file: PathBuf,
}

impl BuildTrust {
    /// Where the bundle is inside the chroot.
    const IN_CHROOT: &'static str = "/etc/ssl/conductor-build-ca.crt";

    /// Copies the host's bundle in; `None` when the host has none.
    fn install(rootfs: &Path) -> Result<Option<Self>, EnvError> {
        let Ok(bundle) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") else {
            return Ok(None);
        };
        let file = rootfs.join(Self::IN_CHROOT.trim_start_matches('/'));
        create_dir(file.parent().unwrap_or(rootfs))?;
        std::fs::write(&file, bundle)
            .map_err(|e| EnvError::io(format!("writing {}", file.display()), e))?;
        Ok(Some(Self { file }))
    }

    /// Points the usual TLS clients of setup steps at the bundle.
    fn apply(&self, command: &mut std::process::Command) {
        for name in [
            "NODE_EXTRA_CA_CERTS",
            "npm_config_cafile",
            "PIP_CERT",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
        ] {
            command.env(name, Self::IN_CHROOT);
        }
    }

    fn remove(self) -> Result<(), EnvError> {
        std::fs::remove_file(&self.file)
            .map_err(|e| EnvError::io(format!("removing {}", self.file.display()), e))
    }
}

/// Undoes [`prepare_chroot`]'s service policy and drops the package lists.
fn finish_chroot(rootfs: &Path) -> Result<(), EnvError> {
    let policy = rootfs.join("usr/sbin/policy-rc.d");
    std::fs::remove_file(&policy)
        .map_err(|e| EnvError::io(format!("removing {}", policy.display()), e))?;
    let lists = rootfs.join("var/lib/apt/lists");
    if let Ok(entries) = std::fs::read_dir(&lists) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), EnvError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| EnvError::io(format!("chmod {}", path.display()), e))
}

fn create_dir(dir: &Path) -> Result<(), EnvError> {
    std::fs::create_dir_all(dir).map_err(|e| EnvError::io(format!("creating {}", dir.display()), e))
}

/// Takes an exclusive `flock` on `path`, waiting for another build to finish.
fn lock(path: &Path) -> Result<Flock<File>, EnvError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| EnvError::io(format!("opening {}", path.display()), e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| EnvError::io(format!("locking {}", path.display()), errno.into()))
}

/// Removes `.build-*` directories a crashed build left in `dir` (call it under the lock).
fn remove_stale_builds(dir: &Path) -> Result<(), EnvError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".build-") {
            tracing::info!(dir = %entry.path().display(), "removing an unfinished build");
            remove_build_dir(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes the builds of older contents of the same environment.
fn remove_other_builds(env_dir: &Path, keep: &str) -> Result<(), EnvError> {
    let Ok(entries) = std::fs::read_dir(env_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_build = name.len() == keep.len() && name.chars().all(|c| c.is_ascii_hexdigit());
        if is_build && name != keep && entry.path().join("manifest.json").is_file() {
            remove_build_dir(&entry.path())?;
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), EnvError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| EnvError::io("encoding JSON", std::io::Error::other(e)))?;
    write_atomic(path, text.as_bytes())
}

/// Bytes of the regular files under `dir` (hard links once), not crossing mount points.
fn dir_size(dir: &Path) -> u64 {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != root.dev() {
                continue;
            }
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() && seen.insert(meta.ino()) {
                total += meta.len();
            }
        }
    }
    total
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|dir| Path::new(dir).join(program))
    .find(|path| path.is_file())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_builds_are_not_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let store = EnvStore::new(dir.path());
        let spec = store.resolve("minimal").unwrap();
        let build = store.env_dir("minimal").join(spec.content_hash());
        std::fs::create_dir_all(build.join("rootfs")).unwrap();
        let manifest = Manifest {
            name: "minimal".into(),
            hash: spec.content_hash(),
            spec: spec.clone(),
            base_hash: spec.base.hash(),
            mirror: "http://mirror.example/debian".into(),
            packages: vec![],
            size_bytes: 0,
            built_at_ms: 0,
            build_ms: 0,
        };
        write_json(&build.join("manifest.json"), &manifest).unwrap();
        // A mirror that cannot work: reaching it would fail the build.
        let builder = Builder::new(
            store,
            BuildConfig {
                mirror: Some("http://unreachable.invalid/debian".into()),
                etc_apt: dir.path().join("no-apt"),
            },
        );
        let mut events = Vec::new();
        let built = builder.build(&spec, &mut |e| events.push(e)).unwrap();
        assert_eq!(built.manifest, manifest);
        assert_eq!(
            events,
            [BuildEvent::Cached {
                name: "minimal".into(),
                hash: spec.content_hash()
            }]
        );
    }

    #[test]
    fn stale_and_superseded_builds_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("x");
        for sub in [
            ".build-aaaaaaaaaaaa-1/rootfs/etc",
            "bbbbbbbbbbbb/rootfs",
            "cccccccccccc/rootfs",
        ] {
            std::fs::create_dir_all(env.join(sub)).unwrap();
        }
        std::fs::write(env.join("bbbbbbbbbbbb/manifest.json"), "{}").unwrap();
        std::fs::write(env.join("cccccccccccc/manifest.json"), "{}").unwrap();
        std::fs::write(env.join("spec.json"), "{}").unwrap();
        remove_stale_builds(&env).unwrap();
        remove_other_builds(&env, "cccccccccccc").unwrap();
        let mut left: Vec<_> = std::fs::read_dir(&env)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["cccccccccccc", "spec.json"]);
    }

    #[test]
    fn missing_mirror_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let builder = Builder::new(
            EnvStore::new(dir.path()),
            BuildConfig {
                mirror: None,
                etc_apt: dir.path().join("no-apt"),
            },
        );
        assert_eq!(
            builder.mirror("bookworm").unwrap_err().to_string(),
            "no Debian mirror for suite bookworm in /etc/apt/sources.list*: set CONDUCTOR_DEBIAN_MIRROR"
        );
    }
}
