//! Turning what a client sent ([`TaskRequest`]) into a [`TaskSpec`] the orchestrator will run, or
//! a [`SpecError`] naming the field to fix. Pure: the caller says which environments exist.

use std::collections::BTreeMap;
use std::time::Duration;

use conductor_types::{GitSource, TaskRequest, TaskSpec};

use crate::agent::{validate_agent, AgentFields, PromptTemplates};

/// The environment a task runs in when it names none.
pub const DEFAULT_ENVIRONMENT: &str = "host";
/// Most commands one task may have.
pub const MAX_COMMANDS: usize = 1000;
/// Longest command line, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Most retries a task may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Longest timeout a task may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// File in the workspace root where a task's shell leaves its working directory, so that `cd`
/// in one command carries over to the next (seed 001: `"cd /workspace/src"`, then `"pytest"`).
pub const CWD_FILE: &str = ".conductor-cwd";

/// Runs before each command of a multi-command task: remembers the workspace root, resumes in the
/// directory the previous command ended in, and records the final directory on exit (whatever
/// the exit path). On one line, so the command's own line numbers are unchanged.
const CWD_PRELUDE: &str = concat!(
    "__conductor_cwd=\"$PWD/.conductor-cwd\"; ",
    "trap 'pwd > \"$__conductor_cwd\" 2>/dev/null' EXIT; ",
    "if [ -r \"$__conductor_cwd\" ]; then cd \"$(cat \"$__conductor_cwd\")\" 2>/dev/null; fi; ",
);

/// The argv that runs one command line of a task: `/bin/sh -c LINE`, prefixed (for tasks of
/// more than one command) so the working directory carries from one command to the next.
pub fn command_argv(command: &str, carry_cwd: bool) -> Vec<String> {
    let script = if carry_cwd {
        format!("{CWD_PRELUDE}{command}")
    } else {
        command.to_owned()
    };
    vec!["/bin/sh".to_owned(), "-c".to_owned(), script]
}

/// The command line inside an argv made by [`command_argv`].
pub fn command_of(argv: &[String]) -> Option<&str> {
    let script = argv.get(2)?;
    Some(script.strip_prefix(CWD_PRELUDE).unwrap_or(script))
}

/// A validated task and its secret values, which are kept apart from the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedTask {
    /// The spec to store and run.
    pub spec: TaskSpec,
    /// Secret variables: name → value. Stored apart, injected into commands, redacted from output.
    pub secrets: BTreeMap<String, String>,
}

/// A request that cannot become a task, with the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// The field's path (`commands[2]`, `resources.memory`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
    /// Whether the request is valid but asks for something not built yet.
    pub not_supported: bool,
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            not_supported: false,
        }
    }

    fn not_supported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            not_supported: true,
        }
    }
}

/// Validates `request` and fills in defaults. `environments` lists the environments that exist.
/// Agent tasks of the seed's types get their prompt from the built-in templates.
pub fn validate_request(
    request: TaskRequest,
    environments: &[&str],
) -> Result<ValidatedTask, SpecError> {
    validate_request_with(request, environments, &PromptTemplates::default())
}

