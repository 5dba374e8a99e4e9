//! The per-command requests of a task: a pure function from the task's spec and its prepared
//! run to each command's [`ExecutionRequest`]. No I/O: what the run set up (workspace, secrets,
//! quota, services) comes in as values, and the tests below cover it without a tempdir.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use conductor_agents::AgentCommand;
use conductor_core::{command_argv, ServiceSet};
use conductor_types::{Bytes, ExecutionRequest, PortBridge, TaskSpec};

/// What the prepared run gives every command's request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestContext<'a> {
    /// The task's workspace directory.
    pub workspace: &'a Path,
    /// The task's secrets, as variables (over the spec's `env`).
    pub secrets: &'a BTreeMap<String, String>,
    /// The workspace is a quota filesystem of its own: the executor need not bound the disk.
    pub disk_enforced_by_workspace: bool,
    /// The task's started services: their network, and the variables that locate them (the
    /// task's own `env` and secrets win).
    pub services: Option<&'a ServiceSet>,
    /// Bytes of each stream an executor keeps in memory.
    pub output_limit: Bytes,
    /// Bytes of each stream an executor spools to disk at most.
    pub spool_limit: Bytes,
}

/// The request of command `index` of `spec`, with `remaining` of the task's time (`None`: no
/// timeout). In tasks of several commands, each carries the working directory to the next.
pub(crate) fn command_request(
    spec: &TaskSpec,
    index: usize,
    context: &RequestContext<'_>,
    remaining: Option<Duration>,
) -> ExecutionRequest {
    let carry_cwd = spec.commands.len() > 1;
    let argv = command_argv(&spec.commands[index], carry_cwd);
    request_for(spec, argv, &[], context, remaining)
}

/// A request running `argv` with what every step of the task gets: the task's `env`, its
/// secrets and `extra_env` over it, its limits (the disk left to a quota workspace), network,
/// services, time and output bounds.
fn request_for(
    spec: &TaskSpec,
    argv: Vec<String>,
    extra_env: &[(String, String)],
    context: &RequestContext<'_>,
    remaining: Option<Duration>,
) -> ExecutionRequest {
    let mut request = ExecutionRequest::new(argv, context.workspace.to_owned());
    request.env = spec.env.clone();
    request.env.extend(context.secrets.clone());
    request.env.extend(extra_env.iter().cloned());
    request.limits = spec.resources.clone();
    if context.disk_enforced_by_workspace {
        // Enforced by the workspace's own filesystem.
        request.limits.disk = None;
    }
    request.network = spec.network.clone();
    if let Some(services) = context.services {
        request.service_network = Some(services.network.clone());
        for (name, value) in &services.env {
            request
                .env
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
    }
    request.timeout = remaining;
    request.output_limit = context.output_limit;
    request.spool_limit = context.spool_limit;
    request
}

/// Where an agent's turn runs, beside what every request gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AgentPlacement<'a> {
    /// The session's home on the host (mounted as the agent's `HOME`).
    pub home: &'a Path,
    /// The gateway's socket on the host, bridged to `port` on the sandbox's loopback.
    pub gateway: &'a Path,
    /// That port.
    pub port: u16,
    /// The uid the agent runs as (`None`: the sandbox's root, where only one uid maps).
    pub user: Option<u32>,
}

