//! A webhook receiver for tests: a real HTTP server on `127.0.0.1:0` that
//! records every request exactly as it arrived (raw body bytes included, so
//! signatures can be checked over what was really sent) and answers as the
//! test says — fine, failing, failing for a while, slow, or never.
//!
//! Requests are recorded when they arrive, before the answer, so a request
//! the receiver never answers (`Hang`) still shows up.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio_util::sync::CancellationToken;

/// How the receiver answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 to everything.
    AlwaysOk,
    /// 500 to the first `n` requests (counted from when this behaviour was
    /// set), then 200.
    FailTimes(usize),
    /// This status to everything.
    AlwaysStatus(u16),
    /// 200, after this long.
    Delay(Duration),
    /// Never answers (the sender's timeout has to fire).
    Hang,
    /// 500 to the first attempt (body's `delivery_attempt` 1) of each
    /// event listed by id, 200 to everything else.
    FailFirstAttemptOf(Arc<BTreeSet<String>>),
    /// 500 to every request for the events listed by id, 200 to the rest.
    FailEventsOf(Arc<BTreeSet<String>>),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lowercase names; repeated headers joined with ", ".
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub received_at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "receiver got a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct Inner {
    requests: Mutex<Vec<Recorded>>,
    behaviour: Mutex<(Behaviour, usize)>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: CancellationToken,
}

/// Starts a receiver answering per `behaviour`. Needs a Tokio runtime.
pub async fn spawn_receiver(behaviour: Behaviour) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("testkit: could not bind a receiver on 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("testkit: a bound listener has an address");
    let inner = Arc::new(Inner {
        requests: Mutex::default(),
        behaviour: Mutex::new((behaviour, 0)),
    });
    let app = Router::new().fallback(handle).with_state(inner.clone());
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        // Hanging requests would hold a graceful shutdown forever; when the
        // test is done with the receiver the server task simply ends.
        tokio::select! {
            result = axum::serve(listener, app) => {
                if let Err(e) = result {
                    eprintln!("testkit: receiver on {addr} failed: {e}");
                }
            }
            () = stopped.cancelled() => {}
        }
    });
    Receiver { addr, inner, stop }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let mut map: HashMap<String, String> = HashMap::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let behaviour = {
        let mut requests = lock(&inner.requests);
        requests.push(Recorded {
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers: map,
            body: body.to_vec(),
            received_at: Instant::now(),
        });
        let mut state = lock(&inner.behaviour);
        state.1 += 1;
        (state.0.clone(), state.1)
    };
    match behaviour {
        (Behaviour::AlwaysOk, _) => (StatusCode::OK, "ok"),
        (Behaviour::FailTimes(n), seen) if seen <= n => {
            (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose")
        }
        (Behaviour::FailTimes(_), _) => (StatusCode::OK, "ok"),
        (Behaviour::AlwaysStatus(code), _) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "as configured",
        ),
        (Behaviour::Delay(delay), _) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, "ok, slowly")
        }
        (Behaviour::Hang, _) => std::future::pending().await,
        (Behaviour::FailFirstAttemptOf(events), _) => {
            let (event, attempt) = event_and_attempt(&body);
            answer(!(attempt == Some(1) && event.is_some_and(|e| events.contains(&e))))
        }
        (Behaviour::FailEventsOf(events), _) => {
            let (event, _) = event_and_attempt(&body);
            answer(!event.is_some_and(|e| events.contains(&e)))
        }
    }
}

/// A delivery body's `event_id` and `delivery_attempt`, as far as it has them.
fn event_and_attempt(body: &[u8]) -> (Option<String>, Option<u64>) {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    (
        body["event_id"].as_str().map(str::to_owned),
        body["delivery_attempt"].as_u64(),
    )
}

fn answer(ok: bool) -> (StatusCode, &'static str) {
    if ok {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in a test thread must not hide every later request.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Receiver {
    /// The URL to register as a webhook (`http://127.0.0.1:<port>/webhooks`).
    pub fn url(&self) -> String {
        format!("http://{}/webhooks", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.requests).clone()
    }

    /// Switches behaviour now (e.g. a failing receiver recovers); the
    /// `FailTimes` count restarts.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.inner.behaviour) = (behaviour, 0);
    }

    /// Waits until at least `count` requests arrived; panics after
    /// `timeout` saying how many did.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Recorded> {
        let started = Instant::now();
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                started.elapsed() < timeout,
                "receiver {}: expected at least {count} request(s) within {timeout:?}, got {}",
                self.addr,
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
