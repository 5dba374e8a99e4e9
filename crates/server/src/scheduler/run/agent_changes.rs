//! What an agent turn changed in its workspace: the workspace's shape before the turn and after
//! it (`conductor_workspace::tree_state`: a walk of `lstat` data, nothing read or followed),
//! reported as one `agent_files_changed` event. A workspace that cannot be walked (deeper than
//! the walk allows, gone) gets no event and a warning, never a failed turn.

use std::path::Path;

use conductor_core::StoreError;
use conductor_types::{AgentEvent, ChangedPath, PathChange, Task, TaskEventKind};
use conductor_workspace::{tree_state, ChangeKind, TreeState};

use crate::scheduler::Scheduler;

impl Scheduler {
    /// The workspace's shape before a turn (`None`: it could not be walked).
    pub(super) async fn workspace_shape(&self, task: &Task, workspace: &Path) -> Option<TreeState> {
        let dir = workspace.to_owned();
        match crate::stream::blocking(move || tree_state(&dir)).await {
            Ok(Ok(state)) => Some(state),
            Ok(Err(error)) => {
                tracing::warn!(task = %task.id, %error, "walking the agent's workspace; its changes go unreported");
                None
            }
            Err(error) => {
                tracing::warn!(task = %task.id, %error, "walking the agent's workspace");
                None
            }
        }
    }

    /// Emits what changed in `workspace` since `before`.
    pub(super) async fn report_changes(
        &self,
        task: &Task,
        workspace: &Path,
        before: Option<TreeState>,
    ) -> Result<(), StoreError> {
        let Some(before) = before else { return Ok(()) };
        let Some(after) = self.workspace_shape(task, workspace).await else {
            return Ok(());
        };
        let event = changed_files(before.changes_to(&after));
        self.emit(task.id, TaskEventKind::Agent(event)).await
    }
}

/// The event for `changes`, cut at [`AgentEvent::MAX_CHANGED_FILES`].
fn changed_files(changes: Vec<(String, ChangeKind)>) -> AgentEvent {
    let more = changes.len().saturating_sub(AgentEvent::MAX_CHANGED_FILES) as u64;
    let files = changes
        .into_iter()
        .take(AgentEvent::MAX_CHANGED_FILES)
        .map(|(path, kind)| ChangedPath {
            path,
            change: match kind {
                ChangeKind::Added => PathChange::Added,
                ChangeKind::Removed => PathChange::Removed,
                ChangeKind::Modified => PathChange::Modified,
                ChangeKind::ModeChanged => PathChange::ModeChanged,
                ChangeKind::TypeChanged => PathChange::TypeChanged,
            },
        })
        .collect();
    AgentEvent::AgentFilesChanged { files, more }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_is_cut_and_says_how_much_was_left_out() {
        let changes = (0..AgentEvent::MAX_CHANGED_FILES + 5)
            .map(|i| (format!("f{i:05}"), ChangeKind::Added))
            .collect();
        let AgentEvent::AgentFilesChanged { files, more } = changed_files(changes) else {
            panic!("not a files-changed event");
        };
        assert_eq!((files.len(), more), (AgentEvent::MAX_CHANGED_FILES, 5));
        assert_eq!(files[0].path, "f00000");
        assert_eq!(files[0].change, PathChange::Added);
    }
}
