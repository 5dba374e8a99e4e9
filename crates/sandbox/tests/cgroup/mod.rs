//! The cgroup manager on the real kernel (`/sys/fs/cgroup`, v1 or v2). Needs root; elsewhere
//! each test prints why it is skipped and returns.

// Helpers outside #[test] fns: a panic is how they fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use conductor_sandbox::cgroup::{
    Cgroup, CgroupLimits, CgroupManager, CgroupVersion, CPU_PERIOD_US,
};
use conductor_types::{Bytes, Cpus};

const PARENT: &str = "conductor-test";

fn manager(test: &str) -> Option<CgroupManager> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping cgroup::{test}: creating cgroups needs root");
        return None;
    }
    match CgroupManager::detect(Path::new("/sys/fs/cgroup"), PARENT) {
        Ok(manager) => Some(manager),
        Err(e) => {
            eprintln!("skipping cgroup::{test}: cgroups are unusable here: {e}");
            None
        }
    }
}

fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `sh -c script` that first waits for a line on stdin, so it can be put in the cgroup before
/// it does anything.
fn spawn_gated(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read x; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn release(child: &mut Child) {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
}

fn wait_for(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "child still running after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// The control file `file` in whichever of the cgroup's directories has it.
fn control(cgroup: &Cgroup, file: &str) -> String {
    let dir = cgroup
        .dirs()
        .iter()
        .find(|d| d.join(file).exists())
        .unwrap_or_else(|| panic!("no {file} in {:?}", cgroup.dirs()));
    read(&dir.join(file))
}

/// Not running: gone, or a zombie waiting for its parent.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn limits_membership_stats_kill_and_destroy() {
    let Some(manager) = manager("limits_membership_stats_kill_and_destroy") else {
        return;
    };
    let name = unique_name();
    let limits = CgroupLimits {
        cpus: Some(Cpus::new(0.5).unwrap()),
        memory: Some(Bytes::mib(64)),
        pids: Some(16),
    };
    let cgroup = manager.create(&name, &limits).unwrap();
    match manager.version() {
        CgroupVersion::V1 => {
            assert_eq!(control(&cgroup, "memory.limit_in_bytes"), "67108864\n");
            if cgroup
                .dirs()
                .iter()
                .any(|d| d.join("memory.memsw.limit_in_bytes").exists())
            {
                assert_eq!(
                    control(&cgroup, "memory.memsw.limit_in_bytes"),
                    "67108864\n"
                );
            }
            assert_eq!(control(&cgroup, "cpu.cfs_period_us"), "100000\n");
            assert_eq!(control(&cgroup, "cpu.cfs_quota_us"), "50000\n");
        }
        CgroupVersion::V2 => {
            assert_eq!(control(&cgroup, "memory.max"), "67108864\n");
            assert_eq!(control(&cgroup, "cpu.max"), "50000 100000\n");
        }
    }
    assert_eq!(control(&cgroup, "pids.max"), "16\n");

    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    cgroup.add_pid(child.id()).unwrap();
    assert_eq!(cgroup.pids().unwrap(), [child.id()]);
    let membership = read(Path::new(&format!("/proc/{}/cgroup", child.id())));
    let expected = format!("/{PARENT}/{name}");
    let joined = membership
        .lines()
        .filter(|line| line.ends_with(&expected))
        .count();
    assert_eq!(joined, cgroup.procs_files().len(), "{membership}");

    let stats = cgroup.stats().unwrap();
    eprintln!("stats of a fresh `sleep 30`: {stats:?}");
    assert!(stats.cpu_time_us.is_some(), "{stats:?}");
    // `sleep` allocated before joining, and memory charges do not move with a process, so the
    // peak may be 0 here; it must still be reported (peak_memory_is_measured checks the value).
    assert!(stats.peak_memory_bytes.is_some(), "{stats:?}");
    assert!(stats.disk_read_bytes.is_some(), "{stats:?}");
    assert_eq!(stats.oom_kills, 0);

    cgroup.kill_all().unwrap();
    assert_eq!(
        wait_for(&mut child, Duration::from_secs(2)).signal(),
        Some(9)
    );
    assert_eq!(cgroup.pids().unwrap(), Vec::<u32>::new());

    let dirs = cgroup.dirs().to_vec();
    assert!(dirs.iter().all(|d| d.is_dir()));
    cgroup.destroy().unwrap();
    for dir in dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
}

#[test]
fn kill_all_reaches_forked_and_setsid_descendants() {
    let Some(manager) = manager("kill_all_reaches_forked_and_setsid_descendants") else {
        return;
    };
    let cgroup = manager
        .create(&unique_name(), &CgroupLimits::default())
        .unwrap();
    let mut child = spawn_gated("setsid sleep 30 & sleep 30 & sh -c 'sleep 30 & wait' & wait");
    cgroup.add_pid(child.id()).unwrap();
    release(&mut child);
    // sh, setsid'd sleep, sleep, inner sh, its sleep.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut members = cgroup.pids().unwrap();
    while members.len() < 5 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        members = cgroup.pids().unwrap();
    }
    assert_eq!(members.len(), 5, "{members:?}");

    cgroup.kill_all().unwrap();
    assert_eq!(
        wait_for(&mut child, Duration::from_secs(2)).signal(),
        Some(9)
    );
    assert_eq!(cgroup.pids().unwrap(), Vec::<u32>::new());
    for pid in members {
        assert!(is_dead(pid), "pid {pid} survived kill_all");
    }
    cgroup.destroy().unwrap();
}

