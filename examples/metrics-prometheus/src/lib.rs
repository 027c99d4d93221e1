//! The bus's OpenTelemetry metrics, exposed for Prometheus.
//!
//! [`Metrics::install`] makes a Prometheus registry the global meter
//! provider's reader (before any bus is created: a bus takes its
//! instruments from the global provider when it is made), and
//! [`router`] serves the registry as Prometheus text on `GET /metrics`.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

/// The registry the bus's metrics are exported to.
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
}

impl Metrics {
    /// Installs a Prometheus exporter as the global meter provider.
    pub fn install() -> Result<Arc<Metrics>, Box<dyn std::error::Error>> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Ok(Arc::new(Metrics { registry, provider }))
    }

    /// Everything recorded so far, as Prometheus text.
    pub fn render(&self) -> String {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("the text encoding does not fail");
        String::from_utf8(text).expect("Prometheus text is UTF-8")
    }

    /// Flushes and stops the provider.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// `GET /metrics`: the registry as Prometheus text.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move { metrics.render() }
        }),
    )
}
