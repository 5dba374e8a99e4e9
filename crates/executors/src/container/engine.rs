//! The connection to a container engine's Docker-compatible API (bollard), and what the
//! executors and `conductor env` ask of it besides running containers: is it up, which cgroup
//! driver it uses, is an image there, import a root filesystem as an image; the container calls
//! the executors make (create, start, attach, kill); and the engine process's own rlimits, which
//! Podman's containers get.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::container::AttachContainerResults;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use conductor_types::{Rlimit, RlimitResource};
use futures_util::StreamExt;
use tokio_util::io::ReaderStream;

/// Seconds bollard waits for one API answer. Long: `wait` and `attach` stay open for as long as
/// a command runs (timeouts are enforced by the executor, not the HTTP client).
const API_TIMEOUT_SECS: u64 = 24 * 3600;

/// Which engine a socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// Docker Engine.
    Docker,
    /// Podman's Docker-compatible service (`podman system service`).
    Podman,
}

impl EngineKind {
    /// `docker` or `podman`: the executor's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }

    /// The rootful API socket: `DOCKER_HOST` / `CONDUCTOR_PODMAN_SOCKET` when they name a
    /// `unix://` path, else `/run/docker.sock` or `/run/podman/podman.sock`.
    pub fn default_socket(self) -> PathBuf {
        let from_env = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.strip_prefix("unix://").map(PathBuf::from))
        };
        match self {
            Self::Docker => {
                from_env("DOCKER_HOST").unwrap_or_else(|| PathBuf::from("/run/docker.sock"))
            }
            Self::Podman => from_env("CONDUCTOR_PODMAN_SOCKET")
                .unwrap_or_else(|| PathBuf::from("/run/podman/podman.sock")),
        }
    }
}