/// The request of an agent task's turn: the adapter's command line and variables over the
/// task's own `env` and secrets, the session's home, the gateway bridged in, and the task's
/// limits, network and time.
pub(crate) fn agent_request(
    spec: &TaskSpec,
    command: &AgentCommand,
    context: &RequestContext<'_>,
    placement: &AgentPlacement<'_>,
    remaining: Option<Duration>,
) -> ExecutionRequest {
    // The adapter's variables win: they point the CLI at the gateway and its home.
    let mut request = request_for(spec, command.argv.clone(), &command.env, context, remaining);
    request.bridges = vec![PortBridge {
        port: placement.port,
        target: placement.gateway.to_owned(),
    }];
    request.home = Some(placement.home.to_owned());
    request.user = placement.user;
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use conductor_types::{NetworkPolicy, ResourceLimits};

    fn spec(commands: &[&str]) -> TaskSpec {
        let request: conductor_types::TaskRequest =
            serde_json::from_value(serde_json::json!({ "commands": commands })).unwrap();
        let mut spec = conductor_core::validate_request(request, &["host"])
            .unwrap()
            .spec;
        spec.env = BTreeMap::from([
            ("A".to_owned(), "task".to_owned()),
            ("DATABASE_URL".to_owned(), "mine".to_owned()),
        ]);
        spec.resources = ResourceLimits {
            disk: Some(Bytes::mib(64)),
            ..ResourceLimits::default()
        };
        spec.network = NetworkPolicy::Localhost;
        spec
    }

    fn context<'a>(
        secrets: &'a BTreeMap<String, String>,
        services: Option<&'a ServiceSet>,
    ) -> RequestContext<'a> {
        RequestContext {
            workspace: Path::new("/ws/slot-1/t"),
            secrets,
            disk_enforced_by_workspace: false,
            services,
            output_limit: Bytes::mib(1),
            spool_limit: Bytes::mib(8),
        }
    }

    #[test]
    fn a_single_command_runs_as_written_with_the_task_limits_network_and_time() {
        let spec = spec(&["echo hi"]);
        let secrets = BTreeMap::new();
        let request = command_request(
            &spec,
            0,
            &context(&secrets, None),
            Some(Duration::from_secs(5)),
        );
        assert_eq!(request.argv, command_argv("echo hi", false));
        assert_eq!(request.workspace, Path::new("/ws/slot-1/t"));
        assert_eq!(request.env, spec.env);
        assert_eq!(request.limits, spec.resources);
        assert_eq!(request.network, NetworkPolicy::Localhost);
        assert_eq!(request.timeout, Some(Duration::from_secs(5)));
        assert_eq!(request.output_limit, Bytes::mib(1));
        assert_eq!(request.spool_limit, Bytes::mib(8));
        assert_eq!(request.service_network, None);
    }

    #[test]
    fn several_commands_carry_the_working_directory() {
        let spec = spec(&["cd src", "ls"]);
        let secrets = BTreeMap::new();
        let request = command_request(&spec, 1, &context(&secrets, None), None);
        assert_eq!(request.argv, command_argv("ls", true));
        assert_eq!(request.timeout, None);
    }

    #[test]
    fn secrets_override_the_env_and_services_only_fill_what_is_missing() {
        let spec = spec(&["true"]);
        let secrets = BTreeMap::from([("A".to_owned(), "secret".to_owned())]);
        let services = ServiceSet {
            network: "conductor-t".to_owned(),
            services: Vec::new(),
            env: BTreeMap::from([
                ("DATABASE_URL".to_owned(), "postgres://db".to_owned()),
                ("REDIS_URL".to_owned(), "redis://cache".to_owned()),
            ]),
        };
        let request = command_request(&spec, 0, &context(&secrets, Some(&services)), None);
        let expected: BTreeMap<String, String> = [
            ("A", "secret"),
            ("DATABASE_URL", "mine"),
            ("REDIS_URL", "redis://cache"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(request.env, expected);
        assert_eq!(request.service_network.as_deref(), Some("conductor-t"));
    }

    #[test]
    fn a_workspace_quota_takes_the_disk_limit_off_the_executor() {
        let spec = spec(&["true"]);
        let secrets = BTreeMap::new();
        let mut context = context(&secrets, None);
        context.disk_enforced_by_workspace = true;
        let request = command_request(&spec, 0, &context, None);
        let expected = ResourceLimits {
            disk: None,
            ..spec.resources.clone()
        };
        assert_eq!(request.limits, expected);
    }
    #[test]
    fn an_agent_turn_gets_its_command_home_bridge_and_user_over_the_task_env() {
        let secrets = BTreeMap::from([("TOKEN".to_owned(), "s3cret".to_owned())]);
        let mut task = spec(&["unused"]);
        task.commands.clear();
        task.env
            .insert("ANTHROPIC_BASE_URL".into(), "http://evil".into());
        let command = AgentCommand {
            argv: vec!["claude".into(), "-p".into()],
            cwd: "/workspace".into(),
            env: vec![("ANTHROPIC_BASE_URL".into(), "http://127.0.0.1:4141".into())],
            files: Vec::new(),
        };
        let placement = AgentPlacement {
            home: Path::new("/h/sessions/s/home"),
            gateway: Path::new("/h/run/llm.sock"),
            port: 4141,
            user: Some(1000),
        };
        let request = agent_request(
            &task,
            &command,
            &context(&secrets, None),
            &placement,
            Some(Duration::from_secs(9)),
        );
        assert_eq!(request.argv, ["claude", "-p"]);
        assert_eq!(request.env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:4141");
        assert_eq!(request.env["TOKEN"], "s3cret");
        assert_eq!(request.env["A"], "task");
        assert_eq!(
            request.bridges,
            [PortBridge {
                port: 4141,
                target: "/h/run/llm.sock".into()
            }]
        );
        assert_eq!(
            request.home.as_deref(),
            Some(Path::new("/h/sessions/s/home"))
        );
        assert_eq!(request.user, Some(1000));
        assert_eq!(request.network, NetworkPolicy::Localhost);
        assert_eq!(request.timeout, Some(Duration::from_secs(9)));
    }
}
