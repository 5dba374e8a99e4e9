//! Network `full` on the namespace executor (as root): outbound through a network namespace of
//! the sandbox's own, never the host's.
//!
//! Each `full` execution gets a veth pair: the host end `cnd<slot>` holds the first address of
//! a /30 of [`FullNetworkRange`] (10.200.0.0/16 by default), the other end goes into the
//! sandbox's network namespace (the helper moves it, see
//! [`conductor_sandbox::spec::SandboxInterface`]) as `eth0` with the second address and a
//! default route through the host end. The slot is the interface's name, so two executors on
//! one host (a server and a `conductor exec`) never share one: the kernel refuses the second
//! `cnd<slot>`.
//!
//! Firewall rules, installed once (idempotently) when the executor starts, for every interface
//! named `cnd+` (the container executors' `full` bridge is one too):
//!
//! - `INPUT -i cnd+ -j DROP` (`mangle` and `filter`, IPv4 and IPv6): nothing on the host is
//!   reachable from a sandbox, whatever the address (loopback, eth0's, docker0's, the server's
//!   own port);
//! - `mangle FORWARD` drops: nothing between sandboxes, to link-local 169.254.0.0/16, or to the
//!   container bridges (`docker0`, `br-+`, `podman+`, `cni-podman+`); no new connection in;
//!   no IPv6 at all. In `mangle` because the engines put their `ACCEPT`s first in `filter`;
//! - `filter FORWARD`: the rest out, answers back in (Docker makes the policy `DROP`);
//! - `nat POSTROUTING`: the range is masqueraded on its way out;
//! - `net.ipv4.ip_forward = 1`.
//!
//! The deciding parts (addresses, names, rules, route overlap, resolver) are pure functions;
//! [`HostNetwork`] runs `ip` and `iptables`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use conductor_sandbox::spec::SandboxInterface;
pub use conductor_types::FullNetworkRange;

/// Prefix of every interface Conductor makes for `full` (veths and container bridges).
pub const INTERFACE_PREFIX: &str = "cnd";

/// How many slots one execution may try before giving up.
const MAX_TRIES: u32 = 64;

/// A failure to set up or give `full`.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A tool is missing.
    #[error("{tool} was not found in /usr/sbin, /sbin, /usr/bin or /bin: install {package}")]
    MissingTool {
        /// The binary.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A command failed.
    #[error("{command} failed: {reason}")]
    Command {
        /// What was run.
        command: String,
        /// Its status and stderr.
        reason: String,
    },
    /// The range overlaps a route of the host.
    #[error(
        "the full network range {range} overlaps the host's route {route:?}: configure another private range"
    )]
    RangeInUse {
        /// The configured range.
        range: FullNetworkRange,
        /// The route.
        route: String,
    },
    /// Every slot tried was taken.
    #[error("no free address in the full network range {0} (every slot tried is in use)")]
    Exhausted(FullNetworkRange),
    /// The host resolver is on its loopback, which a sandbox cannot reach.
    #[error(
        "the host's resolver ({servers}) is on its loopback, which a full sandbox cannot reach by design, and {fallback} has no other: list an upstream nameserver in /etc/resolv.conf"
    )]
    LoopbackResolver {
        /// The nameservers found.
        servers: String,
        /// The file tried instead.
        fallback: &'static str,
    },
}

/// The host end's name for `slot` (`cnd002a`; the sandbox's end is `cnd002ap` until moved).
pub fn interface_name(slot: u32) -> String {
    format!("{INTERFACE_PREFIX}{slot:04x}")
}

