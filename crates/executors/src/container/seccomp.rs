//! The containers' seccomp profile: the namespace executor's policy
//! ([`conductor_sandbox::seccomp`]), generated from the same lists in the engines' profile format
//! (Docker's JSON, which Podman reads too), so both kinds of sandbox refuse the same calls.
//! Pure; the executor hands the result to the engine (see [`super::spec::create_body`]).
//!
//! The default action allows; each refused call gets `SCMP_ACT_ERRNO` with the policy's errno.
//! A profile's conditions within one rule are ANDed and it has no "any of these bits"
//! comparison, so `clone` gets one rule per namespace flag (`SCMP_CMP_MASKED_EQ`: the flag masked
//! equals the flag), and a denied `ioctl` request is compared on the low 32 bits, as the kernel
//! reads it. A call allowed only with listed argument values (`socket`'s family, `personality`)
//! gets one rule per aligned block of the values outside the list ([`refused_blocks`]: `arg &
//! mask == start`, on the low 32 bits), since a rule cannot say "none of these". Only the native
//! architecture is listed: the runtime refuses the calls of any other
//! (libseccomp's bad-architecture action), x86_64's x32 numbers included, where the namespace
//! executor's filter answers `ENOSYS` to x32 and kills on another architecture.

use conductor_sandbox::seccomp::{
    ARGUMENT_ALLOW_LISTS, CLONE_NAMESPACE_FLAGS, DENIED_IOCTLS, DENIED_SYSCALLS, ENOSYS_SYSCALLS,
};
use serde::Serialize;

/// A seccomp profile in the Docker format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// What a call no rule matches gets.
    pub default_action: &'static str,
    /// The architectures the rules apply to (`SCMP_ARCH_*`).
    pub architectures: Vec<&'static str>,
    /// The rules.
    pub syscalls: Vec<Rule>,
}

/// The calls `names` get `action` (failing with `errno_ret`) when every one of `args` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// System call names.
    pub names: Vec<&'static str>,
    /// `SCMP_ACT_*`.
    pub action: &'static str,
    /// The errno of `SCMP_ACT_ERRNO`.
    pub errno_ret: u16,
    /// Conditions on the arguments, all of which must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgCondition>,
}

/// A condition on argument `index`: with `SCMP_CMP_MASKED_EQ`, `arg & value == value_two`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgCondition {
    /// Which argument (0-based).
    pub index: u32,
    /// The mask.
    pub value: u64,
    /// What the masked argument is compared with.
    pub value_two: u64,
    /// `SCMP_CMP_*`.
    pub op: &'static str,
}

const ACT_ERRNO: &str = "SCMP_ACT_ERRNO";
const MASKED_EQ: &str = "SCMP_CMP_MASKED_EQ";
const EPERM: u16 = libc::EPERM as u16;
const ENOSYS: u16 = libc::ENOSYS as u16;

/// The policy as a profile.
pub fn profile() -> Profile {
    let errno = |names: Vec<&'static str>, errno_ret: u16, args: Vec<ArgCondition>| Rule {
        names,
        action: ACT_ERRNO,
        errno_ret,
        args,
    };
    let masked = |index: u32, value: u64, value_two: u64| ArgCondition {
        index,
        value,
        value_two,
        op: MASKED_EQ,
    };
    let mut syscalls = vec![
        errno(
            DENIED_SYSCALLS.iter().map(|(name, _)| *name).collect(),
            EPERM,
            Vec::new(),
        ),
        errno(
            ENOSYS_SYSCALLS.iter().map(|(name, _)| *name).collect(),
            ENOSYS,
            Vec::new(),
        ),
    ];
    for (_, flag) in CLONE_NAMESPACE_FLAGS {
        let flag = u64::from(flag.unsigned_abs());
        syscalls.push(errno(vec!["clone"], EPERM, vec![masked(0, flag, flag)]));
    }
    for (_, request) in DENIED_IOCTLS {
        let low = *request & 0xffff_ffff;
        syscalls.push(errno(
            vec!["ioctl"],
            EPERM,
            vec![masked(1, 0xffff_ffff, low)],
        ));
    }
    for list in ARGUMENT_ALLOW_LISTS {
        let allowed: Vec<u32> = list.allowed.iter().map(|(_, value)| *value).collect();
        let errno_ret = u16::try_from(list.errno).unwrap_or(EPERM);
        for (mask, start) in refused_blocks(&allowed) {
            syscalls.push(errno(
                vec![list.name],
                errno_ret,
                vec![masked(list.index, mask, start)],
            ));
        }
    }
    Profile {
        default_action: "SCMP_ACT_ALLOW",
        architectures: native_architecture().into_iter().collect(),
        syscalls,
    }
}

