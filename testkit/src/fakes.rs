//! Small in-process servers that speak just enough of the OpenAI-compatible
//! API and of Qdrant's REST API for the provider tests, on 127.0.0.1:0.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

pub const DIM: usize = 64;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// A bag-of-words vector: each lowercased word of 3 letters or more (with a
/// plural `s` dropped) adds 1 to a bucket picked by its FNV-1a hash, then the
/// vector is normalised. Texts sharing words get a higher cosine, which is
/// all a ranking test needs; short words are skipped because with 64 buckets
/// their collisions would outweigh the words that matter.
pub fn embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    let lower = text.to_lowercase();
    for word in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3)
    {
        let word = if word.len() > 3 {
            word.strip_suffix('s').unwrap_or(word)
        } else {
            word
        };
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in word.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        v[(hash % DIM as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

// ---------------------------------------------------------------- OpenAI

/// What the fake OpenAI server does; tests change it between requests.
#[derive(Default)]
pub struct OpenAiBehaviour {
    /// Reject requests whose bearer token differs (401, echoing the token
    /// like real servers do, to check the client scrubs it).
    pub required_key: Option<String>,
    /// Leave out every optional field (`object`, `usage`, `model`, `id`,
    /// `created`, `finish_reason`, and `index` on embeddings).
    pub minimal: bool,
    /// Return embedding items in reverse order (with their `index`).
    pub reversed: bool,
    /// Answer every request with this status and body.
    pub fail: Option<(u16, String)>,
    /// Answer 200 with this raw body.
    pub raw_body: Option<String>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Input count of each embeddings request, in order.
    pub embed_batches: Vec<usize>,
    /// Body of each chat request, in order.
    pub chat_requests: Vec<Value>,
    /// Authorization header of each request (None when absent).
    pub auth_headers: Vec<Option<String>>,
}

#[derive(Clone)]
pub struct FakeOpenAi {
    pub addr: SocketAddr,
    state: Arc<Mutex<OpenAiBehaviour>>,
}

impl FakeOpenAi {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(OpenAiBehaviour::default()));
        let router = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/chat/completions", post(chat))
            .with_state(state.clone());
        Self {
            addr: serve(router).await,
            state,
        }
    }

    /// `http://127.0.0.1:port/v1`, without a trailing slash.
    pub fn base_url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/v1", self.addr)).unwrap()
    }

    pub fn behaviour(&self) -> MutexGuard<'_, OpenAiBehaviour> {
        self.state.lock().unwrap()
    }
}

type OpenAiState = State<Arc<Mutex<OpenAiBehaviour>>>;

/// Common front of both endpoints: records the auth header, applies the
/// delay, failure, raw body and key check. `Err` is the reply to send.
async fn openai_front(
    state: &Arc<Mutex<OpenAiBehaviour>>,
    headers: &HeaderMap,
) -> Result<bool, Response> {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    let delay = {
        let mut b = state.lock().unwrap();
        b.auth_headers.push(auth.clone());
        b.delay
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let b = state.lock().unwrap();
    if let Some((status, body)) = &b.fail {
        return Err((StatusCode::from_u16(*status).unwrap(), body.clone()).into_response());
    }
    if let Some(body) = &b.raw_body {
        return Err((
            StatusCode::OK,
            [("content-type", "application/json")],
            body.clone(),
        )
            .into_response());
    }
    if let Some(key) = &b.required_key {
        let given = auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        if given != key {
            let body = json!({ "error": {
                "message": format!("Incorrect API key provided: {given}."),
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }});
            return Err((StatusCode::UNAUTHORIZED, Json(body)).into_response());
        }
    }
    Ok(b.minimal)
}

async fn embeddings(
    State(state): OpenAiState,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let minimal = match openai_front(&state, &headers).await {
        Ok(minimal) => minimal,
        Err(reply) => return reply,
    };
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap().to_owned())
            .collect(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "input must be a string or an array",
            )
                .into_response();
        }
    };
    assert!(body["model"].is_string(), "model is required");
    let mut b = state.lock().unwrap();
    b.embed_batches.push(inputs.len());
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            if minimal {
                json!({ "embedding": embedding(text) })
            } else {
                json!({ "object": "embedding", "index": i, "embedding": embedding(text) })
            }
        })
        .collect();
    if b.reversed {
        data = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, text)| json!({ "index": i, "embedding": embedding(text) }))
            .collect();
    }
    let reply = if minimal {
        json!({ "data": data })
    } else {
        json!({ "object": "list", "data": data, "model": body["model"], "usage": { "prompt_tokens": 1, "total_tokens": 1 } })
    };
    Json(reply).into_response()
}

/// Answers with the first passage of the prompt (the line after `[1] …`),
/// so a test can tell the answer was built from the request.
async fn chat(State(state): OpenAiState, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let minimal = match openai_front(&state, &headers).await {
        Ok(minimal) => minimal,
        Err(reply) => return reply,
    };
    state.lock().unwrap().chat_requests.push(body.clone());
    let user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let mut lines = user.lines().skip_while(|l| !l.starts_with("[1]"));
    let answer = match (lines.next(), lines.next()) {
        (Some(_), Some(passage)) => format!("According to [1]: {passage}"),
        _ => "I do not know.".to_owned(),
    };
    let message = json!({ "role": "assistant", "content": answer });
    let reply = if minimal {
        json!({ "choices": [{ "message": message }] })
    } else {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{ "index": 0, "message": message, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 },
        })
    };
    Json(reply).into_response()
}

