//! Seeing an execution end: the attach stream split into stdout and stderr, the container's
//! exit waited for (Docker's `wait`; Podman's state polled once the stream ended), the exit code
//! decoded, and a cold container's run time taken from the engine's start and finish times.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::api;
use super::engine::{Engine, EngineKind};
use crate::run::ProcessExit;

/// How long output may keep flowing after the container stopped before capture is cut off.
pub(crate) const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Splits the engine's multiplexed attach stream into a stdout and a stderr reader. The pipes
/// are bounded, so a slow reader slows the stream down. The receiver completes (with an error:
/// its sender is dropped) when the stream has ended, which the engine does when the container's
/// process has exited.
pub(crate) fn demultiplex(
    mut output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
) -> (
    tokio::io::DuplexStream,
    tokio::io::DuplexStream,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (mut out_writer, out_reader) = tokio::io::duplex(64 * 1024);
    let (mut err_writer, err_reader) = tokio::io::duplex(64 * 1024);
    let (ended, ended_receiver) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ended = ended;
        while let Some(item) = output.next().await {
            let written = match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    out_writer.write_all(&message).await
                }
                Ok(LogOutput::StdErr { message }) => err_writer.write_all(&message).await,
                Ok(LogOutput::StdIn { .. }) => Ok(()),
                Err(e) => {
                    tracing::debug!(error = %e, "the container's output stream ended");
                    break;
                }
            };
            if written.is_err() {
                break;
            }
        }
    });
    (out_reader, err_reader, ended_receiver)
}

/// Waits until container `id` has exited: Docker's `wait`, or for Podman [`podman_exited`]
/// (`attach_ended` completes when the attach stream has ended). An error is the reason.
pub(crate) async fn exited(
    engine: &Engine,
    kind: EngineKind,
    id: &str,
    attach_ended: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), String> {
    match kind {
        EngineKind::Docker => {
            let mut wait = engine.client().wait_container(id, None);
            match wait.next().await {
                Some(Ok(_))
                | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => Ok(()),
                Some(Err(e)) => Err(e.to_string()),
                None => Ok(()),
            }
        }
        EngineKind::Podman => podman_exited(engine.socket(), id, attach_ended)
            .await
            .map_err(|e| e.to_string()),
    }
}

/// Waits until Podman's container `id` has exited: once the attach stream has ended (the
/// container's output closed), its state is polled until the engine has seen the exit, quickly
/// at first. Podman's own `wait` also waits for its cleanup process, hundreds of milliseconds
/// later, polling every 250 ms. If the stream ended early (or attaching broke) the polling is
/// what finds the exit, at most 250 ms late.
async fn podman_exited(
    socket: &Path,
    id: &str,
    attach_ended: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), api::ApiError> {
    let _ = attach_ended.await;
    let mut delay = Duration::from_millis(2);
    loop {
        if api::container_state(socket, id).await?.has_exited() {
            return Ok(());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// The engine's exit code as a process exit: the init reports death by signal N as 128 + N.
pub(crate) fn exit_of(code: i64) -> ProcessExit {
    match i32::try_from(code) {
        Ok(code @ 129..=192) => ProcessExit::Signal(code - 128),
        Ok(code) => ProcessExit::Code(code),
        Err(_) => ProcessExit::Code(-1),
    }
}

/// How long a container ran by the engine's `StartedAt` and `FinishedAt`, when both parse and
/// the finish is not before the start.
pub(crate) fn engine_run_time(
    started_at: Option<&str>,
    finished_at: Option<&str>,
) -> Option<Duration> {
    let (start, end) = (engine_time(started_at?)?, engine_time(finished_at?)?);
    end.duration_since(start).ok()
}

/// An RFC 3339 time as the engines write it: nanoseconds, and `Z` (Docker, and Podman on a UTC
/// host) or a `±HH:MM` offset (Podman writes local time). `humantime` reads UTC only, so an
/// offset other than `Z` is taken off here and applied to what it read.
fn engine_time(text: &str) -> Option<SystemTime> {
    let at = text.len().saturating_sub(6);
    let (utc, offset) = match (text.get(..at), text.get(at..)) {
        (Some(time), Some(zone)) if zone.starts_with(['+', '-']) && zone.get(3..4) == Some(":") => {
            let hours = digits(zone.get(1..3)?)?;
            let minutes = digits(zone.get(4..)?)?;
            let offset = Duration::from_secs(hours * 3600 + minutes * 60);
            (time, Some((zone.starts_with('+'), offset)))
        }
        _ => (text, None),
    };
    let read = humantime::parse_rfc3339_weak(utc).ok()?;
    match offset {
        None => Some(read),
        // Local time east of UTC is ahead of it: the UTC time is earlier by the offset.
        Some((true, offset)) => read.checked_sub(offset),
        Some((false, offset)) => read.checked_add(offset),
    }
}

/// The number two ASCII digits `text` hold.
fn digits(text: &str) -> Option<u64> {
    if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_decode_by_the_init_convention() {
        assert_eq!(exit_of(0), ProcessExit::Code(0));
        assert_eq!(exit_of(3), ProcessExit::Code(3));
        assert_eq!(exit_of(127), ProcessExit::Code(127));
        assert_eq!(exit_of(137), ProcessExit::Signal(9));
        assert_eq!(exit_of(143), ProcessExit::Signal(15));
        assert_eq!(exit_of(255), ProcessExit::Code(255));
    }

    #[test]
    fn engine_times_parse() {
        let nanos = |text: &str| {
            engine_time(text).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos())
        };
        assert_eq!(nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            nanos("2024-05-01T12:00:00.5Z"),
            Some(1_714_564_800_500_000_000)
        );
        assert_eq!(
            nanos("2024-05-01T14:00:00.000000001+02:00"),
            Some(1_714_564_800_000_000_001)
        );
        assert_eq!(
            nanos("2024-05-01T07:30:00.000000001-04:30"),
            Some(1_714_564_800_000_000_001)
        );
        assert_eq!(
            nanos("2024-05-01T12:00:00+00:00"),
            Some(1_714_564_800_000_000_000)
        );
        // What the engines print for a time not set yet: before the epoch, not a time here.
        assert_eq!(nanos("0001-01-01T00:00:00Z"), None);
        assert_eq!(nanos("garbage"), None);
        assert_eq!(nanos("2024-05-01T12:00:00+0x:00"), None);
        assert_eq!(nanos("2024-05-01T12:00:00+-1:00"), None);
        assert_eq!(nanos("2024-05-01T12:00:00.5é"), None);
    }

    #[test]
    fn a_run_time_needs_both_times_in_order() {
        let start = "2024-05-01T12:00:00.25Z";
        let end = "2024-05-01T14:00:01.75+02:00";
        assert_eq!(
            engine_run_time(Some(start), Some(end)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(engine_run_time(Some(end), Some(start)), None);
        // As Docker 20.10 and Podman 4.3 answer /containers/{id}/json here.
        assert_eq!(
            engine_run_time(
                Some("2026-12-07T20:07:06.172045493Z"),
                Some("2026-12-07T20:07:06.193137082Z")
            ),
            Some(Duration::from_nanos(21_091_589))
        );
        assert_eq!(engine_run_time(Some(start), None), None);
        assert_eq!(
            engine_run_time(Some(start), Some("0001-01-01T00:00:00Z")),
            None
        );
    }
}
