//! Starting and stopping the whole service: data directory, store, admin token, restart
//! recovery, scheduler loop and HTTP listener; then a graceful stop that never leaves a task
//! `running`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use conductor_core::{Executor, Store, StoreError};
use conductor_store::SqliteStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::{ensure_admin_token, ensure_slot_tokens, AdminTokenError};
use crate::{app, AppState, EventBus, Scheduler, SchedulerConfig, DEFAULT_BODY_LIMIT};

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
/// The database file's name under the home directory.
pub const DATABASE_FILE: &str = "conductor.db";
/// Held (flock) by the one server using a home directory.
pub const LOCK_FILE: &str = "server.lock";

/// Cleans up what a previous run of the server left on the machine besides its database: the
/// process trees (and cgroups) of tasks that were running when it was killed. The executors own
/// those, so the caller that builds them (the CLI) provides this.
pub trait Sweep: Send + Sync + std::fmt::Debug {
    /// Kills every leftover process tree and removes its cgroup, blocking until done; returns
    /// one line per leftover removed, for the log.
    fn sweep(&self) -> Result<Vec<String>, String>;
}

/// Everything `conductor serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// `$CONDUCTOR_HOME`: database, admin token, workspaces.
    pub home: PathBuf,
    /// Agents, concurrency, workspaces.
    pub scheduler: SchedulerConfig,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// How long running tasks may take to finish at shutdown before they are interrupted.
    pub grace: Duration,
    /// A fixed admin token instead of a generated one.
    pub admin_token: Option<String>,
    /// Run at start, with the home directory locked and before any task runs.
    pub sweep: Option<Arc<dyn Sweep>>,
    /// Users (a rootless container engine's) given search permission, by ACL, on the home and
    /// its private content directories, so their engine can mount a workspace.
    pub workspace_users: Vec<u32>,
    /// `[llm]`: the LLM gateway of agent tasks. Its keys are read at start from the key files
    /// and the process environment (`ANTHROPIC_API_KEY[_FILE]`, `OPENAI_API_KEY[_FILE]`); with
    /// no key, agent tasks are refused.
    pub llm: conductor_gateway::RawLlmConfig,
    /// The prompt templates of the seed's agent task types.
    pub prompts: conductor_core::PromptTemplates,
}

impl ServeConfig {
    /// Defaults for `home`: 127.0.0.1:8081, 2 slots, 1 MiB bodies, 10 s grace.
    pub fn new(home: PathBuf) -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 8081));
        Self {
            listen,
            scheduler: SchedulerConfig::new(home.join("workspaces")),
            home,
            body_limit: DEFAULT_BODY_LIMIT,
            grace: Duration::from_secs(10),
            admin_token: None,
            sweep: None,
            workspace_users: Vec::new(),
            llm: conductor_gateway::RawLlmConfig::default(),
            prompts: conductor_core::PromptTemplates::default(),
        }
    }
}

/// The LLM gateway and the agent runtime, when a provider key is configured (`None`: agent
/// tasks are refused, and the log says why). A configuration that is wrong otherwise fails.
fn start_agents(
    config: &ServeConfig,
    store: &Arc<dyn Store>,
) -> Result<Option<Arc<crate::agents::AgentRuntime>>, ServeError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let gateway_config = match config.llm.resolve(&env) {
        Ok(resolved) => resolved,
        Err(conductor_gateway::ConfigError::MissingKey { .. }) => {
            tracing::info!("agent tasks are off: no provider key (ANTHROPIC_API_KEY, ANTHROPIC_API_KEY_FILE or [llm] api_key_file)");
            return Ok(None);
        }
        Err(error) => return Err(ServeError::Llm(error.to_string())),
    };
    let sink = crate::agents::StoreSink::new(Arc::clone(store));
    let gateway = conductor_gateway::Gateway::new(gateway_config, sink)
        .map_err(|e| ServeError::Llm(e.to_string()))?;
    let runtime = crate::agents::AgentRuntime::new(&config.home, gateway, config.prompts.clone())
        .map_err(io("making the agent directories"))?;
    runtime.serve();
    Ok(Some(Arc::new(runtime)))
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `[llm]` cannot be used (a key file that cannot be read, a bad upstream URL).
    #[error("[llm]: {0}")]
    Llm(String),
    /// The admin token could not be set up.
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
    /// Another server uses the same home directory.
    #[error("another conductor serve is already using {home} (it holds {lock}): stop it, or set CONDUCTOR_HOME to another directory")]
    HomeInUse {
        /// The home directory.
        home: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::Io {
        context: context.into(),
        source,
    }
}

