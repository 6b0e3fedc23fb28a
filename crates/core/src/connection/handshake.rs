//! The CONNECT handshake: first packet within the connect timeout, client identifier rules,
//! session attach (with takeover), and CONNACK.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use super::writer::Writer;
use super::{Connection, PeerInfo};
use crate::broker::Shared;
use crate::codec::{
    ConnAck, Connect, DecodeError, DecodeLimits, Packet, ProtocolVersion, ReasonCode,
};
use crate::session::LinkSignals;
use crate::transport::{PacketReader, PacketWriter, ReadError};

/// Reads CONNECT and attaches the session; `None` if the connection ends here.
pub(super) async fn accept<R: PacketReader, W: PacketWriter>(
    shared: &Arc<Shared>,
    reader: &mut R,
    mut wire: W,
    peer: &PeerInfo,
) -> Option<(Connection, Writer<W>)> {
    let limits = DecodeLimits::new(ProtocolVersion::V311)
        .with_max_packet_size(shared.limits.max_packet_size);
    let first = tokio::select! {
        _ = shared.shutdown.cancelled() => return None,
        r = tokio::time::timeout(shared.limits.connect_timeout, reader.read(&limits)) => r,
    };
    let connect = match first {
        Err(_) => {
            tracing::debug!("no CONNECT within the connect timeout");
            return None;
        }
        Ok(Ok(Some(Packet::Connect(c)))) => c,
        Ok(Ok(Some(other))) => {
            // MQTT-3.1.0-1: the first packet must be CONNECT.
            tracing::info!(packet = ?other.packet_type(), "first packet is not CONNECT");
            return None;
        }
        Ok(Ok(None)) | Ok(Err(ReadError::Io(_))) => return None,
        Ok(Err(ReadError::Decode(DecodeError::UnsupportedProtocolLevel(level)))) => {
            // MQTT-3.1.2-2: CONNACK 0x01 (3.1.1 form), then close.
            tracing::info!(level, "unsupported protocol level");
            refuse(
                &mut wire,
                ProtocolVersion::V311,
                ReasonCode::UnsupportedProtocolVersion,
            )
            .await;
            return None;
        }
        Ok(Err(ReadError::Decode(e))) => {
            tracing::info!(error = %e, spec = e.spec_id(), "malformed CONNECT");
            return None;
        }
    };
    let version = connect.protocol;
    let (client_id, assigned) = match client_identifier(shared, &connect) {
        Ok(id) => id,
        Err(code) => {
            refuse(&mut wire, version, code).await;
            return None;
        }
    };
    let persistent = if version.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0) > 0
    } else {
        !connect.clean_start
    };
    let window = usize::from(shared.limits.max_inflight).min(
        connect
            .properties
            .receive_maximum
            .map_or(usize::MAX, |r| usize::from(r.get())),
    );
    let signals = LinkSignals::new(shared.shutdown.child_token());
    let max_packet_size = shared.limits.max_packet_size;
    let (session, link_id) = shared.attach(
        client_id.clone(),
        connect.clean_start,
        persistent,
        Arc::clone(&signals),
        window,
        |session_present| {
            let mut ack = ConnAck::new(session_present, ReasonCode::Success);
            if version.is_v5() {
                ack.properties.assigned_client_identifier = assigned.then(|| client_id.clone());
                ack.properties.maximum_packet_size = std::num::NonZeroU32::new(max_packet_size);
            }
            Packet::ConnAck(ack)
        },
    );
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let conn = Connection {
        shared: Arc::clone(shared),
        session: Arc::clone(&session),
        client_id,
        link_id,
        version,
        signals: Arc::clone(&signals),
        limits: DecodeLimits::new(version).with_max_packet_size(max_packet_size),
        keep_alive,
        will: connect.will,
    };
    let writer = Writer {
        wire,
        session,
        link_id,
        version,
        signals,
        shared: Arc::clone(shared),
    };
    tracing::debug!(listener = %peer.listener, ?version, "connected");
    Some((conn, writer))
}

/// The client identifier to use, and whether the server assigned it; or the CONNACK code
/// that refuses it.
fn client_identifier(shared: &Shared, connect: &Connect) -> Result<(ByteString, bool), ReasonCode> {
    let id = &connect.client_id;
    match connect.protocol {
        // MQTT 3.1: 1 to 23 characters.
        ProtocolVersion::V31 if id.is_empty() || id.chars().count() > 23 => {
            Err(ReasonCode::ClientIdentifierNotValid)
        }
        // MQTT-3.1.3-8: empty id with Clean Session 0 → 0x02.
        ProtocolVersion::V311 if id.is_empty() && !connect.clean_start => {
            Err(ReasonCode::ClientIdentifierNotValid)
        }
        // MQTT-3.1.3-6 / v5 §3.1.3.1: assign a unique identifier.
        _ if id.is_empty() => Ok((shared.assign_client_id(), true)),
        _ => Ok((id.clone(), false)),
    }
}

/// Sends a refusing CONNACK and closes.
async fn refuse<W: PacketWriter>(wire: &mut W, version: ProtocolVersion, code: ReasonCode) {
    let _ = wire.packet(&Packet::ConnAck(ConnAck::new(false, code)), version);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if wire.flush().await.is_ok() {
            wire.shutdown().await;
        }
    })
    .await;
}
