//! The host's firewall rules for every `cnd+` interface (the namespace executor's veths and
//! the container executors' `full` bridges), see [`super::net`]'s module docs: decided by pure
//! functions ([`ipv4_rules`], [`ipv6_rules`]), installed idempotently and atomically
//! (`iptables-restore --noflush`), one process at a time (a lock file).

use std::path::{Path, PathBuf};

use super::net::{find_tool, run, run_with_input, FullNetworkRange, NetError, INTERFACE_PREFIX};

const INPUT_CHAIN: &str = "CONDUCTOR-INPUT";
const FORWARD_CHAIN: &str = "CONDUCTOR-FORWARD";
const NAT_CHAIN: &str = "CONDUCTOR-POSTROUTING";
/// Bridges a sandbox must not reach through the host: the container engines'.
const CONTAINER_BRIDGES: [&str; 4] = ["docker0", "br-+", "podman+", "cni-podman+"];
/// Link-local addresses, cloud metadata among them.
const LINK_LOCAL: &str = "169.254.0.0/16";

/// The rules of one table's chain, in `iptables -S` form, and where it is jumped to from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRules {
    /// `mangle`, `filter` or `nat`.
    pub table: &'static str,
    /// The built-in chain that jumps to it first.
    pub from: &'static str,
    /// The chain.
    pub chain: &'static str,
    /// Its rules, as `iptables -S CHAIN` prints them (without `-A CHAIN`).
    pub rules: Vec<String>,
}