/// A running service.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    admin_token_path: PathBuf,
    scheduler: Arc<Scheduler>,
    store: SqliteStore,
    grace: Duration,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<std::io::Result<()>>,
    dispatch_loop: JoinHandle<()>,
    sweep_loop: JoinHandle<()>,
    /// Released when the server is dropped.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Server {
    /// Prepares the home directory, opens the store, recovers tasks a previous run left running,
    /// and starts the scheduler and the listener.
    pub async fn start(
        config: ServeConfig,
        executors: BTreeMap<String, Arc<dyn Executor>>,
    ) -> Result<Self, ServeError> {
        let home = &config.home;
        create_private_dir(home)?;
        let lock = lock_home(home)?;
        restrict_home(home)?;
        let private = crate::hostdirs::private_dirs(home, &config.scheduler);
        make_private(home, &private, &config.workspace_users)?;
        match crate::hostdirs::clear_spools(home) {
            Ok(0) => {}
            Ok(count) => tracing::warn!(count, "removed output spools the previous run left"),
            Err(error) => tracing::error!(%error, "could not remove the previous run's spools"),
        }
        if let Some(sweep) = config.sweep.clone() {
            match tokio::task::spawn_blocking(move || sweep.sweep()).await {
                Ok(Ok(removed)) => {
                    for line in &removed {
                        tracing::warn!("left by the previous run: {line}");
                    }
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "could not clean up what the previous run left")
                }
                Err(error) => {
                    tracing::error!(%error, "could not clean up what the previous run left")
                }
            }
        }
        let store = SqliteStore::open(&home.join(DATABASE_FILE)).await?;
        let admin_token_path =
            ensure_admin_token(&store, home, config.admin_token.as_deref()).await?;
        let mut scheduler_config = config.scheduler.clone();
        scheduler_config.spool_dir = Some(home.join(crate::hostdirs::SPOOL_DIR));
        // Disk quotas are loop-mounted filesystems: root only.
        scheduler_config.disk_quotas |= nix::unistd::geteuid().is_root();
        scheduler_config.slot_tokens =
            ensure_slot_tokens(&store, home, scheduler_config.slots).await?;
        let shared: Arc<dyn Store> = Arc::new(store.clone());
        scheduler_config.agents = start_agents(&config, &shared)?;
        let scheduler = Scheduler::new(shared, executors, scheduler_config, EventBus::default());
        let recovered = scheduler.recover().await?;
        // Recovery removed `agents/` (the previous run's fresh workspaces): private again.
        make_private(home, &private, &config.workspace_users)?;
        // Named workspaces with a disk quota are mounted for as long as the server runs.
        scheduler.workspaces().mount_quotas().await;
        if !recovered.is_empty() {
            tracing::warn!(
                count = recovered.len(),
                "tasks were running when the server last stopped; recorded them as interrupted"
            );
        }
        if !config.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %config.listen,
                "LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT TLS: tokens and task output travel in clear text; put a TLS proxy in front or listen on 127.0.0.1"
            );
            eprintln!(
                "WARNING: conductor serve is listening on {} without TLS. Bearer tokens and task output travel in clear text.",
                config.listen
            );
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("listening on {}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the listen address"))?;
        let router = app(AppState::new(Arc::clone(&scheduler), config.body_limit));
        let (stop_http, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let dispatch_loop = tokio::spawn(Arc::clone(&scheduler).run());
        let sweep_loop = tokio::spawn(Arc::clone(&scheduler).sweep_loop());
        Ok(Self {
            addr,
            admin_token_path,
            scheduler,
            store,
            grace: config.grace,
            stop_http,
            http,
            dispatch_loop,
            sweep_loop,
            _lock: lock,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin token file.
    pub fn admin_token_path(&self) -> &std::path::Path {
        &self.admin_token_path
    }

    /// The scheduler (slots, running tasks).
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// The store.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// Stops: no more dispatching; running tasks get the grace period, then are killed and
    /// recorded as interrupted; open HTTP streams get two seconds; the database is closed.
    pub async fn stop(self) {
        self.scheduler.shutdown(self.grace).await;
        self.dispatch_loop.abort();
        self.sweep_loop.abort();
        self.scheduler.workspaces().unmount_quotas().await;
        let _ = self.stop_http.send(());
        let mut http = self.http;
        if tokio::time::timeout(Duration::from_secs(2), &mut http)
            .await
            .is_err()
        {
            http.abort();
        }
        self.store.close().await;
    }
}

/// One server per home directory: a second one would declare the first one's running tasks
/// interrupted at its start.
fn lock_home(home: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, ServeError> {
    let path = home.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => ServeError::HomeInUse {
                home: home.to_owned(),
                lock: path.clone(),
            },
            other => ServeError::Io {
                context: format!("locking {}", path.display()),
                source: std::io::Error::from(other),
            },
        },
    )
}

/// The home's directories that hold secrets or task output, made private like the home.
const PRIVATE_DIRS: [&str; 2] = ["agents", "logs"];

/// Takes group and other access away from the home, the files directly in it (database, admin
/// token, secrets key, lock) and in [`PRIVATE_DIRS`], and those directories: a home made by an
/// older conductor (or by hand) is fixed at the next start. Symlinks in it are left alone.
fn restrict_home(home: &std::path::Path) -> Result<(), ServeError> {
    restrict(home, 0o700)?;
    let mut dirs = vec![home.to_owned()];
    for name in PRIVATE_DIRS {
        let dir = home.join(name);
        if std::fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir()) {
            restrict(&dir, 0o700)?;
            dirs.push(dir);
        }
    }
    for dir in dirs {
        let entries = std::fs::read_dir(&dir).map_err(io(format!("listing {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
            let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
            if is_file {
                restrict(&entry.path(), 0o600)?;
            }
        }
    }
    Ok(())
}

/// Clears the bits of `path`'s mode outside `keep` (set-id and sticky bits included). Follows a
/// symlink: only the home itself may be one (the callers skip symlinks inside it).
fn restrict(path: &std::path::Path, keep: u32) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(io(format!("reading {}", path.display())))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & !keep != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & keep))
            .map_err(io(format!("restricting {}", path.display())))?;
    }
    Ok(())
}

