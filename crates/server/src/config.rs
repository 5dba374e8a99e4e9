//! Server configuration: raw layers of `Option`s from the TOML file, `CONDUCTOR_*` environment
//! variables (`CONDUCTOR_<KEY>_FILE` for secrets) and command-line flags, resolved once into a
//! [`Config`] with defaults. Later layers win: defaults < file < environment < flags. A bad value
//! fails at start naming the key and where it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use conductor_types::{
    parse_duration, Bytes, FullNetworkRange, ParseExecutorKindError, ParseNetworkError,
};
use serde::{Deserialize, Serialize};

/// The executor that runs tasks (the `executor` and `fallback` keys): the one enum of
/// `conductor-types`, re-exported where it used to be defined (kept one release; import it from
/// `conductor_types`).
pub use conductor_types::ExecutorKind;

pub use crate::limits_config::{RawLimitSet, RawLimits};
use crate::scheduler::DefaultNetwork;
use crate::{SchedulerConfig, ServeConfig};

/// The config file's name under `$CONDUCTOR_HOME`.
pub const CONFIG_FILE: &str = "config.toml";

/// One layer of settings; every field optional. Also the config file's format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listen address (`127.0.0.1:8081`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Execution slots (1–256); read under its old name `agents` too (one release).
    #[serde(default, alias = "agents", skip_serializing_if = "Option::is_none")]
    pub slots: Option<u16>,
    /// Most tasks running at once (default: slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u16>,
    /// Time running tasks get at shutdown (`10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
    /// Largest request body (`1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_limit: Option<Bytes>,
    /// Output of each stream kept in memory per command before spooling (`1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit: Option<Bytes>,
    /// Output of one task attempt stored at most (`16m`); the rest is dropped with a marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_output_limit: Option<Bytes>,
    /// Where task workspaces live (default: `$CONDUCTOR_HOME/workspaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_root: Option<PathBuf>,
    /// CPU cores handed out to running tasks at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_budget: Option<f64>,
    /// Memory handed out to running tasks at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<Bytes>,
    /// A fixed admin token instead of a generated one (secret; prefer `CONDUCTOR_ADMIN_TOKEN_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// What runs tasks: `auto` (default), `host`, `namespace`, `docker` or `podman`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// The executor tasks run on while theirs is unhealthy (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Idle containers kept started per container environment (0 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<u16>,
    /// Executions a warm container serves, reset in between (0 by default: never reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_reuse: Option<u32>,
    /// The named workspace tasks run in when they name none (default: a fresh one per task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_workspace: Option<String>,
    /// `[limits.default]` and `[limits.max]`: the limits of tasks that name none, and the most
    /// a task may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RawLimits>,
    /// The network of tasks that name none: `none` (default), `localhost`, `full`, `host` or
    /// `allowlist:HOST,…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_network: Option<String>,
    /// The private IPv4 range network `full` sandboxes of the namespace executor take their /30s
    /// from (`10.200.0.0/16`); it must not overlap a route of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_network_range: Option<String>,
    /// Settings of single environments (`[environments.python-dev]`), over the keys above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, RawEnvironment>,
    /// `[workspaces]`: bounds on workspace content coming in.
    #[serde(default, skip_serializing_if = "RawWorkspaces::is_empty")]
    pub workspaces: RawWorkspaces,
    /// `[output]`: bounds on an execution's output on disk.
    #[serde(default, skip_serializing_if = "RawOutput::is_empty")]
    pub output: RawOutput,
    /// `[git]`: what tasks' `git` may clone.
    #[serde(default, skip_serializing_if = "RawGit::is_empty")]
    pub git: RawGit,
    /// `[llm]`: the LLM gateway of agent tasks — upstreams, key files, limits, prices
    /// (`conductor_gateway::RawLlmConfig`; kept as written, it holds no key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<toml::Table>,
    /// `[prompts]`: the prompt templates of the seed's agent task types, by type
    /// (`code_review = "… {description} … {files}"`), over the built-in ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prompts: BTreeMap<String, String>,
}

/// `[workspaces]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkspaces {
    /// The most bytes of files an imported snapshot may declare (`2g`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_max: Option<Bytes>,
}

impl RawWorkspaces {
    fn is_empty(&self) -> bool {
        self.import_max.is_none()
    }
}

/// `[output]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// The most bytes of each stream an execution spools to disk (`64m`); the spool is deleted
    /// once the task's output is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_limit: Option<Bytes>,
}

impl RawOutput {
    fn is_empty(&self) -> bool {
        self.spool_limit.is_none()
    }
}

/// `[git]` in the config file (not settable from the environment).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGit {
    /// Directories (absolute) local repositories may be cloned from; none by default, so
    /// tasks clone URLs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_local: Option<Vec<PathBuf>>,
}

impl RawGit {
    fn is_empty(&self) -> bool {
        self.allow_local.is_none()
    }

    fn overlay(self, higher: RawGit) -> RawGit {
        RawGit {
            allow_local: higher.allow_local.or(self.allow_local),
        }
    }

    /// The allowed directories: absolute, without `.` or `..` components.
    fn resolve(&self) -> Result<Vec<PathBuf>, String> {
        let dirs = self.allow_local.clone().unwrap_or_default();
        for dir in &dirs {
            let normal = dir.is_absolute()
                && dir.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::Normal(_)
                    )
                });
            if !normal || dir == Path::new("/") {
                return Err(format!(
                    "{} is not an absolute directory below / without . or .. components",
                    dir.display()
                ));
            }
        }
        Ok(dirs)
    }
}

/// `[environments.NAME]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    /// The executor of this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// Its fallback executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Its warm containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<u16>,
    /// Executions each of its warm containers serves, reset in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_reuse: Option<u32>,
    /// The network of its tasks that name none (over the global `default_network`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_network: Option<String>,
}

