//! `conductor exec` as a whole process (issue 15): what a script or an agent that calls a
//! sandbox once per command feels — start, set-up, run, tear-down, exit — against the tools it
//! would use instead, every variant timed as a whole process, interleaved round-robin in the
//! same run so drift on the machine hits each alike:
//!
//! - `conductor exec --executor namespace -- /bin/true` against `bwrap --unshare-all …
//!   /bin/true` (target: ≤ 1.0×) and `unshare -Urfpmn /bin/true`;
//! - `conductor exec --executor host -- /bin/true` against `sh -c true` (target: ≤ 3×);
//! - `conductor --version`: the binary's own start, the floor of every `conductor` row.
//!
//! `conductor exec` goes through the resident executor (a user's first run starts it; the
//! warm-up rounds wait for it), as a user's does; the `in-process` rows
//! (`CONDUCTOR_RESIDENT=0`) are the one-shot path without it, for comparison.
//!
//! Each row gives the median and p90 wall time and the median CPU time of the process and its
//! children, plus for resident rows the resident's own (wall well above CPU is waiting). Ratios
//! are of medians.
//!
//! Run: `cargo bench -p conductor --bench exec_process` (CONDUCTOR_BENCH_ITERATIONS, default
//! 30 rounds after 3 warm-up rounds). CONDUCTOR_BENCH_BINARY times another `conductor` binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::server::conductor_binary;
use common::{ms, percentile};

const BWRAP: &[&str] = &[
    "bwrap",
    "--unshare-all",
    "--die-with-parent",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--tmpfs",
    "/tmp",
    "/bin/true",
];

