//! The decoder never allocates on the strength of what a peer merely claims.
//!
//! This binary installs a capped global allocator (the `cap` crate): around each `decode`
//! call the cap is set to what was allocated before plus a budget, so an allocation past the
//! budget fails the process instead of passing silently. The budget is a constant factor of
//! the connection's maximum packet size: decoding never copies packet bytes (strings and
//! payloads are slices of the read buffer), but a decoded list costs up to 40 bytes per
//! element (a SUBSCRIBE made of one-character filters is the worst case, about ten times its
//! wire size).

use std::alloc::System;

use bytes::BytesMut;
use cap::Cap;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use roost_core::codec::{decode, DecodeLimits, Packet, ProtocolVersion};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// The most `decode` may allocate for a connection whose limit is `max` bytes.
fn budget(max: u32) -> usize {
    16 * max as usize + 4096
}

fn decode_capped(buf: &mut BytesMut, limits: &DecodeLimits) -> Option<Packet> {
    let before = ALLOCATOR.allocated();
    ALLOCATOR
        .set_limit(before + budget(limits.max_packet_size))
        .expect("limit above current use");
    let out = decode(buf, limits);
    ALLOCATOR.set_limit(usize::MAX).expect("lift limit");
    out.ok().flatten()
}

/// One test function, so no other test thread allocates while the cap is lowered.
#[test]
fn decoder_allocation_budget() {
    huge_declared_length_allocates_nothing();
    worst_case_subscribe_stays_within_budget();
    arbitrary_bytes_stay_within_budget();
}

fn huge_declared_length_allocates_nothing() {
    // PUBLISH declaring 268,435,455 bytes, with a 1 KiB limit: refused from the header.
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F, 0x00][..]);
    let limits = DecodeLimits::new(ProtocolVersion::V311).with_max_packet_size(1024);
    let before = ALLOCATOR.allocated();
    ALLOCATOR.set_limit(before).expect("limit");
    let out = decode(&mut buf, &limits);
    ALLOCATOR.set_limit(usize::MAX).expect("lift limit");
    assert!(out.is_err());
    // Under the limit but incomplete: "need more", still without allocating.
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0x07][..]);
    let before = ALLOCATOR.allocated();
    ALLOCATOR.set_limit(before).expect("limit");
    let out = decode(&mut buf, &DecodeLimits::new(ProtocolVersion::V5));
    ALLOCATOR.set_limit(usize::MAX).expect("lift limit");
    assert_eq!(out, Ok(None));
}

fn worst_case_subscribe_stays_within_budget() {
    // SUBSCRIBE with as many one-character filters as fit in 4 KiB.
    let max = 4096u32;
    let filters = (max as usize - 5 - 2) / 4;
    let mut body = vec![0x00, 0x01];
    for _ in 0..filters {
        body.extend_from_slice(&[0x00, 0x01, b'a', 0x01]);
    }
    let mut wire = vec![0x82];
    let mut len = body.len();
    loop {
        let mut byte = (len & 0x7F) as u8;
        len >>= 7;
        if len > 0 {
            byte |= 0x80;
        }
        wire.push(byte);
        if len == 0 {
            break;
        }
    }
    wire.extend_from_slice(&body);
    let mut buf = BytesMut::from(&wire[..]);
    let limits = DecodeLimits::new(ProtocolVersion::V311).with_max_packet_size(max);
    let Some(Packet::Subscribe(s)) = decode_capped(&mut buf, &limits) else {
        panic!("expected a SUBSCRIBE")
    };
    assert_eq!(s.filters.len(), filters);
}

fn arbitrary_bytes_stay_within_budget() {
    let mut runner = TestRunner::new(Config::with_cases(3000));
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..2048),
        3u8..=5,
        2u32..2048,
    );
    runner
        .run(&strategy, |(bytes, level, max)| {
            let version = match level {
                3 => ProtocolVersion::V31,
                4 => ProtocolVersion::V311,
                _ => ProtocolVersion::V5,
            };
            let mut buf = BytesMut::from(&bytes[..]);
            let limits = DecodeLimits::new(version).with_max_packet_size(max);
            // Decode until the buffer is used up, an error, or "need more".
            while decode_capped(&mut buf, &limits).is_some() {}
            Ok(())
        })
        .expect("no allocation past the budget");
}
