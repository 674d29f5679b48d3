//! Building the API from settings and serving it. `main` and the tests both
//! go through [`Application::build`], so tests exercise what ships.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::Registry;
use shared::config::Settings;
use shared::delivery::replays::Replayer;
use shared::idempotency::IdempotencyStore;
use shared::services::Services;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::console;
use crate::http::auth::{AdminAuth, AdminKeys, require_admin};
use crate::http::body::{BodyBudget, BodyPolicy, UploadRoute, buffered};
use crate::http::idempotency::idempotent;
use crate::http::openapi::{admin_only, api_router, finish};
use crate::http::panic::catch_panics;
use crate::http::throttle::FailureLimiter;
use crate::http::trace::{HttpMetrics, trace_requests};
use crate::http::with_common_layers;
use crate::routes::{
    chat, dead_letters, deliveries, event_types, gaps, incoming, knowledge, ops, webhooks,
};
use crate::state::AppState;

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    router: Router,
    metrics_router: Option<Router>,
    header_read_timeout: Duration,
}

impl Application {
    /// Binds the listeners (port 0 picks a free one) and builds the router.
    pub async fn build(services: Services, admin_keys: AdminKeys) -> anyhow::Result<Self> {
        prepare(&services).await?;
        let settings = services.settings.clone();
        let registry = Registry::new();
        let http_metrics = HttpMetrics::register(&registry).context("registering HTTP metrics")?;
        let prefix = settings.redis.key_prefix.clone();
        let replayer = Replayer::new(
            services.publisher.clone(),
            services.queue.connection(),
            prefix.clone(),
        );
        let idempotency = IdempotencyStore::new(
            services.queue.connection(),
            prefix,
            settings.idempotency.ttl,
            settings.idempotency.in_progress_ttl,
        );
        let state = AppState {
            services,
            registry,
            replayer,
        };
        let admin = AdminAuth::new(
            admin_keys,
            FailureLimiter::new(
                settings.auth.max_failed_attempts,
                settings.auth.failed_attempts_window,
            ),
        );
        let router = documented_routes(admin.clone(), idempotency)?;
        let console = console_routes(admin.clone(), &settings, &state, &http_metrics);
        let metrics = Router::new().route("/metrics", get(ops::metrics));
        let (router, metrics_router) = match settings.metrics.bind {
            Some(_) => (router, Some(metrics.with_state(state.clone()))),
            None => (
                router.merge(metrics.route_layer(from_fn_with_state(admin, require_admin))),
                None,
            ),
        };
        let router = with_common_layers(router, http_metrics, body_policy(&settings))
            .merge(console)
            .with_state(state);

        let listener = bind(settings.server.bind)
            .with_context(|| format!("binding server.bind = {}", settings.server.bind))?;
        let metrics_listener = match settings.metrics.bind {
            Some(addr) => {
                Some(bind(addr).with_context(|| format!("binding metrics.bind = {addr}"))?)
            }
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            router,
            metrics_router,
            header_read_timeout: settings.server.header_read_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `stop` is cancelled, then finishes in-flight requests.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let header_read_timeout = self.header_read_timeout;
        if let (Some(listener), Some(router)) = (self.metrics_listener, self.metrics_router) {
            let stop = stop.clone();
            tokio::spawn(serve(listener, router, header_read_timeout, stop));
        }
        serve(self.listener, self.router, header_read_timeout, stop).await;
        Ok(())
    }
}

/// What must hold before the API serves: Redis keeps its keys, webhook
/// secrets are sealed as this environment requires, and (embedded
/// search) the local index follows the shared one.
async fn prepare(services: &Services) -> anyhow::Result<()> {
    services.check_eviction_policy().await?;
    services
        .webhooks
        .secure_at_start(services.settings.app.environment)
        .await?;
    if let Some(search) = &services.search {
        search.follow();
    }
    Ok(())
}

/// Every documented route, with `GET /api/v1/openapi.json` and the
/// reference that renders it.
fn documented_routes(
    admin: AdminAuth,
    idempotency: IdempotencyStore,
) -> anyhow::Result<Router<AppState>> {
    // Signed by their body: it must be read before they can be judged.
    let incoming = buffered(
        OpenApiRouter::new()
            .routes(routes!(incoming::message))
            .routes(routes!(incoming::document)),
    );
    let documented = api_router()
        .nest(
            "/api/v1",
            admin_only(idempotent(management_routes(), idempotency), admin).merge(incoming),
        )
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz));
    let (router, _doc) = finish(documented).context("building the OpenAPI document")?;
    Ok(router)
}

