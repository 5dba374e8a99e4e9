//! The pure part of the container executors: an [`ExecPlan`] and the executor's settings become
//! the engine's container-create body. No I/O; unit-tested on whole values.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountType, ResourcesUlimits,
};
use conductor_core::ExecutorError;
use conductor_types::{Bytes, ExecPlan, ExecutionRequest, NetworkPolicy, Rlimit, RlimitResource};

use super::engine::EngineKind;
use super::network::FULL_NETWORK;
use super::scripts::{CONTROL_TARGET, RESIDENT_AGENT, WAITING_SHELL};

/// The label every container Conductor creates carries: its execution id.
pub const LABEL_EXECUTION: &str = "io.conductor.execution";
/// The label naming the process that owns the container (`<pid>:<start time>`), so containers
/// left by a crashed process can be found and removed.
pub const LABEL_OWNER: &str = "io.conductor.owner";

/// Paths under `/sys` the engines mask by default; naming masked paths replaces the engine's
/// list, so these are repeated.
const SYS_MASKED: [&str; 2] = ["/sys/firmware", "/sys/devices/virtual/powercap"];

/// The paths a container's runtime masks: the namespace executor's `/proc` masks
/// ([`conductor_sandbox::mounts::PROC_MASKED_FILES`] and `_DIRS`: the engines' defaults plus
/// `/proc/cmdline`, `/proc/config.gz` and `/proc/iomem`) and the engines' `/sys` ones.
pub fn masked_paths() -> Vec<String> {
    use conductor_sandbox::mounts::{PROC_MASKED_DIRS, PROC_MASKED_FILES};
    PROC_MASKED_FILES
        .iter()
        .chain(PROC_MASKED_DIRS.iter())
        .map(|name| format!("/proc/{name}"))
        .chain(SYS_MASKED.iter().map(|path| (*path).to_owned()))
        .collect()
}

/// The paths a container's runtime makes read-only: the namespace executor's
/// ([`conductor_sandbox::mounts::PROC_READ_ONLY`], the engines' defaults).
pub fn readonly_paths() -> Vec<String> {
    conductor_sandbox::mounts::PROC_READ_ONLY
        .iter()
        .map(|name| format!("/proc/{name}"))
        .collect()
}

/// The security options of every container Conductor creates on `engine`: no new privileges,
/// the seccomp profile (`seccomp`: see [`ContainerSettings::seccomp`]), and on Podman the masks
/// (its compatible API ignores `MaskedPaths`; its own `mask=` option adds to its defaults).
pub fn security_options(engine: EngineKind, seccomp: &str) -> Vec<String> {
    let mut options = vec!["no-new-privileges".to_owned(), format!("seccomp={seccomp}")];
    if engine == EngineKind::Podman {
        options.push(format!("mask={}", masked_paths().join(":")));
    }
    options
}

/// Size of the container's `/tmp` tmpfs.
const TMP_SIZE: Bytes = Bytes::mib(256);

/// Everything besides the plan that decides the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings<'a> {
    /// The executor's name, for errors.
    pub executor: &'static str,
    /// The engine the container is for.
    pub engine: EngineKind,
    /// The image to run.
    pub image: &'a str,
    /// `uid:gid` the command runs as.
    pub user: &'a str,
    /// The engine's user-namespace mode (Podman: `auto`, `keep-id`, …), if any.
    pub userns: Option<&'a str>,
    /// The cgroup the container is placed under (the execution's own).
    pub cgroup_parent: Option<&'a str>,
    /// Host directory bound at the plan's working directory.
    pub workspace: &'a str,
    /// Host directory bound read-write at `ExecutionRequest::SANDBOX_HOME` (the request's
    /// `home`), if any.
    pub home: Option<&'a str>,
    /// Labels to put on the container.
    pub labels: HashMap<String, String>,
    /// rlimits (resource, soft, hard) to set when the plan sets none of that resource. Podman,
    /// once given any ulimit, also sets its own defaults for `nofile` and `nproc` (2^20), which
    /// fail where the engine's hard limits are lower; the executor passes its own instead.
    pub default_rlimits: Vec<Rlimit>,
    /// The task's service network (see `services`): the container joins it instead of
    /// network `none`.
    pub service_network: Option<&'a str>,
    /// `name:ip` lines added to `/etc/hosts` (the services, as Podman's CNI networks have no DNS).
    pub extra_hosts: Vec<String>,
    /// The value of the `seccomp=` security option: the profile's JSON (Docker) or the path of
    /// a file holding it (Podman's compatible API opens what it is given as a path).
    pub seccomp: &'a str,
}

