//! uid/gid maps for the sandbox's user namespace (pure: the helper writes the text).

use crate::spec::MAPPED_IDS;

/// What the helper writes into `/proc/<child>/{setgroups,uid_map,gid_map}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    /// `uid_map` contents.
    pub uid_map: String,
    /// `gid_map` contents.
    pub gid_map: String,
    /// Whether `deny` must be written to `setgroups` first (required for an unprivileged
    /// writer; it also makes `setgroups(2)` fail inside the sandbox).
    pub deny_setgroups: bool,
}

/// The maps for a helper running as `host_uid`/`host_gid`.
///
/// As root: sandbox ids 0‥65535 map to `uid_base`‥`uid_base + 65535` (an unused range, so
/// sandbox root owns nothing on the host). Otherwise: sandbox 0 maps to the caller alone.
pub fn id_maps(host_uid: u32, host_gid: u32, uid_base: u32) -> IdMaps {
    if host_uid == 0 {
        let line = format!("0 {uid_base} {MAPPED_IDS}\n");
        IdMaps {
            uid_map: line.clone(),
            gid_map: line,
            deny_setgroups: false,
        }
    } else {
        IdMaps {
            uid_map: format!("0 {host_uid} 1\n"),
            gid_map: format!("0 {host_gid} 1\n"),
            deny_setgroups: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_maps_a_whole_range_at_the_base() {
        assert_eq!(
            id_maps(0, 0, 2_000_000_000),
            IdMaps {
                uid_map: "0 2000000000 65536\n".into(),
                gid_map: "0 2000000000 65536\n".into(),
                deny_setgroups: false,
            }
        );
    }

    #[test]
    fn unprivileged_callers_map_only_themselves() {
        assert_eq!(
            id_maps(1000, 100, 2_000_000_000),
            IdMaps {
                uid_map: "0 1000 1\n".into(),
                gid_map: "0 100 1\n".into(),
                deny_setgroups: true,
            }
        );
    }
}
