//! Building the API from settings and serving it. `main` and the tests both
//! go through [`Application::build`], so tests exercise what ships.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use prometheus::Registry;
use shared::services::Services;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::{AdminKeys, require_admin};
use crate::http::body::{BodyPolicy, UploadRoute};
use crate::http::openapi::{admin_only, api_router, finish};
use crate::http::trace::HttpMetrics;
use crate::http::with_common_layers;
use crate::routes::{chat, dead_letters, deliveries, incoming, knowledge, ops, webhooks};
use crate::state::AppState;

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    router: Router,
    metrics_router: Option<Router>,
}

impl Application {
    /// Binds the listeners (port 0 picks a free one) and builds the router.
    pub async fn build(services: Services, admin_keys: AdminKeys) -> anyhow::Result<Self> {
        let settings = services.settings.clone();
        let registry = Registry::new();
        let http_metrics = HttpMetrics::register(&registry).context("registering HTTP metrics")?;
        let state = AppState { services, registry };

        let management = OpenApiRouter::new()
            .routes(routes!(webhooks::register))
            .routes(routes!(webhooks::list))
            .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
            .routes(routes!(webhooks::test))
            .routes(routes!(deliveries::list))
            .routes(routes!(deliveries::get))
            .routes(routes!(deliveries::retry))
            .routes(routes!(dead_letters::list))
            .routes(routes!(dead_letters::replay_many))
            .routes(routes!(dead_letters::get, dead_letters::discard))
            .routes(routes!(dead_letters::replay))
            .routes(routes!(ops::queues))
            .routes(routes!(chat::completions))
            .routes(routes!(chat::job))
            .routes(routes!(chat::get_session))
            .routes(routes!(chat::escalate))
            .routes(routes!(chat::end_session))
            .routes(routes!(knowledge::upload, knowledge::list))
            .routes(routes!(knowledge::get, knowledge::delete))
            .routes(routes!(knowledge::search));
        let incoming = OpenApiRouter::new()
            .routes(routes!(incoming::message))
            .routes(routes!(incoming::document));
        let documented = api_router()
            .nest(
                "/api/v1",
                admin_only(management, admin_keys.clone()).merge(incoming),
            )
            .routes(routes!(ops::healthz))
            .routes(routes!(ops::readyz));
        let (router, _doc) = finish(documented).context("building the OpenAPI document")?;

        let metrics = Router::new().route("/metrics", get(ops::metrics));
        let (router, metrics_router) = match settings.metrics.bind {
            Some(_) => (router, Some(metrics.with_state(state.clone()))),
            None => (
                router.merge(metrics.route_layer(from_fn_with_state(admin_keys, require_admin))),
                None,
            ),
        };
        let body = BodyPolicy {
            limit_bytes: settings.server.body_limit.0,
            upload: Some(UploadRoute {
                path: "/api/v1/knowledge/documents",
                // Room for base64 (4/3) and the JSON or multipart around it.
                limit_bytes: settings.ingest.max_document_size.0.saturating_mul(4) / 3 + 64 * 1024,
            }),
            ..BodyPolicy::default()
        };
        let router = with_common_layers(router, http_metrics, body).with_state(state);

        let listener = TcpListener::bind(settings.server.bind)
            .await
            .with_context(|| format!("binding server.bind = {}", settings.server.bind))?;
        let metrics_listener = match settings.metrics.bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics.bind = {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            router,
            metrics_router,
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
        if let (Some(listener), Some(router)) = (self.metrics_listener, self.metrics_router) {
            let stop = stop.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .context("serving HTTP")
    }
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