// ---------------------------------------------------------------- Qdrant

pub struct Collection {
    pub size: usize,
    pub distance: String,
    pub indexes: Vec<(String, String)>,
    /// Keyed by the point id's JSON text.
    pub points: BTreeMap<String, StoredPoint>,
}

pub struct StoredPoint {
    /// As it was given: a string (UUID) or a number.
    pub id: Value,
    pub vector: Vec<f32>,
    pub payload: Map<String, Value>,
}

#[derive(Default)]
pub struct QdrantState {
    pub required_key: Option<String>,
    pub collections: HashMap<String, Collection>,
    /// "METHOD path?query" of each request, in order.
    pub requests: Vec<String>,
}

#[derive(Clone)]
pub struct FakeQdrant {
    pub addr: SocketAddr,
    state: Arc<Mutex<QdrantState>>,
}

impl FakeQdrant {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(QdrantState::default()));
        let router = Router::new()
            .route(
                "/collections/{c}",
                get(get_collection).put(create_collection),
            )
            .route("/collections/{c}/index", put(create_index))
            .route("/collections/{c}/points", put(upsert_points))
            .route("/collections/{c}/points/delete", post(delete_points))
            .route("/collections/{c}/points/search", post(search_points))
            .with_state(state.clone());
        Self {
            addr: serve(router).await,
            state,
        }
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).unwrap()
    }

    pub fn state(&self) -> MutexGuard<'_, QdrantState> {
        self.state.lock().unwrap()
    }

    /// Texts stored in a collection's payloads, sorted.
    pub fn texts(&self, collection: &str) -> Vec<String> {
        let state = self.state();
        let mut texts: Vec<String> = state.collections[collection]
            .points
            .values()
            .map(|p| p.payload["text"].as_str().unwrap().to_owned())
            .collect();
        texts.sort();
        texts
    }
}

type QState = State<Arc<Mutex<QdrantState>>>;

fn qdrant_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "status": { "error": message }, "time": 0.0 })),
    )
        .into_response()
}

fn qdrant_ok(result: Value) -> Response {
    Json(json!({ "result": result, "status": "ok", "time": 0.0 })).into_response()
}

/// Records the request and checks the `api-key` header.
fn qdrant_front<'a>(
    state: &'a Arc<Mutex<QdrantState>>,
    headers: &HeaderMap,
    line: String,
) -> Result<MutexGuard<'a, QdrantState>, Box<Response>> {
    let mut s = state.lock().unwrap();
    s.requests.push(line);
    if let Some(key) = &s.required_key
        && headers.get("api-key").and_then(|v| v.to_str().ok()) != Some(key.as_str())
    {
        return Err(Box::new(qdrant_error(
            StatusCode::UNAUTHORIZED,
            "Must provide an API key or an Authorization bearer token",
        )));
    }
    Ok(s)
}

fn not_found(c: &str) -> Response {
    qdrant_error(
        StatusCode::NOT_FOUND,
        &format!("Not found: Collection `{c}` doesn't exist!"),
    )
}

fn query_line(query: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

async fn get_collection(
    State(state): QState,
    headers: HeaderMap,
    Path(c): Path<String>,
) -> Response {
    let s = match qdrant_front(&state, &headers, format!("GET /collections/{c}")) {
        Ok(s) => s,
        Err(reply) => return *reply,
    };
    match s.collections.get(&c) {
        None => not_found(&c),
        Some(col) => qdrant_ok(json!({
            "status": "green",
            "points_count": col.points.len(),
            "config": { "params": { "vectors": { "size": col.size, "distance": col.distance } } },
        })),
    }
}

async fn create_collection(
    State(state): QState,
    headers: HeaderMap,
    Path(c): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut s = match qdrant_front(&state, &headers, format!("PUT /collections/{c}")) {
        Ok(s) => s,
        Err(reply) => return *reply,
    };
    if s.collections.contains_key(&c) {
        return qdrant_error(
            StatusCode::CONFLICT,
            &format!("Wrong input: Collection `{c}` already exists!"),
        );
    }
    let (Some(size), Some(distance)) = (
        body["vectors"]["size"].as_u64(),
        body["vectors"]["distance"].as_str(),
    ) else {
        return qdrant_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "vectors.size and vectors.distance are required",
        );
    };
    s.collections.insert(
        c,
        Collection {
            size: size as usize,
            distance: distance.to_owned(),
            indexes: Vec::new(),
            points: BTreeMap::new(),
        },
    );
    qdrant_ok(json!(true))
}

