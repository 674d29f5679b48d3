//! Chat APIs (SPEC §10): ask a question and wait for the worker's answer,
//! look at a session, escalate or end it.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use queue::{Envelope, Job};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::escalation::Request;
use shared::events::EventMetadata;
use shared::ids::{EventId, JobId, SessionId};
use shared::jobs::{EndReason, ProcessMessage};
use shared::sessions::{Escalation, Priority, Session, SessionError, SessionStatus, Turn};
use utoipa::ToSchema;

use crate::http::body::Json;
use crate::http::envelope::{Accepted, Data};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::trace::current_trace_id;
use crate::state::AppState;

/// How often a waiting request looks for its answer.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Longest question accepted (characters).
const MAX_QUESTION_CHARS: usize = 16_000;

#[derive(Deserialize, ToSchema)]
pub struct CompletionRequest {
    pub question: String,
    /// Continue this session (created if new); absent, a new one starts.
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    /// Carried into the events; `correlation_id` lands in their metadata.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// The answer, or (202) where to poll for it.
#[derive(Serialize, ToSchema)]
pub struct Completion {
    pub job_id: String,
    /// `done`, `queued` (still running: poll `GET /chat/jobs/{job_id}`) or
    /// `failed`.
    pub status: String,
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub sources: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Completion {
    fn from_stored(job_id: &JobId, stored: &Value) -> Self {
        let text = |k: &str| stored.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            job_id: job_id.to_string(),
            status: text("status").unwrap_or_else(|| "queued".into()),
            session_id: text("session_id").unwrap_or_default(),
            answer: text("answer"),
            sources: stored.get("sources").cloned(),
            confidence: stored.get("confidence").and_then(Value::as_f64),
            escalated: stored.get("escalated").and_then(Value::as_bool),
            processing_time_ms: stored.get("processing_time_ms").and_then(Value::as_u64),
            error: text("error"),
        }
    }

    fn is_pending(&self) -> bool {
        self.status == "queued"
    }
}

fn respond(completion: Completion) -> Response {
    if completion.is_pending() {
        Accepted(completion).into_response()
    } else {
        Data(completion).into_response()
    }
}

fn field(path: &str, message: &str) -> ApiError {
    ApiError::validation(path, message)
}

fn session_conflict(e: SessionError) -> ApiError {
    match e {
        SessionError::Ended(id) => ApiError::conflict(
            "SESSION_ENDED",
            format!("session '{id}' has ended; start a new one"),
        ),
        other => other.into(),
    }
}

/// Ask a question; the answer comes from a worker.
#[utoipa::path(post, path = "/chat/completions", tag = "chat",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "answered within chat.completion_wait", body = Completion),
        (status = 202, description = "still running: poll GET /chat/jobs/{job_id}", body = Completion),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn completions(
    State(state): State<AppState>,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    let question = req.question.trim().to_owned();
    if question.is_empty() {
        return Err(field("question", "must not be empty"));
    }
    if question.chars().count() > MAX_QUESTION_CHARS {
        return Err(field(
            "question",
            &format!("must be at most {MAX_QUESTION_CHARS} characters"),
        ));
    }
    let session_id = match req.session_id.as_deref() {
        Some(id) => SessionId::parse(id.trim()).map_err(|e| field("session_id", &e.to_string()))?,
        None => SessionId::generate(),
    };
    let user_id = req
        .user_id
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "anonymous".into());
    if user_id.chars().count() > 256 {
        return Err(field("user_id", "must be at most 256 characters"));
    }
    let correlation_id = req
        .metadata
        .as_ref()
        .and_then(|m| m.get("correlation_id"))
        .and_then(Value::as_str)
        .map(|c| c.chars().take(256).collect());