/// The container's command: the plan's argv under `env -i` with exactly the plan's variables
/// (`env` would take a program name containing `=` for a variable: refused).
pub fn command(plan: &ExecPlan, executor: &'static str) -> Result<Vec<String>, ExecutorError> {
    let program = plan.argv.first().map(String::as_str).unwrap_or_default();
    if program.contains('=') {
        return Err(ExecutorError::Unsupported {
            executor,
            what: format!("a program name containing '=' ({program:?})"),
        });
    }
    let mut cmd = vec!["/usr/bin/env".to_owned(), "-i".to_owned(), "--".to_owned()];
    cmd.extend(
        plan.env
            .iter()
            .map(|(name, value)| format!("{name}={value}")),
    );
    cmd.extend(plan.argv.iter().cloned());
    Ok(cmd)
}

/// The create body for `plan`.
///
/// Hardened as the module docs of `container` say, with the seccomp profile `settings.seccomp`
/// (see `container::seccomp`) next to `no-new-privileges`.
///
/// The command runs as `env -i NAME=VALUE… -- ARGV` under the engine's init (`init: true`:
/// tini for Docker, catatonit for Podman). The engines add variables of their own (`HOSTNAME`,
/// Podman's `container`); `env -i` makes the command's environment exactly the plan's. The init
/// as pid 1 makes signals behave as elsewhere (a process that is pid 1 ignores `kill -9 $$`)
/// and reports a command killed by signal N as exit status 128 + N.
pub fn create_body(
    plan: &ExecPlan,
    settings: &ContainerSettings<'_>,
) -> Result<ContainerCreateBody, ExecutorError> {
    let unsupported = |what: String| ExecutorError::Unsupported {
        executor: settings.executor,
        what,
    };
    let cmd = command(plan, settings.executor)?;
    let network_mode = match (&plan.network, settings.service_network) {
        (NetworkPolicy::None, None) => "none",
        (NetworkPolicy::None, Some(network)) => network,
        (NetworkPolicy::Full, None) => FULL_NETWORK,
        (NetworkPolicy::Full, Some(_)) => {
            return Err(unsupported(
                "network policy full together with services".to_owned(),
            ))
        }
        (other, _) => return Err(unsupported(format!("network policy {}", other.name()))),
    };
    let mut ulimits = Vec::new();
    for rlimit in &plan.rlimits {
        let name = ulimit_name(rlimit.resource)
            .ok_or_else(|| unsupported(format!("rlimit {:?}", rlimit.resource)))?;
        ulimits.push(ResourcesUlimits {
            name: Some(name.to_owned()),
            soft: Some(i64::try_from(rlimit.soft).unwrap_or(i64::MAX)),
            hard: Some(i64::try_from(rlimit.hard).unwrap_or(i64::MAX)),
        });
    }
    for default in &settings.default_rlimits {
        let set = plan.rlimits.iter().any(|r| r.resource == default.resource);
        if let (false, false, Some(name)) = (set, ulimits.is_empty(), ulimit_name(default.resource))
        {
            ulimits.push(ResourcesUlimits {
                name: Some(name.to_owned()),
                soft: Some(i64::try_from(default.soft).unwrap_or(i64::MAX)),
                hard: Some(i64::try_from(default.hard).unwrap_or(i64::MAX)),
            });
        }
    }
    let hostname = plan.sandbox.as_ref().map(|layout| layout.hostname.clone());
    let host_config = HostConfig {
        init: Some(true),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_owned(),
            format!("rw,nosuid,nodev,size={},mode=1777", TMP_SIZE.get()),
        )])),
        security_opt: Some(security_options(settings.engine, settings.seccomp)),
        cap_drop: Some(vec!["ALL".to_owned()]),
        masked_paths: Some(masked_paths()),
        readonly_paths: Some(readonly_paths()),
        network_mode: Some(network_mode.to_owned()),
        mounts: Some(
            std::iter::once(bind(
                &plan.cwd.display().to_string(),
                settings.workspace,
                None,
            ))
            .chain(
                settings
                    .home
                    .map(|home| bind(ExecutionRequest::SANDBOX_HOME, home, None)),
            )
            .collect(),
        ),
        pids_limit: plan.limits.pids.map(i64::from),
        nano_cpus: plan
            .limits
            .cpus
            .map(|cpus| (cpus.get() * 1e9).round() as i64),
        cgroup_parent: settings.cgroup_parent.map(str::to_owned),
        userns_mode: settings.userns.map(str::to_owned),
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        extra_hosts: (!settings.extra_hosts.is_empty()).then(|| settings.extra_hosts.clone()),
        ..HostConfig::default()
    };
    Ok(ContainerCreateBody {
        image: Some(settings.image.to_owned()),
        cmd: Some(cmd),
        entrypoint: Some(Vec::new()),
        user: Some(settings.user.to_owned()),
        working_dir: Some(plan.cwd.display().to_string()),
        hostname,
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        labels: Some(settings.labels.clone()),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    })
}

