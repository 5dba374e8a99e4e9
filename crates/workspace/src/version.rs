//! A file's version for conditional requests (the file API's `ETag`): a digest of the device,
//! inode, size and modification time of what is at a path, read without following a symlink
//! and without reading its bytes. An upload replaces the file (a new inode), and a write in
//! place moves the size or the mtime, so a changed file shows a new version; a rewrite in place
//! with the same size within one tick of the filesystem's clock keeps it — the price of not
//! reading every byte on each request.

use std::os::unix::fs::MetadataExt;

use rustix::fs::Stat;

/// The version of `st` as a strong `ETag` value, quotes included (`"` + 20 hex digits + `"`).
pub fn of_stat(st: &Stat) -> String {
    #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
    let fields = [
        st.st_dev as u64,
        st.st_ino as u64,
        st.st_size as u64,
        st.st_mtime as u64,
        st.st_mtime_nsec as u64,
    ];
    digest(&fields)
}

/// The version of an open file's `metadata` (the same value [`of_stat`] gives for it).
pub fn of_metadata(metadata: &std::fs::Metadata) -> String {
    digest(&[
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime() as u64,
        metadata.mtime_nsec() as u64,
    ])
}

fn digest(fields: &[u64; 5]) -> String {
    let mut hasher = blake3::Hasher::new();
    for field in fields {
        hasher.update(&field.to_le_bytes());
    }
    let hex = hasher.finalize().to_hex();
    format!("\"{}\"", &hex[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_has_one_version_until_it_changes_and_both_views_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let stat = |p: &std::path::Path| rustix::fs::lstat(p).unwrap();
        let first = of_stat(&stat(&path));
        assert_eq!(first.len(), 22);
        assert!(first.starts_with('"') && first.ends_with('"'));
        assert_eq!(first, of_stat(&stat(&path)));
        assert_eq!(
            first,
            of_metadata(&std::fs::File::open(&path).unwrap().metadata().unwrap())
        );
        // Appending changes the size; a replacement is another inode.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, b"!").unwrap();
        drop(file);
        let appended = of_stat(&stat(&path));
        assert_ne!(first, appended);
        let other = dir.path().join("g");
        std::fs::write(&other, "one!").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_ne!(appended, of_stat(&stat(&path)));
    }
}
