//! The event catalogue: every event type this system emits, with the JSON
//! Schema of its `data` generated from the payload structs the publishing
//! sites build (`shared::events::payloads`).

use axum::extract::Path;
use shared::events::catalog::EventType;
use shared::events::payloads::{self, EventTypeInfo};

use crate::http::envelope::Data;
use crate::http::error::{ApiError, ErrorEnvelope};

/// List every event type, with its description and the JSON Schema of its
/// `data`; webhook `filters` paths are checked against these schemas.
#[utoipa::path(get, path = "/event-types", tag = "event-types",
    responses((status = 200, body = Vec<EventTypeInfo>), (status = 401, body = ErrorEnvelope)))]
pub async fn list() -> Data<&'static [EventTypeInfo]> {
    Data(payloads::catalogue())
}

/// One event type, by name (`chat.escalated`).
#[utoipa::path(get, path = "/event-types/{event_type}", tag = "event-types",
    params(("event_type" = String, Path, example = "chat.escalated")),
    responses((status = 200, body = EventTypeInfo), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn get(Path(name): Path<String>) -> Result<Data<&'static EventTypeInfo>, ApiError> {
    name.parse::<EventType>()
        .ok()
        .and_then(payloads::describe)
        .map(Data)
        .ok_or_else(|| ApiError::not_found("event type", &name))
}
