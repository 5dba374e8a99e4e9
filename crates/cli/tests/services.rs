//! Service sidecars on Docker and Podman, for real: postgres and redis started for a fake
//! owner on their internal network, a task container on that network reaching them by name
//! (psql with the password from `DATABASE_URL`, the redis protocol from python3) and not
//! reaching anything outside, teardown leaving nothing with the owner's label, failures
//! cleaned up half-way, and the sweep of a dead process's network.
//!
//! The task containers run the postgres service image itself (it has psql and python3), so
//! only the service images are needed. Each engine's tests are skipped, with the reason, when
//! the engine does not answer or the images are not built (`conductor env build postgres
//! redis`, which CI runs).
//!
//! `cargo test -p conductor --test services`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use conductor_core::Executor;
use conductor_envs::EnvStore;
use conductor_executors::container::services::{network_name, LABEL_SERVICE_OWNER};
use conductor_executors::container::{
    ContainerConfig, ContainerExecutor, Engine, EngineKind, ServicesConfig,
};
use conductor_types::{ExecutionRequest, ExecutionResult};

mod support;

/// The engine and the service images in it (imported when built but missing), or why not.
async fn engine_and_images(kind: EngineKind) -> Result<(Engine, BTreeMap<String, String>), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the container executors' cgroups need root".to_owned());
    }
    let engine = Engine::connect(kind, &kind.default_socket())
        .await
        .map_err(|e| e.to_string())?;
    let store = EnvStore::new(conductor_envs::envs_dir(&support::conductor_home()));
    let mut images = BTreeMap::new();
    for service in conductor_envs::services() {
        let built = store
            .built(&service.env)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "the {} service is not built: run `conductor env build postgres redis`",
                    service.name
                )
            })?;
        let tag = service.image_tag();
        if !engine.has_image(&tag).await.map_err(|e| e.to_string())? {
            eprintln!("services: importing {tag} into {}", kind.name());
            engine
                .import_rootfs(&built.rootfs(), &tag)
                .await
                .map_err(|e| e.to_string())?;
        }
        images.insert(service.name.clone(), tag);
    }
    Ok((engine, images))
}

/// An executor running the postgres service image, with `images` as its services.
async fn container_executor(
    kind: EngineKind,
    images: impl FnOnce(BTreeMap<String, String>) -> BTreeMap<String, String>,
) -> Option<(ContainerExecutor, Engine)> {
    let (engine, found) = match engine_and_images(kind).await {
        Ok(found) => found,
        Err(reason) => {
            eprintln!("skipped: {}: {reason}", kind.name());
            return None;
        }
    };
    let task_image = found["postgres"].clone();
    let config = ContainerConfig {
        services: ServicesConfig {
            images: images(found),
            ..ServicesConfig::default()
        },
        ..ContainerConfig::new(kind, task_image)
    };
    let executor = ContainerExecutor::with_engine(config, engine.clone()).unwrap();
    Some((executor, engine))
}

fn owner(test: &str, kind: EngineKind) -> String {
    format!("t_{test}-{}-{}", kind.name(), std::process::id())
}

/// Containers and networks labelled with `owner`.
async fn leftovers(engine: &Engine, owner: &str) -> (usize, Vec<String>) {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_SERVICE_OWNER}={owner}")],
    )]);
    let containers = engine.list_containers(&filters).await.unwrap().len();
    let networks = engine
        .client()
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|n| n.name)
        .filter(|n| n == &network_name(owner))
        .collect();
    (containers, networks)
}

async fn run(
    executor: &ContainerExecutor,
    network: &str,
    env: &BTreeMap<String, String>,
    script: &str,
) -> ExecutionResult {
    let workspace = tempfile::tempdir().unwrap();
    let mut request = ExecutionRequest::new(
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        workspace.path().to_owned(),
    );
    request.env = env.clone();
    request.service_network = Some(network.to_owned());
    request.timeout = Some(std::time::Duration::from_secs(60));
    let (events, mut receiver) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    let result = executor.execute(request, events).await.unwrap();
    drain.await.unwrap();
    result
}

/// Speaks to redis (PING) and postgres (SSLRequest, then a startup message answered by an
/// authentication request) by name, then tries an address outside the network.
const PROBE: &str = r#"
import socket
r = socket.create_connection(("redis", 6379), timeout=5)
r.sendall(b"*1\r\n$4\r\nPING\r\n")
print("redis", r.recv(64).decode().strip())
p = socket.create_connection(("postgres", 5432), timeout=5)
p.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
print("postgres ssl", p.recv(1).decode())
body = (196608).to_bytes(4, "big") + b"user\0postgres\0database\0postgres\0\0"
p.sendall((len(body) + 4).to_bytes(4, "big") + body)
print("postgres auth", p.recv(1).decode())
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1)
    print("outside reachable")
except OSError:
    print("outside unreachable")
try:
    socket.create_connection(("GATEWAY", HOST_PORT), timeout=1)
    print("host reachable")
except OSError:
    print("host unreachable")
"#;

