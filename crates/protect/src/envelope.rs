//! The envelope: a sealed payload as it travels between a device and the broker.
//!
//! ```text
//! offset  size  field
//! 0       1     version (0x01)
//! 1       1     key id (which of the device's keys sealed it)
//! 2       8     sequence number, big-endian (grows with every message in one direction)
//! 10      12    nonce (never repeated under one key)
//! 22      n     ciphertext (as long as the plaintext)
//! 22 + n  16    authentication tag
//! ```
//!
//! The associated data, authenticated but not sent, is the direction byte (0x01 device to
//! broker, 0x02 broker to device), then the 22 header bytes, then the topic name's UTF-8
//! bytes: a payload verifies only on the topic, in the direction and under the sequence
//! number it was sealed for.

use crate::keys::DeviceKey;

/// The envelope format's version byte.
pub const VERSION: u8 = 1;
/// Bytes before the ciphertext: version, key id, sequence number, nonce.
pub const HEADER_LEN: usize = 22;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Which way a payload travels; bound into the associated data, so a payload sealed for
/// one direction cannot be sent back the other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Device to broker (0x01).
    Up,
    /// Broker to device (0x02).
    Down,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Direction::Up => 1,
            Direction::Down => 2,
        }
    }
}

/// An envelope's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Which of the device's keys sealed it.
    pub key_id: u8,
    /// Its sequence number.
    pub seq: u64,
    /// Its nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    /// A header whose nonce is `prefix` followed by the sequence number: unique for as long
    /// as the sequence numbers are, which is how a device without a random source can make
    /// its nonces (with a `prefix` of its own, such as a boot counter, kept apart from the
    /// broker's random nonces by its 2⁶⁴ sequence numbers).
    pub fn counter(key_id: u8, seq: u64, prefix: [u8; 4]) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&prefix);
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        Self { key_id, seq, nonce }
    }

    fn bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = VERSION;
        h[1] = self.key_id;
        h[2..10].copy_from_slice(&self.seq.to_be_bytes());
        h[10..].copy_from_slice(&self.nonce);
        h
    }
}

/// Why an envelope was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than a header and a tag, or of another version.
    #[error("not an envelope of version 1")]
    Malformed,
    /// The tag did not verify: tampered, another key, another topic or direction.
    #[error("authentication failed")]
    BadTag,
}

/// The associated data of an envelope.
fn associated_data(direction: Direction, header: &[u8; HEADER_LEN], topic: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + HEADER_LEN + topic.len());
    aad.push(direction.byte());
    aad.extend_from_slice(header);
    aad.extend_from_slice(topic.as_bytes());
    aad
}

/// Reads an envelope's header without verifying anything (to find its key).
pub fn peek(envelope: &[u8]) -> Result<Header, OpenError> {
    if envelope.len() < OVERHEAD || envelope[0] != VERSION {
        return Err(OpenError::Malformed);
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&envelope[2..10]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&envelope[10..HEADER_LEN]);
    Ok(Header {
        key_id: envelope[1],
        seq: u64::from_be_bytes(seq),
        nonce,
    })
}

/// Seals `plaintext` for `topic` under `key`. `None` if it is longer than the algorithm
/// can seal (CCM with a 12-byte nonce: 16 MiB − 1; GCM: 64 GiB).
pub fn seal(
    key: &DeviceKey,
    direction: Direction,
    header: &Header,
    topic: &str,
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let head = header.bytes();
    let aad = associated_data(direction, &head, topic);
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(plaintext);
    let tag = key.seal_in_place(&header.nonce, &aad, &mut out[HEADER_LEN..])?;
    out.extend_from_slice(&tag);
    Some(out)
}

