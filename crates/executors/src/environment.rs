//! Executors shaped for an environment of the server: decorators over another [`Executor`].
//!
//! - [`InRootfs`] runs every request in one environment's root filesystem (the namespace
//!   executor serves every built environment this way, sharing its warm helpers).
//! - [`Deferred`] connects on first use, so a daemon that is down when the server starts (or
//!   stops later) makes tasks fail clearly and `/health` degraded instead of stopping the server.
//! - [`Fallback`] runs on a second executor while the first one's `health_check` fails; the
//!   result's `executor` names the one that ran.
//! - [`Unavailable`] stands for an executor that cannot run here: every use gets the reason.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use conductor_core::{EventSender, Executor, ExecutorError, ServiceRunner, ServiceSet};
use conductor_types::{
    ExecutionId, ExecutionRequest, ExecutionResult, ExecutorCapabilities, IsolationLevel,
};
use futures_util::future::BoxFuture;

/// Runs every request in `rootfs` (a request naming its own root keeps it).
#[derive(Debug)]
pub struct InRootfs {
    inner: Arc<dyn Executor>,
    rootfs: PathBuf,
}

impl InRootfs {
    /// `inner` with `rootfs` as the root of every request.
    pub fn new(inner: Arc<dyn Executor>, rootfs: PathBuf) -> Self {
        Self { inner, rootfs }
    }
}

#[async_trait]
impl Executor for InRootfs {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn isolation_level(&self) -> IsolationLevel {
        self.inner.isolation_level()
    }

    fn capabilities(&self) -> ExecutorCapabilities {
        self.inner.capabilities()
    }

    async fn health_check(&self) -> Result<(), ExecutorError> {
        self.inner.health_check().await?;
        if self.rootfs.join("bin/sh").exists() {
            Ok(())
        } else {
            Err(ExecutorError::Unavailable {
                executor: self.inner.name(),
                reason: format!(
                    "the environment's root filesystem {} has no /bin/sh: rebuild it with `conductor env build NAME`",
                    self.rootfs.display()
                ),
            })
        }
    }

    async fn warmup(&self) -> Result<(), ExecutorError> {
        self.inner.warmup().await
    }

    async fn execute(
        &self,
        mut request: ExecutionRequest,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        if request.rootfs.is_none() {
            request.rootfs = Some(self.rootfs.clone());
        }
        self.inner.execute(request, events).await
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError> {
        self.inner.cancel(id).await
    }

    fn services(&self) -> Option<&dyn ServiceRunner> {
        self.inner.services()
    }
}

/// Makes the real executor; called until it succeeds.
pub type Connect =
    Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Executor>, ExecutorError>> + Send + Sync>;

/// An executor made on first use (and retried on every use until it can be made). When what it
/// makes runs services, so does it: starting them makes the executor first.
pub struct Deferred {
    name: &'static str,
    capabilities: ExecutorCapabilities,
    connect: Connect,
    made: tokio::sync::OnceCell<Arc<dyn Executor>>,
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("name", &self.name)
            .field("made", &self.made.initialized())
            .finish_non_exhaustive()
    }
}