/// `[environments.NAME]`, parsed: what it sets over the global keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvironmentOverride {
    /// Its executor.
    pub executor: Option<ExecutorKind>,
    /// Its fallback executor.
    pub fallback: Option<ExecutorKind>,
    /// Its warm containers.
    pub warm_pool: Option<u16>,
    /// Executions each of its warm containers serves.
    pub warm_reuse: Option<u32>,
}

impl EnvironmentOverride {
    fn parse(raw: &RawEnvironment) -> Result<Self, String> {
        Ok(Self {
            executor: raw.executor.as_deref().map(parse_executor).transpose()?,
            fallback: raw.fallback.as_deref().map(parse_fallback).transpose()?,
            warm_pool: raw.warm_pool,
            warm_reuse: raw.warm_reuse,
        })
    }

    fn to_raw(self) -> RawEnvironment {
        RawEnvironment {
            executor: self.executor.map(|kind| kind.as_str().to_owned()),
            fallback: self.fallback.map(|kind| kind.as_str().to_owned()),
            warm_pool: self.warm_pool,
            warm_reuse: self.warm_reuse,
            default_network: None,
        }
    }
}

/// What runs one environment's tasks, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvironmentConfig {
    /// Its executor.
    pub executor: ExecutorKind,
    /// What runs its tasks while the executor is unhealthy.
    pub fallback: Option<ExecutorKind>,
    /// Idle containers kept started (container executors only).
    pub warm_pool: usize,
    /// Executions a warm container serves, reset in between; 0 never reuses one (see the
    /// container executor's `resident` module).
    pub warm_reuse: u32,
}

/// Keys renamed, with the old name still read (one release): the execution slots were called
/// agents before "agent" came to mean an AI coding agent.
const OLD_NAMES: [(&str, &str); 1] = [("slots", "agents")];

/// `CONDUCTOR_<KEY>`, or the variable of the key's old name when only that one is set.
fn env_name(key: &str, env: &BTreeMap<String, String>) -> String {
    let name = format!("CONDUCTOR_{}", key.to_ascii_uppercase());
    let old = OLD_NAMES
        .iter()
        .find(|(new, _)| *new == key)
        .map(|(_, old)| format!("CONDUCTOR_{}", old.to_ascii_uppercase()));
    match old {
        Some(old) if !env.contains_key(&name) && env.contains_key(&old) => old,
        _ => name,
    }
}

/// Every key, in file order, with whether it is a secret.
pub const KEYS: [(&str, bool); 18] = [
    ("listen", false),
    ("slots", false),
    ("concurrency", false),
    ("grace", false),
    ("body_limit", false),
    ("output_limit", false),
    ("stored_output_limit", false),
    ("workspace_root", false),
    ("cpus_budget", false),
    ("memory_budget", false),
    ("admin_token", true),
    ("executor", false),
    ("fallback", false),
    ("warm_pool", false),
    ("warm_reuse", false),
    ("default_workspace", false),
    ("default_network", false),
    ("full_network_range", false),
];

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built in.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "env {name}"),
            Self::Flag => f.write_str("flag"),
        }
    }
}

/// A setting that is wrong, with where it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("config key {key} (from {origin}): {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Where it came from.
        origin: Origin,
        /// What is wrong.
        reason: String,
    },
    /// The file is not valid TOML for this format.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The resolved configuration, and where each key's value came from.
#[derive(Debug, Clone)]
pub struct Config {
    /// `$CONDUCTOR_HOME`.
    pub home: PathBuf,
    /// The config file read (or that would be read).
    pub file: PathBuf,
    /// What the service runs with.
    pub serve: ServeConfig,
    /// A fixed admin token, if configured.
    pub admin_token: Option<String>,
    /// What runs tasks.
    pub executor: ExecutorKind,
    /// What runs tasks while their executor is unhealthy.
    pub fallback: Option<ExecutorKind>,
    /// Idle containers per container environment.
    pub warm_pool: usize,
    /// Executions a warm container serves, reset in between (0: never reused).
    pub warm_reuse: u32,
    /// Settings of single environments (see [`Config::environment`]).
    pub environments: BTreeMap<String, EnvironmentOverride>,
    /// Where network `full` sandboxes of the namespace executor take their addresses.
    pub full_network_range: FullNetworkRange,
    /// Origin of each key.
    pub origins: BTreeMap<&'static str, Origin>,
    /// `[llm]` as written (checked against `conductor_gateway::RawLlmConfig`; the keys are read
    /// when the server starts).
    pub llm: Option<toml::Table>,
    /// `[prompts]` as written (checked).
    pub prompts: BTreeMap<String, String>,
}

impl Config {
    /// `[llm]`, parsed.
    pub fn llm_config(&self) -> Option<conductor_gateway::RawLlmConfig> {
        self.llm
            .clone()
            .and_then(|table| toml::Value::Table(table).try_into().ok())
    }

    /// The prompt templates of the seed's agent task types.
    pub fn prompt_templates(&self) -> conductor_core::PromptTemplates {
        conductor_core::PromptTemplates::with_overrides(&self.prompts).unwrap_or_default()
    }
}

