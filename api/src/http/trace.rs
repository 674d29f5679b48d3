//! Request tracing: one trace id per request, a tracing span around the
//! request, an access-log line, and Prometheus request metrics.
//!
//! The trace id is the thread that ties a client's report ("my webhook got a
//! 500") to our logs, so it is accepted from the caller when well-formed,
//! echoed in `X-Trace-Id`, and made available to the error and success
//! envelopes through a task-local, without threading it through every handler.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use shared::ids::TraceId;
use tracing::Instrument;

/// Header used to both accept and echo the trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";
/// W3C Trace Context header, used when callers run their own tracing.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Route label for requests no route matched; keeps label cardinality bounded
/// no matter what paths scanners throw at us.
pub const UNMATCHED_ROUTE: &str = "unmatched";

tokio::task_local! {
    static TRACE_ID: TraceId;
}

/// Trace id of the request being served, or a fresh one outside a request
/// (background jobs, tests) so callers never have to handle "no id".
pub fn current_trace_id() -> TraceId {
    TRACE_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| TraceId::generate())
}

/// The caller's trace id, if it sent a usable one. `X-Trace-Id` wins over
/// `traceparent` because it is the one our own clients set on purpose.
/// A malformed header is ignored rather than rejected: a bad trace header
/// should never fail a webhook delivery.
pub fn incoming_trace_id(headers: &HeaderMap) -> Option<TraceId> {
    header_str(headers, TRACE_ID_HEADER)
        .and_then(|v| TraceId::parse(v).ok())
        .or_else(|| header_str(headers, TRACEPARENT_HEADER).and_then(TraceId::from_traceparent))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Request counters and latency histograms, labelled by route template.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

/// `process_*` (CPU, memory, open files; Linux only) and
/// `supportrag_build_info`, so a dashboard can tell instances and versions
/// apart.
fn register_process_metrics(registry: &Registry) -> Result<(), prometheus::Error> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let info = prometheus::IntGaugeVec::new(
        Opts::new(
            "supportrag_build_info",
            "Always 1; the labels say which build this instance runs.",
        ),
        &["version", "component"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), "api"])
        .set(1);
    registry.register(Box::new(info))?;
    Ok(())
}

impl HttpMetrics {
    /// Creates the metrics and registers them in `registry`; fails if they
    /// are already registered there.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests served"),
            &["method", "route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency in seconds",
            ),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        register_process_metrics(registry)?;
        Ok(Self { requests, duration })
    }

    fn observe(&self, method: &str, route: &str, status: StatusCode, elapsed: Duration) {
        self.requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }
}

/// Middleware: assigns the trace id, runs the request inside its span and
/// task-local scope, then logs, records metrics and echoes `X-Trace-Id`.
///
/// Install with `Router::layer` (not around the finished router as a
/// service): only then has axum already attached `MatchedPath`.
pub async fn trace_requests(
    State(metrics): State<HttpMetrics>,
    req: Request,
    next: Next,
) -> Response {
    let trace_id = incoming_trace_id(req.headers()).unwrap_or_else(TraceId::generate);
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    // Logs may show the raw path (useful when debugging a 404); metrics may not.
    let path = route.clone().unwrap_or_else(|| req.uri().path().to_owned());
    let span =
        tracing::info_span!("http_request", trace_id = %trace_id, method = %method, path = %path);
    shared::telemetry::adopt_trace(&span, &trace_id);

    let started = Instant::now();
    let mut response = TRACE_ID
        .scope(trace_id.clone(), next.run(req).instrument(span.clone()))
        .await;
    let elapsed = started.elapsed();

    let status = response.status();
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request completed"
        );
    });
    metrics.observe(
        method,
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        status,
        elapsed,
    );
    if let Ok(value) = HeaderValue::from_str(trace_id.as_str()) {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
    response
}

/// Extension methods are arbitrary tokens; folding them into one label
/// stops a client from minting new time series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(v) = HeaderValue::from_str(value) {
                map.insert(*name, v);
            }
        }
        map
    }

    #[test]
    fn accepts_well_formed_x_trace_id() {
        let h = headers(&[(TRACE_ID_HEADER, "abc-123_x.y:z")]);
        assert_eq!(
            incoming_trace_id(&h).as_ref().map(TraceId::as_str),
            Some("abc-123_x.y:z")
        );
    }

    #[test]
    fn ignores_bad_x_trace_id_and_falls_back_to_traceparent() {
        let long = "a".repeat(129);
        for bad in ["", "has space", "semi;colon", long.as_str()] {
            let h = headers(&[
                (TRACE_ID_HEADER, bad),
                (
                    TRACEPARENT_HEADER,
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ]);
            assert_eq!(
                incoming_trace_id(&h).as_ref().map(TraceId::as_str),
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
                "for {bad:?}"
            );
        }
        let max = "a".repeat(128);
        let h = headers(&[(TRACE_ID_HEADER, max.as_str())]);
        assert_eq!(incoming_trace_id(&h).map(|t| t.to_string()), Some(max));
    }

    #[test]
    fn rejects_malformed_traceparent() {
        let h = headers(&[(
            TRACEPARENT_HEADER,
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        )]);
        assert_eq!(incoming_trace_id(&h), None);
    }

    #[tokio::test]
    async fn current_trace_id_reads_the_task_local() {
        let seen = TRACE_ID
            .scope("trace_fixed".parse().unwrap(), async { current_trace_id() })
            .await;
        assert_eq!(seen, "trace_fixed");
        assert_ne!(current_trace_id(), current_trace_id());
    }
}
