//! `sanitize_mode`: the one decision on which permission bits user content may have once it is
//! materialised on the host (file API, tar upload, snapshot, restore, import). Pure.
//!
//! Set-uid, set-gid and sticky bits are dropped: a workspace file is owned by whoever wrote it
//! (often root, or the sandbox's mapped root), so a kept set-id bit would hand that identity to
//! any local user who can reach the file. The write bit for others is dropped too: a workspace
//! is used by one sandbox user (its owner), so a world-writable file or directory only opens it
//! to every other local user. Symlinks are not passed through here (Linux ignores their mode).

/// The bits [`sanitize_mode`] always clears: set-uid, set-gid, sticky and write for others.
pub const STRIPPED_BITS: u32 = 0o7002;

/// The permission bits a file or directory made from user content gets on the host: `mode`'s
/// permission bits (`0o777`) without write for others. Never has a set-id or sticky bit.
pub const fn sanitize_mode(mode: u32) -> u32 {
    mode & 0o7777 & !STRIPPED_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_set_id_sticky_and_world_write() {
        let cases = [
            (0o6755, 0o755),
            (0o4755, 0o755),
            (0o2750, 0o750),
            (0o1777, 0o775),
            (0o7777, 0o775),
            (0o777, 0o775),
            (0o644, 0o644),
            (0o600, 0o600),
            (0o000, 0o000),
            (0o100_644, 0o644),
        ];
        let got: Vec<(u32, u32)> = cases.iter().map(|(m, _)| (*m, sanitize_mode(*m))).collect();
        assert_eq!(got, cases.to_vec());
    }

    #[test]
    fn is_idempotent_and_never_leaves_a_stripped_bit() {
        for mode in 0..=0o7777 {
            let once = sanitize_mode(mode);
            assert_eq!(once & STRIPPED_BITS, 0, "{mode:o}");
            assert_eq!(sanitize_mode(once), once, "{mode:o}");
            assert_eq!(
                once & !STRIPPED_BITS,
                mode & 0o777 & !STRIPPED_BITS,
                "{mode:o}"
            );
        }
    }
}
