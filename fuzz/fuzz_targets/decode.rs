//! Fuzzes the packet decoder. The first byte picks the protocol level and maximum packet
//! size; the rest is fed to `decode` repeatedly. Whatever decodes must encode, and decoding
//! that encoding must give the same packet back.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roost_core::codec::{decode, DecodeLimits, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let version = match control % 3 {
        0 => ProtocolVersion::V31,
        1 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    };
    let max = 2 + u32::from(control >> 2) * 64;
    let limits = DecodeLimits::new(version).with_max_packet_size(max);
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(packet)) = decode(&mut buf, &limits) {
        // CONNECT carries its own level; everything else is encoded at the connection's.
        let level = match &packet {
            roost_core::codec::Packet::Connect(c) => c.protocol,
            _ => version,
        };
        let mut out = BytesMut::new();
        packet.encode(level, &mut out).expect("a decoded packet encodes");
        let again = decode(&mut out, &DecodeLimits::new(level))
            .expect("its encoding decodes")
            .expect("completely");
        assert_eq!(again, packet);
        assert!(out.is_empty());
    }
});