/// [`validate_request`] with the server's prompt templates.
pub fn validate_request_with(
    mut request: TaskRequest,
    environments: &[&str],
    templates: &PromptTemplates,
) -> Result<ValidatedTask, SpecError> {
    let task_type = request.task_type.unwrap_or_default();
    let fields = AgentFields {
        agent: request.agent.take(),
        budget: request.budget.take(),
        files: request.files.take(),
        description: request.description.clone(),
        has_commands: request.commands.as_ref().is_some_and(|c| !c.is_empty()),
    };
    let agent = validate_agent(task_type, fields, templates)?;
    let services = validate_services(request.services.unwrap_or_default())?;
    let default_environment = match &agent {
        Some(valid) => crate::agent::default_environment(valid.spec.kind),
        None => DEFAULT_ENVIRONMENT,
    };
    let environment = request
        .environment
        .unwrap_or_else(|| default_environment.to_owned());
    if !environments.contains(&environment.as_str()) {
        return Err(SpecError::invalid(
            "environment",
            format!(
                "unknown environment {environment:?}: the environments that exist are {} (the server offers every environment built on it, also one built while it runs: `conductor env build NAME`; or define it in the request's `environments`)",
                quoted_list(environments)
            ),
        ));
    }
    let commands = match agent {
        Some(_) => Vec::new(),
        None => validate_commands(request.commands.unwrap_or_default())?,
    };
    if let Some(description) = &request.description {
        if description.len() > 4096 {
            return Err(SpecError::invalid(
                "description",
                "is longer than 4096 bytes",
            ));
        }
    }
    let resources = request.resources.unwrap_or_default();
    validate_resources(&resources)?;
    let env = request.env.unwrap_or_default();
    for (name, value) in &env {
        validate_variable("env", name, value)?;
    }
    let secrets = request.secrets.unwrap_or_default();
    for (name, value) in &secrets {
        validate_variable("secrets", name, value)?;
        if value.is_empty() {
            return Err(SpecError::invalid(
                format!("secrets.{name}"),
                "is empty: an empty secret cannot be redacted",
            ));
        }
        if env.contains_key(name) {
            return Err(SpecError::invalid(
                format!("secrets.{name}"),
                "is also set in env: set it in one place",
            ));
        }
    }
    if let Some(timeout) = request.timeout {
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(SpecError::invalid(
                "timeout",
                "must be longer than zero and at most 7 days",
            ));
        }
    }
    if let Some(name) = &request.workspace {
        validate_workspace_name(name)?;
    }
    if let Some(git) = &request.git {
        validate_git(git, request.workspace.is_some())?;
    }
    let labels = request.labels.unwrap_or_default();
    for (key, value) in &labels {
        validate_label(key, value)?;
    }
    let retries = request.retries.unwrap_or(0);
    if retries > MAX_RETRIES {
        return Err(SpecError::invalid(
            "retries",
            format!("must be at most {MAX_RETRIES}"),
        ));
    }
    // The server puts its configured default (`default_network`) in before; `none` otherwise.
    let network = request.network.unwrap_or_default();
    Ok(ValidatedTask {
        spec: TaskSpec {
            task_type,
            description: request.description,
            environment,
            commands,
            continue_on_error: request.continue_on_error.unwrap_or(false),
            resources,
            network,
            timeout: request.timeout,
            defaults_applied: Vec::new(),
            env,
            secret_names: secrets.keys().cloned().collect(),
            workspace: request.workspace,
            git: request.git,
            services,
            inline_environment: None,
            priority: request.priority.unwrap_or(0),
            labels,
            retries,
            agent: agent.as_ref().map(|valid| valid.spec.clone()),
            budget: agent.as_ref().and_then(|valid| valid.budget),
            files: agent.map(|valid| valid.files).unwrap_or_default(),
            session_id: None,
            parent_id: None,
        },
        secrets,
    })
}

/// Most services one task may start.
pub const MAX_SERVICES: usize = 8;