impl RawConfig {
    /// Parses a config file's text.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string().trim().to_owned(),
        })
    }

    /// Reads `CONDUCTOR_<KEY>` (and `CONDUCTOR_<KEY>_FILE` for secrets) from `env`; `read_file`
    /// reads a secret file.
    pub fn from_env(
        env: &BTreeMap<String, String>,
        read_file: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<(Self, BTreeMap<&'static str, String>), ConfigError> {
        let mut raw = RawConfig::default();
        let mut names = BTreeMap::new();
        for (key, secret) in KEYS {
            let name = env_name(key, env);
            let file_name = format!("{name}_FILE");
            let value = match (
                env.get(&name),
                secret.then(|| env.get(&file_name)).flatten(),
            ) {
                (Some(value), _) => {
                    names.insert(key, name);
                    value.clone()
                }
                (None, Some(path)) => {
                    let text = read_file(Path::new(path)).map_err(|e| ConfigError::Invalid {
                        key,
                        origin: Origin::Env(file_name.clone()),
                        reason: format!("cannot read {path}: {e}"),
                    })?;
                    names.insert(key, file_name);
                    text.trim_end_matches(['\n', '\r']).to_owned()
                }
                (None, None) => continue,
            };
            let origin = Origin::Env(names[key].clone());
            raw.set(key, &value)
                .map_err(|reason| ConfigError::Invalid {
                    key,
                    origin,
                    reason,
                })?;
        }
        Ok((raw, names))
    }

    /// Sets `key` from text (as an environment variable would give it).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn parse<T: std::str::FromStr>(value: &str) -> Result<T, String>
        where
            T::Err: fmt::Display,
        {
            value.trim().parse::<T>().map_err(|e| e.to_string())
        }
        match key {
            "listen" => self.listen = Some(value.to_owned()),
            "slots" | "agents" => self.slots = Some(parse(value)?),
            "concurrency" => self.concurrency = Some(parse(value)?),
            "grace" => self.grace = Some(value.to_owned()),
            "body_limit" => self.body_limit = Some(parse(value)?),
            "output_limit" => self.output_limit = Some(parse(value)?),
            "stored_output_limit" => self.stored_output_limit = Some(parse(value)?),
            "workspace_root" => self.workspace_root = Some(PathBuf::from(value)),
            "cpus_budget" => self.cpus_budget = Some(parse(value)?),
            "memory_budget" => self.memory_budget = Some(parse(value)?),
            "admin_token" => self.admin_token = Some(value.to_owned()),
            "executor" => self.executor = Some(value.to_owned()),
            "fallback" => self.fallback = Some(value.to_owned()),
            "warm_pool" => self.warm_pool = Some(parse(value)?),
            "warm_reuse" => self.warm_reuse = Some(parse(value)?),
            "default_workspace" => self.default_workspace = Some(value.trim().to_owned()),
            "default_network" => self.default_network = Some(value.trim().to_owned()),
            "full_network_range" => self.full_network_range = Some(value.trim().to_owned()),
            other => return Err(format!("unknown key {other:?}")),
        }
        Ok(())
    }

    fn keys_set(&self) -> Vec<&'static str> {
        let set = [
            self.listen.is_some(),
            self.slots.is_some(),
            self.concurrency.is_some(),
            self.grace.is_some(),
            self.body_limit.is_some(),
            self.output_limit.is_some(),
            self.stored_output_limit.is_some(),
            self.workspace_root.is_some(),
            self.cpus_budget.is_some(),
            self.memory_budget.is_some(),
            self.admin_token.is_some(),
            self.executor.is_some(),
            self.fallback.is_some(),
            self.warm_pool.is_some(),
            self.warm_reuse.is_some(),
            self.default_workspace.is_some(),
            self.default_network.is_some(),
            self.full_network_range.is_some(),
        ];
        KEYS.iter()
            .zip(set)
            .filter(|(_, set)| *set)
            .map(|((key, _), _)| *key)
            .collect()
    }

    /// `self` with every key `higher` sets replaced.
    pub fn overlay(self, higher: RawConfig) -> RawConfig {
        RawConfig {
            listen: higher.listen.or(self.listen),
            slots: higher.slots.or(self.slots),
            concurrency: higher.concurrency.or(self.concurrency),
            grace: higher.grace.or(self.grace),
            body_limit: higher.body_limit.or(self.body_limit),
            output_limit: higher.output_limit.or(self.output_limit),
            stored_output_limit: higher.stored_output_limit.or(self.stored_output_limit),
            workspace_root: higher.workspace_root.or(self.workspace_root),
            cpus_budget: higher.cpus_budget.or(self.cpus_budget),
            memory_budget: higher.memory_budget.or(self.memory_budget),
            admin_token: higher.admin_token.or(self.admin_token),
            executor: higher.executor.or(self.executor),
            fallback: higher.fallback.or(self.fallback),
            warm_pool: higher.warm_pool.or(self.warm_pool),
            warm_reuse: higher.warm_reuse.or(self.warm_reuse),
            default_workspace: higher.default_workspace.or(self.default_workspace),
            limits: higher.limits.or(self.limits),
            default_network: higher.default_network.or(self.default_network),
            full_network_range: higher.full_network_range.or(self.full_network_range),
            environments: {
                let mut environments = self.environments;
                environments.extend(higher.environments);
                environments
            },
            workspaces: RawWorkspaces {
                import_max: higher.workspaces.import_max.or(self.workspaces.import_max),
            },
            output: RawOutput {
                spool_limit: higher.output.spool_limit.or(self.output.spool_limit),
            },
            git: self.git.overlay(higher.git),
            llm: higher.llm.or(self.llm),
            prompts: {
                let mut prompts = self.prompts;
                prompts.extend(higher.prompts);
                prompts
            },
        }
    }
}

/// The layers to resolve.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// The config file's path and contents (`None`: no file).
    pub file: Option<(PathBuf, RawConfig)>,
    /// From the environment, with the variable that set each key.
    pub env: (RawConfig, BTreeMap<&'static str, String>),
    /// From flags.
    pub flags: RawConfig,
}

