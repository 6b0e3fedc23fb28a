//! Primitive wire types of MQTT (section 1.5 of both standards): two- and four-byte integers,
//! Variable Byte Integers, UTF-8 strings and binary data.
//!
//! Reading works on a complete frame held as [`Bytes`], so strings and binary data come out
//! as zero-copy slices. Running out of bytes inside a frame is a malformed packet, never
//! "need more": the fixed header already told us the frame is complete.
//!
//! Writing goes through the [`Sink`] trait, implemented by a byte counter and by
//! `BytesMut`: each packet describes its body once, and the same description yields the exact
//! Remaining Length and the bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::DecodeError;

/// The largest value a Variable Byte Integer can carry (four bytes): 268,435,455.
pub const MAX_VARINT: u32 = 268_435_455;

/// Largest length of a UTF-8 string or binary field: its length prefix is two bytes.
pub(crate) const MAX_STRING_LEN: usize = u16::MAX as usize;

/// Result of peeking at a Variable Byte Integer at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VarIntPeek {
    /// The value and how many bytes encode it.
    Complete(u32, usize),
    /// The buffer ends before the last byte of the integer.
    Incomplete,
}

/// Reads a Variable Byte Integer from the front of `buf` without consuming it.
///
/// A fifth byte (the fourth with its continuation bit set) is malformed: MQTT-1.5.5-1 (v5),
/// section 2.2.3 (3.1.1). So is a longer form than the value needs (MQTT-1.5.5-1: "the
/// minimum number of bytes"): a last byte of zero after a continuation byte, such as
/// `0x80 0x00` for 0. Every Variable Byte Integer is read here (Remaining Length, property
/// lengths, Subscription Identifiers), at every protocol level.
pub(crate) fn peek_varint(buf: &[u8]) -> Result<VarIntPeek, DecodeError> {
    let mut value: u32 = 0;
    for (i, byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && *byte == 0 {
                return Err(DecodeError::NonMinimalVariableByteInteger);
            }
            return Ok(VarIntPeek::Complete(value, i + 1));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::MalformedVariableByteInteger)
    } else {
        Ok(VarIntPeek::Incomplete)
    }
}