/// Service references: not empty, not repeated, at most [`MAX_SERVICES`]. Whether each names
/// a service that exists is the environment's executor's to say.
fn validate_services(services: Vec<String>) -> Result<Vec<String>, SpecError> {
    if services.len() > MAX_SERVICES {
        return Err(SpecError::invalid(
            "services",
            format!("at most {MAX_SERVICES} services per task"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for service in &services {
        let trimmed = service.trim();
        if trimmed.is_empty() || trimmed.len() > 255 || trimmed.chars().any(char::is_whitespace) {
            return Err(SpecError::invalid(
                "services",
                format!("{service:?} is not a service reference such as \"postgres:14\""),
            ));
        }
        if !seen.insert(trimmed) {
            return Err(SpecError::invalid(
                "services",
                format!("{service:?} is listed twice"),
            ));
        }
    }
    Ok(services)
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("{item:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn validate_commands(commands: Vec<String>) -> Result<Vec<String>, SpecError> {
    if commands.is_empty() {
        return Err(SpecError::invalid(
            "commands",
            "must list at least one command",
        ));
    }
    if commands.len() > MAX_COMMANDS {
        return Err(SpecError::invalid(
            "commands",
            format!("has more than {MAX_COMMANDS} commands"),
        ));
    }
    for (index, command) in commands.iter().enumerate() {
        let field = format!("commands[{index}]");
        if command.trim().is_empty() {
            return Err(SpecError::invalid(field, "is empty"));
        }
        if command.contains('\0') {
            return Err(SpecError::invalid(field, "contains a NUL byte"));
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(SpecError::invalid(field, "is longer than 64 KiB"));
        }
    }
    Ok(commands)
}

fn validate_resources(resources: &conductor_types::ResourceLimits) -> Result<(), SpecError> {
    use conductor_types::Bytes;
    if resources.memory.is_some_and(|m| m.get() < 4 * Bytes::MIB) {
        return Err(SpecError::invalid(
            "resources.memory",
            "must be at least 4m",
        ));
    }
    if resources.pids == Some(0) {
        return Err(SpecError::invalid("resources.pids", "must be at least 1"));
    }
    if resources.disk.is_some_and(|d| d.get() < Bytes::MIB) {
        return Err(SpecError::invalid("resources.disk", "must be at least 1m"));
    }
    let too_large = [
        (
            "resources.memory",
            resources.memory,
            conductor_types::MAX_MEMORY,
        ),
        ("resources.disk", resources.disk, conductor_types::MAX_DISK),
    ];
    for (field, value, max) in too_large {
        if value.is_some_and(|v| v > max) {
            return Err(SpecError::invalid(field, format!("must be at most {max}")));
        }
    }
    if resources
        .pids
        .is_some_and(|p| p > conductor_types::MAX_PIDS)
    {
        return Err(SpecError::invalid(
            "resources.pids",
            format!("must be at most {}", conductor_types::MAX_PIDS),
        ));
    }
    if let Some(bad) = resources.rlimits.iter().find(|r| r.soft > r.hard) {
        return Err(SpecError::invalid(
            "resources.rlimits",
            format!(
                "{:?}: soft limit {} is above hard limit {}",
                bad.resource, bad.soft, bad.hard
            ),
        ));
    }
    Ok(())
}

fn validate_variable(map: &str, name: &str, value: &str) -> Result<(), SpecError> {
    let field = format!("{map}.{name}");
    let valid_name = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(SpecError::invalid(
            field,
            "is not a valid variable name: use letters, digits and _ (not starting with a digit)",
        ));
    }
    if value.contains('\0') {
        return Err(SpecError::invalid(field, "contains a NUL byte"));
    }
    Ok(())
}

/// Longest repository location accepted.
const MAX_REPOSITORY: usize = 4096;

fn validate_git(git: &GitSource, named_workspace: bool) -> Result<(), SpecError> {
    if named_workspace {
        return Err(SpecError::not_supported(
            "git",
            "a repository is cloned into the task's own fresh workspace; named workspaces cannot take one yet",
        ));
    }
    let repository = &git.repository;
    if repository.is_empty() || repository.len() > MAX_REPOSITORY {
        return Err(SpecError::invalid(
            "git.repository",
            format!("must be 1 to {MAX_REPOSITORY} bytes: a local path or a URL"),
        ));
    }
    if repository.starts_with('-') || repository.chars().any(char::is_control) {
        return Err(SpecError::invalid(
            "git.repository",
            "must not start with '-' or contain control characters",
        ));
    }
    if let Some(reference) = &git.reference {
        let bad = reference.is_empty()
            || reference.starts_with('-')
            || reference
                .chars()
                .any(|c| c.is_control() || c.is_whitespace());
        if bad {
            return Err(SpecError::invalid(
                "git.ref",
                "must be a branch, tag or commit id: not empty, not starting with '-', no spaces",
            ));
        }
    }
    Ok(())
}

/// Checks a workspace name: 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.`
/// (it names a directory). The error names the field `workspace`.
pub fn validate_workspace_name(name: &str) -> Result<(), SpecError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(SpecError::invalid(
            "workspace",
            format!("{name:?} is not a valid workspace name: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"),
        ))
    }
}

fn validate_label(key: &str, value: &str) -> Result<(), SpecError> {
    let valid_key = !key.is_empty()
        && key.len() <= 63
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if !valid_key {
        return Err(SpecError::invalid(
            format!("labels.{key}"),
            "is not a valid label key: use 1 to 63 letters, digits, '-', '_', '.' or '/'",
        ));
    }
    if value.len() > 255 || value.chars().any(char::is_control) {
        return Err(SpecError::invalid(
            format!("labels.{key}"),
            "value must be at most 255 bytes without control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use conductor_types::{Bytes, NetworkPolicy, ResourceLimits};

    use super::*;
    use conductor_types::TaskType;

    const HOST: &[&str] = &["host"];

    fn request(commands: &[&str]) -> TaskRequest {
        TaskRequest {
            commands: Some(commands.iter().map(|c| (*c).to_owned()).collect()),
            ..TaskRequest::default()
        }
    }

    fn error(request: TaskRequest) -> SpecError {
        validate_request(request, HOST).unwrap_err()
    }

    #[test]
    fn fills_defaults() {
        let validated = validate_request(request(&["echo hi"]), HOST).unwrap();
        assert_eq!(
            validated,
            ValidatedTask {
                spec: TaskSpec {
                    task_type: TaskType::IsolatedExecution,
                    description: None,
                    environment: "host".into(),
                    commands: vec!["echo hi".into()],
                    continue_on_error: false,
                    resources: ResourceLimits::default(),
                    network: NetworkPolicy::None,
                    timeout: None,
                    defaults_applied: Vec::new(),
                    env: BTreeMap::new(),
                    secret_names: vec![],
                    workspace: None,
                    git: None,
                    services: vec![],
                    inline_environment: None,
                    priority: 0,
                    labels: BTreeMap::new(),
                    retries: 0,
                    agent: None,
                    budget: None,
                    files: Vec::new(),
                    session_id: None,
                    parent_id: None,
                },
                secrets: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn keeps_secret_values_out_of_the_spec() {
        let mut req = request(&["deploy"]);
        req.secrets = Some(BTreeMap::from([("API_KEY".into(), "s3cr3t".into())]));
        let validated = validate_request(req, HOST).unwrap();
        assert_eq!(validated.spec.secret_names, vec!["API_KEY".to_owned()]);
        assert_eq!(validated.secrets["API_KEY"], "s3cr3t");
    }

    #[test]
    fn names_the_bad_field() {
        let cases: Vec<(TaskRequest, &str, bool)> = vec![
            (request(&[]), "commands", false),
            (TaskRequest::default(), "commands", false),
            (request(&["ls", "  "]), "commands[1]", false),
            (
                TaskRequest {
                    environment: Some("python-dev".into()),
                    ..request(&["ls"])
                },
                "environment",
                false,
            ),
            (
                TaskRequest {
                    task_type: Some(TaskType::Agent),
                    ..request(&["ls"])
                },
                "commands",
                false,
            ),
            (
                TaskRequest {
                    services: Some(vec!["redis:7".into(), "redis:7".into()]),
                    ..request(&["ls"])
                },
                "services",
                false,
            ),
            (
                TaskRequest {
                    services: Some(vec!["".into()]),
                    ..request(&["ls"])
                },
                "services",
                false,
            ),
            (
                TaskRequest {
                    resources: Some(ResourceLimits {
                        memory: Some(Bytes(1024)),
                        ..ResourceLimits::default()
                    }),
                    ..request(&["ls"])
                },
                "resources.memory",
                false,
            ),
            (
                TaskRequest {
                    env: Some(BTreeMap::from([("A=B".into(), "x".into())])),
                    ..request(&["ls"])
                },
                "env.A=B",
                false,
            ),
            (
                TaskRequest {
                    secrets: Some(BTreeMap::from([("TOKEN".into(), String::new())])),
                    ..request(&["ls"])
                },
                "secrets.TOKEN",
                false,
            ),
            (
                TaskRequest {
                    workspace: Some("../etc".into()),
                    ..request(&["ls"])
                },
                "workspace",
                false,
            ),
            (
                TaskRequest {
                    labels: Some(BTreeMap::from([("bad key".into(), "v".into())])),
                    ..request(&["ls"])
                },
                "labels.bad key",
                false,
            ),
            (
                TaskRequest {
                    retries: Some(99),
                    ..request(&["ls"])
                },
                "retries",
                false,
            ),
        ];
        for (req, field, not_supported) in cases {
            let err = error(req);
            assert_eq!(
                (err.field.as_str(), err.not_supported),
                (field, not_supported),
                "{err}"
            );
        }
    }

    #[test]
    fn multi_command_tasks_carry_the_working_directory() {
        assert_eq!(command_argv("ls", false), vec!["/bin/sh", "-c", "ls"]);
        let argv = command_argv("cd src", true);
        assert!(argv[2].starts_with("__conductor_cwd=\"$PWD/.conductor-cwd\"; trap"));
        assert!(argv[2].ends_with("; fi; cd src"));
        assert_eq!(command_of(&argv), Some("cd src"));
        assert_eq!(command_of(&command_argv("ls", false)), Some("ls"));
    }

    #[test]
    fn unknown_environment_lists_the_known_ones() {
        let mut req = request(&["ls"]);
        req.environment = Some("python-dev".into());
        assert_eq!(
            error(req).to_string(),
            "environment: unknown environment \"python-dev\": the environments that exist are \"host\" (the server offers every environment built on it, also one built while it runs: `conductor env build NAME`; or define it in the request's `environments`)"
        );
    }
}
