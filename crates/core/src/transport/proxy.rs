//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in front of the broker
//! sends the real client address before the connection's own bytes, so authenticators and
//! logs see the client, not the balancer.
//!
//! The header is read with `peek` first, so exactly its bytes are consumed and the MQTT (or
//! TLS) bytes behind it stay in the socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

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
pub(crate) async fn read_header(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut peek = [0u8; 232];
    // Wait until enough bytes are there to tell the version and find the end of the header.
    let n = loop {
        let n = stream.peek(&mut peek).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let have = &peek[..n];
        if have.starts_with(&V2_SIGNATURE[..n.min(12)]) {
            if n >= 16 {
                let len = usize::from(u16::from_be_bytes([have[14], have[15]]));
                if n >= 16 + len || 16 + len > peek.len() {
                    break n;
                }
            }
        } else if have.starts_with(&b"PROXY "[..n.min(6)]) {
            if have.windows(2).any(|w| w == b"\r\n") || n >= V1_MAX {
                break n;
            }
        } else {
            return Err(invalid("no PROXY protocol header"));
        }
        // More of the header is on its way (a balancer sends it in one segment, so this is
        // rare); poll gently, bounded by the caller's handshake deadline.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let have = &peek[..n];
    if have.starts_with(&V2_SIGNATURE) {
        let len = usize::from(u16::from_be_bytes([have[14], have[15]]));
        if len > V2_MAX_BODY {
            return Err(invalid("PROXY v2 header too long"));
        }
        let mut header = vec![0u8; 16 + len];
        stream.read_exact(&mut header).await?;
        parse_v2(&header)
    } else {
        let end = have
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("PROXY v1 header too long"))?;
        let mut header = vec![0u8; end + 2];
        stream.read_exact(&mut header).await?;
        parse_v1(&header[..end])
    }
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
}
