//! The CONNECT handshake: first packet within the connect timeout, client identifier rules,
//! what the broker offers (capabilities), authentication (plain or the v5 AUTH exchange),
//! session attach with takeover, and CONNACK.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use super::auth::{self, EnhancedAuth, Step};
use super::writer::Writer;
use super::{Connection, PeerInfo};
use crate::codec::{
    Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, DecodeError, DecodeLimits, Packet,
    PayloadFormat, ProtocolVersion, QoS, ReasonCode,
};
use crate::context::{Context, Settings};
use crate::metrics::Metrics;
use crate::pipeline;
use crate::plugin::{ClientInfo, ConnectInfo, Identity};
use crate::registry::AttachRequest;
use crate::session::LinkSignals;
use crate::shown::{Shown, Text};
use crate::topic::{is_bridge_state_topic, is_sys_topic};
use crate::transport::{PacketReader, PacketWriter, ReadError};

/// Reads CONNECT and attaches the session; `None` if the connection ends here. The phases:
/// [`read_connect`], [`admit`] (identifier, will, capacity, authentication, authorization),
/// [`negotiate`] (pure: what this client gets), and [`attach`].
pub(super) async fn accept<R: PacketReader, W: PacketWriter>(
    ctx: &Arc<Context>,
    reader: &mut R,
    mut wire: W,
    peer: &PeerInfo,
) -> Option<(Connection, Writer<W>)> {
    // What this connection is held to, from its CONNACK to its end.
    let settings = &*peer.settings;
    let max_packet_size = peer
        .max_packet_size
        .unwrap_or(settings.limits.max_packet_size);
    let mut connect = read_connect(ctx, peer, reader, &mut wire, max_packet_size).await?;
    compact(&mut connect);
    let admitted = admit(ctx, reader, &mut wire, &connect, peer, max_packet_size).await?;
    if let Err(code) = crate::pipeline::will_received(ctx, &admitted.info, &mut connect.will) {
        let client_max = connect.properties.maximum_packet_size.map(NonZeroU32::get);
        let who = (&*ctx.metrics, peer, &*admitted.client_id);
        refuse(who, &mut wire, connect.protocol, client_max, code, None).await;
        return None;
    }
    let assigned = admitted.assigned.then_some(&admitted.client_id);
    let terms = negotiate(
        &settings.capabilities,
        &settings.limits,
        &connect,
        max_packet_size,
        assigned,
    );
    attach(ctx, wire, connect, peer, admitted, terms).await
}

/// The first packet, which must be a CONNECT that decodes, within the connect timeout.
/// Answers an unsupported protocol level itself (MQTT-3.1.2-2); `None` if the connection
/// ends here.
async fn read_connect<R: PacketReader, W: PacketWriter>(
    ctx: &Context,
    peer: &PeerInfo,
    reader: &mut R,
    wire: &mut W,
    max_packet_size: u32,
) -> Option<Connect> {
    let settings = &*peer.settings;
    let addr = Shown(peer.addr);
    let limits = DecodeLimits::new(ProtocolVersion::V311).with_max_packet_size(max_packet_size);
    let first = tokio::select! {
        _ = ctx.lifecycle.shutdown.cancelled() => return None,
        r = tokio::time::timeout(settings.limits.connect_timeout, reader.read(&limits, &ctx.metrics)) => r,
    };
    match first {
        Err(_) => {
            tracing::debug!("no CONNECT within the connect timeout");
            None
        }
        Ok(Ok(Some(Packet::Connect(c)))) => Some(*c),
        Ok(Ok(Some(other))) => {
            // MQTT-3.1.0-1: the first packet must be CONNECT.
            tracing::info!(peer = %addr, packet = ?other.packet_type(), rule = "MQTT-3.1.0-1", "first packet is not CONNECT: connection closed");
            ctx.metrics.protocol_error("MQTT-3.1.0-1");
            None
        }
        Ok(Ok(None)) | Ok(Err(ReadError::Io(_))) => None,
        Ok(Err(ReadError::Decode(DecodeError::UnsupportedProtocolLevel(level)))) => {
            // MQTT-3.1.2-2: CONNACK 0x01 (3.1.1 form), then close.
            tracing::info!(peer = %addr, level, "unsupported protocol level");
            let code = ReasonCode::UnsupportedProtocolVersion;
            refuse(
                (&ctx.metrics, peer, ""),
                wire,
                ProtocolVersion::V311,
                None,
                code,
                None,
            )
            .await;
            None
        }
        Ok(Err(ReadError::Decode(e))) => {
            // MQTT-3.1.4-1: close without CONNACK.
            tracing::info!(peer = %addr, error = %e, rule = e.spec_id(), "malformed CONNECT: connection closed");
            ctx.metrics.protocol_error(e.spec_id());
            None
        }
    }
}