impl Deferred {
    /// An executor called `name`, declaring `capabilities` (those of what `connect` makes; it
    /// runs services when they include `Capability::Services`).
    pub fn new(name: &'static str, capabilities: ExecutorCapabilities, connect: Connect) -> Self {
        Self {
            name,
            capabilities,
            connect,
            made: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<&Arc<dyn Executor>, ExecutorError> {
        self.made.get_or_try_init(|| (self.connect)()).await
    }
}

#[async_trait]
impl Executor for Deferred {
    fn name(&self) -> &'static str {
        self.name
    }

    fn isolation_level(&self) -> IsolationLevel {
        self.capabilities.isolation_level
    }

    fn capabilities(&self) -> ExecutorCapabilities {
        self.capabilities.clone()
    }

    async fn health_check(&self) -> Result<(), ExecutorError> {
        self.get().await?.health_check().await
    }

    async fn warmup(&self) -> Result<(), ExecutorError> {
        self.get().await?.warmup().await
    }

    async fn execute(
        &self,
        request: ExecutionRequest,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        self.get().await?.execute(request, events).await
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError> {
        match self.made.get() {
            Some(executor) => executor.cancel(id).await,
            None => Ok(false),
        }
    }

    fn services(&self) -> Option<&dyn ServiceRunner> {
        self.capabilities
            .supports(conductor_types::Capability::Services)
            .then_some(self as &dyn ServiceRunner)
    }
}

#[async_trait]
impl ServiceRunner for Deferred {
    /// Checked by the made executor; before it is made, every reference passes here and an
    /// unknown one fails when the task starts its services.
    fn check(&self, services: &[String]) -> Result<(), ExecutorError> {
        match self.made.get().and_then(|made| made.services()) {
            Some(runner) => runner.check(services),
            None => Ok(()),
        }
    }

    async fn start(&self, owner: &str, services: &[String]) -> Result<ServiceSet, ExecutorError> {
        let made = self.get().await?;
        let runner = made.services().ok_or_else(|| ExecutorError::Unsupported {
            executor: self.name,
            what: "running services".to_owned(),
        })?;
        runner.start(owner, services).await
    }

    async fn stop(&self, set: &ServiceSet) {
        if let Some(runner) = self.made.get().and_then(|made| made.services()) {
            runner.stop(set).await;
        }
    }
}

/// `primary`, or `secondary` while `primary` is unhealthy.
#[derive(Debug)]
pub struct Fallback {
    primary: Arc<dyn Executor>,
    secondary: Arc<dyn Executor>,
    /// When the primary last passed its health check, trusted for [`HEALTH_TRUSTED`]: a check is
    /// a round trip to the daemon (two for a container engine), which each command would pay.
    healthy_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a passed health check of a [`Fallback`]'s primary is trusted.
const HEALTH_TRUSTED: std::time::Duration = std::time::Duration::from_secs(1);

impl Fallback {
    /// Runs on `primary` when its `health_check` passes, else on `secondary`.
    pub fn new(primary: Arc<dyn Executor>, secondary: Arc<dyn Executor>) -> Self {
        Self {
            primary,
            secondary,
            healthy_at: std::sync::Mutex::new(None),
        }
    }

    fn healthy_at(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.healthy_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The primary's health: checked, or passed less than [`HEALTH_TRUSTED`] ago.
    async fn primary_health(&self) -> Result<(), ExecutorError> {
        if self
            .healthy_at()
            .is_some_and(|at| at.elapsed() < HEALTH_TRUSTED)
        {
            return Ok(());
        }
        let checked = self.primary.health_check().await;
        *self.healthy_at() = checked.is_ok().then(std::time::Instant::now);
        checked
    }
}

#[async_trait]
impl Executor for Fallback {
    fn name(&self) -> &'static str {
        self.primary.name()
    }

    fn isolation_level(&self) -> IsolationLevel {
        self.primary.isolation_level()
    }

    /// What both enforce: a task accepted for the primary must not be run with less on the
    /// secondary. Services are the exception: they run only on the primary, and a request on
    /// their network is refused by a secondary that cannot join it.
    fn capabilities(&self) -> ExecutorCapabilities {
        let mut capabilities = self.primary.capabilities();
        let secondary = self.secondary.capabilities();
        capabilities.supported.retain(|c| {
            secondary.supported.contains(c) || *c == conductor_types::Capability::Services
        });
        capabilities
    }

    /// Healthy when the primary is; when only the secondary is, a [`ExecutorError::Degraded`].
    async fn health_check(&self) -> Result<(), ExecutorError> {
        let Err(primary) = self.primary.health_check().await else {
            return Ok(());
        };
        match self.secondary.health_check().await {
            Ok(()) => Err(ExecutorError::Degraded {
                reason: format!(
                    "{primary}; tasks run on the {} executor instead",
                    self.secondary.name()
                ),
            }),
            Err(secondary) => Err(ExecutorError::Unavailable {
                executor: self.primary.name(),
                reason: format!(
                    "{primary}; and the fallback {} executor: {secondary}",
                    self.secondary.name()
                ),
            }),
        }
    }

    async fn warmup(&self) -> Result<(), ExecutorError> {
        let primary = self.primary.warmup().await;
        let secondary = self.secondary.warmup().await;
        primary.or(secondary)
    }

    async fn execute(
        &self,
        request: ExecutionRequest,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        match self.primary_health().await {
            Ok(()) => {
                // Gone since its health was last checked: the fallback runs it after all.
                let retry = (request.clone(), events.clone());
                match self.primary.execute(request, events).await {
                    Err(error @ ExecutorError::Unavailable { .. }) => {
                        *self.healthy_at() = None;
                        tracing::warn!(
                            primary = self.primary.name(),
                            secondary = self.secondary.name(),
                            %error,
                            "the primary executor became unavailable: running on the fallback"
                        );
                        self.secondary.execute(retry.0, retry.1).await
                    }
                    outcome => outcome,
                }
            }
            Err(error) => {
                tracing::warn!(
                    primary = self.primary.name(),
                    secondary = self.secondary.name(),
                    %error,
                    "the primary executor is unhealthy: running on the fallback"
                );
                self.secondary.execute(request, events).await
            }
        }
    }

    /// The primary's: services run only there (starting them fails clearly while it is down).
    fn services(&self) -> Option<&dyn ServiceRunner> {
        self.primary.services()
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError> {
        // Either may be running it; cancelling an id an executor does not know is a no-op.
        let primary = self.primary.cancel(id).await.unwrap_or(false);
        let secondary = self.secondary.cancel(id).await?;
        Ok(primary || secondary)
    }
}

/// An executor that cannot run here; every request gets the reason.
#[derive(Debug)]
pub struct Unavailable {
    name: &'static str,
    capabilities: ExecutorCapabilities,
    reason: String,
}

impl Unavailable {
    /// Stands for `name`, declaring `capabilities` so that requests are accepted (and fail
    /// with `reason` when they run).
    pub fn new(name: &'static str, capabilities: ExecutorCapabilities, reason: String) -> Self {
        Self {
            name,
            capabilities,
            reason,
        }
    }

    fn error(&self) -> ExecutorError {
        ExecutorError::Unavailable {
            executor: self.name,
            reason: self.reason.clone(),
        }
    }
}

#[async_trait]
impl Executor for Unavailable {
    fn name(&self) -> &'static str {
        self.name
    }

    fn isolation_level(&self) -> IsolationLevel {
        self.capabilities.isolation_level
    }

    fn capabilities(&self) -> ExecutorCapabilities {
        self.capabilities.clone()
    }

    async fn health_check(&self) -> Result<(), ExecutorError> {
        Err(self.error())
    }

    async fn warmup(&self) -> Result<(), ExecutorError> {
        Err(self.error())
    }

    async fn execute(
        &self,
        _request: ExecutionRequest,
        _events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        Err(self.error())
    }

    async fn cancel(&self, _id: &ExecutionId) -> Result<bool, ExecutorError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use conductor_types::Capability;

    use super::*;

    /// Healthy or not; answers every request with its own name in the result.
    #[derive(Debug)]
    struct Fake {
        name: &'static str,
        healthy: std::sync::atomic::AtomicBool,
        checks: AtomicUsize,
        supported: Vec<Capability>,
        ran: AtomicUsize,
        last_rootfs: std::sync::Mutex<Option<PathBuf>>,
    }

    fn fake(name: &'static str, healthy: bool, supported: Vec<Capability>) -> Arc<Fake> {
        Arc::new(Fake {
            name,
            healthy: std::sync::atomic::AtomicBool::new(healthy),
            checks: AtomicUsize::new(0),
            supported,
            ran: AtomicUsize::new(0),
            last_rootfs: std::sync::Mutex::new(None),
        })
    }

    #[async_trait]
    impl Executor for Fake {
        fn name(&self) -> &'static str {
            self.name
        }

        fn isolation_level(&self) -> IsolationLevel {
            IsolationLevel::Container
        }

        fn capabilities(&self) -> ExecutorCapabilities {
            ExecutorCapabilities {
                isolation_level: IsolationLevel::Container,
                platform: "linux".into(),
                supported: self.supported.iter().copied().collect::<BTreeSet<_>>(),
            }
        }

        async fn health_check(&self) -> Result<(), ExecutorError> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            if self.healthy.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(ExecutorError::Unavailable {
                    executor: self.name,
                    reason: "daemon down".into(),
                })
            }
        }

        async fn warmup(&self) -> Result<(), ExecutorError> {
            Ok(())
        }

        async fn execute(
            &self,
            request: ExecutionRequest,
            _events: EventSender,
        ) -> Result<ExecutionResult, ExecutorError> {
            if !self.healthy.load(Ordering::SeqCst) {
                return Err(ExecutorError::Unavailable {
                    executor: self.name,
                    reason: "daemon down".into(),
                });
            }
            self.ran.fetch_add(1, Ordering::SeqCst);
            *self.last_rootfs.lock().unwrap() = request.rootfs.clone();
            Ok(ExecutionResult::exited(
                request.id,
                self.name,
                IsolationLevel::Container,
                0,
            ))
        }

        async fn cancel(&self, _id: &ExecutionId) -> Result<bool, ExecutorError> {
            Ok(false)
        }
    }

