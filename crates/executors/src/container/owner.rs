//! Who owns a container, a warm slot or a warm cgroup, and finding those whose owner is gone.
//! Each is labelled or named with its process's `<pid>:<start time>` (the start time tells a
//! reused pid apart); `warmup()` removes what a process that died before its guards ran left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use conductor_core::ExecutorError;

use super::engine::Engine;
use super::guard;
use super::spec::LABEL_OWNER;

/// `<pid>:<start time in clock ticks>` of this process: names the owner of its containers
/// across pid reuse.
pub(crate) fn own_owner_label() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or(0))
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may hold spaces, so count from its closing paren.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether the process named by an owner label still runs.
pub(crate) fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// The directories in `dir` named `<prefix><pid>-<start>-…` whose process is gone.
pub(crate) fn dead_owners(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(prefix) else {
                return false;
            };
            let mut parts = rest.splitn(3, '-');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(pid), Some(start), Some(_)) => !owner_alive(&format!("{pid}:{start}")),
                _ => false,
            }
        })
        .map(|entry| entry.path())
        .collect()
}

/// Removes the containers on `engine` whose owning process is gone (a crash before its guard
/// ran); how many were removed.
pub(crate) async fn sweep_orphans(engine: &Engine) -> Result<usize, ExecutorError> {
    let filters = HashMap::from([("label".to_owned(), vec![LABEL_OWNER.to_owned()])]);
    let listed = engine
        .list_containers(&filters)
        .await
        .map_err(|e| ExecutorError::Setup {
            stage: "listing containers".to_owned(),
            reason: e.to_string(),
        })?;
    let mut removed = 0;
    for container in listed {
        let owner = container
            .labels
            .get(LABEL_OWNER)
            .cloned()
            .unwrap_or_default();
        if owner_alive(&owner) {
            continue;
        }
        let id = container.id;
        tracing::info!(container = %id, %owner, "removing a container left by a dead process");
        if guard::remove_container(engine, &id).await {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_labels_name_live_processes_only() {
        let own = own_owner_label();
        assert!(owner_alive(&own), "{own}");
        let (pid, start) = own.split_once(':').unwrap();
        assert!(!owner_alive(&format!(
            "{pid}:{}",
            start.parse::<u64>().unwrap() + 1
        )));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn dead_owners_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let own = own_owner_label().replace(':', "-");
        for name in [
            format!("docker-warm-{own}-aaaa"),
            "docker-warm-4194305-1-bbbb".to_owned(),
            "docker-1234".to_owned(),
            "docker-warm-garbage".to_owned(),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(
            dead_owners(dir.path(), "docker-warm-"),
            vec![dir.path().join("docker-warm-4194305-1-bbbb")]
        );
    }
}
