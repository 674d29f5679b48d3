//! Logging and tracing set-up, in one place for both binaries.
//!
//! Logs: JSON lines in production, readable text on a terminal, filtered by
//! `log.level` or `RUST_LOG`. Spans carry `trace_id`, so every line of a
//! request or job can be found by it.
//!
//! Traces: with `telemetry.otlp_endpoint` set, spans also go to an
//! OpenTelemetry collector over OTLP/HTTP (JSON). Our trace id is the OTel
//! trace id ([`otel_trace_id`]), and every job carries it, so an incoming
//! webhook, its job, the RAG step and every delivery of the resulting event
//! form one trace across processes; deliveries pass it on to receivers in a
//! W3C `traceparent` header ([`traceparent`]).

use std::io::IsTerminal;

use bytes::Bytes;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sha2::{Digest, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings, TelemetrySettings};
use crate::ids;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("telemetry: building the export client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("telemetry: must start inside the tokio runtime")]
    NoRuntime,
}

/// Flushes the traces still buffered when dropped, so spans of the last
/// requests before a shutdown are not lost.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: flushing traces at shutdown failed: {e}");
        }
    }
}

/// Installs the global subscriber: logs, and trace export when configured.
/// Safe to call more than once (tests): later calls keep the first
/// subscriber. Call it inside the tokio runtime: exports run on it.
pub fn init(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
    service: &'static str,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let provider = telemetry
        .otlp_endpoint
        .as_ref()
        .map(|endpoint| tracer_provider(endpoint, service))
        .transpose()?;
    let otel = provider.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service))
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = if json {
        registry
            .with(fmt.json().with_current_span(true).with_span_list(false))
            .try_init()
    } else {
        registry.with(fmt).try_init()
    };
    if provider.is_some() {
        queue::runtime::set_job_span_hook(adopt_trace);
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(
    endpoint: &url::Url,
    service: &'static str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
    let client = OnRuntime {
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?,
        handle,
    };
    let mut traces = endpoint.clone();
    if traces.path() == "/" || traces.path().is_empty() {
        traces.set_path("/v1/traces");
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(traces.as_str())
        .with_http_client(client)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service)
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build())
}

/// The batch exporter runs on a thread of its own with no tokio reactor;
/// each export is sent by the service's reqwest client on the service's
/// runtime and awaited from there.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self.handle.spawn(async move {
            let (parts, body) = request.into_parts();
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?
                .error_for_status()?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = sent.await??;
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        Ok(response)
    }
}

/// The OTel trace id of one of our trace ids: a W3C id (32 hex digits) as
/// is, a `trace_<ulid>` by the ULID's 128 bits, anything else a client sent
/// (`X-Trace-Id`) by a hash, so the same id always maps to the same trace.
pub fn otel_trace_id(trace_id: &ids::TraceId) -> TraceId {
    let trace_id = trace_id.as_str();
    if trace_id.len() == 32
        && let Ok(bits) = u128::from_str_radix(trace_id, 16)
        && bits != 0
    {
        return TraceId::from(bits);
    }
    if let Some(ulid) = trace_id.strip_prefix("trace_")
        && let Ok(ulid) = ulid::Ulid::from_string(&ulid.to_uppercase())
        && ulid.0 != 0
    {
        return TraceId::from(ulid.0);
    }
    let digest = Sha256::digest(trace_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    TraceId::from_bytes(bytes)
}

/// Makes `span` part of the trace `trace_id` (as a child of a remote
/// parent), before it is first entered. A no-op without trace export.
pub fn adopt_trace(span: &tracing::Span, trace_id: &ids::TraceId) {
    let parent = SpanContext::new(
        otel_trace_id(trace_id),
        SpanId::from(rand::random::<u64>().max(1)),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(Context::new().with_remote_span_context(parent));
}

/// A W3C `traceparent` for a request made inside the current span: its
/// trace, with the current span as parent when traces are exported, else a
/// fresh parent id.
pub fn traceparent(trace_id: &ids::TraceId) -> String {
    let current = tracing::Span::current().context();
    let span = current.span();
    let context = span.span_context();
    let span_id = if context.is_valid() {
        context.span_id()
    } else {
        SpanId::from(rand::random::<u64>().max(1))
    };
    format!("00-{}-{}-01", otel_trace_id(trace_id), span_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otel_of(id: &str) -> TraceId {
        otel_trace_id(&id.parse().unwrap())
    }

    #[test]
    fn our_trace_ids_map_to_stable_w3c_ids() {
        let w3c = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(otel_of(w3c).to_string(), w3c);
        let ulid = ulid::Ulid::generate();
        let ours = format!("trace_{}", ulid.to_string().to_lowercase());
        assert_eq!(otel_of(&ours), TraceId::from(ulid.0));
        assert_eq!(otel_of("client-trace.42"), otel_of("client-trace.42"));
        assert_ne!(otel_of("client-trace.42"), otel_of("client-trace.43"));
        assert_ne!(
            otel_of("00000000000000000000000000000000"),
            TraceId::INVALID
        );
    }

    #[test]
    fn traceparent_is_well_formed_outside_any_span() {
        let value = traceparent(&"4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap());
        let fields: Vec<&str> = value.split('-').collect();
        assert_eq!(fields.len(), 4, "{value}");
        assert_eq!(fields[0], "00");
        assert_eq!(fields[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(fields[2].len(), 16);
        assert_ne!(fields[2], "0000000000000000");
        assert_eq!(fields[3], "01");
    }
}