/// The IPv4 chains for `range` (see the module docs). The drops are in the `mangle` table,
/// which the engines leave alone: Docker and CNI put their own `ACCEPT`s first in `filter`'s
/// `FORWARD`, whatever we did before, and a drop there could come too late.
pub fn ipv4_rules(range: &FullNetworkRange) -> Vec<ChainRules> {
    let interfaces = format!("{INTERFACE_PREFIX}+");
    let mut drops = vec![
        format!("-i {interfaces} -o {interfaces} -j DROP"),
        format!("-d {LINK_LOCAL} -i {interfaces} -j DROP"),
    ];
    drops.extend(
        CONTAINER_BRIDGES
            .iter()
            .map(|bridge| format!("-i {interfaces} -o {bridge} -j DROP")),
    );
    drops.push(format!(
        "-o {interfaces} -m conntrack --ctstate NEW -j DROP"
    ));
    vec![
        input_drop("mangle"),
        ChainRules {
            table: "mangle",
            from: "FORWARD",
            chain: FORWARD_CHAIN,
            rules: drops,
        },
        input_drop("filter"),
        // Docker makes `FORWARD`'s policy `DROP`: what the drops let through is accepted.
        ChainRules {
            table: "filter",
            from: "FORWARD",
            chain: FORWARD_CHAIN,
            rules: vec![
                format!("-o {interfaces} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
                format!("-i {interfaces} -j ACCEPT"),
            ],
        },
        ChainRules {
            table: "nat",
            from: "POSTROUTING",
            chain: NAT_CHAIN,
            rules: vec![format!("-s {range} ! -d {range} -j MASQUERADE")],
        },
    ]
}

/// Nothing from a sandbox is delivered to the host, in `table`'s `INPUT`.
fn input_drop(table: &'static str) -> ChainRules {
    ChainRules {
        table,
        from: "INPUT",
        chain: INPUT_CHAIN,
        rules: vec![format!("-i {INTERFACE_PREFIX}+ -j DROP")],
    }
}

/// The IPv6 chains: a sandbox has no IPv6 way out, and none to the host.
pub fn ipv6_rules() -> Vec<ChainRules> {
    let interfaces = format!("{INTERFACE_PREFIX}+");
    vec![
        input_drop("mangle"),
        ChainRules {
            table: "mangle",
            from: "FORWARD",
            chain: FORWARD_CHAIN,
            rules: vec![
                format!("-i {interfaces} -j DROP"),
                format!("-o {interfaces} -j DROP"),
            ],
        },
    ]
}

/// Installs the filter rules of every `cnd+` interface (IPv4 and IPv6), not the NAT of the
/// namespace executor's range: what the container executors' `full` bridge needs. Blocking.
pub fn install_filter_rules() -> Result<(), NetError> {
    let iptables = find_tool("iptables", "iptables")?;
    let filter: Vec<ChainRules> = ipv4_rules(&FullNetworkRange::default())
        .into_iter()
        .filter(|chain| chain.table != "nat")
        .collect();
    install_rules(&iptables, &filter)
}

/// Installs `ipv4` and the IPv6 rules, one process at a time (a server and a `conductor exec`
/// starting together would otherwise both rewrite a chain).
pub(super) fn install_rules(iptables: &Path, ipv4: &[ChainRules]) -> Result<(), NetError> {
    let _lock = lock_rules()?;
    for chain in ipv4 {
        install(iptables, chain)?;
    }
    match find_tool("ip6tables", "iptables") {
        Ok(ip6tables) => {
            for chain in ipv6_rules() {
                install(&ip6tables, &chain)?;
            }
        }
        Err(e) => tracing::warn!(error = %e, "no IPv6 rules: sandbox veths have IPv6 off"),
    }
    Ok(())
}

/// An exclusive lock on `/run/conductor-firewall.lock`, held while rules are installed.
fn lock_rules() -> Result<nix::fcntl::Flock<std::fs::File>, NetError> {
    let path = Path::new("/run").join("conductor-firewall.lock");
    let failed = |reason: String| NetError::Command {
        command: format!("locking {}", path.display()),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| failed(e.to_string()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| failed(e.to_string()))
}

/// Creates `chain` in its table, or rewrites it when its rules differ (in one
/// `iptables-restore --noflush`, so running sandboxes are never without them), and makes the
/// built-in chain jump to it first.
fn install(iptables: &Path, chain: &ChainRules) -> Result<(), NetError> {
    let listed = run(iptables, &["-w", "-t", chain.table, "-S", chain.chain]);
    let expected: Vec<String> = chain
        .rules
        .iter()
        .map(|rule| format!("-A {} {rule}", chain.chain))
        .collect();
    let current: Vec<String> = listed
        .as_deref()
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("-A "))
        .map(str::to_owned)
        .collect();
    if current != expected {
        let restore = PathBuf::from(format!("{}-restore", iptables.display()));
        let text = format!(
            "*{}\n:{} - [0:0]\n{}\nCOMMIT\n",
            chain.table,
            chain.chain,
            expected.join("\n")
        );
        run_with_input(&restore, &["-w", "--noflush"], &text)?;
    }
    jump_first(iptables, chain)
}

/// Makes `chain.from`'s first rule the jump to `chain.chain` (a container engine that started
/// since may have put its own first), removing any other jump to it.
fn jump_first(iptables: &Path, chain: &ChainRules) -> Result<(), NetError> {
    let jump = format!("-A {} -j {}", chain.from, chain.chain);
    let list = |iptables: &Path| -> Result<Vec<String>, NetError> {
        Ok(run(iptables, &["-w", "-t", chain.table, "-S", chain.from])?
            .lines()
            .filter(|line| line.starts_with("-A "))
            .map(str::to_owned)
            .collect())
    };
    let rules = list(iptables)?;
    if rules.first() == Some(&jump) && rules.iter().filter(|r| **r == jump).count() == 1 {
        return Ok(());
    }
    let insert = [
        "-w",
        "-t",
        chain.table,
        "-I",
        chain.from,
        "1",
        "-j",
        chain.chain,
    ];
    run(iptables, &insert)?;
    // Rule numbers count from 1; the one just inserted is number 1.
    let later: Vec<usize> = list(iptables)?
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, rule)| **rule == jump)
        .map(|(index, _)| index + 1)
        .collect();
    for number in later.into_iter().rev() {
        let number = number.to_string();
        run(
            iptables,
            &["-w", "-t", chain.table, "-D", chain.from, &number],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_drop_the_host_and_neighbours_and_masquerade_the_range() {
        let rules = ipv4_rules(&FullNetworkRange::default());
        let input = |table| ChainRules {
            table,
            from: "INPUT",
            chain: "CONDUCTOR-INPUT",
            rules: vec!["-i cnd+ -j DROP".to_owned()],
        };
        assert_eq!(
            rules,
            vec![
                input("mangle"),
                ChainRules {
                    table: "mangle",
                    from: "FORWARD",
                    chain: "CONDUCTOR-FORWARD",
                    rules: [
                        "-i cnd+ -o cnd+ -j DROP",
                        "-d 169.254.0.0/16 -i cnd+ -j DROP",
                        "-i cnd+ -o docker0 -j DROP",
                        "-i cnd+ -o br-+ -j DROP",
                        "-i cnd+ -o podman+ -j DROP",
                        "-i cnd+ -o cni-podman+ -j DROP",
                        "-o cnd+ -m conntrack --ctstate NEW -j DROP",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                },
                input("filter"),
                ChainRules {
                    table: "filter",
                    from: "FORWARD",
                    chain: "CONDUCTOR-FORWARD",
                    rules: [
                        "-o cnd+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                        "-i cnd+ -j ACCEPT",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                },
                ChainRules {
                    table: "nat",
                    from: "POSTROUTING",
                    chain: "CONDUCTOR-POSTROUTING",
                    rules: vec!["-s 10.200.0.0/16 ! -d 10.200.0.0/16 -j MASQUERADE".to_owned()],
                },
            ]
        );
    }
}
