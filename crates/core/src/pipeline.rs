//! What the broker does with a message or an event that involves several services: a
//! PUBLISH goes through the hooks, is retained and routed, and its changes are journaled; a
//! will is authorized again and published as its client would; a session deadline tells
//! the hooks and publishes what it made due.

use std::sync::Arc;

use bytestring::ByteString;
use roost_storage::Op;

use crate::codec::{PublishProperties, ReasonCode};
use crate::context::Context;
use crate::message::{Arrival, Message};
use crate::metrics::Metrics;
use crate::plugin::{ClientInfo, HookAction, PublishedMessage};
use crate::registry::{Attached, Fired, WillDue};
use crate::router::{RetainChange, RouteOutcome};
use crate::session::{Fanout, Session};
use crate::shown::Text;

/// Retains (if flagged) and routes a message; returns what routing did. Hooks are not
/// consulted (see [`publish_message`]). Storage operations are appended to `ops`; the
/// writers to wake and the sessions asking the publisher to pause (flow control) to
/// `fanout`.
pub(crate) fn publish(
    ctx: &Context,
    message: &Arc<Message>,
    ops: &mut Vec<Op>,
    fanout: &mut Fanout,
) -> RouteOutcome {
    if message.retain {
        retain(ctx, message, ops);
    }
    ctx.router.route(message, ctx.routing(), fanout)
}

/// Applies a retained PUBLISH: the router keeps it (or clears its topic), the journal
/// records that, the hooks hear of it.
pub(crate) fn retain(ctx: &Context, message: &Arc<Message>, ops: &mut Vec<Op>) {
    // Its own copy: the routed message's topic and payload are slices of the read buffer
    // they arrived in, which a retained message would keep alive.
    let change = ctx
        .router
        .retain(message.for_keeping(), &ctx.settings.limits);
    let metrics = &ctx.metrics;
    match change {
        RetainChange::Set | RetainChange::Replaced => {
            ops.extend(ctx.journal.retained(message, false));
            Metrics::set(&metrics.retained, ctx.router.retained_len() as u64);
        }
        RetainChange::Cleared => {
            ops.extend(ctx.journal.retained(message, true));
            Metrics::set(&metrics.retained, ctx.router.retained_len() as u64);
            if !message.payload.is_empty() {
                // Over `max_retained_bytes`: not retained, and the old one removed.
                Metrics::inc(&metrics.retained_refused);
            }
        }
        RetainChange::Unchanged if !message.payload.is_empty() => {
            Metrics::inc(&metrics.retained_refused);
        }
        RetainChange::Unchanged => {}
    }
    let hooks = &ctx.policy.hooks;
    if !hooks.is_empty() {
        match change {
            RetainChange::Set | RetainChange::Replaced => {
                hooks.each(metrics, |h| h.retained_set(message))
            }
            RetainChange::Cleared => hooks.each(metrics, |h| h.retained_cleared(&message.topic)),
            RetainChange::Unchanged => {}
        }
    }
}

/// Why a publish hook stopped a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// [`HookAction::Drop`]: acknowledged as usual.
    Dropped,
    /// [`HookAction::Refuse`] with this code (an error code).
    Refused(ReasonCode),
}

/// The code a hook's refusal is sent with: its own if it is an error code, else 0x80.
pub(crate) fn refusal_code(code: ReasonCode) -> ReasonCode {
    if code.is_success() {
        ReasonCode::UnspecifiedError
    } else {
        code
    }
}

/// Runs the publish hooks, then retains and routes. `Err` if a hook stopped the message.
/// With `hold`, no copy is sent before the hold is released (see [`Hold`]).
pub(crate) fn publish_message(
    ctx: &Context,
    client: Option<&ClientInfo>,
    publisher: Option<ByteString>,
    mut published: PublishedMessage,
    ops: &mut Vec<Op>,
    fanout: &mut Fanout,
    arrival: Arrival,
) -> Result<RouteOutcome, Stopped> {
    let hooks = &ctx.policy.hooks;
    let mut written = crate::gate::Gate::NONE;
    if !hooks.is_empty() {
        let (action, gate) = crate::plugin::collecting_state_writes(|| {
            hooks.published(&ctx.metrics, client, &mut published)
        });
        written = gate;
        match action {
            HookAction::Continue => {}
            HookAction::Drop => return Err(Stopped::Dropped),
            HookAction::Refuse(code) => {
                Metrics::inc(&ctx.metrics.messages_refused_by_hooks);
                tracing::debug!(topic = %published.topic, reason = %code, "publish refused by a hook");
                return Err(Stopped::Refused(refusal_code(code)));
            }
        }
    }
    let message = Message::shared(
        published.topic,
        published.payload,
        published.qos,
        published.retain,
        published.properties,
        publisher,
        arrival,
    );
    let mut outcome = publish(ctx, &message, ops, fanout);
    // What a plugin stored to admit the message (a replay mark, say) is waited for like
    // the message's own writes.
    outcome.gate = outcome.gate.join(written);
    Ok(outcome)
}