/// Resolves `layers` for `home` (the config file path is only recorded).
pub fn resolve(home: &Path, file_path: &Path, layers: Layers) -> Result<Config, ConfigError> {
    let mut origins: BTreeMap<&'static str, Origin> =
        KEYS.iter().map(|(k, _)| (*k, Origin::Default)).collect();
    let mut raw = RawConfig::default();
    let file_origin = layers
        .file
        .as_ref()
        .map_or(Origin::Default, |(path, _)| Origin::File(path.clone()));
    if let Some((path, file)) = layers.file {
        for key in file.keys_set() {
            origins.insert(key, Origin::File(path.clone()));
        }
        raw = raw.overlay(file);
    }
    let (env, names) = layers.env;
    for key in env.keys_set() {
        origins.insert(
            key,
            Origin::Env(names.get(key).cloned().unwrap_or_default()),
        );
    }
    raw = raw.overlay(env);
    for key in layers.flags.keys_set() {
        origins.insert(key, Origin::Flag);
    }
    raw = raw.overlay(layers.flags);

    let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
        key,
        origin: origins[key].clone(),
        reason,
    };
    let mut serve = ServeConfig::new(home.to_owned());
    if let Some(listen) = &raw.listen {
        serve.listen = listen.trim().parse::<SocketAddr>().map_err(|e| {
            invalid(
                "listen",
                format!("{listen:?} is not an address such as 127.0.0.1:8081 ({e})"),
            )
        })?;
    }
    let slots = raw.slots.unwrap_or(2);
    if !(1..=256).contains(&slots) {
        return Err(invalid(
            "slots",
            format!("{slots} is not between 1 and 256"),
        ));
    }
    let concurrency = raw.concurrency.unwrap_or(slots);
    if concurrency == 0 {
        return Err(invalid("concurrency", "must be at least 1".to_owned()));
    }
    if let Some(grace) = &raw.grace {
        serve.grace = parse_duration(grace).map_err(|e| invalid("grace", e.to_string()))?;
    }
    if let Some(limit) = raw.body_limit {
        if limit.get() < 1024 {
            return Err(invalid("body_limit", "must be at least 1k".to_owned()));
        }
        serve.body_limit = usize::try_from(limit.get()).unwrap_or(usize::MAX);
    }
    let mut scheduler = SchedulerConfig::new(
        raw.workspace_root
            .clone()
            .unwrap_or_else(|| home.join("workspaces")),
    );
    scheduler.snapshot_root = home.join("snapshots");
    if !scheduler.workspace_root.is_absolute() {
        return Err(invalid(
            "workspace_root",
            format!(
                "{} is not an absolute path",
                scheduler.workspace_root.display()
            ),
        ));
    }
    scheduler.slots = usize::from(slots);
    scheduler.concurrency = usize::from(concurrency);
    if let Some(limit) = raw.output_limit {
        scheduler.output_limit = limit;
    }
    if let Some(limit) = raw.stored_output_limit {
        if limit.get() < 1024 {
            return Err(invalid(
                "stored_output_limit",
                "must be at least 1k".to_owned(),
            ));
        }
        scheduler.stored_output_limit = limit;
    }
    if let Some(cpus) = raw.cpus_budget {
        if !cpus.is_finite() || cpus <= 0.0 {
            return Err(invalid(
                "cpus_budget",
                format!("{cpus} is not a positive number"),
            ));
        }
        scheduler.cpus_budget = Some(cpus);
    }
    scheduler.memory_budget = raw.memory_budget;
    if let Some(name) = &raw.default_workspace {
        if name.is_empty() {
            return Err(invalid(
                "default_workspace",
                "is empty: name a workspace, or remove the key for a fresh workspace per task"
                    .to_owned(),
            ));
        }
        scheduler.default_workspace = Some(name.clone());
    }
    resolve_disk_bounds(&raw, &file_origin, &mut scheduler)?;
    scheduler.git.allow_local = raw.git.resolve().map_err(|reason| ConfigError::Invalid {
        key: "git.allow_local",
        origin: file_origin.clone(),
        reason,
    })?;
    scheduler.default_network = default_networks(&raw, &origins["default_network"], &file_origin)?;
    serve.scheduler = scheduler;
    if let Some(token) = &raw.admin_token {
        if token.trim().len() < 16 {
            return Err(invalid(
                "admin_token",
                "must be at least 16 characters".to_owned(),
            ));
        }
    }
    check_agent_tables(&raw, file_path)?;
    let admin_token = raw.admin_token.map(|t| t.trim().to_owned());
    serve.admin_token.clone_from(&admin_token);
    let executor = match &raw.executor {
        Some(text) => parse_executor(text).map_err(|reason| invalid("executor", reason))?,
        None => ExecutorKind::default(),
    };
    let fallback = raw
        .fallback
        .as_deref()
        .map(|text| parse_fallback(text).map_err(|reason| invalid("fallback", reason)))
        .transpose()?;
    if let Some(limits) = &raw.limits {
        serve.scheduler.limits =
            crate::limits_config::resolve(limits).map_err(|reason| ConfigError::Invalid {
                key: "limits",
                origin: file_origin.clone(),
                reason,
            })?;
    }
    check_budgets(&serve.scheduler).map_err(|reason| ConfigError::Invalid {
        key: "limits",
        origin: file_origin.clone(),
        reason,
    })?;
    let full_network_range = match &raw.full_network_range {
        Some(text) => text
            .parse()
            .map_err(|reason| invalid("full_network_range", reason))?,
        None => FullNetworkRange::default(),
    };
    let mut environments = BTreeMap::new();
    for (name, environment) in &raw.environments {
        let parsed =
            EnvironmentOverride::parse(environment).map_err(|reason| ConfigError::Invalid {
                key: "environments",
                origin: file_origin.clone(),
                reason: format!("[environments.{name}]: {reason}"),
            })?;
        environments.insert(name.clone(), parsed);
    }
    Ok(Config {
        home: home.to_owned(),
        file: file_path.to_owned(),
        serve,
        admin_token,
        executor,
        fallback,
        warm_pool: usize::from(raw.warm_pool.unwrap_or(0)),
        warm_reuse: raw.warm_reuse.unwrap_or(0),
        environments,
        full_network_range,
        origins,
        llm: raw.llm,
        prompts: raw.prompts,
    })
}