#[test]
fn memory_hog_is_oom_killed_and_counted() {
    let Some(manager) = manager("memory_hog_is_oom_killed_and_counted") else {
        return;
    };
    let limits = CgroupLimits {
        memory: Some(Bytes::mib(64)),
        ..CgroupLimits::default()
    };
    let cgroup = manager.create(&unique_name(), &limits).unwrap();
    let mut child = spawn_gated("exec dd if=/dev/zero of=/dev/null bs=256M count=1");
    cgroup.add_pid(child.id()).unwrap();
    release(&mut child);
    let status = wait_for(&mut child, Duration::from_secs(20));
    let stats = cgroup.stats().unwrap();
    eprintln!("memory hog in 64m: {status:?}, {stats:?}");
    assert_eq!(status.signal(), Some(9));
    assert!(stats.oom_kills >= 1, "{stats:?}");
    cgroup.destroy().unwrap();
}

#[test]
fn peak_memory_is_measured() {
    let Some(manager) = manager("peak_memory_is_measured") else {
        return;
    };
    let cgroup = manager
        .create(&unique_name(), &CgroupLimits::default())
        .unwrap();
    let mut child = spawn_gated("exec dd if=/dev/zero of=/dev/null bs=200M count=1");
    cgroup.add_pid(child.id()).unwrap();
    release(&mut child);
    assert!(wait_for(&mut child, Duration::from_secs(20)).success());
    let stats = cgroup.stats().unwrap();
    let Some(peak) = stats.peak_memory_bytes else {
        // v2 before Linux 5.19 has no memory.peak: nothing to measure, and nothing invented.
        assert_eq!(manager.version(), CgroupVersion::V2);
        eprintln!("skipping peak check: no memory.peak on this kernel");
        return;
    };
    let expected = 200 * Bytes::MIB;
    eprintln!(
        "peak memory of dd bs=200M: {peak} bytes ({:.1} MiB, {:+.1}% of 200 MiB)",
        peak as f64 / Bytes::MIB as f64,
        (peak as f64 / expected as f64 - 1.0) * 100.0
    );
    assert!(
        peak.abs_diff(expected) <= expected / 10,
        "peak {peak} not within 10% of {expected}"
    );
    cgroup.destroy().unwrap();
}

