//! The optional HTTP listener (`--http-listen`): `/metrics` in Prometheus text (the
//! broker's `metrics` facade, recorded by metrics-exporter-prometheus), `/healthz` (200
//! while the broker runs, 503 once shutdown begins) and `/readyz` (200 once the listeners
//! are bound and storage is recovered, 503 before and during shutdown).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use roost::BrokerHandle;

/// What the endpoints read: the recorder's handle, and the broker once it has started.
#[derive(Clone)]
pub(crate) struct Health {
    prometheus: PrometheusHandle,
    broker: Arc<OnceLock<BrokerHandle>>,
}

impl Health {
    /// The broker is up: `/readyz` says so from now on.
    pub(crate) fn ready(&self, broker: &BrokerHandle) {
        let _ = self.broker.set(broker.clone());
    }
}

async fn metrics(State(health): State<Health>) -> String {
    health.prometheus.render()
}

async fn healthz(State(health): State<Health>) -> StatusCode {
    match health.broker.get() {
        Some(b) if b.is_shutting_down() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

async fn readyz(State(health): State<Health>) -> StatusCode {
    match health.broker.get() {
        Some(b) if !b.is_shutting_down() => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Installs the Prometheus recorder and serves the endpoints on `addr` (before the broker
/// starts, so `/readyz` answers 503 while it recovers). Ends with the process.
pub(crate) async fn serve(addr: SocketAddr) -> Result<Health, String> {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))?;
    let health = Health {
        prometheus,
        broker: Arc::new(OnceLock::new()),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (http): {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("http listener: {e}"))?;
    tracing::info!(addr = %local, "http endpoints up: /metrics, /healthz, /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http listener failed");
        }
    });
    Ok(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17 §4: /healthz is 200 while the broker runs and 503 once shutdown begins;
    /// /readyz is 503 until the broker has started.
    #[tokio::test]
    async fn health_flips_to_503_when_shutdown_begins_and_ready_waits_for_the_start() {
        let health = Health {
            prometheus: PrometheusBuilder::new().build_recorder().handle(),
            broker: Arc::new(OnceLock::new()),
        };
        assert_eq!(
            readyz(State(health.clone())).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(healthz(State(health.clone())).await, StatusCode::OK);
        let broker = roost::Broker::builder()
            .sys_interval(None)
            .build()
            .start()
            .await
            .expect("starts");
        health.ready(&broker);
        assert_eq!(readyz(State(health.clone())).await, StatusCode::OK);
        assert_eq!(healthz(State(health.clone())).await, StatusCode::OK);
        // Shutdown has begun (its first step) but not finished.
        let stopping = broker.clone();
        let mut shutdown = Box::pin(async move { stopping.shutdown().await });
        let _ = futures_poll_once(&mut shutdown).await;
        assert!(broker.is_shutting_down());
        assert_eq!(
            healthz(State(health.clone())).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(readyz(State(health)).await, StatusCode::SERVICE_UNAVAILABLE);
        shutdown.await;
    }

    /// Polls `f` once.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