struct Row {
    name: String,
    argv: Vec<String>,
    /// `CONDUCTOR_RESIDENT` for this row.
    resident: &'static str,
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

fn main() -> Result<(), String> {
    let iterations: usize = std::env::var("CONDUCTOR_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let warmup = 3;
    let conductor = conductor_binary().display().to_string();
    let exec = |executor: &str| -> Vec<String> {
        [
            &conductor,
            "exec",
            "--executor",
            executor,
            "--",
            "/bin/true",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let mut rows = vec![
        row("conductor exec namespace", exec("namespace")),
        Row {
            resident: "0",
            ..row("exec namespace in-process", exec("namespace"))
        },
        row("bwrap --unshare-all", owned(BWRAP)),
        row(
            "unshare -Urfpmn",
            owned(&["unshare", "-Urfpmn", "/bin/true"]),
        ),
        row("conductor exec host", exec("host")),
        Row {
            resident: "0",
            ..row("exec host in-process", exec("host"))
        },
        row("sh -c true", owned(&["sh", "-c", "true"])),
        row(
            "conductor --version",
            vec![conductor.clone(), "--version".into()],
        ),
    ];
    let place = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::env::set_var("CONDUCTOR_RESIDENT_DIR", place.path().join("resident"));
    for row in &mut rows {
        if let Err(e) = time(&row.argv, row.resident) {
            eprintln!("exec_process: {}: {e}: left out", row.name);
            row.argv.clear();
        }
    }
    for round in 0..warmup + iterations {
        for row in rows.iter_mut().filter(|row| !row.argv.is_empty()) {
            let (wall, cpu) = time(&row.argv, row.resident)?;
            if round >= warmup {
                row.wall.push(wall);
                row.cpu.push(cpu);
            }
        }
    }
    report(&mut rows);
    stop_resident(place.path());
    Ok(())
}

fn row(name: &str, argv: Vec<String>) -> Row {
    Row {
        name: name.to_owned(),
        argv,
        resident: "wait",
        wall: Vec::new(),
        cpu: Vec::new(),
    }
}

fn owned(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|arg| (*arg).to_owned()).collect()
}

/// Runs `argv` to its end: its wall time, and the CPU time of it and its children, and of the
/// resident executor (this bench's own, found once it runs).
fn time(argv: &[String], resident: &str) -> Result<(Duration, Duration), String> {
    let before = children_cpu() + resident_cpu();
    let started = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .env("CONDUCTOR_RESIDENT", resident)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", argv[0]))?;
    let wall = started.elapsed();
    if !status.success() {
        return Err(format!("{} exited {status}", argv.join(" ")));
    }
    Ok((
        wall,
        (children_cpu() + resident_cpu()).saturating_sub(before),
    ))
}

/// The pid of this bench's resident executor: the `__exec-resident` process whose
/// `CONDUCTOR_RESIDENT_DIR` is ours.
fn resident_pid() -> Option<u32> {
    let ours = std::env::var("CONDUCTOR_RESIDENT_DIR").ok()?;
    let wanted = format!("CONDUCTOR_RESIDENT_DIR={ours}");
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let path = entry.ok()?.path();
        let cmdline = std::fs::read(path.join("cmdline")).ok()?;
        if !cmdline.windows(15).any(|w| w == b"__exec-resident") {
            return None;
        }
        let environ = std::fs::read(path.join("environ")).ok()?;
        environ
            .split(|b| *b == 0)
            .any(|var| var == wanted.as_bytes())
            .then(|| path.file_name()?.to_str()?.parse().ok())
            .flatten()
    })
}

/// User + system time of the resident and its waited-for children (helpers, sandboxes).
fn resident_cpu() -> Duration {
    let Some(stat) =
        resident_pid().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
    else {
        return Duration::ZERO;
    };
    // Fields after the command's closing parenthesis; utime is the 14th field of the line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = (11..15)
        .filter_map(|i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf reads a configuration value.
    let hz = u64::try_from(unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }).unwrap_or(100);
    Duration::from_micros(ticks * 1_000_000 / hz.max(1))
}

/// Ends this bench's resident (it would otherwise stay until idle).
fn stop_resident(_place: &std::path::Path) {
    if let Some(pid) = resident_pid() {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
}

/// User + system time of this process's waited-for children so far.
fn children_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    usage.map_or(Duration::ZERO, |usage| {
        let micros = |tv: nix::sys::time::TimeVal| {
            Duration::from_secs(u64::try_from(tv.tv_sec()).unwrap_or(0))
                + Duration::from_micros(u64::try_from(tv.tv_usec()).unwrap_or(0))
        };
        micros(usage.user_time()) + micros(usage.system_time())
    })
}

fn report(rows: &mut [Row]) {
    println!(
        "exec_process: whole processes, medians of {} rounds",
        rows[0].wall.len()
    );
    let mut medians = std::collections::BTreeMap::new();
    for row in rows.iter_mut().filter(|row| !row.wall.is_empty()) {
        let p50 = percentile(&mut row.wall, 50);
        let p90 = percentile(&mut row.wall, 90);
        let cpu = percentile(&mut row.cpu, 50);
        println!(
            "  {:<26} p50 {:>7.2} ms   p90 {:>7.2} ms   cpu {:>6.2} ms",
            row.name,
            ms(p50),
            ms(p90),
            ms(cpu)
        );
        medians.insert(row.name.clone(), p50);
    }
    let ratio = |a: &str, b: &str, target: Option<f64>| {
        if let (Some(a_time), Some(b_time)) = (medians.get(a), medians.get(b)) {
            let ratio = ms(*a_time) / ms(*b_time).max(f64::EPSILON);
            let verdict = match target {
                Some(target) if ratio <= target => format!(" (target ≤ {target}×: met)"),
                Some(target) => format!(" (target ≤ {target}×: NOT met)"),
                None => String::new(),
            };
            println!(
                "  {a} / {b}: {ratio:.2}× ({:+.2} ms){verdict}",
                ms(*a_time) - ms(*b_time)
            );
        }
    };
    ratio("conductor exec namespace", "bwrap --unshare-all", Some(1.0));
    ratio("conductor exec namespace", "unshare -Urfpmn", None);
    ratio("exec namespace in-process", "bwrap --unshare-all", None);
    ratio("conductor exec host", "sh -c true", Some(3.0));
    ratio("exec host in-process", "sh -c true", None);
    ratio("conductor --version", "sh -c true", None);
}
