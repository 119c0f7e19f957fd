//! What the service reports to its operators. The framework reports
//! through the `metrics` facade and `tracing` spans (see
//! `es_core::observe`); `serve` installs a Prometheus recorder so that
//! `GET /metrics` shows the metrics in Prometheus' text format, and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector, exports the spans over
//! OTLP (HTTP, protobuf) with [`export_traces`].

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;

/// Installs a Prometheus recorder as the process's metrics recorder and
/// returns the handle that renders what it holds.
///
/// # Errors
///
/// When a recorder is already installed.
pub fn install_prometheus() -> Result<PrometheusHandle, crate::Error> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| crate::Error::Io(std::io::Error::other(e.to_string())))?;
    Ok(handle)
}

/// `GET /metrics`, rendered from `handle`.
pub fn metrics_route(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(handle)
}

/// Folds the recorded histogram samples into their summaries every few
/// seconds (the recorder keeps them until then), for as long as the
/// process runs.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

async fn render(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    // Fold the samples recorded since the last upkeep, so that the page
    // includes them.
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// Spans being exported; [`shutdown`](Self::shutdown) sends what is left.
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Sends the spans not sent yet and stops exporting. Blocks until the
    /// collector answered or the export timed out.
    ///
    /// # Errors
    ///
    /// When the last spans could not be sent.
    pub fn shutdown(self) -> Result<(), crate::Error> {
        self.provider
            .shutdown()
            .map_err(|e| crate::Error::Io(std::io::Error::other(e.to_string())))
    }
}

/// Exports every span of this process to the OTLP collector at `endpoint`
/// (for example `http://127.0.0.1:4318`; spans go to `{endpoint}/v1/traces`),
/// in batches, as the service `orders`. Installs the process's tracing
/// subscriber.
///
/// # Errors
///
/// When the exporter cannot be built or a subscriber is already installed.
pub fn export_traces(endpoint: &str) -> Result<TraceExport, crate::Error> {
    let failed = |e: String| crate::Error::Io(std::io::Error::other(e));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| failed(format!("the OTLP exporter for {endpoint}: {e}")))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("orders").build())
        .build();
    let tracer = provider.tracer("orders");
    // Info level: commands, appends, loads and projection batches; the
    // reads (debug level) run too often to export.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(tracing_subscriber::filter::LevelFilter::INFO);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| failed(format!("installing the tracing subscriber: {e}")))?;
    Ok(TraceExport { provider })
}