async fn create_index(
    State(state): QState,
    headers: HeaderMap,
    Path(c): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let line = format!("PUT /collections/{c}/index{}", query_line(&query));
    let mut s = match qdrant_front(&state, &headers, line) {
        Ok(s) => s,
        Err(reply) => return *reply,
    };
    let Some(col) = s.collections.get_mut(&c) else {
        return not_found(&c);
    };
    let field = (
        body["field_name"].as_str().unwrap().to_owned(),
        body["field_schema"].as_str().unwrap().to_owned(),
    );
    if !col.indexes.contains(&field) {
        col.indexes.push(field);
    }
    qdrant_ok(json!({ "operation_id": 1, "status": "completed" }))
}

/// Real Qdrant takes unsigned integers or UUIDs as point ids.
fn valid_id(id: &Value) -> bool {
    match id {
        Value::Number(n) => n.is_u64(),
        Value::String(s) => {
            let parts: Vec<&str> = s.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts
                    .iter()
                    .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
        }
        _ => false,
    }
}

async fn upsert_points(
    State(state): QState,
    headers: HeaderMap,
    Path(c): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let line = format!("PUT /collections/{c}/points{}", query_line(&query));
    let mut s = match qdrant_front(&state, &headers, line) {
        Ok(s) => s,
        Err(reply) => return *reply,
    };
    let Some(col) = s.collections.get_mut(&c) else {
        return not_found(&c);
    };
    let Some(points) = body["points"].as_array() else {
        return qdrant_error(StatusCode::UNPROCESSABLE_ENTITY, "points is required");
    };
    for point in points {
        if !valid_id(&point["id"]) {
            return qdrant_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "id must be an unsigned integer or a UUID",
            );
        }
        let vector: Vec<f32> = serde_json::from_value(point["vector"].clone()).unwrap();
        if vector.len() != col.size {
            return qdrant_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Wrong input: Vector dimension error: expected dim: {}, got {}",
                    col.size,
                    vector.len()
                ),
            );
        }
        let payload = point["payload"].as_object().cloned().unwrap_or_default();
        let stored = StoredPoint {
            id: point["id"].clone(),
            vector,
            payload,
        };
        col.points.insert(point["id"].to_string(), stored);
    }
    qdrant_ok(json!({ "operation_id": 1, "status": "completed" }))
}

/// A condition `{key, match:{value}}` holds when the payload field equals
/// the value; the only kind of condition the client sends.
fn condition_holds(condition: &Value, payload: &Map<String, Value>) -> bool {
    let key = condition["key"].as_str().unwrap();
    let value = &condition["match"]["value"];
    assert!(
        !value.is_null(),
        "only match-value conditions are supported: {condition}"
    );
    payload.get(key) == Some(value)
}

fn conditions(filter: &Value, name: &str) -> Vec<Value> {
    match &filter[name] {
        Value::Null => Vec::new(),
        Value::Array(items) => items.clone(),
        other => panic!("{name} must be an array, got {other}"),
    }
}

async fn delete_points(
    State(state): QState,
    headers: HeaderMap,
    Path(c): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let line = format!("POST /collections/{c}/points/delete{}", query_line(&query));
    let mut s = match qdrant_front(&state, &headers, line) {
        Ok(s) => s,
        Err(reply) => return *reply,
    };
    let Some(col) = s.collections.get_mut(&c) else {
        return not_found(&c);
    };
    let must = conditions(&body["filter"], "must");
    let must_not = conditions(&body["filter"], "must_not");
    col.points.retain(|_, StoredPoint { payload, .. }| {
        let matches = must.iter().all(|m| condition_holds(m, payload))
            && !must_not.iter().any(|m| condition_holds(m, payload));
        !matches
    });
    qdrant_ok(json!({ "operation_id": 2, "status": "completed" }))
}

async fn search_points(
    State(state): QState,
    headers: HeaderMap,
    Path(c): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let s = match qdrant_front(
        &state,
        &headers,
        format!("POST /collections/{c}/points/search"),
    ) {
        Ok(s) => s,
        Err(reply) => return *reply,
    };
    let Some(col) = s.collections.get(&c) else {
        return not_found(&c);
    };
    let query: Vec<f32> = serde_json::from_value(body["vector"].clone()).unwrap();
    if query.len() != col.size {
        return qdrant_error(
            StatusCode::BAD_REQUEST,
            "Wrong input: Vector dimension error",
        );
    }
    let limit = body["limit"].as_u64().unwrap() as usize;
    let with_payload = body["with_payload"] == json!(true);
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let mut scored: Vec<(f64, &Value, &Map<String, Value>)> = col
        .points
        .values()
        .map(
            |StoredPoint {
                 id,
                 vector: v,
                 payload: p,
             }| {
                let dot: f64 = v
                    .iter()
                    .zip(&query)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let denom = norm(v) * norm(&query);
                (if denom == 0.0 { 0.0 } else { dot / denom }, id, p)
            },
        )
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let result: Vec<Value> = scored
        .into_iter()
        .take(limit)
        .map(|(score, id, payload)| {
            json!({
                "id": id, "version": 1, "score": score,
                "payload": if with_payload { Value::Object(payload.clone()) } else { Value::Null },
                "vector": null,
            })
        })
        .collect();
    qdrant_ok(json!(result))
}