fn body_policy(settings: &Settings) -> BodyPolicy {
    BodyPolicy {
        limit_bytes: settings.server.body_limit.0,
        upload: Some(UploadRoute {
            path: "/api/v1/knowledge/documents",
            limit_bytes: settings.ingest.upload_body_limit(),
        }),
        read_timeout: settings.server.body_read_timeout,
        budget: BodyBudget::new(settings.server.body_budget.0),
        ..BodyPolicy::default()
    }
}

/// The console takes forms rather than JSON and signs in by cookie:
/// outside the body screening, the bearer auth, the Idempotency-Key layer
/// and the OpenAPI document, with tracing and the panic catcher of its own.
fn console_routes(
    admin: AdminAuth,
    settings: &Settings,
    state: &AppState,
    http_metrics: &HttpMetrics,
) -> Router<AppState> {
    console::router(admin, settings, state.services.queue.connection())
        .layer(from_fn(catch_panics))
        .layer(from_fn_with_state(http_metrics.clone(), trace_requests))
}

/// Pending connections the kernel may queue for `accept`. Tokio's
/// `TcpListener::bind` uses 128, the standard library's value: a burst of
/// more simultaneous connects than that overflows the queue, and the
/// overflow is dropped and retried by the clients a whole second later
/// (or, for a handshake the kernel completes but cannot queue, left half
/// open on the client's side). Linux caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Every admin route (bearer key, and `Idempotency-Key` on POSTs), each
/// documented by its handler's `#[utoipa::path]`.
fn management_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(webhooks::register))
        .routes(routes!(webhooks::list))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::test))
        .routes(routes!(event_types::list))
        .routes(routes!(event_types::get))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::recover))
        .routes(routes!(webhooks::enable))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::get))
        .routes(routes!(deliveries::retry))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::replay_many))
        .routes(routes!(dead_letters::replay_status))
        .routes(routes!(dead_letters::get, dead_letters::discard))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(ops::queues))
        .routes(routes!(chat::completions))
        .routes(routes!(chat::job))
        .routes(routes!(chat::list_sessions))
        .routes(routes!(chat::get_session))
        .routes(routes!(chat::escalate))
        .routes(routes!(chat::end_session))
        .routes(routes!(chat::reply))
        .routes(routes!(chat::hand_back))
        .routes(routes!(chat::feedback))
        .routes(routes!(knowledge::upload, knowledge::list))
        .routes(routes!(knowledge::get, knowledge::delete))
        .routes(routes!(knowledge::reingest))
        .routes(routes!(knowledge::search))
        .routes(routes!(gaps::gaps))
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// `axum::serve`, plus what it lacks: a deadline for the request head.
///
/// axum's server sets no timer, so a client that connects and sends nothing
/// (or one header byte a minute: slowloris) holds a connection and a file
/// descriptor forever. Here every connection is served by hyper's HTTP/1
/// builder with `header_read_timeout`: the head of each request (the first
/// one right after connecting, and each later one on a kept-alive
/// connection) must be complete within it, or hyper closes the connection.
/// The body has its own deadline in [`crate::http::body::buffer_body`].
///
/// HTTP/1 only: detecting HTTP/2 would mean reading a preface with no
/// deadline at all, which is the hole this function closes.
///
/// On `stop`: stop accepting, close idle connections, let requests in
/// flight finish.
async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // we took it: neither is fatal to the listener. Back off
                    // a moment so EMFILE does not become a busy loop.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(remote));
                router.clone().oneshot(req)
            });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Header timeouts, resets, malformed requests: the client's
                // problem, and frequent under abuse, so not a warning.
                tracing::debug!(error = %e, peer = %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The admin keys from settings, or a fresh random key printed once when
/// none is configured (so a bare start is usable and never open).
pub fn admin_keys(configured: &[String]) -> AdminKeys {
    if configured.is_empty() {
        let key = format!(
            "sk_admin_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        eprintln!("No auth.admin_keys configured; generated admin key for this run: {key}");
        AdminKeys::new([key])
    } else {
        AdminKeys::new(configured.iter().cloned())
    }
}