/// The create body of a warm-pool container for requests planned like `plan` (see `pool`):
/// as [`create_body`], but running the waiting shell, with the workspace bound from the slot
/// `slot_workspace` with `rslave` propagation, the slot's `control` directory read-only at
/// `/.conductor`, and no pids or CPU limit (the execution's cgroup gets them when it is taken).
pub fn warm_body(
    plan: &ExecPlan,
    settings: &ContainerSettings<'_>,
    slot: &SlotPaths<'_>,
) -> Result<ContainerCreateBody, ExecutorError> {
    let mut body = create_body(plan, settings)?;
    body.cmd = Some(vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        WAITING_SHELL.to_owned(),
    ]);
    let slave = Some(MountBindOptionsPropagationEnum::RSLAVE);
    if let Some(host_config) = body.host_config.as_mut() {
        host_config.pids_limit = None;
        host_config.nano_cpus = None;
        host_config.mounts = Some(vec![
            bind(&plan.cwd.display().to_string(), slot.workspace, slave),
            bind(ExecutionRequest::SANDBOX_HOME, slot.home, slave),
            Mount {
                target: Some(CONTROL_TARGET.to_owned()),
                source: Some(slot.control.to_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Mount::default()
            },
        ]);
    }
    Ok(body)
}

/// The host directories of a warm container's slot (see `pool::Slot`) its create body binds.
#[derive(Debug, Clone, Copy)]
pub struct SlotPaths<'a> {
    /// Bound at the working directory; the execution's workspace is bound on it later.
    pub workspace: &'a str,
    /// Bound at the sandbox's home; a request's home is bound on it later.
    pub home: &'a str,
    /// Bound read-only at [`CONTROL_TARGET`].
    pub control: &'a str,
}

/// A read-write bind of host `source` at `target`, receiving later mounts below `source` when
/// `propagation` is `rslave`.
fn bind(target: &str, source: &str, propagation: Option<MountBindOptionsPropagationEnum>) -> Mount {
    Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(false),
        bind_options: propagation.map(|propagation| MountBindOptions {
            propagation: Some(propagation),
            ..MountBindOptions::default()
        }),
        ..Mount::default()
    }
}

/// The engine's name for an rlimit (`--ulimit`); address space has none.
/// The create body of a resident warm container (see `resident`): as [`warm_body`], but
/// running the agent as root with only `SETUID` and `SETGID` (to start each command as
/// `settings.user`, which then has none).
pub fn resident_body(
    plan: &ExecPlan,
    settings: &ContainerSettings<'_>,
    slot: &SlotPaths<'_>,
) -> Result<ContainerCreateBody, ExecutorError> {
    let mut body = warm_body(plan, settings, slot)?;
    body.cmd = Some(vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        RESIDENT_AGENT.to_owned(),
    ]);
    body.user = Some("0:0".to_owned());
    if let Some(host_config) = body.host_config.as_mut() {
        host_config.cap_add = Some(vec!["SETUID".to_owned(), "SETGID".to_owned()]);
    }
    Ok(body)
}

fn ulimit_name(resource: RlimitResource) -> Option<&'static str> {
    Some(match resource {
        RlimitResource::As => return None,
        RlimitResource::Core => "core",
        RlimitResource::Cpu => "cpu",
        RlimitResource::Data => "data",
        RlimitResource::Fsize => "fsize",
        RlimitResource::Memlock => "memlock",
        RlimitResource::Nofile => "nofile",
        RlimitResource::Nproc => "nproc",
        RlimitResource::Stack => "stack",
    })
}

#[cfg(test)]
mod tests {
    use conductor_core::{plan, HostContext, PlanTarget};
    use conductor_types::{Cpus, ExecutionRequest};

    use super::*;

