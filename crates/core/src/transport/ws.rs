//! MQTT over WebSocket (MQTT 5.0 §6, MQTT 3.1.1 §6): the HTTP upgrade with the `mqtt`
//! subprotocol on a configurable path, then MQTT bytes carried in binary frames. A frame
//! may hold several packets and a packet may span frames: the adapter turns frames back
//! into a byte stream for the ordinary decoder.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Bytes a WebSocket frame (or message) may carry beyond the largest packet: a frame may
/// end one packet and start the next.
const FRAME_SLACK: usize = 4096;

/// The WebSocket limits for a listener whose largest packet is `max_packet_size`. A frame
/// header claiming more is refused before anything is reserved for it (the WebSocket layer
/// reserves a frame's claimed length once its header passes this check, so the claim a peer
/// can make is bounded by the listener's own packet limit). The read buffer is small (idle
/// connections are the common case) and writes are not buffered again: the connection's
/// writer already batches them.
fn config(max_packet_size: u32) -> WebSocketConfig {
    let max = usize::try_from(max_packet_size)
        .unwrap_or(usize::MAX)
        .saturating_add(FRAME_SLACK);
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(max.saturating_mul(2))
        .max_frame_size(Some(max))
        .max_message_size(Some(max))
}

/// Performs the server side of the WebSocket upgrade: the path must be `path` and the
/// client must offer the `mqtt` subprotocol, which the response selects (MQTT-6.0.0-3/-4).
/// Frames and messages are limited by `max_packet_size` (see [`config`]).
#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
pub(crate) async fn accept<S>(
    stream: S,
    path: &str,
    max_packet_size: u32,
) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let check = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let refuse = |status: StatusCode| {
            let mut r = ErrorResponse::new(None);
            *r.status_mut() = status;
            r
        };
        if req.uri().path() != path {
            return Err(refuse(StatusCode::NOT_FOUND));
        }
        let offers_mqtt = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
        if !offers_mqtt {
            return Err(refuse(StatusCode::BAD_REQUEST));
        }
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        check,
        Some(config(max_packet_size)),
    )
    .await
    .map_err(io::Error::other)?;
    Ok(WsStream {
        ws,
        pending: Bytes::new(),
    })
}

/// A WebSocket connection seen as a byte stream.
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The rest of the last binary frame not yet read.
    pending: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Binary(data)))) => self.pending = data,
                // Close, or the end of the stream: end of file.
                Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => {
                    return Poll::Ready(Ok(()))
                }
                // MQTT-6.0.0-1: only binary frames; anything else closes the connection.
                Poll::Ready(Some(Ok(Message::Text(_)))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame",
                    )))
                }
                // Pings are answered by the WebSocket layer itself.
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            Poll::Pending => return Poll::Pending,
        }
        let frame = Message::Binary(Bytes::copy_from_slice(buf));
        match Pin::new(&mut self.ws).start_send(frame) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(e) => Poll::Ready(Err(io::Error::other(e))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}
