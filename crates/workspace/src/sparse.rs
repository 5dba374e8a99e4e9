//! Sparse writes: runs of zero blocks are skipped (the file offset moves past them) instead of
//! written, so a file that is mostly holes — `truncate -s 2500M` — costs the disk only its data,
//! both as a blob in the store and when restored into a workspace. The contents read back are the
//! same bytes; the writer ends the file with [`finish`] so trailing zeros exist too.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

/// The unit checked for zeros: a file system block on every file system Conductor uses.
const BLOCK: usize = 4096;

/// Writes `buf` at `file`'s offset, seeking over every whole block of zeros instead of writing
/// it. The file must be new (its skipped ranges are holes, not old data).
pub(crate) fn write(mut file: &File, buf: &[u8]) -> io::Result<()> {
    let mut data_start: Option<usize> = None;
    let mut hole = 0u64;
    for (index, block) in buf.chunks(BLOCK).enumerate() {
        let offset = index * BLOCK;
        if is_zero(block) {
            if let Some(start) = data_start.take() {
                file.write_all(&buf[start..offset])?;
            }
            hole += block.len() as u64;
        } else if data_start.is_none() {
            if hole > 0 {
                file.seek(SeekFrom::Current(signed(hole)?))?;
                hole = 0;
            }
            data_start = Some(offset);
        }
    }
    match data_start {
        Some(start) => file.write_all(&buf[start..]),
        None if hole > 0 => file.seek(SeekFrom::Current(signed(hole)?)).map(drop),
        None => Ok(()),
    }
}

/// Ends `file` at `len` bytes: a run of zeros at the end was skipped, not written.
pub(crate) fn finish(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)
}

/// A `Write` over a new file that writes sparsely; call [`finish`] with the length after it.
#[derive(Debug)]
pub(crate) struct SparseSink<'a>(pub &'a File);

impl Write for SparseSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write(self.0, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn is_zero(block: &[u8]) -> bool {
    let mut words = block.chunks_exact(16);
    let rest = words.remainder();
    rest.iter().all(|&b| b == 0)
        && words.all(|w| <[u8; 16]>::try_from(w).is_ok_and(|w| u128::from_ne_bytes(w) == 0))
}

fn signed(n: u64) -> io::Result<i64> {
    i64::try_from(n).map_err(|_| io::Error::other("hole too large"))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn written(parts: &[&[u8]]) -> (Vec<u8>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut len = 0;
        for part in parts {
            write(&file, part).unwrap();
            len += part.len() as u64;
        }
        finish(&file, len).unwrap();
        drop(file);
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        (back, blocks * 512)
    }

    #[test]
    fn same_bytes_back_with_holes_for_zero_blocks() {
        let mut data = vec![0u8; 64 * BLOCK];
        data[10 * BLOCK + 7] = 1;
        data[63 * BLOCK] = 2;
        let zeros = vec![0u8; 256 * BLOCK];
        let odd = vec![5u8; 1000];
        let (back, allocated) = written(&[&data, &zeros, &odd, &zeros, &[0u8; 3]]);
        let mut expected = data.clone();
        expected.extend_from_slice(&zeros);
        expected.extend_from_slice(&odd);
        expected.extend_from_slice(&zeros);
        expected.extend_from_slice(&[0u8; 3]);
        assert_eq!(back, expected);
        // Three data blocks and the odd tail; everything else is holes.
        assert!(
            allocated <= 16 * BLOCK as u64,
            "{allocated} bytes allocated"
        );
    }

    #[test]
    fn all_zero_file_allocates_nothing_and_empty_stays_empty() {
        let (back, allocated) = written(&[&vec![0u8; 1024 * BLOCK]]);
        assert_eq!(back.len(), 1024 * BLOCK);
        assert!(back.iter().all(|&b| b == 0));
        assert_eq!(allocated, 0);
        assert_eq!(written(&[]).0, Vec::<u8>::new());
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4096]));
        assert!(is_zero(&[0u8; 3]));
        let mut block = [0u8; 4096];
        block[4095] = 1;
        assert!(!is_zero(&block));
        block[4095] = 0;
        block[1] = 1;
        assert!(!is_zero(&block[1..]));
    }
}
