//! In-process connections: packets as values over channels, served by [`serve`] like a
//! network connection. The in-process `Client` and the bridges' local side use them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{serve, PeerInfo};
use crate::codec::{Connect, Packet, ReasonCode};
use crate::context::Context;
use crate::error::ClientError;
use crate::transport::{LocalReader, LocalWriter, ToClient};

/// The raw in-process connection under a `Client` (and a bridge's local side): packets
/// to the broker, batches from it, and the CONNACK it answered with.
pub(crate) struct LocalLink {
    pub(crate) tx: mpsc::Sender<Packet>,
    pub(crate) rx: mpsc::Receiver<Vec<ToClient>>,
    /// What followed the CONNACK in its batch (messages of a resumed session).
    pub(crate) first: Vec<ToClient>,
    pub(crate) connack: crate::codec::ConnAck,
}

/// Connects an in-process link with `connect` (`internal`: a bridge's own link, see
/// `PeerInfo::internal`). A CONNACK refusing it is `ClientError::Refused`.
///
/// Cancel safety: if dropped before it completes, the half-made connection is closed.
pub(crate) async fn open_local(
    ctx: &Arc<Context>,
    connect: Connect,
    internal: bool,
    buffer: usize,
    timeout: Duration,
) -> Result<LocalLink, ClientError> {
    let (to_broker, from_client) = mpsc::channel(buffer);
    let (to_client, mut from_broker) = mpsc::channel(buffer);
    let peer = PeerInfo {
        addr: None,
        listener: Arc::from(if internal { "bridge" } else { "in-process" }),
        certificates: Vec::new(),
        max_packet_size: None,
        in_process: true,
        internal,
        ticket: None,
        listener_cap: None,
        settings: ctx.connection_settings(),
    };
    ctx.lifecycle.tracker.spawn(serve(
        Arc::clone(ctx),
        LocalReader { rx: from_client },
        LocalWriter {
            tx: tokio_util::sync::PollSender::new(to_client),
            pending: Default::default(),
        },
        peer,
    ));
    to_broker
        .send(Packet::Connect(Box::new(connect)))
        .await
        .map_err(|_| ClientError::Disconnected)?;
    let mut first = tokio::time::timeout(timeout, from_broker.recv())
        .await
        .map_err(|_| ClientError::Timeout)?
        .unwrap_or_default()
        .into_iter();
    // CONNACK leads the first batch.
    let connack = match first.next() {
        Some(ToClient::Packet(packet)) => match *packet {
            Packet::ConnAck(ack) if ack.reason_code == ReasonCode::Success => ack,
            Packet::ConnAck(ack) => return Err(ClientError::Refused(ack.reason_code)),
            _ => return Err(ClientError::Disconnected),
        },
        _ => return Err(ClientError::Disconnected),
    };
    Ok(LocalLink {
        tx: to_broker,
        rx: from_broker,
        first: first.collect(),
        connack,
    })
}