#[test]
fn disk_io_is_counted() {
    let Some(manager) = manager("disk_io_is_counted") else {
        return;
    };
    let cgroup = manager
        .create(&unique_name(), &CgroupLimits::default())
        .unwrap();
    let dir =
        tempfile::tempdir_in(std::env::var_os("TMPDIR").unwrap_or("/var/tmp".into())).unwrap();
    let file = dir.path().join("io.bin");
    // O_DIRECT, so the bytes reach the disk (and come back from it) inside the cgroup.
    let script = format!(
        "dd if=/dev/zero of={f} bs=1M count=8 oflag=direct status=none && \
         dd if={f} of=/dev/null bs=1M iflag=direct status=none",
        f = file.display()
    );
    let mut child = spawn_gated(&format!("sh -c '{script}'"));
    cgroup.add_pid(child.id()).unwrap();
    release(&mut child);
    let status = wait_for(&mut child, Duration::from_secs(20));
    let stats = cgroup.stats().unwrap();
    cgroup.destroy().unwrap();
    eprintln!("8 MiB direct write + read: {status:?}, {stats:?}");
    if !status.success() {
        eprintln!(
            "skipping disk check: O_DIRECT is not supported in {}",
            dir.path().display()
        );
        return;
    }
    let mib8 = 8 * Bytes::MIB;
    assert!(
        stats.disk_write_bytes.is_some_and(|b| b >= mib8),
        "{stats:?}"
    );
    assert!(
        stats.disk_read_bytes.is_some_and(|b| b >= mib8),
        "{stats:?}"
    );
}

#[test]
fn cpu_quota_limits_cpu_time() {
    let Some(manager) = manager("cpu_quota_limits_cpu_time") else {
        return;
    };
    let limits = CgroupLimits {
        cpus: Some(Cpus::new(0.5).unwrap()),
        ..CgroupLimits::default()
    };
    let cgroup = manager.create(&unique_name(), &limits).unwrap();
    // Two busy loops could use both cores of a 2-core machine; the quota allows half of one.
    let mut child = spawn_gated("while :; do :; done & while :; do :; done");
    cgroup.add_pid(child.id()).unwrap();
    release(&mut child);
    let start = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let cpu_us = cgroup.stats().unwrap().cpu_time_us.unwrap();
    let wall_us = start.elapsed().as_micros() as u64;
    eprintln!("two busy loops at cpus=0.5: {cpu_us} µs cpu in {wall_us} µs wall");
    cgroup.kill_all().unwrap();
    wait_for(&mut child, Duration::from_secs(2));
    cgroup.destroy().unwrap();
    // At most half a core over ~1 s, plus one period of slack. (No lower bound beyond "it ran":
    // on a busy machine the loops may get less than their quota.)
    assert!(
        cpu_us > 0 && cpu_us <= wall_us / 2 + CPU_PERIOD_US,
        "{cpu_us} µs of cpu in {wall_us} µs"
    );
}

#[test]
fn pids_limit_refuses_extra_forks() {
    let Some(manager) = manager("pids_limit_refuses_extra_forks") else {
        return;
    };
    let limits = CgroupLimits {
        pids: Some(8),
        ..CgroupLimits::default()
    };
    let cgroup = manager.create(&unique_name(), &limits).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("read x; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 30 & done; wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cgroup.add_pid(child.id()).unwrap();
    release(&mut child);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut refused = 0;
    while refused == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        refused = control(&cgroup, "pids.events")
            .lines()
            .find_map(|l| l.strip_prefix("max ")?.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    let members = cgroup.pids().unwrap();
    cgroup.kill_all().unwrap();
    wait_for(&mut child, Duration::from_secs(2));
    cgroup.destroy().unwrap();
    assert!(refused >= 1, "no fork was refused");
    assert!(members.len() <= 8, "{members:?}");
}

#[test]
fn dropping_without_destroy_still_cleans_up() {
    let Some(manager) = manager("dropping_without_destroy_still_cleans_up") else {
        return;
    };
    let cgroup = manager
        .create(&unique_name(), &CgroupLimits::default())
        .unwrap();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    cgroup.add_pid(child.id()).unwrap();
    let dirs = cgroup.dirs().to_vec();
    drop(cgroup);
    assert_eq!(
        wait_for(&mut child, Duration::from_secs(2)).signal(),
        Some(9)
    );
    for dir in dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
}

#[test]
fn create_and_destroy_are_cheap() {
    let Some(manager) = manager("create_and_destroy_are_cheap") else {
        return;
    };
    let limits = CgroupLimits {
        cpus: Some(Cpus::new(0.5).unwrap()),
        memory: Some(Bytes::mib(64)),
        pids: Some(16),
    };
    let rounds = 50;
    let (mut create, mut destroy) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        let cgroup = manager.create(&unique_name(), &limits).unwrap();
        create.push(start.elapsed());
        let start = Instant::now();
        cgroup.destroy().unwrap();
        destroy.push(start.elapsed());
    }
    create.sort();
    destroy.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() - 1) * p / 100];
    eprintln!(
        "cgroup {:?} over {rounds} rounds: create+limits median {:?} p90 {:?} max {:?}; \
         destroy (empty) median {:?} p90 {:?} max {:?}",
        manager.version(),
        pct(&create, 50),
        pct(&create, 90),
        pct(&create, 100),
        pct(&destroy, 50),
        pct(&destroy, 90),
        pct(&destroy, 100),
    );
}