/// `[llm]` must be what the gateway reads, `[prompts]` templates of known task types.
fn check_agent_tables(raw: &RawConfig, file: &Path) -> Result<(), ConfigError> {
    if let Some(table) = &raw.llm {
        let parsed: Result<conductor_gateway::RawLlmConfig, _> =
            toml::Value::Table(table.clone()).try_into();
        parsed.map_err(|error| ConfigError::Invalid {
            key: "llm",
            origin: Origin::File(file.to_owned()),
            reason: format!("[llm]: {error}"),
        })?;
    }
    conductor_core::PromptTemplates::with_overrides(&raw.prompts).map_err(|reason| {
        ConfigError::Invalid {
            key: "prompts",
            origin: Origin::File(file.to_owned()),
            reason: format!("[prompts]: {reason}"),
        }
    })?;
    Ok(())
}

/// A default limit above a budget would refuse every task that names none.
fn check_budgets(scheduler: &SchedulerConfig) -> Result<(), String> {
    let default = scheduler.limits.default;
    if let (Some(budget), Some(memory)) = (scheduler.memory_budget, default.memory) {
        if memory > budget {
            return Err(format!("[limits.default] memory = {memory} is above memory_budget = {budget}: lower the default"));
        }
    }
    if let (Some(budget), Some(cpus)) = (scheduler.cpus_budget, default.cpus) {
        if cpus.get() > budget {
            return Err(format!(
                "[limits.default] cpus = {cpus} is above cpus_budget = {budget}: lower the default"
            ));
        }
    }
    Ok(())
}

/// `[workspaces] import_max` and `[output] spool_limit` (file only), at least 1k each.
fn resolve_disk_bounds(
    raw: &RawConfig,
    origin: &Origin,
    scheduler: &mut SchedulerConfig,
) -> Result<(), ConfigError> {
    let at_least_1k = |key: &'static str, value: Option<Bytes>| match value {
        Some(limit) if limit.get() < 1024 => Err(ConfigError::Invalid {
            key,
            origin: origin.clone(),
            reason: "must be at least 1k".to_owned(),
        }),
        other => Ok(other),
    };
    if let Some(limit) = at_least_1k("workspaces.import_max", raw.workspaces.import_max)? {
        scheduler.import_max = limit;
    }
    if let Some(limit) = at_least_1k("output.spool_limit", raw.output.spool_limit)? {
        scheduler.spool_limit = limit;
    }
    Ok(())
}

/// `default_network` and each `[environments.NAME] default_network`, parsed.
fn default_networks(
    raw: &RawConfig,
    origin: &Origin,
    file_origin: &Origin,
) -> Result<DefaultNetwork, ConfigError> {
    let mut networks = DefaultNetwork::default();
    if let Some(text) = &raw.default_network {
        networks.all = text
            .parse()
            .map_err(|e: ParseNetworkError| ConfigError::Invalid {
                key: "default_network",
                origin: origin.clone(),
                reason: e.to_string(),
            })?;
    }
    for (name, environment) in &raw.environments {
        if let Some(text) = &environment.default_network {
            let network = text
                .parse()
                .map_err(|e: ParseNetworkError| ConfigError::Invalid {
                    key: "environments",
                    origin: file_origin.clone(),
                    reason: format!("[environments.{name}]: default_network: {e}"),
                })?;
            networks.environments.insert(name.clone(), network);
        }
    }
    Ok(networks)
}

/// An executor key's value.
fn parse_executor(text: &str) -> Result<ExecutorKind, String> {
    text.parse()
        .map_err(|e: ParseExecutorKindError| e.to_string())
}

/// A fallback executor: a real one, not `auto`.
fn parse_fallback(text: &str) -> Result<ExecutorKind, String> {
    match parse_executor(text)? {
        ExecutorKind::Auto => Err("\"auto\" cannot be a fallback: name an executor".to_owned()),
        kind => Ok(kind),
    }
}

impl Config {
    /// What runs the tasks of environment `name`: its own settings over the global ones.
    pub fn environment(&self, name: &str) -> EnvironmentConfig {
        let own = self.environments.get(name).copied().unwrap_or_default();
        EnvironmentConfig {
            executor: own.executor.unwrap_or(self.executor),
            fallback: own.fallback.or(self.fallback),
            warm_pool: own.warm_pool.map_or(self.warm_pool, usize::from),
            warm_reuse: own.warm_reuse.unwrap_or(self.warm_reuse),
        }
    }

    /// The whole configuration as a complete config file. Secrets are masked unless
    /// `include_secrets`.
    pub fn to_raw(&self, include_secrets: bool) -> RawConfig {
        let scheduler = &self.serve.scheduler;
        RawConfig {
            listen: Some(self.serve.listen.to_string()),
            slots: Some(u16::try_from(scheduler.slots).unwrap_or(u16::MAX)),
            concurrency: Some(u16::try_from(scheduler.concurrency).unwrap_or(u16::MAX)),
            grace: Some(humantime::format_duration(self.serve.grace).to_string()),
            body_limit: Some(Bytes(self.serve.body_limit as u64)),
            output_limit: Some(scheduler.output_limit),
            stored_output_limit: Some(scheduler.stored_output_limit),
            workspace_root: Some(scheduler.workspace_root.clone()),
            cpus_budget: scheduler.cpus_budget,
            memory_budget: scheduler.memory_budget,
            admin_token: self.admin_token.as_ref().map(|token| {
                if include_secrets {
                    token.clone()
                } else {
                    "********".to_owned()
                }
            }),
            executor: Some(self.executor.as_str().to_owned()),
            fallback: self.fallback.map(|kind| kind.as_str().to_owned()),
            warm_pool: Some(u16::try_from(self.warm_pool).unwrap_or(u16::MAX)),
            warm_reuse: Some(self.warm_reuse),
            default_workspace: scheduler.default_workspace.clone(),
            limits: Some(crate::limits_config::to_raw(&scheduler.limits)),
            default_network: Some(scheduler.default_network.all.to_string()),
            full_network_range: Some(self.full_network_range.to_string()),
            environments: self.raw_environments(),
            workspaces: RawWorkspaces {
                import_max: Some(scheduler.import_max),
            },
            output: RawOutput {
                spool_limit: Some(scheduler.spool_limit),
            },
            git: RawGit {
                allow_local: Some(scheduler.git.allow_local.clone()),
            },
            llm: self.llm.clone(),
            prompts: self.prompts.clone(),
        }
    }