/// A client the broker lets in: who it is, and what it holds until it is attached.
struct Admitted {
    client_id: ByteString,
    /// The identifier was assigned by the broker (the client sent an empty one).
    assigned: bool,
    /// What the authenticators saw (kept for re-authentication).
    client: ConnectInfo,
    info: Arc<ClientInfo>,
    enhanced: Option<EnhancedAuth>,
    auth_data: Option<Bytes>,
    slots: crate::admission::Slots,
}

/// Everything that may refuse a client after its CONNECT: redirect, identifier, will,
/// capacity, authentication, connection slot, authorization. Sends the refusing CONNACK
/// itself; `None` then.
async fn admit<R: PacketReader, W: PacketWriter>(
    ctx: &Arc<Context>,
    reader: &mut R,
    wire: &mut W,
    connect: &Connect,
    peer: &PeerInfo,
    max_packet_size: u32,
) -> Option<Admitted> {
    let version = connect.protocol;
    // The client's Maximum Packet Size bounds the CONNACK too (MQTT-3.2.2-19, -20 (v5)).
    let client_max = connect.properties.maximum_packet_size.map(NonZeroU32::get);
    let settings = &*peer.settings;
    let who = (&*ctx.metrics, peer, &*connect.client_id);
    if let Some(redirect) = &settings.capabilities.redirect {
        let (code, reference) = redirect.refusal();
        refuse(who, wire, version, client_max, code, Some(reference)).await;
        return None;
    }
    let (client_id, assigned) = match identify(ctx, connect, peer) {
        Ok(id) => id,
        Err(code) => {
            refuse(who, wire, version, client_max, code, None).await;
            return None;
        }
    };
    let client = connect_info(connect, &client_id, peer);
    let authenticated = if peer.internal {
        // A bridge's own link: it is the bridge, and owns the bridge's local session.
        let bridge = Identity {
            username: Some(client_id.to_string()),
            roles: vec!["bridge".to_string()],
        };
        Ok((bridge, None, None))
    } else {
        let attempt = LoginAttempt::begin(ctx, &client).await;
        let authenticated =
            authenticate(ctx, peer, reader, wire, connect, &client, max_packet_size).await;
        attempt.end(&authenticated);
        authenticated
    };
    let (identity, enhanced, auth_data) = match authenticated {
        Ok(done) => done,
        Err(Some(code)) => {
            refuse(who, wire, version, client_max, code, None).await;
            return None;
        }
        Err(None) => return None,
    };
    let info = Arc::new(ClientInfo {
        client_id: client_id.clone(),
        claimed_username: connect.username.clone(),
        identity,
        protocol: version,
        peer: peer.addr,
        listener: Arc::clone(&peer.listener),
        internal: peer.internal,
    });
    let slots = match settle(ctx, peer, &info, connect).await {
        Ok(slots) => slots,
        Err(code) => {
            refuse(who, wire, version, client_max, code, None).await;
            return None;
        }
    };
    Some(Admitted {
        client_id,
        assigned,
        client,
        info,
        enhanced,
        auth_data,
        slots,
    })
}

/// An authenticated client leaves the pending connections and takes its place among the
/// open ones (see `admission`), or is refused if the broker is full; then the authorizers
/// may refuse it outright, and its will is authorized as a publish of its client.
async fn settle(
    ctx: &Context,
    peer: &PeerInfo,
    info: &ClientInfo,
    connect: &Connect,
) -> Result<crate::admission::Slots, ReasonCode> {
    let slots = ctx.lifecycle.admission.graduate(
        peer.ticket.as_ref(),
        peer.in_process,
        peer.listener_cap.as_ref(),
        &peer.listener,
    )?;
    authorize(ctx, info, connect).await?;
    Ok(slots)
}

