//! # Roost
//!
//! An MQTT broker that applications embed in their own process, implementing MQTT 3.1, 3.1.1
//! and 5.0.
//!
//! This facade crate re-exports the public API of the workspace crates:
//!
//! * [`codec`]: packets of every protocol level, incremental zero-copy decoding and encoding.
//! * [`topic`]: validated topic names and topic filters.
//!
//! ```
//! use bytes::BytesMut;
//! use roost::codec::{decode, DecodeLimits, Packet, ProtocolVersion};
//!
//! // A PINGREQ as it arrives from a 3.1.1 client.
//! let mut buf = BytesMut::from(&[0xC0u8, 0x00][..]);
//! let limits = DecodeLimits::new(ProtocolVersion::V311);
//! let packet = decode(&mut buf, &limits).expect("valid packet");
//! assert_eq!(packet, Some(Packet::PingReq));
//! ```

pub use roost_core::{codec, topic};
