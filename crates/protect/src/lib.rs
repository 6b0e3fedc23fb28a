//! Payload protection for devices that cannot run TLS: devices seal their payloads with
//! AES-GCM or AES-CCM under a key they share with the broker and send them over plain TCP;
//! the broker (this plugin, [`PayloadProtection`]) verifies and decrypts them before they
//! are routed, and seals what a protected device receives under that device's key.
//! Subscribers on TLS or in-process see plaintext.
//!
//! This is a plugin on Roost's public plugin API: [`Hooks`](roost_core::plugin::Hooks)
//! (inbound and wills), [`DeliveryTransform`](roost_core::plugin::DeliveryTransform)
//! (outbound, per subscriber) and [`PluginState`](roost_core::plugin::PluginState) (the
//! replay windows, kept in the broker's storage). The cryptography is RustCrypto's
//! (`aes-gcm`, `ccm`, `aes`).
//!
//! # The envelope
//! A protected payload is an [`envelope`]:
//!
//! ```text
//! version (1) = 0x01 | key id (1) | sequence number (8, big-endian) | nonce (12)
//!   | ciphertext (n) | tag (16)
//! ```
//!
//! sealed with the device's key `key id` over the associated data
//! `direction (1) | the 22 header bytes | topic name (UTF-8)`, where direction is 0x01 from
//! device to broker and 0x02 from broker to device. The sequence number grows with every
//! message in one direction (the broker refuses one not above the last it accepted from the
//! device; a device should do the same with the broker's); a nonce is never used twice
//! under one key. The README's "Payload protection" section is the full specification,
//! with what a device must do; `scripts/protected_device.py` is a reference device.
//!
//! # Keys
//! A [`KeyProvider`] gives the plugin device keys: [`KeyFile`] parses the key file format,
//! [`Keys`] holds one that can be reloaded while the broker runs (the broker program
//! reloads on SIGHUP); applications that keep keys elsewhere implement the trait.

mod keys;
mod plugin;

pub mod envelope;

pub use keys::{Algorithm, DeviceKey, KeyFile, KeyFileError, KeyLengthError, KeyProvider, Keys};
pub use plugin::{DeviceName, PayloadProtection, ProtectionStats, STATE_NAME};