/// On a hybrid host the unified hierarchy (`/sys/fs/cgroup/unified`) is a real cgroup2 mount,
/// usually without controllers: enough to prove the v2 code (mkdir, join, `cgroup.kill`, rmdir,
/// `cpu.stat`) on the real kernel. On a pure v2 host the tests above already run v2.
#[test]
fn v2_code_on_the_hybrid_unified_hierarchy() {
    let test = "v2_code_on_the_hybrid_unified_hierarchy";
    let root = Path::new("/sys/fs/cgroup/unified");
    if !root.join("cgroup.controllers").is_file() {
        eprintln!(
            "skipping cgroup::{test}: no hybrid cgroup2 mount at {}",
            root.display()
        );
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping cgroup::{test}: creating cgroups needs root");
        return;
    }
    let manager = CgroupManager::detect(root, PARENT).unwrap();
    assert_eq!(manager.version(), CgroupVersion::V2);
    if !manager.controllers().contains(&"memory") {
        let limits = CgroupLimits {
            memory: Some(Bytes::mib(64)),
            ..CgroupLimits::default()
        };
        let err = manager.create(&unique_name(), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the memory cgroup controller is needed for the memory limit but is not \
                 available under {}/{PARENT}",
                root.display()
            )
        );
    }

    let name = unique_name();
    let cgroup = manager.create(&name, &CgroupLimits::default()).unwrap();
    assert_eq!(cgroup.dirs(), [root.join(PARENT).join(&name)]);
    let mut child = spawn_gated("setsid sleep 30 & sleep 30 & while :; do :; done");
    cgroup.add_pid(child.id()).unwrap();
    let membership = read(Path::new(&format!("/proc/{}/cgroup", child.id())));
    assert!(
        membership
            .lines()
            .any(|l| l == format!("0::/{PARENT}/{name}")),
        "{membership}"
    );
    release(&mut child);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut members = cgroup.pids().unwrap();
    while members.len() < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        members = cgroup.pids().unwrap();
    }
    assert_eq!(members.len(), 3, "{members:?}");
    thread::sleep(Duration::from_millis(100));
    let stats = cgroup.stats().unwrap();
    eprintln!("v2 (unified, no controllers) stats after 100 ms busy: {stats:?}");
    assert!(stats.cpu_time_us.is_some_and(|us| us > 0), "{stats:?}");

    cgroup.kill_all().unwrap();
    assert_eq!(
        wait_for(&mut child, Duration::from_secs(2)).signal(),
        Some(9)
    );
    for pid in members {
        assert!(is_dead(pid), "pid {pid} survived kill_all");
    }
    let dir = cgroup.dirs()[0].clone();
    cgroup.destroy().unwrap();
    assert!(!dir.exists());
}