/// The first route in `ip -4 -o route show` output (not one of ours) that overlaps `range`.
pub fn overlapping_route(range: &FullNetworkRange, routes: &str) -> Option<String> {
    routes
        .lines()
        .filter(|line| !line.contains(&format!(" dev {INTERFACE_PREFIX}")))
        .find(|line| {
            let Some(destination) = line.split_whitespace().next() else {
                return false;
            };
            let (address, prefix) = destination.split_once('/').unwrap_or((destination, "32"));
            match (address.parse::<Ipv4Addr>(), prefix.parse::<u8>()) {
                (Ok(address), Ok(prefix)) if prefix > 0 => range.overlaps(address, prefix),
                _ => false,
            }
        })
        .map(|line| line.trim().to_owned())
}

/// The alias a host end carries: the process that made it.
fn owner_alias(pid: u32) -> String {
    format!("conductor:{pid}")
}

/// The names of interfaces in `ip -o link show type veth` output that a crashed process left:
/// host ends (`cnd1234`) whose alias names a process `alive` says is gone, or without an alias
/// whose other end never left the host. Another live executor's are left alone.
pub fn orphaned_interfaces(links: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    links
        .lines()
        .filter_map(|line| {
            let name = line.split(": ").nth(1)?;
            let (name, peer) = name.split_once('@')?;
            let ours = name
                .strip_prefix(INTERFACE_PREFIX)
                .is_some_and(|slot| slot.len() == 4 && u32::from_str_radix(slot, 16).is_ok());
            if !ours {
                return None;
            }
            let owner = line
                .split("alias conductor:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let orphan = match owner {
                Some(pid) => !alive(pid),
                None => peer == format!("{name}p"),
            };
            orphan.then(|| name.to_owned())
        })
        .collect()
}

/// Whether process `pid` exists.
fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Nameservers of a resolv.conf's text.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Whether a resolv.conf lists a nameserver a sandbox can reach (not the host's loopback).
pub fn has_usable_nameserver(resolv_conf: &str) -> bool {
    nameservers(resolv_conf)
        .iter()
        .any(|server| !server.is_loopback())
}

/// Where systemd-resolved lists the upstream servers.
pub const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

/// The resolv.conf a `full` sandbox on the host's directories gets: the host's, or when that
/// points at the host's loopback (systemd-resolved, dnsmasq), the upstream servers'.
pub fn sandbox_resolv_conf() -> Result<PathBuf, NetError> {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if has_usable_nameserver(&host) {
        return Ok(PathBuf::from("/etc/resolv.conf"));
    }
    let upstream = std::fs::read_to_string(RESOLVED_UPSTREAMS).unwrap_or_default();
    if has_usable_nameserver(&upstream) {
        return Ok(PathBuf::from(RESOLVED_UPSTREAMS));
    }
    Err(NetError::LoopbackResolver {
        servers: nameservers(&host)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        fallback: RESOLVED_UPSTREAMS,
    })
}

/// `full`'s host side: the tools, the range, and the next slot to try.
#[derive(Debug)]
pub struct HostNetwork {
    ip: PathBuf,
    range: FullNetworkRange,
    next: AtomicU32,
}

/// One execution's veth; its host end is deleted when this is dropped (which also removes the
/// sandbox's end, wherever it is).
#[derive(Debug)]
pub struct Veth {
    ip: PathBuf,
    name: String,
    /// What the helper does with the other end.
    pub interface: SandboxInterface,
}