    fn settings() -> ContainerSettings<'static> {
        ContainerSettings {
            executor: "docker",
            engine: EngineKind::Docker,
            image: "conductor-env/minimal:0123456789ab",
            user: "2000000000:2000000000",
            userns: None,
            cgroup_parent: Some("/conductor/docker-1"),
            workspace: "/work/ws",
            home: None,
            labels: HashMap::from([(LABEL_EXECUTION.to_owned(), "id".to_owned())]),
            default_rlimits: vec![],
            service_network: None,
            extra_hosts: vec![],
            seccomp: "{\"defaultAction\":\"SCMP_ACT_ALLOW\"}",
        }
    }

    fn request(argv: &[&str]) -> ExecutionRequest {
        let mut request = ExecutionRequest::new(
            argv.iter().map(|s| (*s).to_owned()).collect(),
            "/work/ws".into(),
        );
        request.id = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        request
    }

    #[test]
    fn hardened_container_with_exact_environment() {
        let mut req = request(&["sh", "-c", "echo hi"]);
        req.env.insert("A".into(), "1".into());
        req.limits.pids = Some(64);
        req.limits.cpus = Some(Cpus::new(0.5).unwrap());
        req.limits.memory = Some(Bytes::mib(64));
        let plan = plan(&req, PlanTarget::Sandbox, &HostContext::default()).unwrap();
        let body = create_body(&plan, &settings()).unwrap();
        let expected = ContainerCreateBody {
            image: Some("conductor-env/minimal:0123456789ab".into()),
            cmd: Some(
                [
                    "/usr/bin/env",
                    "-i",
                    "--",
                    "A=1",
                    "HOME=/workspace",
                    &format!("PATH={}", conductor_core::SANDBOX_PATH),
                    "sh",
                    "-c",
                    "echo hi",
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
            entrypoint: Some(vec![]),
            user: Some("2000000000:2000000000".into()),
            working_dir: Some("/workspace".into()),
            hostname: Some("conductor-67e5504410b1".into()),
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(false),
            tty: Some(false),
            labels: Some(HashMap::from([(
                LABEL_EXECUTION.to_owned(),
                "id".to_owned(),
            )])),
            host_config: Some(HostConfig {
                init: Some(true),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_owned(),
                    "rw,nosuid,nodev,size=268435456,mode=1777".to_owned(),
                )])),
                security_opt: Some(vec![
                    "no-new-privileges".into(),
                    "seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}".into(),
                ]),
                cap_drop: Some(vec!["ALL".into()]),
                masked_paths: Some(masked_paths()),
                readonly_paths: Some(
                    ["bus", "fs", "irq", "sys", "sysrq-trigger"]
                        .map(|name| format!("/proc/{name}"))
                        .to_vec(),
                ),
                network_mode: Some("none".into()),
                mounts: Some(vec![Mount {
                    target: Some("/workspace".into()),
                    source: Some("/work/ws".into()),
                    typ: Some(MountType::BIND),
                    read_only: Some(false),
                    ..Mount::default()
                }]),
                pids_limit: Some(64),
                nano_cpus: Some(500_000_000),
                cgroup_parent: Some("/conductor/docker-1".into()),
                userns_mode: None,
                ulimits: Some(vec![ResourcesUlimits {
                    name: Some("core".into()),
                    soft: Some(0),
                    hard: Some(0),
                }]),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        assert_eq!(body, expected);
    }

    #[test]
    fn warm_containers_wait_with_the_workspace_slot_bound() {
        let mut req = request(&["true"]);
        req.limits.pids = Some(64);
        req.limits.cpus = Some(Cpus::new(0.5).unwrap());
        let plan = plan(&req, PlanTarget::Sandbox, &HostContext::default()).unwrap();
        let cold = create_body(&plan, &settings()).unwrap();
        let slot = SlotPaths {
            workspace: "/pool/s/workspace",
            home: "/pool/s/home",
            control: "/pool/s/control",
        };
        let warm = warm_body(&plan, &settings(), &slot).unwrap();
        let expected = ContainerCreateBody {
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), WAITING_SHELL.into()]),
            host_config: Some(HostConfig {
                pids_limit: None,
                nano_cpus: None,
                mounts: Some(vec![
                    Mount {
                        target: Some("/workspace".into()),
                        source: Some("/pool/s/workspace".into()),
                        typ: Some(MountType::BIND),
                        read_only: Some(false),
                        bind_options: Some(MountBindOptions {
                            propagation: Some(MountBindOptionsPropagationEnum::RSLAVE),
                            ..MountBindOptions::default()
                        }),
                        ..Mount::default()
                    },
                    Mount {
                        target: Some("/home/conductor".into()),
                        source: Some("/pool/s/home".into()),
                        typ: Some(MountType::BIND),
                        read_only: Some(false),
                        bind_options: Some(MountBindOptions {
                            propagation: Some(MountBindOptionsPropagationEnum::RSLAVE),
                            ..MountBindOptions::default()
                        }),
                        ..Mount::default()
                    },
                    Mount {
                        target: Some("/.conductor".into()),
                        source: Some("/pool/s/control".into()),
                        typ: Some(MountType::BIND),
                        read_only: Some(true),
                        ..Mount::default()
                    },
                ]),
                ..cold.host_config.clone().unwrap()
            }),
            ..cold
        };
        assert_eq!(warm, expected);
    }

    #[test]
    fn a_home_is_bound_read_write_at_the_sandbox_home() {
        let planned = plan(
            &request(&["true"]),
            PlanTarget::Sandbox,
            &HostContext::default(),
        )
        .unwrap();
        let with_home = ContainerSettings {
            home: Some("/sessions/s/home"),
            ..settings()
        };
        let body = create_body(&planned, &with_home).unwrap();
        let mounts = body.host_config.unwrap().mounts.unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].target.as_deref(), Some("/home/conductor"));
        assert_eq!(mounts[1].source.as_deref(), Some("/sessions/s/home"));
        assert_eq!(mounts[1].read_only, Some(false));
    }

    #[test]
    fn a_service_network_replaces_network_none_and_names_the_services() {
        let req = request(&["true"]);
        let planned = plan(&req, PlanTarget::Sandbox, &HostContext::default()).unwrap();
        let alone = create_body(&planned, &settings()).unwrap();
        let with_services = ContainerSettings {
            service_network: Some("conductor-task-t1"),
            extra_hosts: vec!["postgres:10.89.0.2".into()],
            ..settings()
        };
        let body = create_body(&planned, &with_services).unwrap();
        let expected = ContainerCreateBody {
            host_config: Some(HostConfig {
                network_mode: Some("conductor-task-t1".into()),
                extra_hosts: Some(vec!["postgres:10.89.0.2".into()]),
                ..alone.host_config.clone().unwrap()
            }),
            ..alone
        };
        assert_eq!(body, expected);
        let mut full = request(&["true"]);
        full.network = NetworkPolicy::Full;
        let planned = plan(&full, PlanTarget::Sandbox, &HostContext::default()).unwrap();
        assert_eq!(
            create_body(&planned, &with_services).unwrap_err().to_string(),
            "network policy full together with services is not supported yet by the docker executor"
        );
    }

    #[test]
    fn refuses_what_containers_cannot_do_here() {
        let mut req = request(&["true"]);
        req.network = NetworkPolicy::Localhost;
        let plan_of = |req: &ExecutionRequest| {
            plan(req, PlanTarget::Sandbox, &HostContext::default()).unwrap()
        };
        assert_eq!(
            create_body(&plan_of(&req), &settings())
                .unwrap_err()
                .to_string(),
            "network policy localhost is not supported yet by the docker executor"
        );
        let mut req = request(&["A=B"]);
        req.network = NetworkPolicy::Full;
        assert_eq!(
            create_body(&plan_of(&req), &settings())
                .unwrap_err()
                .to_string(),
            "a program name containing '=' (\"A=B\") is not supported yet by the docker executor"
        );
        let mut req = request(&["true"]);
        req.limits.rlimits = vec![Rlimit {
            resource: RlimitResource::As,
            soft: 1,
            hard: 1,
        }];
        assert_eq!(
            create_body(&plan_of(&req), &settings())
                .unwrap_err()
                .to_string(),
            "rlimit As is not supported yet by the docker executor"
        );
        let mut req = request(&["true"]);
        req.network = NetworkPolicy::Full;
        let podman = ContainerSettings {
            engine: EngineKind::Podman,
            default_rlimits: vec![Rlimit {
                resource: RlimitResource::Nofile,
                soft: 1024,
                hard: 4096,
            }],
            ..settings()
        };
        let host_config = create_body(&plan_of(&req), &podman)
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(host_config.network_mode.as_deref(), Some("conductor-full"));
        let nofile = ResourcesUlimits {
            name: Some("nofile".into()),
            soft: Some(1024),
            hard: Some(4096),
        };
        assert_eq!(host_config.ulimits.unwrap().last(), Some(&nofile));
        let mask = "mask=/proc/cmdline:/proc/config.gz:/proc/interrupts:/proc/iomem:/proc/kcore:\
                    /proc/keys:/proc/latency_stats:/proc/sched_debug:/proc/timer_list:\
                    /proc/timer_stats:/proc/acpi:/proc/asound:/proc/scsi:/sys/firmware:\
                    /sys/devices/virtual/powercap";
        assert_eq!(
            host_config.security_opt,
            Some(vec![
                "no-new-privileges".to_owned(),
                "seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}".to_owned(),
                mask.to_owned(),
            ])
        );
        assert_eq!(host_config.masked_paths, Some(masked_paths()));
    }
}