    /// `[environments.NAME]` tables: the overrides, and each environment's default network.
    fn raw_environments(&self) -> BTreeMap<String, RawEnvironment> {
        let networks = &self.serve.scheduler.default_network.environments;
        let mut raw: BTreeMap<String, RawEnvironment> = self
            .environments
            .iter()
            .map(|(name, own)| (name.clone(), own.to_raw()))
            .collect();
        for (name, network) in networks {
            raw.entry(name.clone()).or_default().default_network = Some(network.to_string());
        }
        raw
    }

    /// TOML text of [`Config::to_raw`].
    pub fn to_toml(&self, include_secrets: bool) -> String {
        toml::to_string(&self.to_raw(include_secrets)).unwrap_or_default()
    }

    /// `key = value  # origin` lines for humans, secrets masked.
    pub fn show(&self) -> String {
        let text = self.to_toml(false);
        let mut out = String::new();
        let mut in_table = false;
        for line in text.lines() {
            in_table |= line.starts_with('[');
            let key = line.split(" = ").next().unwrap_or_default();
            match KEYS.iter().find(|(k, _)| *k == key && !in_table) {
                Some((key, _)) => {
                    let origin = self.origins.get(key).cloned().unwrap_or(Origin::Default);
                    out.push_str(&format!("{line}  # {origin}\n"));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use conductor_types::NetworkPolicy;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn no_files(_: &Path) -> std::io::Result<String> {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        let home = Path::new("/h");
        let file = RawConfig::from_toml(
            Path::new("/h/config.toml"),
            "slots = 4\nlisten = \"127.0.0.1:9000\"\ngrace = \"30s\"\n",
        )
        .unwrap();
        let env_layer =
            RawConfig::from_env(&env(&[("CONDUCTOR_SLOTS", "3"), ("OTHER", "x")]), no_files)
                .unwrap();
        let flags = RawConfig {
            listen: Some("127.0.0.1:7000".into()),
            ..RawConfig::default()
        };
        let config = resolve(
            home,
            Path::new("/h/config.toml"),
            Layers {
                file: Some((PathBuf::from("/h/config.toml"), file)),
                env: env_layer,
                flags,
            },
        )
        .unwrap();
        assert_eq!(config.serve.scheduler.slots, 3);
        assert_eq!(config.serve.scheduler.concurrency, 3);
        assert_eq!(config.serve.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(config.serve.grace, Duration::from_secs(30));
        assert_eq!(
            config.serve.scheduler.workspace_root,
            PathBuf::from("/h/workspaces")
        );
        assert_eq!(
            config.origins["slots"],
            Origin::Env("CONDUCTOR_SLOTS".into())
        );
        assert_eq!(
            config.origins["grace"],
            Origin::File("/h/config.toml".into())
        );
        assert_eq!(config.origins["listen"], Origin::Flag);
        assert_eq!(config.origins["body_limit"], Origin::Default);
    }

    /// `agents`, the slots' old name, is still read from files, `CONDUCTOR_AGENTS` and `set`
    /// (the new name wins where both are given); what is written back says `slots`.
    #[test]
    fn the_old_name_of_slots_is_still_read() {
        let file = RawConfig::from_toml(Path::new("/c.toml"), "agents = 4\n").unwrap();
        assert_eq!(file.slots, Some(4));
        let (old, names) =
            RawConfig::from_env(&env(&[("CONDUCTOR_AGENTS", "3")]), no_files).unwrap();
        assert_eq!(
            (old.slots, names["slots"].as_str()),
            (Some(3), "CONDUCTOR_AGENTS")
        );
        let both = env(&[("CONDUCTOR_AGENTS", "3"), ("CONDUCTOR_SLOTS", "5")]);
        let (new, names) = RawConfig::from_env(&both, no_files).unwrap();
        assert_eq!(
            (new.slots, names["slots"].as_str()),
            (Some(5), "CONDUCTOR_SLOTS")
        );
        let mut set = RawConfig::default();
        set.set("agents", "6").unwrap();
        assert_eq!(set.slots, Some(6));
        let written = toml::to_string(&file).unwrap();
        assert_eq!(written.trim(), "slots = 4");
    }

    #[test]
    fn bad_values_name_the_key_and_origin() {
        let err = RawConfig::from_env(&env(&[("CONDUCTOR_SLOTS", "many")]), no_files).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key slots (from env CONDUCTOR_SLOTS): invalid digit found in string"
        );
        let file = RawConfig::from_toml(Path::new("/c.toml"), "slots = 0\n").unwrap();
        let err = resolve(
            Path::new("/h"),
            Path::new("/c.toml"),
            Layers {
                file: Some((PathBuf::from("/c.toml"), file)),
                ..Layers::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key slots (from file /c.toml): 0 is not between 1 and 256"
        );
        let err = RawConfig::from_toml(Path::new("/c.toml"), "agnets = 2\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `agnets`"), "{err}");
        let err = RawConfig::from_toml(Path::new("/c.toml"), "body_limit = \"-5g\"\n").unwrap_err();
        assert!(err.to_string().contains("is negative"), "{err}");
    }

    #[test]
    fn git_allow_local_is_empty_by_default_and_must_be_absolute() {
        let resolve_file = |text: &str| {
            let file = RawConfig::from_toml(Path::new("/c.toml"), text).unwrap();
            resolve(
                Path::new("/h"),
                Path::new("/c.toml"),
                Layers {
                    file: Some((PathBuf::from("/c.toml"), file)),
                    ..Layers::default()
                },
            )
        };
        let config = resolve_file("").unwrap();
        assert!(config.serve.scheduler.git.allow_local.is_empty());
        let config = resolve_file("[git]\nallow_local = [\"/srv/repos\"]\n").unwrap();
        assert_eq!(
            config.serve.scheduler.git.allow_local,
            vec![PathBuf::from("/srv/repos")]
        );
        assert!(config
            .to_toml(false)
            .contains("[git]\nallow_local = [\"/srv/repos\"]"));
        for bad in ["srv/repos", "/srv/../root", "/"] {
            let err = resolve_file(&format!("[git]\nallow_local = [{bad:?}]\n")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("config key git.allow_local (from file /c.toml): {bad} is not an absolute directory below / without . or .. components")
            );
        }
    }

    #[test]
    fn the_executor_defaults_to_auto_and_names_the_choices() {
        let resolve_env = |pairs: &[(&str, &str)]| {
            let layer = RawConfig::from_env(&env(pairs), no_files).unwrap();
            resolve(
                Path::new("/h"),
                Path::new("/h/config.toml"),
                Layers {
                    env: layer,
                    ..Layers::default()
                },
            )
        };
        assert_eq!(resolve_env(&[]).unwrap().executor, ExecutorKind::Auto);
        let config = resolve_env(&[("CONDUCTOR_EXECUTOR", "namespace")]).unwrap();
        assert_eq!(config.executor, ExecutorKind::Namespace);
        assert!(
            config
                .show()
                .contains("executor = \"namespace\"  # env CONDUCTOR_EXECUTOR"),
            "{}",
            config.show()
        );
        let err = resolve_env(&[("CONDUCTOR_EXECUTOR", "vm")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key executor (from env CONDUCTOR_EXECUTOR): \"vm\" is not an executor: \
             use \"auto\", \"host\", \"namespace\", \"docker\" or \"podman\""
        );
        let err = resolve_env(&[("CONDUCTOR_FALLBACK", "auto")]).unwrap_err();
        assert!(err.to_string().contains("cannot be a fallback"), "{err}");
    }

    fn resolve_file(text: &str) -> Result<Config, ConfigError> {
        let file = RawConfig::from_toml(Path::new("/c.toml"), text)?;
        resolve(
            Path::new("/h"),
            Path::new("/c.toml"),
            Layers {
                file: Some((PathBuf::from("/c.toml"), file)),
                ..Layers::default()
            },
        )
    }

    #[test]
    fn import_max_and_spool_limit_have_defaults_and_bounds() {
        let defaults = resolve_file("").unwrap();
        let scheduler = &defaults.serve.scheduler;
        assert_eq!(
            (scheduler.import_max, scheduler.spool_limit),
            (Bytes(2 << 30), Bytes::mib(64))
        );
        let set =
            resolve_file("[workspaces]\nimport_max = \"10g\"\n[output]\nspool_limit = \"1m\"\n")
                .unwrap();
        let scheduler = &set.serve.scheduler;
        assert_eq!(
            (scheduler.import_max, scheduler.spool_limit),
            (Bytes(10 << 30), Bytes::mib(1))
        );
        let again = RawConfig::from_toml(Path::new("/x"), &set.to_toml(true)).unwrap();
        assert_eq!(again, set.to_raw(true));
        assert_eq!(
            resolve_file("[output]\nspool_limit = \"10\"\n")
                .unwrap_err()
                .to_string(),
            "config key output.spool_limit (from file /c.toml): must be at least 1k"
        );
        assert_eq!(
            resolve_file("[workspaces]\nimport_max = \"0\"\n")
                .unwrap_err()
                .to_string(),
            "config key workspaces.import_max (from file /c.toml): must be at least 1k"
        );
    }

    #[test]
    fn the_default_network_is_none_and_configurable_per_environment() {
        let defaults = resolve(Path::new("/h"), Path::new("/c.toml"), Layers::default()).unwrap();
        assert_eq!(
            defaults.serve.scheduler.default_network,
            DefaultNetwork::default()
        );
        assert_eq!(
            defaults.serve.scheduler.default_network.of("host"),
            NetworkPolicy::None
        );

        let text = "default_network = \"full\"\n[environments.host]\ndefault_network = \"host\"\n\
                    [environments.web]\ndefault_network = \"allowlist:a.example,b.example\"\n";
        let file = RawConfig::from_toml(Path::new("/c.toml"), text).unwrap();
        let config = resolve(
            Path::new("/h"),
            Path::new("/c.toml"),
            Layers {
                file: Some((PathBuf::from("/c.toml"), file)),
                ..Layers::default()
            },
        )
        .unwrap();
        let networks = &config.serve.scheduler.default_network;
        assert_eq!(networks.of("host"), NetworkPolicy::Host);
        assert_eq!(
            networks.of("web"),
            NetworkPolicy::Allowlist(vec!["a.example".into(), "b.example".into()])
        );
        assert_eq!(networks.of("python-dev"), NetworkPolicy::Full);
        let again = RawConfig::from_toml(Path::new("/x"), &config.to_toml(true)).unwrap();
        assert_eq!(again, config.to_raw(true));
        assert_eq!(config.full_network_range, FullNetworkRange::default());

        let layers = |var: &str, value: &str| {
            let (env, names) = RawConfig::from_env(&env(&[(var, value)]), no_files).unwrap();
            Layers {
                env: (env, names),
                ..Layers::default()
            }
        };
        let config = resolve(
            Path::new("/h"),
            Path::new("/c.toml"),
            layers("CONDUCTOR_FULL_NETWORK_RANGE", "172.30.0.0/20"),
        )
        .unwrap();
        assert_eq!(
            config.full_network_range,
            "172.30.0.0/20".parse::<FullNetworkRange>().unwrap()
        );
        let err = resolve(
            Path::new("/h"),
            Path::new("/c.toml"),
            layers("CONDUCTOR_FULL_NETWORK_RANGE", "10.0.0.1/8"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("full_network_range"), "{err}");

        let (env, names) =
            RawConfig::from_env(&env(&[("CONDUCTOR_DEFAULT_NETWORK", "internet")]), no_files)
                .unwrap();
        let err = resolve(
            Path::new("/h"),
            Path::new("/c.toml"),
            Layers {
                env: (env, names),
                ..Layers::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            ConfigError::Invalid {
                key: "default_network",
                origin: Origin::Env("CONDUCTOR_DEFAULT_NETWORK".into()),
                reason: "invalid network \"internet\": expected none, localhost, full, host or \
                         allowlist:HOST[,HOST…]"
                    .into(),
            }
            .to_string()
        );
    }

    #[test]
    fn environments_override_the_global_executor() {
        let text = "executor = \"docker\"\nfallback = \"namespace\"\nwarm_pool = 1\n\
                    [environments.python-dev]\nexecutor = \"podman\"\nwarm_pool = 3\nwarm_reuse = 50\n\
                    [environments.minimal]\nfallback = \"docker\"\n";
        let file = RawConfig::from_toml(Path::new("/c.toml"), text).unwrap();
        let config = resolve(
            Path::new("/h"),
            Path::new("/c.toml"),
            Layers {
                file: Some((PathBuf::from("/c.toml"), file)),
                ..Layers::default()
            },
        )
        .unwrap();
        let python = config.environment("python-dev");
        assert_eq!(python.executor, ExecutorKind::Podman);
        assert_eq!(python.fallback, Some(ExecutorKind::Namespace));
        assert_eq!(python.warm_pool, 3);
        assert_eq!(python.warm_reuse, 50);
        let minimal = config.environment("minimal");
        assert_eq!(minimal.executor, ExecutorKind::Docker);
        assert_eq!(minimal.fallback, Some(ExecutorKind::Docker));
        assert_eq!(minimal.warm_pool, 1);
        assert_eq!(minimal.warm_reuse, 0);
        let again = RawConfig::from_toml(Path::new("/x"), &config.to_toml(true)).unwrap();
        assert_eq!(again, config.to_raw(true));

        let bad = RawConfig::from_toml(
            Path::new("/c.toml"),
            "[environments.x]\nexecutor = \"vm\"\n",
        )
        .unwrap();
        let err = resolve(
            Path::new("/h"),
            Path::new("/c.toml"),
            Layers {
                file: Some((PathBuf::from("/c.toml"), bad)),
                ..Layers::default()
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("[environments.x]: \"vm\" is not an executor"),
            "{err}"
        );
    }

    #[test]
    fn limits_tables_resolve_over_the_builtin_defaults_and_bad_ones_name_the_key() {
        let resolve_file = |text: &str| {
            let file = RawConfig::from_toml(Path::new("/c.toml"), text).unwrap();
            resolve(
                Path::new("/h"),
                Path::new("/c.toml"),
                Layers {
                    file: Some((PathBuf::from("/c.toml"), file)),
                    ..Layers::default()
                },
            )
        };
        let builtin = resolve_file("").unwrap().serve.scheduler.limits;
        assert_eq!(builtin, conductor_core::LimitPolicy::builtin());
        let config =
            resolve_file("[limits.default]\npids = 64\n[limits.max]\nmemory = \"8g\"\n").unwrap();
        let limits = config.serve.scheduler.limits;
        assert_eq!(
            (
                limits.default.pids,
                limits.default.memory,
                limits.max.memory
            ),
            (
                Some(64),
                builtin.default.memory,
                Some(Bytes(8 * Bytes::GIB))
            )
        );
        assert!(
            config
                .show()
                .contains("[limits.max]\nmemory = 8589934592\n"),
            "{}",
            config.show()
        );
        let again = RawConfig::from_toml(Path::new("/x"), &config.to_toml(true)).unwrap();
        assert_eq!(again, config.to_raw(true));
        let err = resolve_file("[limits.max]\nmemory = \"1g\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key limits (from file /c.toml): [limits.default] memory is 2g, above [limits.max] memory = 1g"
        );
        let err = resolve_file("memory_budget = \"1g\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key limits (from file /c.toml): [limits.default] memory = 2g is above memory_budget = 1g: lower the default"
        );
    }

    #[test]
    fn secrets_come_from_files_and_are_masked() {
        let read = |path: &Path| {
            assert_eq!(path, Path::new("/run/secrets/admin"));
            Ok("cdt_0123456789abcdef0123\n".to_owned())
        };
        let layer = RawConfig::from_env(
            &env(&[("CONDUCTOR_ADMIN_TOKEN_FILE", "/run/secrets/admin")]),
            read,
        )
        .unwrap();
        let config = resolve(
            Path::new("/h"),
            Path::new("/h/config.toml"),
            Layers {
                env: layer,
                ..Layers::default()
            },
        )
        .unwrap();
        assert_eq!(
            config.admin_token.as_deref(),
            Some("cdt_0123456789abcdef0123")
        );
        let shown = config.show();
        assert!(
            shown.contains("admin_token = \"********\"  # env CONDUCTOR_ADMIN_TOKEN_FILE"),
            "{shown}"
        );
        assert!(!shown.contains("0123456789"), "{shown}");
        let exported = config.to_toml(true);
        let again = RawConfig::from_toml(Path::new("/x"), &exported).unwrap();
        assert_eq!(again, config.to_raw(true));
    }
}