/// The client identifier to use (and whether the broker assigned it), once the will and
/// the broker's capacity allow the client: what can refuse it before authentication.
fn identify(
    ctx: &Context,
    connect: &Connect,
    peer: &PeerInfo,
) -> Result<(ByteString, bool), ReasonCode> {
    let id = client_identifier(ctx, &peer.settings, connect)?;
    // Bridges' local sessions are theirs alone: no client can take one over.
    if !peer.internal && crate::policy::is_bridge_client_id(&id.0) {
        return Err(ReasonCode::ClientIdentifierNotValid);
    }
    check_will(ctx, &peer.settings, connect)?;
    // A full broker says so before spending anything on authentication.
    if !peer.in_process && ctx.lifecycle.admission.connections_full() {
        Metrics::inc(&ctx.metrics.connections_refused);
        return Err(ReasonCode::ServerBusy);
    }
    Ok(id)
}

/// What authenticators see of a connecting client.
fn connect_info(connect: &Connect, client_id: &ByteString, peer: &PeerInfo) -> ConnectInfo {
    ConnectInfo {
        client_id: client_id.clone(),
        username: connect.username.clone(),
        password: connect.password.clone(),
        protocol: connect.protocol,
        peer: peer.addr,
        listener: Arc::clone(&peer.listener),
        certificates: peer.certificates.clone(),
        authentication_method: connect.properties.authentication_method.clone(),
    }
}

/// One login attempt as the failure back-off sees it: recent failures from this address
/// or for this user name make it wait first ([`LoginAttempt::begin`]), and its outcome is
/// recorded for the next ([`LoginAttempt::end`]).
struct LoginAttempt<'a> {
    ctx: &'a Context,
    source: Option<std::net::IpAddr>,
    claimed: Option<&'a str>,
    client: &'a ConnectInfo,
    /// Authenticators decide (without them there is nothing to throttle).
    checked: bool,
}

impl<'a> LoginAttempt<'a> {
    async fn begin(ctx: &'a Context, client: &'a ConnectInfo) -> Self {
        let attempt = LoginAttempt {
            ctx,
            source: client.peer.map(|p| p.ip()),
            claimed: client.username.as_deref(),
            client,
            checked: !ctx.policy.authenticators.is_empty(),
        };
        if attempt.checked {
            let delay = ctx.policy.auth_throttle.delay(
                attempt.source,
                attempt.claimed,
                ctx.settings.limits.auth_failure_backoff,
                ctx.settings.limits.auth_failure_backoff_max,
            );
            if !delay.is_zero() {
                Metrics::inc(&ctx.metrics.auth_delayed);
                tracing::debug!(?delay, "recent authentication failures: waiting");
                tokio::time::sleep(delay).await;
            }
        }
        attempt
    }

    fn end(&self, result: &Result<Authenticated, Option<ReasonCode>>) {
        let throttle = &self.ctx.policy.auth_throttle;
        match result {
            Ok(_) if self.checked => throttle.succeeded(self.source, self.claimed),
            Err(Some(code)) => {
                Metrics::inc(&self.ctx.metrics.auth_failures);
                let client = self.client;
                self.ctx.policy.hooks.events().emit(|| {
                    // Copies: the event may outlive the CONNECT's read buffer.
                    crate::plugin::events::Event::AuthenticationFailed {
                        client_id: ByteString::from(&*client.client_id),
                        username: client.username.as_deref().map(ByteString::from),
                        peer: client.peer,
                        reason: *code,
                    }
                });
                if self.checked {
                    throttle.failed(self.source, self.claimed);
                }
            }
            _ => {}
        }
    }
}

/// The authorizers' word on the client, and on its will as a publish of that client.
async fn authorize(ctx: &Context, info: &ClientInfo, connect: &Connect) -> Result<(), ReasonCode> {
    if ctx.policy.open_access() {
        return Ok(());
    }
    ctx.policy.authorize_client(info).await?;
    match &connect.will {
        Some(will) => {
            ctx.policy
                .authorize_publish(info, &will.topic, will.qos, will.retain)
                .await
        }
        None => Ok(()),
    }
}

