//! A local HTTP server that serves documents the way the Internet does:
//! fine ones, and hostile ones (an endless body, a trickle that never
//! finishes), for the ingestion step to fetch.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;

/// What the server answers at one path.
#[derive(Clone)]
pub enum Served {
    /// 200 with this content type and body.
    File {
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// 200 with a body of zeros that never ends (a "1 GB response").
    Endless,
    /// 200 whose body arrives one byte per second, forever.
    Trickle,
    /// This status, empty body.
    Status(u16),
    /// 200 with this body, after a pause (a slow origin).
    Slow {
        delay: Duration,
        content_type: &'static str,
        body: Vec<u8>,
    },
}

/// Serves `files` by path (without the leading `/docs/`) until dropped.
pub struct FileServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FileServer {
    /// The URL of `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/docs/{name}", self.addr)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn spawn_file_server(files: Vec<(&str, Served)>) -> FileServer {
    let files: Arc<HashMap<String, Served>> = Arc::new(
        files
            .into_iter()
            .map(|(name, served)| (name.to_owned(), served))
            .collect(),
    );
    let app = Router::new()
        .route("/docs/{name}", get(serve))
        .with_state(files);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("testkit: bind the file server");
    let addr = listener.local_addr().expect("testkit: file server address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FileServer { addr, task }
}

async fn serve(
    State(files): State<Arc<HashMap<String, Served>>>,
    Path(name): Path<String>,
) -> Response {
    match files.get(&name) {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Served::File { content_type, body }) => {
            ([(header::CONTENT_TYPE, *content_type)], body.clone()).into_response()
        }
        Some(Served::Slow {
            delay,
            content_type,
            body,
        }) => {
            tokio::time::sleep(*delay).await;
            ([(header::CONTENT_TYPE, *content_type)], body.clone()).into_response()
        }
        Some(Served::Status(code)) => StatusCode::from_u16(*code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        Some(Served::Endless) => {
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            let stream = futures::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
            (
                [(header::CONTENT_TYPE, "application/pdf")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Some(Served::Trickle) => {
            let stream = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some((Ok::<_, Infallible>(Bytes::from_static(b"a")), ()))
            });
            (
                [(header::CONTENT_TYPE, "text/plain")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}
