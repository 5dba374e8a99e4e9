//! Service sidecars built locally (seed 001's `"services": ["postgres:14", "redis:7"]`): no
//! registry is reachable, so each service is an environment built from Debian packages like any
//! other ([`ServiceSpec::env`]: the shared base plus the server package and a setup step), with
//! what a container executor needs to run it next to a task — the foreground command, the user,
//! the port, a health check, writable directories — and the variables the task gets to reach it.
//!
//! A reference as a user writes it (`postgres:14`, `docker.io/library/redis:7`) is resolved to
//! a local spec by its repository name only ([`resolve`]); the tag is recorded but what runs is
//! Debian bookworm's version (PostgreSQL 15, Redis 7.0). Pure: no I/O here.

use std::collections::BTreeMap;

use crate::spec::{Base, EnvSpec};

/// Names of the local services, in the order errors list them.
pub const SERVICE_NAMES: [&str; 2] = ["postgres", "redis"];

/// The password of the `postgres` user of the postgres service (set at build time).
pub const POSTGRES_PASSWORD: &str = "postgres";

/// One service: how it is built and how it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The service's name, which is also its host name on the task's network (`postgres`).
    pub name: String,
    /// The environment the service's image is built from (named `service-<name>`).
    pub env: EnvSpec,
    /// What actually runs, for logs and records (`PostgreSQL 15 from Debian bookworm`).
    pub version: String,
    /// The command running the service in the foreground.
    pub command: Vec<String>,
    /// The user it runs as (a name from the image's `/etc/passwd`; never root).
    pub user: String,
    /// The TCP port it listens on, on every address.
    pub port: u16,
    /// A command run inside the service's container that exits 0 once it serves.
    pub health: Vec<String>,
    /// Writable tmpfs mounts (path, size in MiB) on the otherwise read-only root.
    pub tmpfs: Vec<(String, u64)>,
    /// Variables given to the task so it finds the service.
    pub task_env: BTreeMap<String, String>,
}

impl ServiceSpec {
    /// The image tag the engines know the service by: `conductor-service/<name>:<hash>`.
    pub fn image_tag(&self) -> String {
        format!(
            "conductor-service/{}:{}",
            self.name,
            self.env.content_hash()
        )
    }
}

/// A reference resolved to a local service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedService {
    /// The reference as written (`postgres:14`).
    pub reference: String,
    /// The tag asked for, if any (`14`): recorded, not honoured (see the module docs).
    pub tag: Option<String>,
    /// The local spec.
    pub spec: ServiceSpec,
}

/// Why a list of service references cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No local spec has that name.
    #[error("no local service spec for {reference} and no registry is reachable; local services: {known}")]
    Unknown {
        /// The reference as written.
        reference: String,
        /// The local services, comma-separated.
        known: String,
    },
    /// Two references name the same service (one network alias each).
    #[error("service {name} is listed twice ({first}, {second}): list each service once")]
    Duplicate {
        /// The service.
        name: String,
        /// The first reference.
        first: String,
        /// The second.
        second: String,
    },
}

/// The local service called `name` (`postgres`, `redis`).
pub fn service(name: &str) -> Option<ServiceSpec> {
    match name {
        "postgres" => Some(postgres()),
        "redis" => Some(redis()),
        _ => None,
    }
}

/// Every local service.
pub fn services() -> Vec<ServiceSpec> {
    SERVICE_NAMES
        .iter()
        .filter_map(|name| service(name))
        .collect()
}

/// Resolves references as users write them (`postgres`, `postgres:14`, `postgresql`,
/// `docker.io/library/redis:7`, `redis@sha256:…`): the registry and namespace are dropped, the
/// tag kept for the record, and the repository name looked up among the local services.
/// Each service may appear once.
pub fn resolve(references: &[String]) -> Result<Vec<ResolvedService>, ServiceError> {
    let mut resolved: Vec<ResolvedService> = Vec::new();
    for reference in references {
        let (repository, tag) = split_reference(reference);
        let name = match repository.as_str() {
            "postgres" | "postgresql" => "postgres",
            "redis" => "redis",
            _ => "",
        };
        let spec = service(name).ok_or_else(|| ServiceError::Unknown {
            reference: reference.clone(),
            known: SERVICE_NAMES.join(", "),
        })?;
        if let Some(first) = resolved.iter().find(|r| r.spec.name == spec.name) {
            return Err(ServiceError::Duplicate {
                name: spec.name,
                first: first.reference.clone(),
                second: reference.clone(),
            });
        }
        resolved.push(ResolvedService {
            reference: reference.clone(),
            tag,
            spec,
        });
    }
    Ok(resolved)
}