/// [`crate::hostdirs::make_private`] on `dirs`, then search permission for `users` on them and
/// on `home`.
fn make_private(home: &std::path::Path, dirs: &[PathBuf], users: &[u32]) -> Result<(), ServeError> {
    crate::hostdirs::make_private(dirs).map_err(io("making the home's content private"))?;
    // The server's own user owns them already.
    let me = nix::unistd::geteuid().as_raw();
    let users: Vec<u32> = users.iter().copied().filter(|uid| *uid != me).collect();
    let mut granted = vec![home.to_owned()];
    granted.extend_from_slice(dirs);
    crate::hostdirs::grant_search(&granted, &users).map_err(io(format!(
        "giving uid {users:?} (a rootless container engine) search permission"
    )))
}

fn create_private_dir(path: &std::path::Path) -> Result<(), ServeError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(io(format!("creating {}", path.display())))
}

/// Runs the service until `shutdown` resolves, then stops it gracefully.
pub async fn serve(
    config: ServeConfig,
    executors: BTreeMap<String, Arc<dyn Executor>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let server = Server::start(config, executors).await?;
    tracing::info!(listen = %server.local_addr(), "conductor is serving");
    eprintln!(
        "conductor serving on http://{} (admin token: {})",
        server.local_addr(),
        server.admin_token_path().display()
    );
    shutdown.await;
    tracing::info!("shutting down");
    server.stop().await;
    Ok(())
}