async fn services_reach_the_task_and_nothing_else(kind: EngineKind) {
    let Some((executor, engine)) = container_executor(kind, |images| images).await else {
        return;
    };
    let runner = executor
        .services()
        .expect("container executors run services");
    let owner = owner("reach", kind);
    let services = vec![
        "postgres:14".to_owned(),
        "docker.io/library/redis:7".to_owned(),
    ];
    runner.check(&services).unwrap();
    let began = Instant::now();
    let set = runner.start(&owner, &services).await.unwrap();
    let healthy_ms = began.elapsed().as_millis();
    eprintln!(
        "{}: postgres and redis started and healthy in {healthy_ms} ms",
        kind.name()
    );
    assert_eq!(set.network, network_name(&owner));
    let names: Vec<_> = set
        .services
        .iter()
        .map(|s| (s.reference.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("postgres:14", "postgres"),
            ("docker.io/library/redis:7", "redis")
        ]
    );
    assert_eq!(
        set.env.get("DATABASE_URL").map(String::as_str),
        Some("postgres://postgres:postgres@postgres:5432/postgres")
    );
    let network = engine
        .client()
        .inspect_network(&set.network, None)
        .await
        .unwrap();
    assert_eq!(network.internal, Some(true));
    // A listener on every host address: the network's gateway address must not lead to it.
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let gateway = network
        .ipam
        .and_then(|ipam| ipam.config)
        .and_then(|config| config.into_iter().find_map(|c| c.gateway))
        .expect("the service network has a gateway address");

    let script = format!(
        "psql \"$DATABASE_URL\" -tAc 'select 40 + 2' && python3 -c '{}'",
        PROBE
            .replace('\'', "\"")
            .replace("GATEWAY", &gateway)
            .replace("HOST_PORT", &host.local_addr().unwrap().port().to_string())
    );
    let began = Instant::now();
    let result = run(&executor, &set.network, &set.env, &script).await;
    eprintln!(
        "{}: the task on the service network ran in {} ms",
        kind.name(),
        began.elapsed().as_millis()
    );
    assert_eq!(
        (
            result.exit_code,
            result.stdout.as_str(),
            result.stderr.as_str()
        ),
        (
            0,
            "42\nredis +PONG\npostgres ssl N\npostgres auth R\noutside unreachable\nhost unreachable\n",
            ""
        )
    );

    let began = Instant::now();
    runner.stop(&set).await;
    eprintln!(
        "{}: services stopped in {} ms",
        kind.name(),
        began.elapsed().as_millis()
    );
    assert_eq!(leftovers(&engine, &owner).await, (0, vec![]));
}

async fn failures_are_clear_and_leave_nothing(kind: EngineKind) {
    // "redis" runs the postgres image, which has no user redis: postgres has started when the
    // redis container fails to.
    let Some((executor, engine)) = container_executor(kind, |mut images| {
        let postgres = images["postgres"].clone();
        images.insert("redis".to_owned(), postgres);
        images
    })
    .await
    else {
        return;
    };
    let runner = executor.services().unwrap();
    let owner = owner("fail", kind);
    let unknown = vec!["postgres".to_owned(), "mongo:6".to_owned()];
    let expected = "no local service spec for mongo:6 and no registry is reachable; local services: postgres, redis";
    assert_eq!(runner.check(&unknown).unwrap_err().to_string(), expected);
    let error = runner.start(&owner, &unknown).await.unwrap_err();
    assert_eq!(
        (error.code(), error.to_string()),
        ("invalid_request", expected.to_owned())
    );

    let error = runner
        .start(&owner, &["postgres".to_owned(), "redis".to_owned()])
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("sandbox set-up failed while starting the redis service: ")
            && message.contains("redis"),
        "{message}"
    );
    assert_eq!(leftovers(&engine, &owner).await, (0, vec![]));

    // A service whose image is not built names the command that builds it.
    let Some((unbuilt, _)) = container_executor(kind, |mut images| {
        images.remove("redis");
        images
    })
    .await
    else {
        return;
    };
    assert_eq!(
        unbuilt.services().unwrap().check(&["redis:7".to_owned()]).unwrap_err().to_string(),
        format!(
            "the {} executor is unavailable: the redis service image is not built: run `conductor env build redis`",
            kind.name()
        )
    );
}

async fn warmup_sweeps_networks_of_dead_processes(kind: EngineKind) {
    let Some((executor, engine)) = container_executor(kind, |images| images).await else {
        return;
    };
    let owner = owner("sweep", kind);
    let labels = HashMap::from([
        // Past the largest pid Linux allows: a dead owner.
        ("io.conductor.owner".to_owned(), "4194305:1".to_owned()),
        (LABEL_SERVICE_OWNER.to_owned(), owner.clone()),
    ]);
    let network = network_name(&owner);
    engine
        .client()
        .create_network(conductor_executors::container::services::network_body(
            &network, labels, kind,
        ))
        .await
        .unwrap();
    assert_eq!(leftovers(&engine, &owner).await, (0, vec![network]));
    executor.warmup().await.unwrap();
    assert_eq!(leftovers(&engine, &owner).await, (0, vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_services_reach_the_task_and_nothing_else() {
    services_reach_the_task_and_nothing_else(EngineKind::Docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_services_reach_the_task_and_nothing_else() {
    services_reach_the_task_and_nothing_else(EngineKind::Podman).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_service_failures_are_clear_and_leave_nothing() {
    failures_are_clear_and_leave_nothing(EngineKind::Docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_service_failures_are_clear_and_leave_nothing() {
    failures_are_clear_and_leave_nothing(EngineKind::Podman).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_warmup_sweeps_service_networks_of_dead_processes() {
    warmup_sweeps_networks_of_dead_processes(EngineKind::Docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_warmup_sweeps_service_networks_of_dead_processes() {
    warmup_sweeps_networks_of_dead_processes(EngineKind::Podman).await;
}
