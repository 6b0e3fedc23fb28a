//! The broker's figures through the [`metrics`] facade (feature `metrics`). The library
//! never installs a recorder: the application picks its exporter (Prometheus, StatsD,
//! OpenTelemetry, ...) and installs it; without one, nothing is recorded.
//!
//! Counters and gauges are copied from the broker's own counters every
//! [`BrokerBuilder::metrics_interval`](crate::BrokerBuilder::metrics_interval) (1 s by
//! default) by one task, so the message path does no work for them. Names:
//!
//! * `roost_<counter>_total` (`roost_<counter>` if it ends in `_total` already), a
//!   counter, for each field of
//!   [`MetricsSnapshot`](crate::MetricsSnapshot) that counts events
//!   (`roost_messages_received_total`, `roost_auth_failures_total`, ...);
//! * gauges: `roost_clients_connected`, `roost_sessions`, `roost_subscriptions`,
//!   `roost_retained`, `roost_retained_bytes`, `roost_queued_bytes`,
//!   `roost_queued_messages` (summed over sessions), `roost_storage_bytes` (size on disk,
//!   with storage), and `roost_bridge_connected`, `roost_bridge_queued`,
//!   `roost_bridge_inflight` labelled `bridge`;
//! * histograms, recorded as they happen (once per storage batch, not per message):
//!   `roost_storage_write_seconds` (each batch written; under acked durability this
//!   includes the commit that acknowledgements wait for) and `roost_storage_flush_seconds`
//!   (each flush).

use std::sync::Arc;
use std::time::Duration;

use crate::bridge::BridgeState;
use crate::context::Context;
use crate::metrics::MetricsSnapshot;

use crate::metrics::{FLUSH_SECONDS, WRITE_SECONDS};

/// Snapshot fields that are levels, not counts: exported as gauges.
pub const GAUGES: &[&str] = &[
    "clients_connected",
    "sessions",
    "subscriptions",
    "retained",
    "retained_bytes",
    "queued_bytes",
];

/// The metric name of snapshot field `field`.
pub fn metric_name(field: &str) -> String {
    if GAUGES.contains(&field) || field.ends_with("_total") {
        format!("roost_{field}")
    } else {
        format!("roost_{field}_total")
    }
}

fn describe() {
    for (field, doc) in MetricsSnapshot::documentation() {
        let name = metric_name(field);
        if GAUGES.contains(&field) {
            metrics::describe_gauge!(name, doc);
        } else {
            metrics::describe_counter!(name, doc);
        }
    }
    metrics::describe_gauge!(
        "roost_queued_messages",
        "Messages queued across all sessions."
    );
    metrics::describe_gauge!(
        "roost_storage_bytes",
        metrics::Unit::Bytes,
        "Size of the store on disk."
    );
    metrics::describe_gauge!("roost_bridge_connected", "1 while the bridge is connected.");
    metrics::describe_gauge!(
        "roost_bridge_queued",
        "Outbound messages waiting in the bridge's session."
    );
    metrics::describe_gauge!(
        "roost_bridge_inflight",
        "Outbound messages not yet acknowledged by the remote."
    );
    metrics::describe_histogram!(
        WRITE_SECONDS,
        metrics::Unit::Seconds,
        "Time each storage batch took to write (under acked durability, with its commit)."
    );
    metrics::describe_histogram!(
        FLUSH_SECONDS,
        metrics::Unit::Seconds,
        "Time each storage flush took."
    );
}

/// Copies the broker's figures to the recorder every `interval` until shutdown.
pub(crate) async fn run(ctx: Arc<Context>, interval: Duration, bridges: Arc<[Arc<BridgeState>]>) {
    describe();
    let names: Vec<(&'static str, String)> = MetricsSnapshot::default()
        .fields()
        .into_iter()
        .map(|(field, _)| (field, metric_name(field)))
        .collect();
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ctx.lifecycle.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        ctx.refresh_gauges();
        let snapshot = ctx.metrics.snapshot();
        for ((field, value), (_, name)) in snapshot.fields().into_iter().zip(&names) {
            if GAUGES.contains(&field) {
                metrics::gauge!(name.clone()).set(value as f64);
            } else {
                metrics::counter!(name.clone()).absolute(value);
            }
        }
        metrics::gauge!("roost_queued_messages").set(ctx.sessions.total_queued_messages() as f64);
        if let Some(size) = ctx.journal.persistence().and_then(|p| p.size_on_disk()) {
            metrics::gauge!("roost_storage_bytes").set(size as f64);
        }
        for bridge in bridges.iter() {
            let status = bridge.status(&ctx.sessions);
            let labels = [("bridge", status.name.clone())];
            metrics::gauge!("roost_bridge_connected", &labels)
                .set(f64::from(u8::from(status.connected)));
            metrics::gauge!("roost_bridge_queued", &labels).set(status.queued as f64);
            metrics::gauge!("roost_bridge_inflight", &labels).set(status.inflight as f64);
        }
    }
}
