//! The `$SYS` topics: every counter under Roost's own name, the same figures under
//! Mosquitto's names (so dashboards made for Mosquitto work unchanged), Mosquitto's load
//! averages, and each bridge's state. Published retained, at QoS 0, every
//! [`BrokerBuilder::sys_interval`](crate::BrokerBuilder::sys_interval). The README lists
//! the Mosquitto names and what each carries here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bridge::BridgeState;
use crate::codec::QoS;
use crate::context::Context;
use crate::message::Message;
use crate::metrics::MetricsSnapshot;
use crate::pipeline;
use crate::topic::TopicName;

/// The load averages Mosquitto publishes: per minute, over 1, 5 and 15 minutes.
const PERIODS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// Mosquitto's `load/...` figures: `(name, counter)`, each a rate per minute.
fn load_sources(s: &MetricsSnapshot) -> [(&'static str, u64); 7] {
    [
        ("messages/received", s.messages_received),
        ("messages/sent", s.messages_sent),
        ("publish/received", s.messages_received),
        ("publish/sent", s.messages_sent),
        ("bytes/received", s.bytes_received),
        ("bytes/sent", s.bytes_sent),
        ("connections", s.connections_total),
    ]
}

/// Exponentially weighted per-minute rates, as Mosquitto computes its load figures.
struct Load {
    last: Option<(Instant, [u64; 7])>,
    /// `[source][period]`.
    averages: [[f64; 3]; 7],
}

impl Load {
    fn update(&mut self, now: Instant, s: &MetricsSnapshot) {
        let values = load_sources(s).map(|(_, v)| v);
        if let Some((at, before)) = self.last {
            let dt = now.duration_since(at).as_secs_f64().max(0.001);
            for (i, (&v, &b)) in values.iter().zip(&before).enumerate() {
                let per_minute = v.saturating_sub(b) as f64 * 60.0 / dt;
                for (j, (_, period)) in PERIODS.iter().enumerate() {
                    let keep = (-dt / period).exp();
                    self.averages[i][j] = self.averages[i][j] * keep + per_minute * (1.0 - keep);
                }
            }
        }
        self.last = Some((now, values));
    }

    fn topics(&self, s: &MetricsSnapshot, out: &mut Vec<(String, String)>) {
        for (i, (name, _)) in load_sources(s).iter().enumerate() {
            for (j, (period, _)) in PERIODS.iter().enumerate() {
                out.push((
                    format!("$SYS/broker/load/{name}/{period}"),
                    format!("{:.2}", self.averages[i][j]),
                ));
            }
        }
    }
}

/// The figures under Mosquitto's names (see the README's mapping).
fn mosquitto_topics(
    s: &MetricsSnapshot,
    uptime: Duration,
    max_connected: u64,
) -> Vec<(String, String)> {
    let disconnected = s.sessions.saturating_sub(s.clients_connected);
    [
        (
            "$SYS/broker/uptime",
            format!("{} seconds", uptime.as_secs()),
        ),
        ("$SYS/broker/clients/total", s.sessions.to_string()),
        (
            "$SYS/broker/clients/active",
            s.clients_connected.to_string(),
        ),
        ("$SYS/broker/clients/inactive", disconnected.to_string()),
        ("$SYS/broker/clients/disconnected", disconnected.to_string()),
        ("$SYS/broker/clients/maximum", max_connected.to_string()),
        (
            "$SYS/broker/clients/expired",
            s.sessions_expired.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/received",
            s.messages_received.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            s.messages_sent.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            (s.messages_dropped + s.messages_dropped_offline).to_string(),
        ),
        (
            "$SYS/broker/publish/bytes/received",
            s.bytes_received.to_string(),
        ),
        ("$SYS/broker/publish/bytes/sent", s.bytes_sent.to_string()),
        (
            "$SYS/broker/retained messages/count",
            s.retained.to_string(),
        ),
        (
            "$SYS/broker/store/messages/bytes",
            s.queued_bytes.to_string(),
        ),
    ]
    .into_iter()
    .map(|(t, v)| (t.to_string(), v))
    .collect()
}

fn publish(ctx: &Context, topic: &str, payload: String) {
    let Ok(topic) = TopicName::new(topic) else {
        return;
    };
    let message = Message::new(topic, Bytes::from(payload), QoS::AtMostOnce, true);
    pipeline::publish(
        ctx,
        &Arc::new(message),
        &mut Vec::new(),
        &mut crate::session::Fanout::default(),
    );
}

/// Publishes the `$SYS` topics every `interval` until shutdown.
pub(crate) async fn run(ctx: Arc<Context>, interval: Duration, bridges: Arc<[Arc<BridgeState>]>) {
    let started = Instant::now();
    publish(
        &ctx,
        "$SYS/broker/version",
        format!("roost {}", env!("CARGO_PKG_VERSION")),
    );
    let mut ticker = tokio::time::interval(interval);
    let mut load = Load {
        last: None,
        averages: [[0.0; 3]; 7],
    };
    let mut max_connected = 0;
    loop {
        tokio::select! {
            _ = ctx.lifecycle.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        ctx.refresh_gauges();
        let snapshot = ctx.metrics.snapshot();
        max_connected = snapshot.clients_connected.max(max_connected);
        load.update(Instant::now(), &snapshot);
        let mut topics: Vec<(String, String)> = snapshot
            .sys_topics()
            .into_iter()
            .map(|(topic, value)| (topic.to_string(), value.to_string()))
            .collect();
        topics.extend(mosquitto_topics(
            &snapshot,
            started.elapsed(),
            max_connected,
        ));
        load.topics(&snapshot, &mut topics);
        topics.extend(
            bridges
                .iter()
                .flat_map(|b| b.status(&ctx.sessions).sys_topics()),
        );
        for (topic, value) in topics {
            publish(&ctx, &topic, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_averages_approach_a_steady_rate_faster_over_shorter_periods() {
        let mut load = Load {
            last: None,
            averages: [[0.0; 3]; 7],
        };
        let start = Instant::now();
        let mut s = MetricsSnapshot::default();
        load.update(start, &s);
        // 100 messages received every 10 s: 600 per minute.
        for step in 1..=6u64 {
            s.messages_received = 100 * step;
            load.update(start + Duration::from_secs(10 * step), &s);
        }
        let [one, five, fifteen] = load.averages[0];
        assert!(
            one > five && five > fifteen && fifteen > 0.0,
            "{:?}",
            load.averages[0]
        );
        assert!(one > 600.0 * 0.6 && one < 600.0, "{one}");
    }
}