    fn request() -> (ExecutionRequest, EventSender) {
        let (sender, _receiver) = tokio::sync::mpsc::channel(1);
        (
            ExecutionRequest::new(vec!["true".into()], "/".into()),
            sender,
        )
    }

    #[tokio::test]
    async fn fallback_runs_on_the_secondary_only_while_the_primary_is_unhealthy() {
        let up = fake(
            "docker",
            true,
            vec![Capability::CpuLimit, Capability::Seccomp],
        );
        let spare = fake("namespace", true, vec![Capability::Seccomp]);
        let fallback = Fallback::new(up.clone(), spare.clone());
        let (req, events) = request();
        assert_eq!(
            fallback.execute(req, events).await.unwrap().executor,
            "docker"
        );
        assert!(fallback.health_check().await.is_ok());
        // A task accepted for the pair never needs more than the fallback enforces.
        assert_eq!(
            fallback.capabilities().supported,
            BTreeSet::from([Capability::Seccomp])
        );

        let down = fake("docker", false, vec![]);
        let fallback = Fallback::new(down.clone(), spare.clone());
        let (req, events) = request();
        assert_eq!(
            fallback.execute(req, events).await.unwrap().executor,
            "namespace"
        );
        assert_eq!(down.ran.load(Ordering::SeqCst), 0);
        let error = fallback.health_check().await.unwrap_err();
        assert_eq!(error.code(), "executor_degraded");
        assert!(
            error
                .to_string()
                .contains("daemon down; tasks run on the namespace executor instead"),
            "{error}"
        );

        let both = Fallback::new(down, fake("namespace", false, vec![]));
        let error = both.health_check().await.unwrap_err();
        assert_eq!(error.code(), "executor_unavailable");
    }