/// The 32-bit values other than `allowed`, as aligned power-of-two blocks `(mask, start)`: a
/// value `v` is in a block when `v & mask == start`. Few blocks (at most two per bit between
/// neighbouring allowed values), and exactly the values outside `allowed`.
pub fn refused_blocks(allowed: &[u32]) -> Vec<(u64, u64)> {
    const END: u64 = 1 << 32;
    let mut allowed: Vec<u64> = allowed.iter().map(|v| u64::from(*v)).collect();
    allowed.sort_unstable();
    allowed.dedup();
    let mut blocks = Vec::new();
    let mut start = 0u64;
    while start < END {
        let next = allowed.iter().copied().find(|v| *v >= start).unwrap_or(END);
        if next == start {
            start += 1;
            continue;
        }
        let mut size = 1u64;
        while start.is_multiple_of(size * 2) && start + size * 2 <= next {
            size *= 2;
        }
        blocks.push((!(size - 1) & (END - 1), start));
        start += size;
    }
    blocks
}

/// [`profile`] as JSON, what the engines' `seccomp=` security option takes (Docker the text
/// itself, Podman a file holding it).
pub fn profile_json() -> Result<String, serde_json::Error> {
    serde_json::to_string(&profile())
}

/// libseccomp's name for the architecture this was built for; none (the runtime then uses
/// the native one) elsewhere.
fn native_architecture() -> Option<&'static str> {
    if cfg!(target_arch = "x86_64") {
        Some("SCMP_ARCH_X86_64")
    } else if cfg!(target_arch = "aarch64") {
        Some("SCMP_ARCH_AARCH64")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use conductor_sandbox::seccomp::{default_filter, Action};

    use super::*;

    /// What `profile` answers to a call, evaluated the way libseccomp does: the first rule
    /// naming the call whose conditions all hold (the rules here never disagree), else the
    /// default.
    fn answer(profile: &Profile, name: &str, args: [u64; 6]) -> Action {
        assert_eq!(profile.default_action, "SCMP_ACT_ALLOW");
        profile
            .syscalls
            .iter()
            .filter(|rule| rule.names.contains(&name))
            .find(|rule| {
                rule.args.iter().all(|arg| {
                    assert_eq!(arg.op, MASKED_EQ);
                    args[arg.index as usize] & arg.value == arg.value_two
                })
            })
            .map_or(Action::Allow, |rule| {
                assert_eq!(rule.action, ACT_ERRNO);
                Action::Errno(i32::from(rule.errno_ret))
            })
    }

    /// Every call the profile names, with arguments that exercise every condition, gets what
    /// the namespace executor's filter answers.
    #[test]
    fn the_profile_answers_as_the_namespace_filter_does() {
        let filter = default_filter().unwrap();
        let profile = profile();
        let mut calls: Vec<(&str, i64)> = DENIED_SYSCALLS.to_vec();
        calls.extend_from_slice(ENOSYS_SYSCALLS);
        calls.extend([("clone", libc::SYS_clone), ("ioctl", libc::SYS_ioctl)]);
        calls.extend(ARGUMENT_ALLOW_LISTS.iter().map(|list| (list.name, list.nr)));
        for rule in &profile.syscalls {
            for name in &rule.names {
                assert!(calls.iter().any(|(known, _)| known == name), "{name}");
            }
        }
        let mut argument_sets = vec![[0u64; 6]];
        for (_, flag) in CLONE_NAMESPACE_FLAGS {
            argument_sets.push([(*flag | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0]);
        }
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        argument_sets.push([thread, 0, 0, 0, 0, 0]);
        for (_, request) in DENIED_IOCTLS {
            argument_sets.push([0, *request, 0, 0, 0, 0]);
            argument_sets.push([0, 0xdead_beef_0000_0000 | *request, 0, 0, 0, 0]);
        }
        argument_sets.push([0, 0x5401, 0, 0, 0, 0]); // TCGETS
                                                     // Every family and personality around the listed ones, the listed ones with high bits,
                                                     // and values far from them.
        for value in (0u64..70).chain([
            0x0002_0000,
            0x0002_0008,
            0x0004_0000,
            0x0040_0000,
            0x0040_0008,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
            0x1_0000_0000,
            0xffff_ffff_0000_0002,
            0xffff_ffff_ffff_ffff,
        ]) {
            argument_sets.push([value, 0, 0, 0, 0, 0]);
        }
        for (name, nr) in calls {
            for args in &argument_sets {
                assert_eq!(
                    Some(answer(&profile, name, *args)),
                    filter.answer(nr, *args),
                    "{name} {args:x?}"
                );
            }
        }
        // A call no rule names is allowed by both.
        assert_eq!(answer(&profile, "getpid", [0; 6]), Action::Allow);
        assert_eq!(filter.answer(libc::SYS_getpid, [0; 6]), Some(Action::Allow));
    }

    #[test]
    fn refused_blocks_cover_exactly_the_values_outside_the_list() {
        assert_eq!(refused_blocks(&[]), vec![(0, 0)]);
        assert_eq!(
            refused_blocks(&[1, 2, 10, 16])[..6],
            [
                (0xffff_ffff, 0),
                (0xffff_ffff, 3),
                (0xffff_fffc, 4),
                (0xffff_fffe, 8),
                (0xffff_ffff, 11),
                (0xffff_fffc, 12),
            ]
        );
        let allowed = [0u32, 8, 0x2_0000, 0x2_0008, 0xffff_ffff];
        let blocks = refused_blocks(&allowed);
        let refused = |v: u32| {
            blocks
                .iter()
                .filter(|(mask, start)| u64::from(v) & mask == *start)
                .count()
        };
        for v in (0..0x3_0000).chain(0xffff_0000..=0xffff_ffff) {
            let expected = usize::from(!allowed.contains(&v));
            assert_eq!(refused(v), expected, "{v:x}");
        }
    }

    #[test]
    // `TIOCSTI`'s type differs between libc targets (u64 on glibc x86_64, c_int on musl).
    #[allow(clippy::unnecessary_cast)]
    fn the_profile_is_docker_json() {
        let json: serde_json::Value = serde_json::from_str(&profile_json().unwrap()).unwrap();
        let denied: Vec<&str> = DENIED_SYSCALLS.iter().map(|(name, _)| *name).collect();
        let clone = |flag: libc::c_int| {
            serde_json::json!({
                "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            })
        };
        let ioctl = |request: u64| {
            serde_json::json!({
                "names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM,
                "args": [{
                    "index": 1, "value": 0xffff_ffff_u32, "valueTwo": request,
                    "op": "SCMP_CMP_MASKED_EQ",
                }],
            })
        };
        let expected = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": native_architecture().into_iter().collect::<Vec<_>>(),
            "syscalls": [
                {"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS},
                clone(libc::CLONE_NEWCGROUP),
                clone(libc::CLONE_NEWIPC),
                clone(libc::CLONE_NEWNET),
                clone(libc::CLONE_NEWNS),
                clone(libc::CLONE_NEWPID),
                clone(libc::CLONE_NEWUSER),
                clone(libc::CLONE_NEWUTS),
                ioctl(libc::TIOCSTI as u64),
                ioctl(0x541C),
            ],
        });
        let rules = json["syscalls"].as_array().unwrap();
        let argument_rules = &rules[11..];
        assert_eq!(
            serde_json::json!({
                "defaultAction": json["defaultAction"],
                "architectures": json["architectures"],
                "syscalls": rules[..11],
            }),
            expected
        );
        // The rest refuse families and personalities, within libseccomp's limits.
        for rule in argument_rules {
            let name = rule["names"][0].as_str().unwrap();
            assert!(
                ["socket", "socketpair", "personality"].contains(&name),
                "{rule}"
            );
        }
        assert!(argument_rules.len() < 160, "{}", argument_rules.len());
        for name in [
            "ptrace",
            "mount",
            "unshare",
            "bpf",
            "keyctl",
            "io_uring_setup",
        ] {
            assert!(denied.contains(&name), "{name}");
        }
    }
}
