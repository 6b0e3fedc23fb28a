//! The bridge's connection to the remote broker: TCP (or TLS), CONNECT, CONNACK, and what
//! the CONNACK allows.

use std::num::NonZeroU16;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::{BridgeConfig, BridgeError, BridgeProtocol};
use crate::codec::{Connect, DecodeLimits, Packet, ProtocolVersion, QoS, ReasonCode};
use crate::metrics::Metrics;
use crate::transport::{NetReader, NetWriter, PacketReader, PacketWriter, ReadError};

/// A byte stream to the remote broker, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

type Stream = Box<dyn Io>;

/// A connection to the remote broker, CONNACK received.
pub(crate) struct Remote {
    pub(crate) reader: NetReader<ReadHalf<Stream>>,
    pub(crate) writer: NetWriter<WriteHalf<Stream>>,
    /// Where the reader and the writer count the bridge's traffic: apart from the broker's
    /// clients' traffic.
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) version: ProtocolVersion,
    pub(crate) limits: DecodeLimits,
    /// The remote does not send the bridge's own messages back: a v5 remote (No Local), or
    /// a 3.1.1 remote that took the bridge bit.
    pub(crate) no_echo: bool,
    /// The highest QoS the remote takes (v5 Maximum QoS).
    pub(crate) max_qos: QoS,
    /// The remote keeps retained messages (v5 Retain Available).
    pub(crate) retain_available: bool,
    /// The largest packet the remote takes (v5 Maximum Packet Size).
    pub(crate) max_packet: Option<u32>,
    /// How many QoS 1/2 messages may be unacknowledged towards the remote (v5 Receive
    /// Maximum); `None` for 3.1.1.
    pub(crate) receive_maximum: Option<u16>,
    /// The keep-alive to keep: the remote's Server Keep Alive if it sent one
    /// (MQTT-3.2.2-21 (v5)), else the configured one.
    pub(crate) keep_alive: std::time::Duration,
}

/// Connects, with the bridge bit first if `try_private` asks for it and without it if the
/// remote refuses the protocol level. `receive_maximum`: how much the local side takes at
/// once; `max_packet`: the largest packet the bridge accepts.
pub(crate) async fn connect(
    config: &BridgeConfig,
    receive_maximum: u16,
    max_packet: u32,
) -> Result<Remote, BridgeError> {
    let private = config.protocol == BridgeProtocol::V311 && config.try_private;
    let first = attempt(config, receive_maximum, max_packet, private).await;
    match first {
        Err(BridgeError::Refused(ReasonCode::UnsupportedProtocolVersion)) if private => {
            tracing::info!(bridge = %config.name, "remote refused the bridge bit: connecting as a plain 3.1.1 client");
            attempt(config, receive_maximum, max_packet, false).await
        }
        other => other,
    }
}

async fn attempt(
    config: &BridgeConfig,
    receive_maximum: u16,
    max_packet: u32,
    private: bool,
) -> Result<Remote, BridgeError> {
    let handshake = handshake(config, receive_maximum, max_packet, private);
    tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| BridgeError::Timeout)?
}

async fn open(config: &BridgeConfig) -> Result<Stream, BridgeError> {
    let tcp = TcpStream::connect(&config.address)
        .await
        .map_err(|e| BridgeError::Connect(Arc::new(e)))?;
    let _ = tcp.set_nodelay(true);
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        use tokio_rustls::rustls::pki_types::ServerName;
        let name = match &tls.server_name {
            Some(name) => name.clone(),
            None => {
                let host = config.address.rsplit_once(':').map_or("", |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_string()).map_err(|e| {
                    BridgeError::Tls(Arc::new(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        e,
                    )))
                })?
            }
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| BridgeError::Tls(Arc::new(e)))?;
        return Ok(Box::new(stream));
    }
    Ok(Box::new(tcp))
}

async fn handshake(
    config: &BridgeConfig,
    receive_maximum: u16,
    max_packet: u32,
    private: bool,
) -> Result<Remote, BridgeError> {
    let stream = open(config).await?;
    let (read, write) = tokio::io::split(stream);
    // The bridge's traffic is not the broker's clients' traffic: counted apart.
    let metrics = Arc::new(Metrics::default());
    let mut reader = NetReader::new(read);
    let mut writer = NetWriter::new(write);
    let version = match config.protocol {
        BridgeProtocol::V311 => ProtocolVersion::V311,
        BridgeProtocol::V5 => ProtocolVersion::V5,
    };
    let mut connect = Connect::new(version, bytestring::ByteString::from(config.remote_id()));
    connect.clean_start = config.clean_start;
    connect.keep_alive = u16::try_from(config.keep_alive.as_secs()).unwrap_or(u16::MAX);
    connect.username = config.username.clone().map(Into::into);
    connect.password = config.password.clone();
    connect.bridge = private;
    if version.is_v5() {
        let expiry = if config.clean_start {
            0
        } else {
            config.session_expiry
        };
        connect.properties.session_expiry_interval = (expiry > 0).then_some(expiry);
        connect.properties.receive_maximum = NonZeroU16::new(receive_maximum);
        connect.properties.maximum_packet_size = std::num::NonZeroU32::new(max_packet);
    }
    writer
        .packet(&Packet::Connect(Box::new(connect)), version)
        .map_err(|_| BridgeError::Protocol("cannot encode CONNECT"))?;
    writer
        .flush(&metrics)
        .await
        .map_err(|e| BridgeError::Lost(Arc::new(e)))?;
    let limits = DecodeLimits::new(version).with_max_packet_size(max_packet);
    let ack = match reader.read(&limits, &metrics).await {
        Ok(Some(Packet::ConnAck(ack))) => ack,
        Ok(Some(_)) => return Err(BridgeError::Protocol("first packet is not CONNACK")),
        Ok(None) => return Err(BridgeError::Lost(Arc::new(closed()))),
        Err(e) => return Err(read_error(e)),
    };
    if ack.reason_code != ReasonCode::Success {
        return Err(BridgeError::Refused(ack.reason_code));
    }
    let p = &ack.properties;
    Ok(Remote {
        reader,
        writer,
        metrics,
        version,
        limits,
        no_echo: version.is_v5() || private,
        max_qos: p.maximum_qos.unwrap_or(QoS::ExactlyOnce),
        retain_available: p.retain_available.unwrap_or(true),
        max_packet: p.maximum_packet_size.map(std::num::NonZeroU32::get),
        receive_maximum: version
            .is_v5()
            .then(|| p.receive_maximum.map_or(u16::MAX, NonZeroU16::get)),
        keep_alive: p.server_keep_alive.map_or(config.keep_alive, |s| {
            std::time::Duration::from_secs(u64::from(s))
        }),
    })
}

/// The error for a connection the remote closed.
pub(crate) fn closed() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::UnexpectedEof)
}

/// A read failure as the bridge reports it.
pub(crate) fn read_error(e: ReadError) -> BridgeError {
    match e {
        ReadError::Io(e) => BridgeError::Lost(Arc::new(e)),
        ReadError::Decode(e) => BridgeError::Malformed(e),
    }
}
