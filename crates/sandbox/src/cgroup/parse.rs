//! Pure parsers for the cgroupfs formats the manager reads. No I/O: each takes the text of one
//! control file. A value that is absent or malformed is `None`, never a made-up number.

/// A file holding one integer (`cpuacct.usage`, `memory.peak`, `memory.max_usage_in_bytes`).
pub(crate) fn single_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file: one `key value` pair per line (`cpu.stat`,
/// `memory.events`, `memory.oom_control`).
pub(crate) fn keyed_u64(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(k), Some(v), None) if k == key => v.parse().ok(),
            _ => None,
        }
    })
}

/// Bytes read and written, summed over devices, from v1
/// `blkio.*io_service_bytes_recursive` (`MAJ:MIN Read N`, `MAJ:MIN Write N`, …, `Total N`).
/// The per-device `Total` and the trailing `Total` line are ignored. A file with no device lines
/// (nothing was read or written) gives zeros.
pub(crate) fn blkio_read_write(text: &str) -> Option<(u64, u64)> {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            ["Total", total] => {
                total.parse::<u64>().ok()?;
            }
            [device, op, value] if device.contains(':') => {
                let value: u64 = value.parse().ok()?;
                match *op {
                    "Read" => read = read.checked_add(value)?,
                    "Write" => write = write.checked_add(value)?,
                    _ => {}
                }
            }
            _ => return None,
        }
    }
    Some((read, write))
}

/// Bytes read and written, summed over devices, from v2 `io.stat`
/// (`MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`). An empty file gives zeros.
pub(crate) fn io_stat_read_write(text: &str) -> Option<(u64, u64)> {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(device) = fields.next() else {
            continue;
        };
        if !device.contains(':') {
            return None;
        }
        for field in fields {
            let (key, value) = field.split_once('=')?;
            match key {
                "rbytes" => read = read.checked_add(value.parse().ok()?)?,
                "wbytes" => write = write.checked_add(value.parse().ok()?)?,
                _ => {}
            }
        }
    }
    Some((read, write))
}

/// The pids in a `cgroup.procs` file, one per line; `None` if a line is not a pid.
pub(crate) fn pids(text: &str) -> Option<Vec<u32>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.parse().ok())
        .collect()
}

/// The controllers named in `cgroup.controllers` / `cgroup.subtree_control` (space separated;
/// a leading `+` as in a `subtree_control` write is tolerated).
pub(crate) fn controller_list(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .map(|name| name.trim_start_matches('+'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_values() {
        assert_eq!(single_u64("123456789\n"), Some(123_456_789));
        assert_eq!(single_u64("max\n"), None);
        assert_eq!(single_u64(""), None);
    }

    #[test]
    fn flat_keyed_files() {
        let cpu_stat = "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n";
        assert_eq!(keyed_u64(cpu_stat, "usage_usec"), Some(2500));
        assert_eq!(keyed_u64(cpu_stat, "usage"), None);
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed_u64(events, "oom_kill"), Some(2));
        assert_eq!(keyed_u64(events, "oom"), Some(3));
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        assert_eq!(keyed_u64(oom_control, "oom_kill"), Some(1));
        // v1 cpu.stat has no usage line.
        let v1_cpu_stat = "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n";
        assert_eq!(keyed_u64(v1_cpu_stat, "usage_usec"), None);
    }

    #[test]
    fn blkio_sums_read_and_write_over_devices_ignoring_totals() {
        let text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Async 0\n8:0 Discard 0\n\
                    8:0 Total 12288\n8:16 Read 1000\n8:16 Write 24\n8:16 Total 1024\nTotal 13312\n";
        assert_eq!(blkio_read_write(text), Some((5096, 8216)));
        assert_eq!(blkio_read_write("Total 0\n"), Some((0, 0)));
        assert_eq!(blkio_read_write("8:0 Read lots\n"), None);
    }

    #[test]
    fn io_stat_sums_over_devices() {
        let text = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                    253:0 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n";
        assert_eq!(io_stat_read_write(text), Some((4196, 8192)));
        assert_eq!(io_stat_read_write(""), Some((0, 0)));
        assert_eq!(io_stat_read_write("8:0 rbytes=x\n"), None);
    }

    #[test]
    fn procs_and_controllers() {
        assert_eq!(pids("12\n345\n"), Some(vec![12, 345]));
        assert_eq!(pids(""), Some(vec![]));
        assert_eq!(pids("12\nabc\n"), None);
        assert_eq!(
            controller_list("cpuset cpu io memory pids\n"),
            ["cpuset", "cpu", "io", "memory", "pids"]
        );
        assert_eq!(controller_list("+cpu +memory"), ["cpu", "memory"]);
    }
}