    let services = &state.services;
    services
        .sessions
        .open_id(&session_id, &user_id)
        .await
        .map_err(session_conflict)?;
    let job = Envelope::new(
        ProcessMessage::QUEUE,
        ProcessMessage {
            session_id: session_id.clone(),
            user_id,
            user_name: None,
            message: question,
            webhook_id: None,
            webhook_event_id: None,
            correlation_id,
            channel: None,
            external_message_id: None,
            received_at: Utc::now(),
            reply_expected: true,
        },
        current_trace_id(),
    );
    let job_id = job.id.clone();
    // Written before the job exists, so a poll never mistakes a queued job
    // for an unknown one.
    services
        .sessions
        .put_result(
            &job_id,
            &json!({"status": "queued", "session_id": session_id}),
        )
        .await?;
    services.queue.push(&[job]).await?;

    let deadline = Instant::now() + services.settings.chat.completion_wait;
    loop {
        let completion = load(&state, &job_id).await?;
        if !completion.is_pending() || Instant::now() >= deadline {
            return Ok(respond(completion));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn load(state: &AppState, job_id: &JobId) -> Result<Completion, ApiError> {
    let stored = state
        .services
        .sessions
        .get_result(job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("chat job", job_id.as_str()))?;
    Ok(Completion::from_stored(job_id, &stored))
}

/// The state (and, when done, the answer) of a `/chat/completions` job.
#[utoipa::path(get, path = "/chat/jobs/{job_id}", tag = "chat",
    params(("job_id" = String, Path)),
    responses((status = 200, body = Completion), (status = 202, body = Completion),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id = JobId::parse(&id).map_err(|_| ApiError::not_found("chat job", &id))?;
    Ok(respond(load(&state, &job_id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: Session,
    /// The newest turns, oldest first.
    pub history: Vec<Turn>,
}

async fn load_session(state: &AppState, id: &str) -> Result<Session, ApiError> {
    let session_id = SessionId::parse(id).map_err(|_| ApiError::not_found("session", id))?;
    state
        .services
        .sessions
        .get(&session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("session", id))
}

async fn view(state: &AppState, session: Session) -> Result<SessionView, ApiError> {
    let history = state
        .services
        .sessions
        .turns(
            &session.session_id,
            state.services.settings.chat.history_turns,
        )
        .await?;
    Ok(SessionView { session, history })
}

/// A session with its history.
#[utoipa::path(get, path = "/chat/sessions/{session_id}", tag = "chat",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<SessionView>, ApiError> {
    let session = load_session(&state, &id).await?;
    Ok(Data(view(&state, session).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct EscalateRequest {
    pub reason: String,
    /// `low`, `medium` (default), `high` or `urgent`.
    #[serde(default)]
    pub priority: Option<Priority>,
}

#[derive(Serialize, ToSchema)]
pub struct Escalated {
    pub session_id: String,
    pub escalated: bool,
    pub escalation: Escalation,
}

/// Hand a session to a human operator (emits `chat.escalated`).
#[utoipa::path(post, path = "/chat/sessions/{session_id}/escalate", tag = "chat",
    params(("session_id" = String, Path)), request_body = EscalateRequest,
    responses((status = 200, body = Escalated), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn escalate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<EscalateRequest>,
) -> Result<Data<Escalated>, ApiError> {
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(field("reason", "must be 1-1000 characters"));
    }
    let session = load_session(&state, &id).await?;
    if session.status == SessionStatus::Ended {
        return Err(session_conflict(SessionError::Ended(session.session_id)));
    }
    let escalation = state
        .services
        .escalator
        .escalate(
            &session,
            Request {
                reason,
                priority: req.priority.unwrap_or(Priority::Medium),
                last_message: None,
            },
            EventId::generate(),
            EventMetadata {
                trace_id: current_trace_id(),
                correlation_id: None,
            },
        )
        .await?;
    Ok(Data(Escalated {
        session_id: session.session_id.to_string(),
        escalated: true,
        escalation,
    }))
}

/// End a session (emits `session.ended`); ending an ended one changes
/// nothing.
#[utoipa::path(post, path = "/chat/sessions/{session_id}/end", tag = "chat",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn end_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<SessionView>, ApiError> {
    let session = load_session(&state, &id).await?;
    state
        .services
        .sessions
        .end(
            &session.session_id,
            EndReason::Requested,
            current_trace_id(),
        )
        .await?;
    let session = load_session(&state, &id).await?;
    Ok(Data(view(&state, session).await?))
}
