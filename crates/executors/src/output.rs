//! Output capture shared by all executors: forwards chunks as live events, keeps a bounded head of
//! each stream in memory, and spools the stream to a file once it passes the limit — at most
//! `spool_limit` bytes of it: past that the spool stops growing and the summary and the marker
//! line say so, so a task writing gigabytes cannot fill the host's disk.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use conductor_core::EventSender;
use conductor_types::{Bytes, ExecEvent, OutputStream, StreamSummary};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 64 * 1024;

/// One captured stream: the in-memory text and its summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedStream {
    /// Lossy UTF-8 of the first `limit` bytes, plus a marker line when truncated.
    pub text: String,
    /// Sizes and spool file.
    pub summary: StreamSummary,
}

/// Where and how much to capture.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Which stream this is.
    pub stream: OutputStream,
    /// Bytes kept in memory.
    pub limit: Bytes,
    /// The file the stream is spooled to once it passes `limit` (created on demand).
    pub spool_path: PathBuf,
    /// Bytes of the stream the spool file holds at most.
    pub spool_limit: Bytes,
}

/// Milliseconds since the Unix epoch, for event timestamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads `reader` to its end. Never holds more than `limit` + one chunk in memory; waits for the
/// event receiver when it is slow (back-pressure), and ignores a receiver that went away.
pub async fn capture<R: AsyncRead + Unpin>(
    mut reader: R,
    config: CaptureConfig,
    events: EventSender,
) -> std::io::Result<CapturedStream> {
    let limit = usize::try_from(config.limit.get()).unwrap_or(usize::MAX);
    let mut head = Vec::new();
    let mut total: u64 = 0;
    let mut spool: Option<Spool> = None;
    let mut chunk = vec![0u8; CHUNK];
    let mut listening = true;
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        let data = &chunk[..n];
        total += n as u64;
        if listening {
            let event = ExecEvent::Output {
                stream: config.stream,
                data: data.to_vec(),
                at_ms: now_ms(),
            };
            listening = events.send(event).await.is_ok();
        }
        match &mut spool {
            Some(file) => file.write(data).await?,
            None if head.len() + n <= limit => head.extend_from_slice(data),
            None => {
                let mut file = Spool::open(&config.spool_path, config.spool_limit.get()).await?;
                file.write(&head).await?;
                file.write(data).await?;
                let room = limit - head.len();
                head.extend_from_slice(&data[..room]);
                spool = Some(file);
            }
        }
    }
    let (spooled, spool_truncated) = match spool.take() {
        Some(mut file) => {
            file.file.flush().await?;
            (file.written, file.written < total)
        }
        None => (0, false),
    };
    let truncated = total > head.len() as u64;
    let mut text = String::from_utf8_lossy(&head).into_owned();
    let spool_path = truncated.then(|| config.spool_path.clone());
    if truncated {
        let whole = if spool_truncated {
            format!("its first {spooled} bytes are")
        } else {
            "the whole stream is".to_owned()
        };
        text.push_str(&format!(
            "\n[conductor: output truncated: kept {} of {} bytes; {whole} in {}]\n",
            head.len(),
            total,
            config.spool_path.display()
        ));
    }
    Ok(CapturedStream {
        text,
        summary: StreamSummary {
            total_bytes: total,
            truncated,
            spool_path,
            spool_truncated,
        },
    })
}

/// A spool file that takes at most `limit` bytes and drops the rest.
struct Spool {
    file: tokio::fs::File,
    written: u64,
    limit: u64,
}

impl Spool {
    async fn open(path: &Path, limit: u64) -> std::io::Result<Self> {
        Ok(Self {
            file: open_spool(path).await?,
            written: 0,
            limit,
        })
    }

    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let room = usize::try_from(self.limit.saturating_sub(self.written)).unwrap_or(usize::MAX);
        let take = data.len().min(room);
        if take > 0 {
            self.file.write_all(&data[..take]).await?;
            self.written += take as u64;
        }
        Ok(())
    }
}

async fn open_spool(path: &Path) -> std::io::Result<tokio::fs::File> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, limit: u64) -> CaptureConfig {
        CaptureConfig {
            stream: OutputStream::Stdout,
            limit: Bytes(limit),
            spool_path: dir.join("out.log"),
            spool_limit: Bytes::mib(64),
        }
    }

    #[tokio::test]
    async fn small_output_stays_in_memory_and_is_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let captured = capture(&b"hello\n"[..], config(dir.path(), 100), tx)
            .await
            .unwrap();
        assert_eq!(
            captured,
            CapturedStream {
                text: "hello\n".into(),
                summary: StreamSummary {
                    total_bytes: 6,
                    truncated: false,
                    spool_path: None,
                    spool_truncated: false,
                },
            }
        );
        match rx.recv().await {
            Some(ExecEvent::Output {
                stream: OutputStream::Stdout,
                data,
                ..
            }) => assert_eq!(data, b"hello\n"),
            other => panic!("unexpected event {other:?}"),
        }
        assert!(!dir.path().join("out.log").exists());
    }

    #[tokio::test]
    async fn large_output_is_truncated_in_memory_and_spooled_whole() {
        let dir = tempfile::tempdir().unwrap();
        let input: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let captured = capture(&input[..], config(dir.path(), 1000), tx)
            .await
            .unwrap();
        let spool = dir.path().join("out.log");
        assert_eq!(
            captured.summary,
            StreamSummary {
                total_bytes: 200_000,
                truncated: true,
                spool_path: Some(spool.clone()),
                spool_truncated: false,
            }
        );
        assert_eq!(&captured.text.as_bytes()[..1000], &input[..1000]);
        assert!(captured.text.ends_with(&format!(
            "\n[conductor: output truncated: kept 1000 of 200000 bytes; the whole stream is in {}]\n",
            spool.display()
        )));
        assert_eq!(std::fs::read(&spool).unwrap(), input);
    }

    #[tokio::test]
    async fn the_spool_stops_at_its_limit_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let input: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let config = CaptureConfig {
            spool_limit: Bytes(100_000),
            ..config(dir.path(), 1000)
        };
        let captured = capture(&input[..], config, tx).await.unwrap();
        let spool = dir.path().join("out.log");
        assert_eq!(
            captured.summary,
            StreamSummary {
                total_bytes: 300_000,
                truncated: true,
                spool_path: Some(spool.clone()),
                spool_truncated: true,
            }
        );
        assert_eq!(std::fs::read(&spool).unwrap(), &input[..100_000]);
        assert!(captured.text.ends_with(&format!(
            "\n[conductor: output truncated: kept 1000 of 300000 bytes; its first 100000 bytes are in {}]\n",
            spool.display()
        )));
    }
}
