//! What agent tasks add to the store (issue 12): each task's usage, the sessions their turns
//! belong to, and the LLM gateway's audit records.

use std::str::FromStr;

use conductor_core::StoreError;
use conductor_types::{AgentKind, LlmRequest, Session, SessionId, TaskId, Timestamp, Usage};
use sqlx::Row;

use crate::{backend, corrupt, ms, to_json, SqliteStore};

fn kind_of(text: &str) -> Result<AgentKind, StoreError> {
    AgentKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| corrupt("an agent kind", format!("unknown kind {text:?}")))
}

fn usage_of(text: Option<String>, what: &str) -> Result<Option<Usage>, StoreError> {
    text.map(|text| serde_json::from_str(&text).map_err(|e| corrupt(what.to_owned(), e)))
        .transpose()
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl SqliteStore {
    pub(crate) async fn usage_column(&self, id: TaskId) -> Result<Option<Usage>, StoreError> {
        let text: Option<Option<String>> =
            sqlx::query_scalar("SELECT usage FROM tasks WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.reader)
                .await
                .map_err(backend("reading a task's usage"))?;
        usage_of(text.flatten(), "the usage of a task")
    }

    pub(crate) async fn write_usage(&self, id: TaskId, usage: &Usage) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE tasks SET usage = ? WHERE id = ?")
            .bind(to_json("a task's usage", usage)?)
            .bind(id.to_string())
            .execute(&mut *self.writer().await?)
            .await
            .map_err(backend("recording a task's usage"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::TaskNotFound(id));
        }
        Ok(())
    }

    pub(crate) async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, kind, workspace, cli_session, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(session.id.as_str())
        .bind(session.kind.as_str())
        .bind(&session.workspace)
        .bind(&session.cli_session)
        .bind(ms(session.created_at))
        .execute(&mut *self.writer().await?)
        .await
        .map_err(backend("saving a session"))?;
        Ok(())
    }

    pub(crate) async fn read_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT kind, workspace, cli_session, created_at FROM sessions WHERE id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend("reading a session"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get_err = |e| backend("reading a session")(e);
        let turns = sqlx::query(
            "SELECT id, usage FROM tasks WHERE json_extract(spec, '$.session_id') = ? \
             ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.reader)
        .await
        .map_err(backend("reading a session's turns"))?;
        let mut session = Session {
            id: id.clone(),
            kind: kind_of(&row.try_get::<String, _>("kind").map_err(get_err)?)?,
            workspace: row.try_get("workspace").map_err(get_err)?,
            cli_session: row.try_get("cli_session").map_err(get_err)?,
            turns: Vec::with_capacity(turns.len()),
            usage: Usage::default(),
            created_at: Timestamp(
                row.try_get::<i64, _>("created_at").map_err(get_err)?.max(0) as u64
            ),
        };
        for turn in &turns {
            let text: String = turn.try_get("id").map_err(get_err)?;
            session
                .turns
                .push(TaskId::from_str(&text).map_err(|e| corrupt("a task id", e))?);
            if let Some(usage) =
                usage_of(turn.try_get("usage").map_err(get_err)?, "a turn's usage")?
            {
                session.usage = session.usage.add(&usage);
            }
        }
        Ok(Some(session))
    }

    pub(crate) async fn write_cli_session(
        &self,
        id: &SessionId,
        cli_session: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET cli_session = ? WHERE id = ?")
            .bind(cli_session)
            .bind(id.as_str())
            .execute(&mut *self.writer().await?)
            .await
            .map_err(backend("recording a session's agent session"))?;
        Ok(())
    }

    pub(crate) async fn insert_llm_request(&self, request: &LlmRequest) -> Result<(), StoreError> {
        let usage = &request.usage;
        sqlx::query(
            "INSERT INTO llm_requests (task_id, session_id, model, status, input_tokens, \
             output_tokens, cache_read, cache_write, cost_usd, latency_ms, at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(request.task_id.to_string())
        .bind(request.session_id.as_ref().map(SessionId::as_str))
        .bind(&request.model)
        .bind(i64::from(request.status))
        .bind(count(usage.input_tokens))
        .bind(count(usage.output_tokens))
        .bind(count(usage.cache_read_input_tokens))
        .bind(count(usage.cache_creation_input_tokens))
        .bind(usage.cost_usd)
        .bind(count(request.latency_ms))
        .bind(ms(request.at))
        .execute(&mut *self.writer().await?)
        .await
        .map_err(backend("recording an LLM request"))?;
        Ok(())
    }

    pub(crate) async fn read_llm_requests(
        &self,
        task: TaskId,
    ) -> Result<Vec<LlmRequest>, StoreError> {
        let rows = sqlx::query(
            "SELECT session_id, model, status, input_tokens, output_tokens, cache_read, \
             cache_write, cost_usd, latency_ms, at FROM llm_requests WHERE task_id = ? ORDER BY id",
        )
        .bind(task.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(backend("reading LLM requests"))?;
        rows.iter().map(|row| llm_request(task, row)).collect()
    }
}

fn llm_request(task: TaskId, row: &sqlx::sqlite::SqliteRow) -> Result<LlmRequest, StoreError> {
    let get_err = |e| backend("reading an LLM request")(e);
    let number = |column: &str| -> Result<u64, StoreError> {
        Ok(row.try_get::<i64, _>(column).map_err(get_err)?.max(0) as u64)
    };
    let session: Option<String> = row.try_get("session_id").map_err(get_err)?;
    Ok(LlmRequest {
        task_id: task,
        session_id: session
            .map(|text| SessionId::from_str(&text))
            .transpose()
            .map_err(|e| corrupt("a session id", e))?,
        model: row.try_get("model").map_err(get_err)?,
        status: u16::try_from(number("status")?).unwrap_or(0),
        usage: Usage {
            input_tokens: number("input_tokens")?,
            output_tokens: number("output_tokens")?,
            cache_read_input_tokens: number("cache_read")?,
            cache_creation_input_tokens: number("cache_write")?,
            requests: 1,
            cost_usd: row.try_get("cost_usd").map_err(get_err)?,
        },
        latency_ms: number("latency_ms")?,
        at: Timestamp(number("at")?),
    })
}
