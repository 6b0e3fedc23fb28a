//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in front of the broker
//! sends the real client address before the connection's own bytes, so authenticators and
//! logs see the client, not the balancer.
//!
//! Exactly the header's bytes are consumed, so the MQTT (or TLS) bytes behind it stay in
//! the socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header (the specification's bound).
const V1_MAX: usize = 107;
/// Longest version 2 address block plus TLVs we accept (balancers send well under this).
const V2_MAX_BODY: usize = 4096;

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads a PROXY header from `stream`; returns the client's address (`None` for the LOCAL
/// command or an UNKNOWN / unspecified family: the connection's own address then stands).
///
/// Exactly the header's bytes are read, so the MQTT (or TLS) bytes behind it stay in the
/// stream. Every read waits for the socket to be readable: a stalled header costs a parked
/// task, not a timer polling it. Version 1 is read a byte at a time up to its CRLF (at most
/// 107 bytes, usually already in the socket buffer, once per connection).
pub(crate) async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<Option<SocketAddr>> {
    // Six bytes tell the versions apart: "PROXY " or the start of the v2 signature.
    let mut head = [0u8; 16];
    stream.read_exact(&mut head[..6]).await?;
    if head[..6] == V2_SIGNATURE[..6] {
        stream.read_exact(&mut head[6..16]).await?;
        if head[..12] != V2_SIGNATURE {
            return Err(invalid("no PROXY protocol header"));
        }
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if len > V2_MAX_BODY {
            return Err(invalid("PROXY v2 header too long"));
        }
        let mut header = vec![0u8; 16 + len];
        header[..16].copy_from_slice(&head);
        stream.read_exact(&mut header[16..]).await?;
        return parse_v2(&header);
    }
    if &head[..6] != b"PROXY " {
        return Err(invalid("no PROXY protocol header"));
    }
    let mut line = Vec::with_capacity(V1_MAX);
    line.extend_from_slice(&head[..6]);
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(invalid("PROXY v1 header too long"));
        }
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        line.push(byte[0]);
    }
    parse_v1(&line[..line.len() - 2])
}

fn parse_v1(line: &[u8]) -> io::Result<Option<SocketAddr>> {
    let text = std::str::from_utf8(line).map_err(|_| invalid("PROXY v1 header is not text"))?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", "TCP4" | "TCP6", src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| invalid("PROXY v1 source address"))?;
            let port: u16 = sport.parse().map_err(|_| invalid("PROXY v1 source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(invalid("malformed PROXY v1 header")),
    }
}

fn parse_v2(header: &[u8]) -> io::Result<Option<SocketAddr>> {
    let version_command = header[12];
    if version_command >> 4 != 2 {
        return Err(invalid("PROXY v2 version"));
    }
    let body = &header[16..];
    match (version_command & 0x0F, header[13] >> 4) {
        (0, _) => Ok(None), // LOCAL: health checks and the like
        (1, 1) if body.len() >= 12 => {
            // PROXY over IPv4
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        (1, 2) if body.len() >= 36 => {
            // PROXY over IPv6
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        (1, _) => Ok(None), // UNSPEC or Unix addresses
        _ => Err(invalid("PROXY v2 command")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_versions() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883").expect("valid"),
            Some("192.0.2.7:56324".parse().expect("addr"))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 1883").expect("valid"),
            Some("[2001:db8::1]:4000".parse().expect("addr"))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN").expect("valid"), None);
        assert!(parse_v1(b"PROXY TCP4 nonsense").is_err());
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0x00, 12]); // v2 PROXY, TCP over IPv4, 12 bytes
        v2.extend_from_slice(&[192, 0, 2, 9, 198, 51, 100, 1, 0x1F, 0x90, 0x07, 0x5B]);
        assert_eq!(
            parse_v2(&v2).expect("valid"),
            Some("192.0.2.9:8080".parse().expect("addr"))
        );
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(parse_v2(&local).expect("valid"), None);
    }

    /// Issue 12 §3: a header that arrives in pieces is read as the pieces come (no timer
    /// polling), exactly its bytes are consumed, and a stalled one just waits.
    #[tokio::test]
    async fn reads_a_header_in_pieces_and_leaves_what_follows() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let addr = read_header(&mut server).await;
            let mut rest = [0u8; 4];
            server.read_exact(&mut rest).await.map(|_| (addr, rest))
        });
        for piece in [
            &b"PRO"[..],
            b"XY TCP4 192.0.2.7 ",
            b"198.51.100.1 5 1883\r",
            b"\nMQTT",
        ] {
            client.write_all(piece).await.expect("writes");
            tokio::task::yield_now().await;
        }
        let (addr, rest) = reader.await.expect("joins").expect("reads");
        assert_eq!(
            addr.expect("valid"),
            Some("192.0.2.7:5".parse().expect("addr"))
        );
        assert_eq!(&rest, b"MQTT");
        // v2 in two pieces.
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
        v2.extend_from_slice(&[192, 0, 2, 9, 198, 51, 100, 1, 0x1F, 0x90, 0x07, 0x5B]);
        let reader = tokio::spawn(async move { read_header(&mut server).await });
        client.write_all(&v2[..10]).await.expect("writes");
        tokio::task::yield_now().await;
        client.write_all(&v2[10..]).await.expect("writes");
        assert_eq!(
            reader.await.expect("joins").expect("reads"),
            Some("192.0.2.9:8080".parse().expect("addr"))
        );
        // Garbage and over-long lines are errors.
        let mut junk: &[u8] = b"GET / HTTP/1.1\r\n";
        assert!(read_header(&mut junk).await.is_err());
        let long = format!("PROXY {}\r\n", "1".repeat(200));
        assert!(read_header(&mut long.as_bytes()).await.is_err());
    }
}