/// What a client gets, worked out from its CONNECT, the capabilities and the limits
/// alone: no I/O, no state.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Terms {
    /// The Session Expiry Interval asked for (3.1.1: 0 for Clean Session 1, "never" for 0).
    pub(super) requested_expiry: u32,
    /// The one granted: the request, capped by `max_session_expiry_interval`.
    pub(super) expiry_interval: u32,
    /// Keep Alive in force, in seconds (0: none), after `max_keep_alive`.
    pub(super) keep_alive: u16,
    /// The largest packet accepted from the client (the listener's, or the broker's).
    pub(super) max_packet_size: u32,
    /// Unacknowledged QoS 1/2 PUBLISHes the broker may have out to the client: its Receive
    /// Maximum, capped by `max_inflight`.
    pub(super) window: usize,
    /// The client's Maximum Packet Size (v5).
    pub(super) client_max_packet: Option<u32>,
    /// Reason Strings and User Properties on acknowledgements (v5 Request Problem
    /// Information; MQTT-3.1.2-29).
    pub(super) problem_info: bool,
    /// Topic aliases the broker may use towards the client (MQTT-3.1.2-26, -27).
    pub(super) outbound_aliases: u16,
    /// The CONNACK properties (v5; empty for 3.1.1), before authentication adds its method
    /// and data.
    pub(super) connack: ConnAckProperties,
    /// How long the connection's last packets may take to go out when it closes.
    pub(super) close_flush: Duration,
}

/// How long a connection with this Keep Alive (seconds) may be silent: 1.5 × Keep Alive
/// (MQTT-3.1.2-24), if any.
pub(super) fn keep_alive_timeout(keep_alive: u16) -> Option<Duration> {
    let keep_alive = u64::from(keep_alive);
    (keep_alive > 0).then(|| Duration::from_millis(keep_alive * 1500))
}

