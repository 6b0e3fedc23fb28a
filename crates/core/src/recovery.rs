//! Rebuilding broker state from storage at start, through the same services that keep it
//! while the broker runs (the router, the session registry, the journal).

use std::sync::Arc;
use std::time::Duration;

use roost_storage::{QueueStage, Snapshot};
use tokio::time::Instant;

use crate::codec::{PacketId, QoS};
use crate::context::Context;
use crate::metrics::Metrics;
use crate::persist::{
    client_from_owner, delivery_from_record, journal, message_from_record,
    subscription_from_record, unix_now_ms, will_from_record,
};
use crate::pipeline;
use crate::registry::WillDue;
use crate::session::Stage;
use crate::shown::Text;

/// Restores retained messages and sessions. Sessions (and messages) that expired while the
/// broker was down are dropped; their wills, if still pending, are published.
pub(crate) fn restore(ctx: &Arc<Context>, snapshot: Snapshot, ids_unsure: bool) {
    let now_ms = unix_now_ms();
    let now = Instant::now();
    let mut cleanup = Vec::new();
    let mut retained = 0usize;
    for (topic, record) in snapshot.retained {
        match message_from_record(record) {
            Some(m) if !m.is_expired(now) => {
                ctx.router.retain(Arc::new(m), &ctx.settings.limits);
                retained += 1;
            }
            _ => cleanup.push(journal::retained_cleared(&topic)),
        }
    }
    Metrics::set(&ctx.metrics.retained, ctx.router.retained_len() as u64);
    let mut due_wills = Vec::new();
    let mut restored = 0usize;
    let mut sweeps = 0usize;
    for stored in snapshot.sessions {
        let record = stored.session;
        let away_since = record.disconnected_at_ms.unwrap_or(now_ms);
        let expiry = record.expiry_interval;
        let ends_at =
            (expiry != u32::MAX).then(|| away_since.saturating_add(u64::from(expiry) * 1000));
        let will = record.will.and_then(will_from_record);
        let owner = record
            .owner
            .and_then(|o| client_from_owner(&stored.client_id, o))
            .map(Arc::new);
        if ends_at.is_some_and(|t| t <= now_ms) {
            cleanup.push(journal::session_ended(&stored.client_id));
            if let Some((will, _)) = will {
                due_wills.push(WillDue {
                    will,
                    client_id: stored.client_id.into(),
                    client: owner,
                });
            }
            continue;
        }
        let session = ctx.sessions.create(stored.client_id.clone().into(), expiry);
        let mut will_at = None;
        {
            let mut st = session.state.lock();
            // Whose session it is: deliveries to it are authorized as that client.
            st.client = owner.clone();
            if st.client.is_none() && !ctx.policy.open_access() {
                tracing::warn!(client_id = %Text(&stored.client_id), "restored session has no stored owner: deliveries to it are refused until its client connects");
            }
            for sub in record.subscriptions {
                let Some((filter, rec)) = subscription_from_record(sub) else {
                    continue;
                };
                if ctx.router.subscribe(&session, &filter, rec) {
                    Metrics::inc(&ctx.metrics.subscriptions);
                }
                st.add_subscription(filter, rec);
            }
            let mut last_seq = 0;
            for (seq, entry) in stored.queue {
                last_seq = last_seq.max(seq);
                let stage = entry.stage;
                let Some(delivery) = delivery_from_record(entry, seq) else {
                    cleanup.push(journal::delivery_done(&stored.client_id, seq));
                    continue;
                };
                match stage {
                    QueueStage::Queued if delivery.message.is_expired(now) => {
                        cleanup.push(journal::delivery_done(&stored.client_id, seq));
                    }
                    QueueStage::Queued => {
                        let mut delivery = delivery;
                        if let Some(id) = delivery.packet_id {
                            st.reserved_ids.insert(id.get());
                            // It may have gone out before the restart.
                            delivery.maybe_sent = true;
                        }
                        st.add_queued_bytes(delivery.message.size());
                        st.queue.push_back(delivery);
                    }
                    QueueStage::Published(id) | QueueStage::Released(id) => {
                        let stage = if matches!(stage, QueueStage::Released(_)) {
                            Stage::Released
                        } else {
                            Stage::Published
                        };
                        match PacketId::new(id) {
                            Some(id) => st.restore_inflight(id, delivery, stage),
                            None => {
                                st.add_queued_bytes(delivery.message.size());
                                st.queue.push_back(delivery);
                            }
                        }
                    }
                }
            }
            st.next_storage_seq = last_seq;
            st.inbound_qos2.extend(stored.inbound);
            // The last run sent QoS 2 messages before their packet ids were durable and
            // did not end cleanly: the client may hold ids this state lost (see
            // `session::inflight::Sweep`). Only a QoS 2 subscription gets QoS 2 messages.
            let qos2 = |s: &crate::session::SubscriptionRecord| s.options.qos == QoS::ExactlyOnce;
            if ids_unsure && st.subscriptions.values().any(qos2) {
                let crate::session::SessionState {
                    inflight,
                    reserved_ids,
                    ..
                } = &mut *st;
                inflight.sweep_after_crash(reserved_ids);
                sweeps += 1;
            }
            if let Some((will, at_ms)) = will {
                if at_ms <= now_ms {
                    due_wills.push(WillDue {
                        will,
                        client_id: stored.client_id.clone().into(),
                        client: owner,
                    });
                } else {
                    st.pending_will = Some(Box::new(crate::session::PendingWill { will, at_ms }));
                    will_at = Some(now + Duration::from_millis(at_ms - now_ms));
                }
            }
            st.disconnected_at_ms = std::num::NonZeroU64::new(away_since);
        }
        let expires_at = ends_at.map(|t| now + Duration::from_millis(t.saturating_sub(now_ms)));
        ctx.sessions.restored(session, will_at, expires_at);
        restored += 1;
    }
    for due in due_wills {
        pipeline::publish_will(ctx, due);
    }
    ctx.journal.store_now(cleanup);
    tracing::info!(sessions = restored, retained, "state restored from storage");
    if ids_unsure {
        tracing::warn!(
            sessions = sweeps,
            "the last run used periodic durability and did not shut down cleanly: QoS 2 \
             subscribers get a PUBREL for each packet id they may hold before new messages"
        );
    }
}