/// Publishes a will as its client would publish it (MQTT-3.1.2-8). The will was authorized
/// at CONNECT, but the rules may have changed since (an ACL reload), and a will restored
/// from storage was authorized by another process: so it is authorized again now, as a
/// publish of its client. Without a known client it is refused (fail closed). With
/// authorizers the check is async, so the will goes out from a task of its own.
pub(crate) fn publish_will(ctx: &Arc<Context>, due: WillDue) {
    let WillDue {
        will,
        client_id,
        client,
    } = due;
    if ctx.policy.open_access() {
        publish_will_now(ctx, will, client_id, client.as_deref());
        return;
    }
    let Some(client) = client else {
        Metrics::inc(&ctx.metrics.wills_denied);
        tracing::warn!(client_id = %Text(&client_id), topic = %Text(will.topic.as_str()), "will refused: its client's authorization context is unknown");
        return;
    };
    let ctx2 = Arc::clone(ctx);
    ctx.lifecycle.tracker.spawn(async move {
        let ctx = ctx2;
        match ctx
            .policy
            .authorize_publish(&client, &will.topic, will.qos, will.retain)
            .await
        {
            Ok(()) => publish_will_now(&ctx, will, client_id, Some(&client)),
            Err(code) => {
                Metrics::inc(&ctx.metrics.wills_denied);
                tracing::info!(client_id = %Text(&client_id), topic = %Text(will.topic.as_str()), reason = %code, "will not authorized: not published");
            }
        }
    });
}

/// Publishes an authorized will.
fn publish_will_now(
    ctx: &Context,
    will: crate::codec::LastWill,
    client_id: ByteString,
    client: Option<&ClientInfo>,
) {
    tracing::debug!(topic = %will.topic, "publishing will");
    let published = will_message(will);
    let mut ops = Vec::new();
    let _ = publish_message(
        ctx,
        client,
        Some(client_id),
        published,
        &mut ops,
        &mut Fanout::default(),
        Arrival::default(),
    );
    ctx.journal.store_now(ops);
}

/// A will as the hooks see it (a message flagged [`PublishedMessage::will`]).
pub(crate) fn will_message(will: crate::codec::LastWill) -> PublishedMessage {
    let p = will.properties;
    let properties = PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        ..PublishProperties::default()
    };
    let mut published = PublishedMessage::new(will.topic, will.payload, will.qos, will.retain);
    published.properties = properties;
    published.will = true;
    published
}

/// Runs the will hooks on a connecting client's will (see
/// [`Hooks::will_received`](crate::plugin::Hooks::will_received)): it is kept as they leave
/// it, or dropped; `Err` refuses the client with that code.
pub(crate) fn will_received(
    ctx: &Context,
    client: &ClientInfo,
    will: &mut Option<crate::codec::LastWill>,
) -> Result<(), ReasonCode> {
    let hooks = &ctx.policy.hooks;
    if hooks.is_empty() {
        return Ok(());
    }
    let Some(taken) = will.take() else {
        return Ok(());
    };
    let delay = taken.properties.will_delay_interval;
    let mut published = will_message(taken);
    match hooks.will_received(&ctx.metrics, client, &mut published) {
        HookAction::Continue => {
            let p = published.properties;
            *will = Some(crate::codec::LastWill {
                topic: published.topic,
                payload: published.payload,
                qos: published.qos,
                retain: published.retain,
                properties: crate::codec::WillProperties {
                    will_delay_interval: delay,
                    payload_format_indicator: p.payload_format_indicator,
                    message_expiry_interval: p.message_expiry_interval,
                    content_type: p.content_type,
                    response_topic: p.response_topic,
                    correlation_data: p.correlation_data,
                    user_properties: p.user_properties,
                },
            });
            Ok(())
        }
        HookAction::Drop => Ok(()),
        HookAction::Refuse(code) => {
            Metrics::inc(&ctx.metrics.messages_refused_by_hooks);
            tracing::info!(client_id = %Text(&client.client_id), reason = %code, "will refused by a hook");
            Err(refusal_code(code))
        }
    }
}

/// Acts on what a session deadline did: tells the hooks of an expiry and publishes the
/// will it made due.
pub(crate) fn deadline_passed(ctx: &Arc<Context>, fired: Fired) {
    match fired {
        Fired::Will(due) => publish_will(ctx, due),
        Fired::Expired { client_id, will } => {
            ctx.policy
                .hooks
                .each(&ctx.metrics, |h| h.session_expired(&client_id));
            if let Some(due) = will {
                publish_will(ctx, due);
            }
        }
    }
}

/// Acts on a connection attached to its session: publishes the will of a session the
/// attach discarded and tells the hooks; returns the session and the link's id.
pub(crate) fn session_attached(ctx: &Arc<Context>, attached: Attached) -> (Arc<Session>, u64) {
    let Attached {
        session,
        link_id,
        present,
        will,
    } = attached;
    if let Some(due) = will {
        publish_will(ctx, due);
    }
    let hooks = &ctx.policy.hooks;
    if !hooks.is_empty() {
        let id = &session.client_id;
        hooks.each(&ctx.metrics, |h| {
            if present {
                h.session_resumed(id)
            } else {
                h.session_created(id)
            }
        });
    }
    (session, link_id)
}