/// Works out a client's [`Terms`].
pub(super) fn negotiate(
    caps: &crate::config::Capabilities,
    limits: &crate::config::Limits,
    connect: &Connect,
    max_packet_size: u32,
    assigned: Option<&ByteString>,
) -> Terms {
    let v5 = connect.protocol.is_v5();
    // Session Expiry Interval, capped; 3.1.1 Clean Session 0 means "never" (then capped).
    let requested_expiry = if v5 {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    let expiry_interval = requested_expiry.min(caps.max_session_expiry_interval);
    // Keep Alive, capped (v5 Server Keep Alive).
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if let Some(max) = caps.max_keep_alive {
        if keep_alive == 0 || keep_alive > max {
            keep_alive = max;
            server_keep_alive = Some(max);
        }
    }
    let window = usize::from(limits.max_inflight).min(
        connect
            .properties
            .receive_maximum
            .map_or(usize::MAX, |r| usize::from(r.get())),
    );
    let mut connack = ConnAckProperties::default();
    if v5 {
        connack = ConnAckProperties {
            assigned_client_identifier: assigned.cloned(),
            maximum_packet_size: NonZeroU32::new(max_packet_size),
            receive_maximum: NonZeroU16::new(caps.receive_maximum),
            topic_alias_maximum: (caps.topic_alias_maximum > 0).then_some(caps.topic_alias_maximum),
            maximum_qos: (caps.maximum_qos < QoS::ExactlyOnce).then_some(caps.maximum_qos),
            retain_available: (!caps.retain_available).then_some(false),
            wildcard_subscription_available: (!caps.wildcard_subscriptions).then_some(false),
            subscription_identifiers_available: (!caps.subscription_identifiers).then_some(false),
            shared_subscription_available: (!caps.shared_subscriptions).then_some(false),
            server_keep_alive,
            session_expiry_interval: (expiry_interval != requested_expiry)
                .then_some(expiry_interval),
            ..ConnAckProperties::default()
        };
        if connect.properties.request_response_information == Some(true) {
            connack.response_information =
                caps.response_information.as_deref().map(ByteString::from);
        }
    }
    Terms {
        requested_expiry,
        expiry_interval,
        keep_alive,
        max_packet_size,
        window,
        client_max_packet: connect.properties.maximum_packet_size.map(NonZeroU32::get),
        problem_info: connect.properties.request_problem_information != Some(false),
        outbound_aliases: if v5 {
            caps.outbound_topic_aliases
                .min(connect.properties.topic_alias_maximum.unwrap_or(0))
        } else {
            0
        },
        connack,
        close_flush: limits.close_flush_timeout,
    }
}

/// Attaches the session (taking over an older connection of the same client) with the
/// CONNACK, and builds the connection's reader and writer halves.
async fn attach<W: PacketWriter>(
    ctx: &Arc<Context>,
    mut wire: W,
    connect: Connect,
    peer: &PeerInfo,
    admitted: Admitted,
    mut terms: Terms,
) -> Option<(Connection, Writer<W>)> {
    let version = connect.protocol;
    let Admitted {
        client_id,
        client,
        info,
        enhanced,
        auth_data,
        slots,
        ..
    } = admitted;
    let mut connack = std::mem::take(&mut terms.connack);
    if let (true, Some(auth)) = (version.is_v5(), &enhanced) {
        connack.authentication_method = Some(auth.method.clone());
        connack.authentication_data = auth_data;
    }
    let signals = LinkSignals::new();
    let request = AttachRequest {
        client_id: client_id.clone(),
        clean_start: connect.clean_start,
        expiry_interval: terms.expiry_interval,
        signals: Arc::clone(&signals),
        window: terms.window,
        client: Arc::clone(&info),
        keep_alive: terms.keep_alive,
    };
    let connack = |session_present| {
        Packet::ConnAck(ConnAck {
            session_present,
            reason_code: ReasonCode::Success,
            properties: connack,
        })
    };
    let (session, link_id) = match ctx
        .sessions
        .attach(request, connack, &ctx.router, &ctx.journal)
    {
        Ok(attached) => pipeline::session_attached(ctx, attached),
        Err(code) => {
            let client_max = terms.client_max_packet;
            let who = (&*ctx.metrics, peer, &*client_id);
            refuse(who, &mut wire, version, client_max, code, None).await;
            return None;
        }
    };
    let conn = Connection {
        ctx: Arc::clone(ctx),
        settings: Arc::clone(&peer.settings),
        session: Arc::clone(&session),
        link_id,
        version,
        signals: Arc::clone(&signals),
        limits: DecodeLimits::new(version).with_max_packet_size(terms.max_packet_size),
        keep_alive: terms.keep_alive,
        will_delay: (connect.will.as_ref())
            .map_or(0, |w| w.properties.will_delay_interval.unwrap_or(0)),
        extras: super::Extras::new(
            connect.will.map(Box::new),
            enhanced.map(|exchange| super::Reauth { exchange, client }),
        ),
        info,
        fanout: crate::session::Fanout::batching(),
        received: 0,
        connect_expiry_zero: terms.requested_expiry == 0,
        bridge: connect.bridge,
        _slots: slots,
    };
    let writer = Writer::new(ctx, wire, session, link_id, version, signals, &terms);
    tracing::debug!(listener = %peer.listener, ?version, bridge = connect.bridge, "connected");
    Some((conn, writer))
}

impl<W: PacketWriter> Writer<W> {
    /// The writer half of a connection just attached on `terms`.
    fn new(
        ctx: &Arc<Context>,
        wire: W,
        session: Arc<crate::session::Session>,
        link_id: u64,
        version: ProtocolVersion,
        signals: Arc<LinkSignals>,
        terms: &Terms,
    ) -> Self {
        Writer {
            wire,
            session,
            link_id,
            version,
            signals,
            ctx: Arc::clone(ctx),
            client_max_packet: terms.client_max_packet.and_then(NonZeroU32::new),
            close_flush_ms: u32::try_from(terms.close_flush.as_millis()).unwrap_or(u32::MAX),
            problem_info: terms.problem_info,
            gathered: super::aliases::OutboundAliases::new(terms.outbound_aliases)
                .map(super::writer::Gathered::with_aliases),
            waiting_on_storage: false,
            durable: ctx.journal.persistence().map(|p| p.watch()),
        }
    }
}

/// Refusals of the will that the capabilities require (v5 §3.2.2.3.4, MQTT-3.2.2-13) and the
/// payload format check (v5 §3.1.3.2.3).
fn check_will(ctx: &Context, settings: &Settings, connect: &Connect) -> Result<(), ReasonCode> {
    let Some(will) = &connect.will else {
        return Ok(());
    };
    let caps = &settings.capabilities;
    if will.qos > caps.maximum_qos {
        return Err(ReasonCode::QoSNotSupported);
    }
    if will.retain && !caps.retain_available {
        return Err(ReasonCode::RetainNotSupported);
    }
    if will.properties.payload_format_indicator == Some(PayloadFormat::Utf8)
        && std::str::from_utf8(&will.payload).is_err()
    {
        return Err(ReasonCode::PayloadFormatInvalid);
    }
    if !settings.limits.topic_ok(will.topic.as_str()) {
        return Err(ReasonCode::TopicNameInvalid);
    }
    if !settings
        .limits
        .user_properties_ok(&will.properties.user_properties)
    {
        return Err(ReasonCode::QuotaExceeded);
    }
    // Only an authorizer can allow a `$SYS` will (the authorizers check it below), but for
    // a bridge's own connection state.
    let topic = will.topic.as_str();
    let bridge_state = connect.bridge && is_bridge_state_topic(topic, &connect.client_id);
    if is_sys_topic(topic) && ctx.policy.open_access() && !bridge_state {
        return Err(ReasonCode::NotAuthorized);
    }
    Ok(())
}

type Authenticated = (Identity, Option<EnhancedAuth>, Option<Bytes>);

/// Plain authentication, or the v5 AUTH exchange when CONNECT names a method. `Err(Some)`
/// refuses with that code; `Err(None)` means the connection already ended.
async fn authenticate<R: PacketReader, W: PacketWriter>(
    ctx: &Context,
    peer: &PeerInfo,
    reader: &mut R,
    wire: &mut W,
    connect: &Connect,
    client: &ConnectInfo,
    max_packet_size: u32,
) -> Result<Authenticated, Option<ReasonCode>> {
    let (settings, in_process) = (&*peer.settings, peer.in_process);
    let method = match (
        &connect.properties.authentication_method,
        connect.protocol.is_v5(),
    ) {
        (Some(method), true) => method.clone(),
        _ => {
            return auth::plain(ctx, client, in_process)
                .await
                .map(|id| (id, None, None))
                .map_err(Some)
        }
    };
    let mut exchange = EnhancedAuth::new(method.clone());
    let mut data = connect.properties.authentication_data.clone();
    let limits = DecodeLimits::new(ProtocolVersion::V5).with_max_packet_size(max_packet_size);
    loop {
        match auth::enhanced(ctx, &mut exchange, client, data.take(), false).await {
            Step::Allow(identity, final_data) => return Ok((identity, Some(exchange), final_data)),
            Step::Deny(code) => return Err(Some(code)),
            Step::Continue(challenge) => {
                let packet = Packet::Auth(Auth {
                    reason_code: ReasonCode::ContinueAuthentication,
                    properties: AuthProperties {
                        authentication_method: Some(method.clone()),
                        authentication_data: challenge,
                        ..AuthProperties::default()
                    },
                });
                if wire.packet(&packet, ProtocolVersion::V5).is_err()
                    || wire.flush(&ctx.metrics).await.is_err()
                {
                    return Err(None);
                }
                // MQTT-3.1.2-30: until CONNACK the client sends only AUTH or DISCONNECT.
                let answer = tokio::select! {
                    _ = ctx.lifecycle.shutdown.cancelled() => return Err(None),
                    r = tokio::time::timeout(settings.limits.connect_timeout, reader.read(&limits, &ctx.metrics)) => r,
                };
                match answer {
                    Ok(Ok(Some(Packet::Auth(a))))
                        if a.reason_code == ReasonCode::ContinueAuthentication
                            && a.properties.authentication_method.as_ref() == Some(&method) =>
                    {
                        data = a.properties.authentication_data;
                    }
                    Ok(Ok(Some(Packet::Disconnect(_))))
                    | Ok(Ok(None))
                    | Ok(Err(ReadError::Io(_)))
                    | Err(_) => return Err(None),
                    Ok(Err(ReadError::Decode(e))) => return Err(Some(e.reason_code())),
                    Ok(Ok(Some(_))) => return Err(Some(ReasonCode::ProtocolError)),
                }
            }
        }
    }
}

/// The client identifier to use, and whether the server assigned it; or the CONNACK code
/// that refuses it.
fn client_identifier(
    ctx: &Context,
    settings: &Settings,
    connect: &Connect,
) -> Result<(ByteString, bool), ReasonCode> {
    let id = &connect.client_id;
    match connect.protocol {
        // MQTT 3.1: 1 to 23 characters.
        ProtocolVersion::V31 if id.is_empty() || id.chars().count() > 23 => {
            Err(ReasonCode::ClientIdentifierNotValid)
        }
        // MQTT-3.1.3-8 (3.1.1): empty id with Clean Session 0 → 0x02.
        ProtocolVersion::V311 if id.is_empty() && !connect.clean_start => {
            Err(ReasonCode::ClientIdentifierNotValid)
        }
        // MQTT-3.1.3-6, MQTT-3.1.3-7 (v5): assign a unique identifier and return it.
        _ if id.is_empty() => Ok((ctx.sessions.assign_client_id(), true)),
        // Longer than the broker keeps (MQTT-3.1.3-5 lets a server refuse long ones).
        _ if id.len() > settings.limits.max_client_id_length => {
            Err(ReasonCode::ClientIdentifierNotValid)
        }
        _ => Ok((id.clone(), false)),
    }
}

/// Sends a refusing CONNACK (Session Present 0, MQTT-3.2.2-4 / v5 MQTT-3.2.2-6) and closes
/// (MQTT-3.2.2-5 / v5 MQTT-3.2.2-7). The Reason String is left out when it would make the
/// CONNACK larger than the client's Maximum Packet Size (MQTT-3.2.2-19 (v5)); a CONNACK
/// that is still too large is not sent at all, and the connection just closes.
async fn refuse<W: PacketWriter>(
    (metrics, peer, client_id): (&Metrics, &PeerInfo, &str),
    wire: &mut W,
    version: ProtocolVersion,
    client_max: Option<u32>,
    code: ReasonCode,
    server_reference: Option<ByteString>,
) {
    let mut ack = ConnAck::new(false, code);
    if version.is_v5() {
        ack.properties.server_reference = server_reference;
        ack.properties.reason_string = Some(code.description().into());
    }
    tracing::info!(peer = %Shown(peer.addr), client_id = %Text(client_id), reason = %code, "connection refused");
    let settings = &*peer.settings;
    let mut packet = Packet::ConnAck(ack);
    let too_large = |p: &Packet| {
        client_max.is_some_and(|max| p.encoded_len(version).is_ok_and(|n| n > max as usize))
    };
    if too_large(&packet) {
        if let Packet::ConnAck(a) = &mut packet {
            a.properties.reason_string = None;
            a.properties.user_properties.clear();
        }
    }
    if !too_large(&packet) {
        let _ = wire.packet(&packet, version);
    }
    let _ = tokio::time::timeout(settings.limits.close_flush_timeout, async {
        if wire.flush(metrics).await.is_ok() {
            wire.shutdown().await;
        }
    })
    .await;
}

/// Copies what a connection keeps from its CONNECT out of the read buffer: decoded strings
/// are slices of that buffer, and one kept for the connection's life would keep the whole
/// buffer allocated.
fn compact(connect: &mut crate::codec::Connect) {
    use crate::topic::own;
    connect.client_id = own(&connect.client_id);
    if let Some(name) = &connect.username {
        connect.username = Some(own(name));
    }
    if let Some(password) = &connect.password {
        connect.password = Some(Bytes::copy_from_slice(password));
    }
    if let Some(will) = &mut connect.will {
        will.topic = will.topic.owned();
        will.payload = Bytes::copy_from_slice(&will.payload);
        let p = &mut will.properties;
        p.content_type = p.content_type.as_ref().map(own);
        p.response_topic = p.response_topic.as_ref().map(|t| t.owned());
        p.correlation_data = p
            .correlation_data
            .as_ref()
            .map(|b| Bytes::copy_from_slice(b));
        for u in &mut p.user_properties {
            u.name = own(&u.name);
            u.value = own(&u.value);
        }
    }
    let props = &mut connect.properties;
    props.authentication_method = props.authentication_method.as_ref().map(own);
    props.authentication_data = props
        .authentication_data
        .as_ref()
        .map(|b| Bytes::copy_from_slice(b));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Capabilities, Limits};

    fn v5(id: &str) -> Connect {
        Connect::new(ProtocolVersion::V5, id)
    }

    #[test]
    fn session_expiry_is_requested_capped_and_reported() {
        let caps = Capabilities {
            max_session_expiry_interval: 600,
            ..Capabilities::default()
        };
        let limits = Limits::default();
        // v5: the request, capped, and the granted value in CONNACK only when it differs.
        let mut c = v5("a");
        c.properties.session_expiry_interval = Some(3600);
        let t = negotiate(&caps, &limits, &c, 1024, None);
        assert_eq!((t.requested_expiry, t.expiry_interval), (3600, 600));
        assert_eq!(t.connack.session_expiry_interval, Some(600));
        c.properties.session_expiry_interval = Some(60);
        let t = negotiate(&caps, &limits, &c, 1024, None);
        assert_eq!(t.expiry_interval, 60);
        assert_eq!(t.connack.session_expiry_interval, None);
        // 3.1.1: Clean Session 1 is 0, Clean Session 0 is "never" (then capped); no
        // properties at all.
        let mut c = Connect::new(ProtocolVersion::V311, "b");
        assert_eq!(negotiate(&caps, &limits, &c, 1024, None).expiry_interval, 0);
        c.clean_start = false;
        let t = negotiate(&caps, &limits, &c, 1024, None);
        assert_eq!((t.requested_expiry, t.expiry_interval), (u32::MAX, 600));
        assert_eq!(t.connack, ConnAckProperties::default());
    }

    #[test]
    fn keep_alive_is_capped_and_zero_is_not_allowed_under_a_cap() {
        // MQTT-3.2.2-21/-22 (v5): Server Keep Alive only when the broker changes it.
        let caps = Capabilities {
            max_keep_alive: Some(30),
            ..Capabilities::default()
        };
        let limits = Limits::default();
        for (asked, got, told) in [(10, 10, None), (60, 30, Some(30)), (0, 30, Some(30))] {
            let mut c = v5("k");
            c.keep_alive = asked;
            let t = negotiate(&caps, &limits, &c, 1024, None);
            assert_eq!(t.keep_alive, got, "{asked}");
            assert_eq!(t.connack.server_keep_alive, told, "{asked}");
        }
        let mut c = v5("free");
        c.keep_alive = 0;
        let t = negotiate(&Capabilities::default(), &limits, &c, 1024, None);
        assert_eq!((t.keep_alive, t.connack.server_keep_alive), (0, None));
    }

    #[test]
    fn window_aliases_and_capabilities_follow_both_sides() {
        let caps = Capabilities {
            maximum_qos: QoS::AtLeastOnce,
            retain_available: false,
            outbound_topic_aliases: 8,
            ..Capabilities::default()
        };
        let limits = Limits {
            max_inflight: 20,
            ..Limits::default()
        };
        let mut c = v5("w");
        c.properties.receive_maximum = NonZeroU16::new(5);
        c.properties.topic_alias_maximum = Some(100);
        c.properties.request_problem_information = Some(false);
        let id = ByteString::from("auto-1");
        let t = negotiate(&caps, &limits, &c, 4096, Some(&id));
        assert_eq!(
            t.window, 5,
            "the client's Receive Maximum, under max_inflight"
        );
        assert_eq!(
            t.outbound_aliases, 8,
            "the broker's cap, under the client's 100"
        );
        assert!(!t.problem_info);
        assert_eq!(t.connack.maximum_qos, Some(QoS::AtLeastOnce));
        assert_eq!(t.connack.retain_available, Some(false));
        assert_eq!(
            t.connack.wildcard_subscription_available, None,
            "absent: available"
        );
        assert_eq!(t.connack.maximum_packet_size, NonZeroU32::new(4096));
        assert_eq!(t.connack.assigned_client_identifier, Some(id));
        // Without Topic Alias Maximum in CONNECT: none (MQTT-3.1.2-27 (v5)).
        c.properties.topic_alias_maximum = None;
        c.properties.receive_maximum = None;
        let t = negotiate(&caps, &limits, &c, 4096, None);
        assert_eq!(t.outbound_aliases, 0);
        assert_eq!(
            t.window, 20,
            "max_inflight when the client sets no Receive Maximum"
        );
    }
}
