//! A running command's output: its events stored as whole, redacted lines within the task's
//! output budget, and its spool files removed once that is done (the stored events are the
//! output; the spools have no reader).

use conductor_core::{LineAssembler, OutputBudget, Redactor, StoreError};
use conductor_types::{ExecEvent, OutputStream, TaskEventKind, TaskId};

use crate::scheduler::Scheduler;

/// Output events buffered between an executor and the store.
pub(super) const OUTPUT_EVENT_BUFFER: usize = 64;
/// Longest line kept whole for redaction.
const MAX_LINE: usize = 16 * 1024;

impl Scheduler {
    /// Stores the executor's output as whole, redacted lines. Each stream keeps its order
    /// exactly; across the two streams, lines are stored in the order the executor read them
    /// (two pipes cannot say more: a command that needs the exact interleaving writes `2>&1`).
    pub(super) async fn forward_output(
        &self,
        id: TaskId,
        index: u32,
        mut receiver: tokio::sync::mpsc::Receiver<ExecEvent>,
        redactor: &Redactor,
        budget: &mut OutputBudget,
    ) -> Result<(), StoreError> {
        let mut stdout = LineAssembler::new(MAX_LINE);
        let mut stderr = LineAssembler::new(MAX_LINE);
        while let Some(first) = receiver.recv().await {
            // Coalesce whatever else is already waiting into one event per stream, so chatty
            // commands cost one insert per batch rather than per chunk.
            let mut batch = vec![first];
            while batch.len() < OUTPUT_EVENT_BUFFER {
                match receiver.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            // Whole lines in the order they were read, across both streams: consecutive lines of
            // one stream become one event, a switch to the other stream starts the next one.
            let mut runs: Vec<(OutputStream, String)> = Vec::new();
            for event in batch {
                if let ExecEvent::Output { stream, data, .. } = event {
                    let lines = match stream {
                        OutputStream::Stdout => &mut stdout,
                        OutputStream::Stderr => &mut stderr,
                    };
                    let Some(text) = lines.push(&data) else {
                        continue;
                    };
                    match runs.last_mut() {
                        Some((last, run)) if *last == stream => run.push_str(&text),
                        _ => runs.push((stream, text)),
                    }
                }
            }
            for (stream, text) in runs {
                self.emit_output(id, index, stream, redactor, budget, text)
                    .await?;
            }
        }
        for (stream, lines) in [
            (OutputStream::Stdout, &mut stdout),
            (OutputStream::Stderr, &mut stderr),
        ] {
            if let Some(text) = lines.finish() {
                self.emit_output(id, index, stream, redactor, budget, text)
                    .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn emit_output(
        &self,
        id: TaskId,
        index: u32,
        stream: OutputStream,
        redactor: &Redactor,
        budget: &mut OutputBudget,
        text: String,
    ) -> Result<(), StoreError> {
        let Some(text) = budget.admit(redactor.redact(&text)) else {
            return Ok(());
        };
        self.emit(
            id,
            TaskEventKind::Output {
                index,
                stream,
                text,
            },
        )
        .await
    }
}

/// Deletes an execution's spool files: those its result names, and the whole
/// `<spool_dir>/<execution id>` when the spool directory is known (also after a failed
/// execution, which names none).
pub(super) async fn remove_spools(
    spool_dir: Option<&std::path::Path>,
    execution: &conductor_types::ExecutionId,
    done: Option<&conductor_types::ExecutionResult>,
) {
    let mut named: Vec<std::path::PathBuf> = Vec::new();
    if let Some(done) = done {
        named.extend(done.stdout_info.spool_path.iter().cloned());
        named.extend(done.stderr_info.spool_path.iter().cloned());
    }
    for path in &named {
        if let Err(error) = tokio::fs::remove_file(path).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "removing a spool file");
            }
        }
        if let Some(dir) = path.parent() {
            let _ = tokio::fs::remove_dir(dir).await;
        }
    }
    if let Some(dir) = spool_dir.map(|dir| dir.join(execution.to_string())) {
        if let Err(error) = tokio::fs::remove_dir_all(&dir).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), %error, "removing a spool directory");
            }
        }
    }
}
