//! Bodies that stream through the blocking pool: a download written by blocking code
//! ([`stream_body`], through a [`ChunkWriter`]), an upload read by blocking code
//! ([`with_body_reader`], through a [`ChunkReader`]), and [`blocking`], one call on the pool
//! whose panic is an internal error. Used by the snapshot, file and diff endpoints.

use std::io::{Read, Write};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::AppError;

/// Chunks in flight between the blocking export/import and the HTTP body.
pub(crate) const STREAM_CHUNKS: usize = 16;
/// Size of the chunks a download is sent in.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// Runs `work` on the blocking pool; its panic is an internal error.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::Internal(format!("a blocking task failed: {e}")))
}

/// Streams what `work` writes (on the blocking pool) as a response body.
pub(crate) fn stream_body(
    work: impl FnOnce(&mut dyn Write) -> Result<(), String> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut out =
            std::io::BufWriter::with_capacity(DOWNLOAD_CHUNK, ChunkWriter::new(tx.clone()));
        let finished = work(&mut out).and_then(|()| out.flush().map_err(|e| e.to_string()));
        if let Err(error) = finished {
            tracing::warn!(%error, "streaming a download failed");
            let _ = tx.blocking_send(Err(std::io::Error::other(error)));
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

/// Sends the request body to `work` (on the blocking pool) as a reader, and returns its result.
pub(crate) async fn with_body_reader<T: Send + 'static>(
    body: Body,
    work: impl FnOnce(ChunkReader) -> T + Send + 'static,
) -> Result<T, AppError> {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_CHUNKS);
    let reading = tokio::task::spawn_blocking(move || work(ChunkReader::new(rx)));
    let mut stream = body.into_data_stream();
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    // The reader stopped (refused or done): its result says why.
                    break;
                }
            }
            Err(error) => {
                failed = Some(error.to_string());
                break;
            }
        }
    }
    drop(tx);
    let result = reading
        .await
        .map_err(|e| AppError::Internal(format!("a blocking task failed: {e}")))?;
    match failed {
        Some(error) => Err(AppError::BadRequest {
            code: "invalid_body",
            message: format!("reading the request body failed: {error}"),
        }),
        None => Ok(result),
    }
}

/// Sends what is written to it as body chunks; fails once the client is gone.
pub(crate) struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ChunkWriter {
    pub(crate) fn new(tx: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Self {
        Self { tx }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(data)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads body chunks sent from the async side.
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    pub(crate) fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