impl HostNetwork {
    /// Finds `ip` and `iptables`, refuses a range the host routes already, removes what a crash
    /// left, turns forwarding on and installs the rules (see the module docs). Blocking.
    pub fn setup(range: FullNetworkRange) -> Result<Self, NetError> {
        let ip = find_tool("ip", "iproute2")?;
        let iptables = find_tool("iptables", "iptables")?;
        let routes = run(&ip, &["-4", "-o", "route", "show"])?;
        if let Some(route) = overlapping_route(&range, &routes) {
            return Err(NetError::RangeInUse { range, route });
        }
        let links = run(&ip, &["-o", "link", "show", "type", "veth"])?;
        for orphan in orphaned_interfaces(&links, process_alive) {
            tracing::info!(interface = %orphan, "removing a veth a crashed execution left");
            let _ = run(&ip, &["link", "del", &orphan]);
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(|e| NetError::Command {
            command: "writing /proc/sys/net/ipv4/ip_forward".to_owned(),
            reason: e.to_string(),
        })?;
        super::firewall::install_rules(&iptables, &super::firewall::ipv4_rules(&range))?;
        let seed = std::process::id().wrapping_mul(2_654_435_761);
        Ok(Self {
            ip,
            range,
            next: AtomicU32::new(seed),
        })
    }

    /// The range in use.
    pub fn range(&self) -> FullNetworkRange {
        self.range
    }

    /// Makes a veth pair on a free slot, the host end addressed and up.
    pub async fn create(&self) -> Result<Veth, NetError> {
        for _ in 0..MAX_TRIES.min(self.range.slots()) {
            let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.range.slots();
            let name = interface_name(slot);
            let peer = format!("{name}p");
            let (gateway, address) = self.range.addresses(slot);
            let alias = owner_alias(std::process::id());
            let batch = format!(
                "link add {name} type veth peer name {peer}\n\
                 link set dev {name} alias {alias}\n\
                 link set dev {name} addrgenmode none\n\
                 addr add {gateway}/30 dev {name}\n\
                 link set dev {name} up\n"
            );
            match run_batch(&self.ip, &batch).await {
                Ok(()) => {}
                Err(NetError::Command { reason, .. }) if reason.contains("File exists") => continue,
                Err(e) => {
                    let _ = run_async(&self.ip, &["link", "del", &name]).await;
                    return Err(e);
                }
            }
            let veth = Veth {
                ip: self.ip.clone(),
                name: name.clone(),
                interface: SandboxInterface {
                    ip_binary: self.ip.clone(),
                    peer,
                    address,
                    prefix: 30,
                    gateway,
                },
            };
            // No IPv6 on the host end at all (link-local included).
            let sysctl = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
            if Path::new(&sysctl).exists() {
                tokio::fs::write(&sysctl, b"1")
                    .await
                    .map_err(|e| NetError::Command {
                        command: format!("writing {sysctl}"),
                        reason: e.to_string(),
                    })?;
            }
            return Ok(veth);
        }
        Err(NetError::Exhausted(self.range))
    }

    /// Whether `address` is one a `full` sandbox gets.
    pub fn owns(&self, address: Ipv4Addr) -> bool {
        self.range.contains(address)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let (ip, name) = (self.ip.clone(), self.name.clone());
        let remove = move || {
            // The pair usually went with the sandbox's network namespace: nothing to remove.
            let present = || Path::new("/sys/class/net").join(&name).exists();
            if !present() {
                return;
            }
            if let Err(e) = run(&ip, &["link", "del", &name]) {
                if present() {
                    tracing::warn!(error = %e, "removing the execution's veth");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}

/// Whether the tools `full` runs are installed.
pub fn check_tools() -> Result<(), NetError> {
    find_tool("ip", "iproute2")?;
    find_tool("iptables-restore", "iptables")?;
    find_tool("iptables", "iptables").map(|_| ())
}

pub(super) fn find_tool(tool: &'static str, package: &'static str) -> Result<PathBuf, NetError> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.is_file())
        .ok_or(NetError::MissingTool { tool, package })
}

pub(super) fn run(program: &Path, args: &[&str]) -> Result<String, NetError> {
    let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    run_owned(program, &owned)
}

pub(super) fn run_with_input(program: &Path, args: &[&str], input: &str) -> Result<(), NetError> {
    use std::io::Write;
    let failed = |reason: String| command_error(program, args, reason);
    let mut child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn run_owned(program: &Path, args: &[String]) -> Result<String, NetError> {
    let output = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .output()
        .map_err(|e| command_error(program, args, e.to_string()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(command_error(
            program,
            args,
            format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ))
    }
}

async fn run_async(program: &Path, args: &[&str]) -> Result<(), NetError> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .output()
        .await
        .map_err(|e| command_error(program, args, e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(command_error(
            program,
            args,
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

async fn run_batch(ip: &Path, batch: &str) -> Result<(), NetError> {
    use tokio::io::AsyncWriteExt;
    let failed = |reason: String| NetError::Command {
        command: format!(
            "{} -batch ({})",
            ip.display(),
            batch.trim().replace('\n', "; ")
        ),
        reason,
    };
    let mut child = tokio::process::Command::new(ip)
        .args(["-batch", "-"])
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(batch.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

fn command_error(program: &Path, args: &[impl AsRef<str>], reason: String) -> NetError {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    NetError::Command {
        command: format!("{} {}", program.display(), args.join(" ")),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_give_a_30_per_slot() {
        let range: FullNetworkRange = "10.200.0.0/16".parse().unwrap();
        assert_eq!(range, FullNetworkRange::default());
        assert_eq!(range.slots(), 16384);
        assert_eq!(
            range.addresses(0),
            (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2))
        );
        assert_eq!(
            range.addresses(16383),
            (
                Ipv4Addr::new(10, 200, 255, 253),
                Ipv4Addr::new(10, 200, 255, 254)
            )
        );
        assert_eq!(range.addresses(16384), range.addresses(0));
        for bad in [
            "10.200.0.1/16",
            "10.200.0.0",
            "10.200.0.0/30",
            "x/16",
            "10.0.0.0/4",
        ] {
            assert!(bad.parse::<FullNetworkRange>().is_err(), "{bad}");
        }
        assert_eq!(interface_name(42), "cnd002a");
    }

    #[test]
    fn a_range_the_host_routes_is_refused() {
        let range = FullNetworkRange::default();
        let routes = "default via 192.0.2.1 dev eth0\n\
                      172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1\n\
                      10.200.0.0/30 dev cnd0000 proto kernel scope link src 10.200.0.1\n";
        assert_eq!(overlapping_route(&range, routes), None);
        let clash = format!("{routes}10.0.0.0/8 dev wg0 scope link\n");
        assert_eq!(
            overlapping_route(&range, &clash),
            Some("10.0.0.0/8 dev wg0 scope link".to_owned())
        );
        let inside = "10.200.7.0/24 via 192.0.2.9 dev eth0\n";
        assert!(overlapping_route(&range, inside).is_some());
    }

    #[test]
    fn only_veths_of_dead_processes_are_orphans() {
        let links = "7: cnd0001@cnd0001p: <BROADCAST,MULTICAST> mtu 1500\n\
                     8: cnd0001p@cnd0001: <BROADCAST,MULTICAST> mtu 1500\n\
                     9: cnd0002@if3: <UP> mtu 1500\\    link/ether 2e:fd\\    alias conductor:41\n\
                     10: cnd0003@if5: <UP> mtu 1500\\    link/ether 2e:fd\\    alias conductor:77\n\
                     11: cnd0004@cnd0004p: <UP> mtu 1500\\    alias conductor:77\n\
                     12: cnd0005@if9: <UP> mtu 1500\n\
                     13: veth12@if2: <BROADCAST> mtu 1500\\    alias conductor:41\n\
                     14: cndzzzz@cndzzzzp: <BROADCAST> mtu 1500\n";
        let alive = |pid| pid == 77;
        assert_eq!(
            orphaned_interfaces(links, alive),
            vec!["cnd0001".to_owned(), "cnd0002".to_owned()]
        );
    }

    #[test]
    fn a_loopback_resolver_is_not_usable() {
        assert!(!has_usable_nameserver(
            "nameserver 127.0.0.53\noptions edns0\n"
        ));
        assert!(!has_usable_nameserver("# nothing\n"));
        assert!(has_usable_nameserver(
            "nameserver 127.0.0.53\nnameserver 10.255.255.53\n"
        ));
        assert!(!has_usable_nameserver("nameserver ::1\n"));
    }
}