    /// A passed health check is trusted for a while (not a daemon round trip per command); a
    /// primary that went down meanwhile still has its commands run by the fallback.
    #[tokio::test]
    async fn fallback_trusts_a_recent_health_check_and_still_falls_back() {
        let primary = fake("docker", true, vec![]);
        let spare = fake("namespace", true, vec![]);
        let fallback = Fallback::new(primary.clone(), spare.clone());
        for _ in 0..3 {
            let (req, events) = request();
            assert_eq!(
                fallback.execute(req, events).await.unwrap().executor,
                "docker"
            );
        }
        assert_eq!(primary.checks.load(Ordering::SeqCst), 1);
        primary.healthy.store(false, Ordering::SeqCst);
        for _ in 0..2 {
            let (req, events) = request();
            assert_eq!(
                fallback.execute(req, events).await.unwrap().executor,
                "namespace"
            );
        }
        assert_eq!(spare.ran.load(Ordering::SeqCst), 2);
        // The failed run forgot the trusted check: the second command checked again.
        assert_eq!(primary.checks.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn deferred_connects_on_first_use_and_retries_until_it_can() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&attempts);
        let connect: Connect = Box::new(move || {
            let attempt = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if attempt == 0 {
                    Err(ExecutorError::Unavailable {
                        executor: "docker",
                        reason: "no such socket".into(),
                    })
                } else {
                    Ok(fake("docker", true, vec![]) as Arc<dyn Executor>)
                }
            })
        });
        let capabilities = fake("docker", true, vec![Capability::PidsLimit]).capabilities();
        let deferred = Deferred::new("docker", capabilities, connect);
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            0,
            "nothing happens before use"
        );
        assert_eq!(
            deferred.capabilities().supported,
            BTreeSet::from([Capability::PidsLimit])
        );
        let (req, events) = request();
        let error = deferred.execute(req, events).await.unwrap_err();
        assert!(error.to_string().contains("no such socket"), "{error}");
        let (req, events) = request();
        assert_eq!(
            deferred.execute(req, events).await.unwrap().executor,
            "docker"
        );
        let (req, events) = request();
        deferred.execute(req, events).await.unwrap();
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            2,
            "connected once, then kept"
        );
    }

    #[tokio::test]
    async fn in_rootfs_sets_the_environments_root_unless_the_request_names_one() {
        let inner = fake("namespace", true, vec![]);
        let rooted = InRootfs::new(inner.clone(), "/envs/python-dev/rootfs".into());
        let (req, events) = request();
        rooted.execute(req, events).await.unwrap();
        assert_eq!(
            *inner.last_rootfs.lock().unwrap(),
            Some(PathBuf::from("/envs/python-dev/rootfs"))
        );
        let (mut req, events) = request();
        req.rootfs = Some("/other".into());
        rooted.execute(req, events).await.unwrap();
        assert_eq!(
            *inner.last_rootfs.lock().unwrap(),
            Some(PathBuf::from("/other"))
        );
        // Its root must hold a shell.
        let error = rooted.health_check().await.unwrap_err();
        assert!(error.to_string().contains("has no /bin/sh"), "{error}");
    }
}