/// How many bytes the Variable Byte Integer encoding of `value` takes.
pub(crate) fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` as a Variable Byte Integer into `out` (at most four bytes).
pub(crate) fn put_varint(out: &mut impl BufMut, mut value: u32) {
    debug_assert!(value <= MAX_VARINT);
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Validates a UTF-8 Encoded String's bytes (MQTT-1.5.3-1, MQTT-1.5.3-2 in v5; MQTT-1.5.3-1,
/// MQTT-1.5.3-2 in 3.1.1) and returns it as a zero-copy string.
///
/// UTF-16 surrogates (U+D800..U+DFFF) cannot appear in well-formed UTF-8, so the UTF-8 check
/// rejects them too.
pub(crate) fn utf8_string(bytes: Bytes) -> Result<ByteString, DecodeError> {
    let s = ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if s.contains('\0') {
        return Err(DecodeError::NullCharacter);
    }
    Ok(s)
}

/// A cursor over one complete packet body.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    /// Starts reading `buf` from its first byte.
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True once every byte was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    /// A big-endian two-byte integer.
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    /// A big-endian four-byte integer.
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match peek_varint(&self.buf)? {
            VarIntPeek::Complete(value, len) => {
                self.buf.advance(len);
                Ok(value)
            }
            VarIntPeek::Incomplete => Err(DecodeError::Truncated),
        }
    }

    /// `n` bytes as a zero-copy slice.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Binary Data: a two-byte length and that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    /// A UTF-8 Encoded String.
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let bytes = self.binary()?;
        utf8_string(bytes)
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Fails unless every byte was read: trailing bytes after the last field are malformed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

/// Destination of an encoding pass: either a counter (to learn the exact length) or a buffer.
///
/// Writers do not check field limits; [`Counter`] records any string or binary field that is
/// too long so the encoder can refuse the packet before writing a byte.
pub(crate) trait Sink {
    /// One byte.
    fn u8(&mut self, v: u8);
    /// A big-endian two-byte integer.
    fn u16(&mut self, v: u16);
    /// A big-endian four-byte integer.
    fn u32(&mut self, v: u32);
    /// A Variable Byte Integer.
    fn varint(&mut self, v: u32);
    /// Raw bytes with no length prefix.
    fn raw(&mut self, v: &[u8]);
    /// Binary Data or a UTF-8 string's bytes: two-byte length, then the bytes.
    fn binary(&mut self, v: &[u8]);
    /// A UTF-8 Encoded String.
    fn string(&mut self, v: &str) {
        self.binary(v.as_bytes());
    }
}

/// A [`Sink`] that only adds up lengths.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    /// Bytes counted so far.
    pub(crate) len: usize,
    /// Set when a string or binary field was longer than 65,535 bytes.
    pub(crate) field_too_long: bool,
}

impl Sink for Counter {
    fn u8(&mut self, _: u8) {
        self.len += 1;
    }
    fn u16(&mut self, _: u16) {
        self.len += 2;
    }
    fn u32(&mut self, _: u32) {
        self.len += 4;
    }
    fn varint(&mut self, v: u32) {
        if v > MAX_VARINT {
            self.field_too_long = true;
        }
        self.len += varint_len(v);
    }
    fn raw(&mut self, v: &[u8]) {
        self.len += v.len();
    }
    fn binary(&mut self, v: &[u8]) {
        if v.len() > MAX_STRING_LEN {
            self.field_too_long = true;
        }
        self.len += 2 + v.len();
    }
}

impl Sink for BytesMut {
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    fn u16(&mut self, v: u16) {
        self.put_u16(v);
    }
    fn u32(&mut self, v: u32) {
        self.put_u32(v);
    }
    fn varint(&mut self, v: u32) {
        put_varint(self, v);
    }
    fn raw(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
    fn binary(&mut self, v: &[u8]) {
        // The counter pass has already rejected longer fields.
        self.put_u16(v.len() as u16);
        self.extend_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        // The boundary values of table 1.1 (3.1.1) / 1.5.5 (v5).
        for (value, bytes) in [
            (0u32, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = BytesMut::new();
            put_varint(&mut out, value);
            assert_eq!(&out[..], bytes, "encoding {value}");
            assert_eq!(varint_len(value), bytes.len());
            assert_eq!(
                peek_varint(bytes),
                Ok(VarIntPeek::Complete(value, bytes.len()))
            );
        }
    }

    #[test]
    fn varint_must_be_minimal() {
        // MQTT-1.5.5-1 (v5): the minimum number of bytes. 0 in two bytes, 127 in two, 128 in three.
        for bytes in [
            &[0x80u8, 0x00][..],
            &[0xFF, 0x00],
            &[0x80, 0x81, 0x00],
            &[0x80, 0x80, 0x80, 0x00],
        ] {
            assert_eq!(
                peek_varint(bytes),
                Err(DecodeError::NonMinimalVariableByteInteger),
                "{bytes:x?}"
            );
        }
        // The shortest forms of the boundaries stay valid.
        assert_eq!(peek_varint(&[0x80, 0x01]), Ok(VarIntPeek::Complete(128, 2)));
        assert_eq!(peek_varint(&[0x00]), Ok(VarIntPeek::Complete(0, 1)));
    }

    #[test]
    fn varint_with_five_bytes_is_malformed() {
        // MQTT-1.5.5-1 (v5): at most four bytes.
        assert_eq!(
            peek_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        assert_eq!(peek_varint(&[0xFF, 0xFF, 0xFF]), Ok(VarIntPeek::Incomplete));
    }

    #[test]
    fn strings_reject_null_and_invalid_utf8() {
        // MQTT-1.5.3-2: U+0000.
        assert_eq!(
            utf8_string(Bytes::from_static(b"a\0b")),
            Err(DecodeError::NullCharacter)
        );
        // MQTT-1.5.3-1: ill-formed UTF-8, including an encoded surrogate U+D800.
        assert_eq!(
            utf8_string(Bytes::from_static(&[0xED, 0xA0, 0x80])),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            utf8_string(Bytes::from_static(&[0xC3, 0x28])),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            utf8_string(Bytes::from_static("é/ü".as_bytes())).expect("valid"),
            "é/ü"
        );
    }
}