/// `docker.io/library/redis:7` → (`redis`, `7`); a digest counts as the tag.
fn split_reference(reference: &str) -> (String, Option<String>) {
    let reference = reference.trim();
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest.to_owned())),
        None => (reference, None),
    };
    let last = rest.rsplit('/').next().unwrap_or(rest);
    let (repository, tag) = match last.split_once(':') {
        Some((repository, tag)) => (repository, Some(tag.to_owned())),
        None => (last, None),
    };
    (repository.to_ascii_lowercase(), tag.or(digest))
}

fn env(name: &str, description: &str, packages: &[&str], setup: &[&str]) -> EnvSpec {
    EnvSpec {
        name: format!("service-{name}"),
        description: description.to_owned(),
        base: Base::default(),
        packages: packages.iter().map(|p| (*p).to_owned()).collect(),
        setup: setup.iter().map(|s| (*s).to_owned()).collect(),
        dockerfile: None,
    }
}

/// The cluster made at build time, copied to the tmpfs at every start (the root is read-only).
const PG_SEED: &str = "/var/lib/postgresql/seed";

/// PostgreSQL from Debian's `postgresql` (15 on bookworm). The build drops the package's own
/// cluster, runs `initdb` as `postgres` (`setpriv`) into a seed directory (password `postgres`, scram for TCP
/// from anywhere, trust on the local socket) and configures it to listen on every address with
/// its socket in `/tmp`; `fsync` is off, as befits a throw-away test database. Each start copies
/// the seed to a tmpfs and runs `postgres` in the foreground.
fn postgres() -> ServiceSpec {
    let setup = [
        "rm -rf /var/lib/postgresql/*/main /etc/postgresql/*/main",
        concat!(
            "printf '%s\\n' postgres > /tmp/pgpass && chmod 644 /tmp/pgpass && ",
            "setpriv --reuid=postgres --regid=postgres --init-groups /bin/sh -c ",
            "'\"$(ls -d /usr/lib/postgresql/*/bin | tail -n1)/initdb\" ",
            "-D /var/lib/postgresql/seed --username=postgres --pwfile=/tmp/pgpass ",
            "--auth-local=trust --auth-host=scram-sha-256 --no-locale --encoding=UTF8' && ",
            "rm /tmp/pgpass"
        ),
        concat!(
            "printf '%s\\n' \"listen_addresses = '*'\" 'port = 5432' ",
            "\"unix_socket_directories = '/tmp'\" 'fsync = off' 'synchronous_commit = off' ",
            "'full_page_writes = off' >> /var/lib/postgresql/seed/postgresql.conf && ",
            "echo 'host all all all scram-sha-256' >> /var/lib/postgresql/seed/pg_hba.conf"
        ),
    ];
    let start = format!(
        "cp -a {PG_SEED} /tmp/pgdata && exec \"$(ls -d /usr/lib/postgresql/*/bin | tail -n1)/postgres\" -D /tmp/pgdata"
    );
    let url = format!("postgres://postgres:{POSTGRES_PASSWORD}@postgres:5432/postgres");
    ServiceSpec {
        name: "postgres".to_owned(),
        env: env(
            "postgres",
            "PostgreSQL server (Debian's postgresql) for task services",
            &["postgresql"],
            &setup,
        ),
        version: "PostgreSQL 15 from Debian bookworm".to_owned(),
        command: vec!["/bin/sh".to_owned(), "-c".to_owned(), start],
        user: "postgres".to_owned(),
        port: 5432,
        health: ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]
            .map(str::to_owned)
            .to_vec(),
        tmpfs: vec![("/tmp".to_owned(), 512)],
        task_env: BTreeMap::from(
            [
                ("DATABASE_URL", url.as_str()),
                ("PGHOST", "postgres"),
                ("PGPORT", "5432"),
                ("PGUSER", "postgres"),
                ("PGPASSWORD", POSTGRES_PASSWORD),
                ("PGDATABASE", "postgres"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        ),
    }
}

/// Redis from Debian's `redis-server` (7.0 on bookworm): no persistence, protected mode off
/// (the network is the task's own), in the foreground as `redis`.
fn redis() -> ServiceSpec {
    ServiceSpec {
        name: "redis".to_owned(),
        env: env(
            "redis",
            "Redis server (Debian's redis-server) for task services",
            &["redis-server"],
            &[],
        ),
        version: "Redis 7.0 from Debian bookworm".to_owned(),
        command: [
            "redis-server",
            "--bind",
            "0.0.0.0",
            "--port",
            "6379",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            "/tmp",
        ]
        .map(str::to_owned)
        .to_vec(),
        user: "redis".to_owned(),
        port: 6379,
        health: ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"]
            .map(str::to_owned)
            .to_vec(),
        tmpfs: vec![("/tmp".to_owned(), 64)],
        task_env: BTreeMap::from(
            [
                ("REDIS_URL", "redis://redis:6379"),
                ("REDIS_HOST", "redis"),
                ("REDIS_PORT", "6379"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn names(resolved: &[ResolvedService]) -> Vec<(String, String, Option<String>)> {
        resolved
            .iter()
            .map(|r| (r.reference.clone(), r.spec.name.clone(), r.tag.clone()))
            .collect()
    }

    #[test]
    fn references_resolve_by_repository_name_and_keep_the_tag() {
        let resolved = resolve(&refs(&["postgres:14", "docker.io/library/redis:7"])).unwrap();
        assert_eq!(
            names(&resolved),
            [
                ("postgres:14".into(), "postgres".into(), Some("14".into())),
                (
                    "docker.io/library/redis:7".into(),
                    "redis".into(),
                    Some("7".into())
                ),
            ]
        );
        for (reference, name, tag) in [
            ("postgres", "postgres", None),
            ("postgresql", "postgres", None),
            ("library/postgres:16-alpine", "postgres", Some("16-alpine")),
            ("redis", "redis", None),
            ("Redis:7", "redis", Some("7")),
            ("localhost:5000/redis", "redis", None),
            ("redis@sha256:abc", "redis", Some("sha256:abc")),
        ] {
            let resolved = resolve(&refs(&[reference])).unwrap();
            assert_eq!(
                names(&resolved),
                [(reference.into(), name.into(), tag.map(str::to_owned))],
                "{reference}"
            );
        }
        assert_eq!(resolve(&[]).unwrap(), []);
    }

    #[test]
    fn unknown_and_duplicate_references_are_clear_errors() {
        assert_eq!(
            resolve(&refs(&["postgres", "mongo:6"]))
                .unwrap_err()
                .to_string(),
            "no local service spec for mongo:6 and no registry is reachable; local services: postgres, redis"
        );
        assert_eq!(
            resolve(&refs(&[""])).unwrap_err().to_string(),
            "no local service spec for  and no registry is reachable; local services: postgres, redis"
        );
        assert_eq!(
            resolve(&refs(&["postgres:14", "postgresql"]))
                .unwrap_err()
                .to_string(),
            "service postgres is listed twice (postgres:14, postgresql): list each service once"
        );
    }

    #[test]
    fn specs_are_valid_environments_on_the_shared_base() {
        for spec in services() {
            spec.env.validate().unwrap();
            assert_eq!(spec.env.base, Base::default(), "{}", spec.name);
            assert_eq!(spec.env.name, format!("service-{}", spec.name));
            assert_eq!(
                spec.image_tag(),
                format!(
                    "conductor-service/{}:{}",
                    spec.name,
                    spec.env.content_hash()
                )
            );
            assert_ne!(spec.user, "root");
            assert!(spec.tmpfs.iter().any(|(path, _)| path == "/tmp"));
        }
        assert_eq!(service("mongo"), None);
        let postgres = service("postgres").unwrap();
        assert_eq!(postgres.port, 5432);
        assert_eq!(
            postgres.task_env.get("DATABASE_URL").map(String::as_str),
            Some("postgres://postgres:postgres@postgres:5432/postgres")
        );
        assert_eq!(
            service("redis")
                .unwrap()
                .task_env
                .get("REDIS_URL")
                .map(String::as_str),
            Some("redis://redis:6379")
        );
    }
}