/// Verifies and decrypts an envelope for `topic` under `key`; returns the plaintext.
pub fn open(
    key: &DeviceKey,
    direction: Direction,
    topic: &str,
    envelope: &[u8],
) -> Result<Vec<u8>, OpenError> {
    let header = peek(envelope)?;
    let head = header.bytes();
    let aad = associated_data(direction, &head, topic);
    let (body, tag) = envelope[HEADER_LEN..].split_at(envelope.len() - HEADER_LEN - TAG_LEN);
    let mut plaintext = body.to_vec();
    key.open_in_place(&header.nonce, &aad, &mut plaintext, tag)
        .map_err(|()| OpenError::BadTag)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Algorithm;

    fn key(alg: Algorithm) -> DeviceKey {
        DeviceKey::new(alg, &vec![7u8; alg.key_len()]).expect("key")
    }

    #[test]
    fn every_algorithm_round_trips_and_binds_topic_direction_and_header() {
        for alg in [
            Algorithm::Aes128Gcm,
            Algorithm::Aes256Gcm,
            Algorithm::Aes128Ccm,
            Algorithm::Aes256Ccm,
        ] {
            let k = key(alg);
            let h = Header {
                key_id: 3,
                seq: 42,
                nonce: [9; NONCE_LEN],
            };
            let sealed = seal(&k, Direction::Up, &h, "t/1", b"hello").expect("seals");
            assert_eq!(sealed.len(), 5 + OVERHEAD);
            assert_eq!(peek(&sealed), Ok(h));
            assert_eq!(
                open(&k, Direction::Up, "t/1", &sealed).as_deref(),
                Ok(&b"hello"[..])
            );
            assert_eq!(
                open(&k, Direction::Up, "t/2", &sealed),
                Err(OpenError::BadTag),
                "{alg:?}: another topic"
            );
            assert_eq!(
                open(&k, Direction::Down, "t/1", &sealed),
                Err(OpenError::BadTag),
                "{alg:?}: the other direction"
            );
            for i in [1, 2, 9, 10, 21, 22, sealed.len() - 1] {
                let mut t = sealed.clone();
                t[i] ^= 1;
                assert_eq!(
                    open(&k, Direction::Up, "t/1", &t),
                    Err(OpenError::BadTag),
                    "{alg:?}: byte {i} changed"
                );
            }
            let mut other = vec![7u8; alg.key_len()];
            other[0] = 8;
            let k2 = DeviceKey::new(alg, &other).expect("key");
            assert_eq!(
                open(&k2, Direction::Up, "t/1", &sealed),
                Err(OpenError::BadTag)
            );
        }
    }

    #[test]
    fn short_or_foreign_payloads_are_malformed() {
        let k = key(Algorithm::Aes128Gcm);
        assert_eq!(
            open(&k, Direction::Up, "t", &[1; OVERHEAD - 1]),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            open(&k, Direction::Up, "t", &[2; OVERHEAD + 4]),
            Err(OpenError::Malformed)
        );
        assert_eq!(peek(b"plain text"), Err(OpenError::Malformed));
        // An empty plaintext is a valid envelope.
        let h = Header {
            key_id: 0,
            seq: 1,
            nonce: [0; NONCE_LEN],
        };
        let sealed = seal(&k, Direction::Down, &h, "t", b"").expect("seals");
        assert_eq!(
            open(&k, Direction::Down, "t", &sealed).as_deref(),
            Ok(&b""[..])
        );
    }

    /// A vector computed independently (Python's `cryptography` package, the library the
    /// reference client uses): AES-128-GCM, key 00..0f, the header below, topic "t".
    #[test]
    fn matches_the_reference_client() {
        let k = DeviceKey::new(Algorithm::Aes128Gcm, &(0u8..16).collect::<Vec<_>>()).expect("k");
        let h = Header {
            key_id: 1,
            seq: 5,
            nonce: [0xAB; NONCE_LEN],
        };
        let sealed = seal(&k, Direction::Up, &h, "t", b"hi").expect("seals");
        assert_eq!(hex(&sealed), REFERENCE_VECTOR);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    const REFERENCE_VECTOR: &str =
        "01010000000000000005abababababababababababab9a766a0ae64dce7d006a25315c86479ad8bb";
}