/// Why the engine could not do something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Nothing answers on the socket.
    #[error("{engine} does not answer on {socket}: {reason} (start it: scripts/services)")]
    Unreachable {
        /// The engine.
        engine: &'static str,
        /// The socket.
        socket: PathBuf,
        /// What failed.
        reason: String,
    },
    /// An API call failed.
    #[error("{engine}: {context}: {source}")]
    Api {
        /// The engine.
        engine: &'static str,
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: bollard::errors::Error,
    },
    /// A request made without bollard failed.
    #[error("{engine}: {reason}")]
    Request {
        /// The engine.
        engine: &'static str,
        /// What failed.
        reason: String,
    },
    /// Packing the root filesystem failed.
    #[error("packing {path} for import: {reason}")]
    Pack {
        /// The rootfs.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// A connected engine.
#[derive(Debug, Clone)]
pub struct Engine {
    kind: EngineKind,
    socket: PathBuf,
    docker: Docker,
}

impl Engine {
    /// Connects to `socket` and agrees on an API version; fails when nothing answers.
    pub async fn connect(kind: EngineKind, socket: &Path) -> Result<Self, EngineError> {
        let unreachable = |reason: String| EngineError::Unreachable {
            engine: kind.name(),
            socket: socket.to_owned(),
            reason,
        };
        if !socket.exists() {
            return Err(unreachable("no such socket".to_owned()));
        }
        // One `/_ping` both checks that the engine answers and agrees on the API version (its
        // `API-Version` header, as the docker CLI negotiates).
        let ping =
            tokio::time::timeout(std::time::Duration::from_secs(5), super::api::ping(socket))
                .await
                .map_err(|_| unreachable("no answer to /_ping within 5 s".to_owned()))?
                .map_err(|e| unreachable(e.to_string()))?;
        let path = socket.to_string_lossy();
        let docker = match ping.api_version {
            Some(server) => {
                let ours = bollard::API_DEFAULT_VERSION;
                let version = ClientVersion {
                    major_version: server.0,
                    minor_version: server.1,
                };
                let version = if (server.0, server.1) < (ours.major_version, ours.minor_version) {
                    version
                } else {
                    *ours
                };
                Docker::connect_with_unix(&path, API_TIMEOUT_SECS, &version)
                    .map_err(|e| unreachable(e.to_string()))?
            }
            None => {
                Docker::connect_with_unix(&path, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| unreachable(e.to_string()))?
                    .negotiate_version()
                    .await
                    .map_err(|e| unreachable(format!("negotiating the API version: {e}")))?
            }
        };
        Ok(Self {
            kind,
            socket: socket.to_owned(),
            docker,
        })
    }

    /// Which engine.
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The API client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Creates container `name` from `body`; its id.
    pub(crate) async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, bollard::errors::Error> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self.docker.create_container(Some(options), body).await?;
        Ok(created.id)
    }

    /// Starts container `id`.
    pub(crate) async fn start(&self, id: &str) -> Result<(), bollard::errors::Error> {
        self.docker.start_container(id, None).await
    }

    /// Attaches to container `id`'s stdout and stderr from now on.
    pub(crate) async fn attach(
        &self,
        id: &str,
    ) -> Result<AttachContainerResults, bollard::errors::Error> {
        let attach = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            // Attached before the command starts: nothing is missed, and replaying the log as
            // well would duplicate what a fast command wrote.
            .logs(false)
            .build();
        self.docker.attach_container(id, Some(attach)).await
    }

    /// SIGKILLs container `id`: its init and everything in it end.
    pub(crate) async fn kill(&self, id: &str) -> Result<(), bollard::errors::Error> {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        self.docker.kill_container(id, Some(options)).await
    }

    pub(crate) fn api(
        &self,
        context: impl Into<String>,
        source: bollard::errors::Error,
    ) -> EngineError {
        EngineError::Api {
            engine: self.kind.name(),
            context: context.into(),
            source,
        }
    }

    /// The engine's cgroup driver (`cgroupfs`, `systemd`).
    pub async fn cgroup_driver(&self) -> Result<Option<String>, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.api("reading /info", e))?;
        Ok(info.cgroup_driver.map(|d| format!("{d:?}").to_lowercase()))
    }

    /// Whether the engine has the image `tag`.
    pub async fn has_image(&self, tag: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(tag).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.api(format!("inspecting image {tag}"), e)),
        }
    }

    /// Imports the directory `rootfs` as the image `tag` (`POST /images/create?fromSrc=-`, the
    /// API behind `docker import`), streaming a tar of it made by `tar`; nothing is pulled.
    pub async fn import_rootfs(&self, rootfs: &Path, tag: &str) -> Result<(), EngineError> {
        let pack = |reason: String| EngineError::Pack {
            path: rootfs.to_owned(),
            reason,
        };
        let mut tar = tokio::process::Command::new("tar")
            .arg("--create")
            .arg("--file=-")
            .arg("--numeric-owner")
            .arg("--xattrs")
            .arg("--one-file-system")
            .arg("--directory")
            .arg(rootfs)
            .arg(".")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| pack(format!("starting tar: {e}")))?;
        let stdout = tar
            .stdout
            .take()
            .ok_or_else(|| pack("tar has no stdout".to_owned()))?;
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(tag)
            .build();
        let body = bollard::body_try_stream(ReaderStream::with_capacity(stdout, 256 * 1024));
        let mut progress = self.docker.create_image(Some(options), Some(body), None);
        let mut failure = None;
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                failure.get_or_insert(e);
            }
        }
        let output = tar
            .wait_with_output()
            .await
            .map_err(|e| pack(format!("waiting for tar: {e}")))?;
        if let Some(e) = failure {
            return Err(self.api(format!("importing {} as {tag}", rootfs.display()), e));
        }
        if !output.status.success() {
            return Err(pack(format!(
                "tar {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        // Podman's compatible API ignores a tag in `repo` on some versions: tag explicitly.
        if !self.has_image(tag).await? {
            return Err(pack(format!(
                "the engine accepted the import but has no image {tag} afterwards"
            )));
        }
        Ok(())
    }

    /// Every container (running or not) matching `filters` (`label`, `name`, …).
    pub async fn list_containers(
        &self,
        filters: &std::collections::HashMap<String, Vec<String>>,
    ) -> Result<Vec<super::api::ListedContainer>, EngineError> {
        super::api::list_containers(&self.socket, filters)
            .await
            .map_err(|e| EngineError::Request {
                engine: self.kind.name(),
                reason: e.to_string(),
            })
    }

    /// Removes the image `tag`. Returns whether it was there.
    pub async fn remove_image(&self, tag: &str) -> Result<bool, EngineError> {
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(true)
            .build();
        match self.docker.remove_image(tag, Some(options), None).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.api(format!("removing image {tag}"), e)),
        }
    }
}

/// The `nofile` and `nproc` limits of the engine serving `socket` (its pid from
/// `SO_PEERCRED`): Podman's own defaults for them fail where its limits are lower, so the
/// container gets the engine's limits instead. Empty when they cannot be read.
pub(crate) fn engine_rlimits(socket: &Path) -> Vec<Rlimit> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return Vec::new();
    };
    let Ok(credentials) = getsockopt(&stream, PeerCredentials) else {
        return Vec::new();
    };
    let pid = credentials.pid();
    [
        (RlimitResource::Nofile, libc::RLIMIT_NOFILE),
        (RlimitResource::Nproc, libc::RLIMIT_NPROC),
    ]
    .into_iter()
    .filter_map(|(resource, which)| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads pid's limit into a valid local; the new-limit pointer is null.
        let rc = unsafe { libc::prlimit(pid, which, std::ptr::null(), &mut limit) };
        (rc == 0).then_some(Rlimit {
            resource,
            soft: limit.rlim_cur,
            hard: limit.rlim_max,
        })
    })
    .collect()
}
