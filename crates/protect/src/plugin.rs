//! [`PayloadProtection`]: the plugin that opens what protected devices publish and seals
//! what they receive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashMap;
use parking_lot::Mutex;
use roost_core::codec::ReasonCode;
use roost_core::plugin::{
    ClientInfo, DeliveryTransform, HookAction, Hooks, PluginState, PublishedMessage, Transformed,
};
use roost_core::{BrokerBuilder, Message};

use crate::envelope::{self, Direction, Header, OpenError, NONCE_LEN};
use crate::keys::KeyProvider;

/// The name of the plugin's state in the broker's storage.
pub const STATE_NAME: &str = "payload-protection";

/// Outbound sequence numbers reserved in storage at a time: a restart continues after the
/// last reservation, so a number is never used twice even if the broker crashed.
const RESERVE: u64 = 1024;

/// Which name a device's keys are filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeviceName {
    /// The MQTT Client Identifier (the default).
    #[default]
    ClientId,
    /// The user name the authenticators vouched for ([`Identity::username`]); a client
    /// without one has no keys.
    ///
    /// [`Identity::username`]: roost_core::plugin::Identity::username
    Username,
}

/// What the plugin has done so far, for logs, tests and `$SYS`-style reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProtectionStats {
    /// Envelopes (publishes and wills) verified, decrypted and let through.
    pub opened: u64,
    /// Deliveries sealed for a protected subscriber.
    pub sealed: u64,
    /// Refused: not an envelope (0x99).
    pub refused_malformed: u64,
    /// Refused: the tag did not verify (tampered, wrong topic or key) (0x99).
    pub refused_bad_tag: u64,
    /// Refused: a sequence number not above the device's last one (0x99).
    pub refused_replay: u64,
    /// Refused: the device has no key of that id, or no key at all (0x87).
    pub refused_unknown_key: u64,
    /// Deliveries withheld from a protected subscriber with no key to seal them under.
    pub withheld: u64,
}

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    sealed: AtomicU64,
    refused_malformed: AtomicU64,
    refused_bad_tag: AtomicU64,
    refused_replay: AtomicU64,
    refused_unknown_key: AtomicU64,
    withheld: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The next outbound sequence number of a device and how far storage has reserved.
#[derive(Debug, Clone, Copy)]
struct Outbound {
    next: u64,
    reserved: u64,
}

/// Payload protection for devices that cannot run TLS.
///
/// A protected client publishes sealed envelopes (see the [crate docs](crate)); the plugin
/// verifies and decrypts each one before it is routed, so subscribers see plaintext, and
/// refuses what does not verify: not an envelope, a bad tag (tampered, another topic, the
/// wrong key) or a sequence number not above the device's last one are refused with 0x99
/// Payload format invalid, an unknown key with 0x87 Not authorized (v5 PUBACK/PUBREC;
/// 3.1.1: acknowledged, not routed). A protected client's will is checked the same way at
/// CONNECT (refused: CONNACK 0x99 / 0x87). What a protected client receives is sealed
/// under its own key with a fresh nonce and the next outbound sequence number; everyone else
/// receives plaintext.
///
/// Protected clients: every client on a listener named with
/// [`protect_listener`](Self::protect_listener), and (unless
/// [`known_devices`](Self::known_devices) turns it off) every client whose device name
/// ([`DeviceName`]) has a key, wherever it connects.
///
/// The last accepted sequence number per device, and the outbound reservation, live in the
/// broker's storage ([`PluginState`] named [`STATE_NAME`]), so a replay is refused after a
/// restart too; each one is stored before the message it admits is routed.
///
/// ```
/// use roost::protect::{KeyFile, PayloadProtection};
/// use std::sync::Arc;
///
/// let keys = KeyFile::parse("sensor-1 1 aes-128-gcm 000102030405060708090a0b0c0d0e0f\n")
///     .expect("key file");
/// let protection = PayloadProtection::new(Arc::new(keys)).protect_listener("devices");
/// let builder = protection.install(roost::Broker::builder());
/// # drop(builder);
/// ```
#[derive(Clone)]
pub struct PayloadProtection {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Arc<dyn KeyProvider>,
    listeners: Vec<String>,
    known_devices: bool,
    device_name: DeviceName,
    state: PluginState,
    /// Held while a device's inbound sequence number is compared and advanced.
    inbound: Mutex<()>,
    outbound: Mutex<HashMap<String, Outbound>>,
    counters: Counters,
}

impl std::fmt::Debug for PayloadProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadProtection")
            .field("listeners", &self.inner.listeners)
            .field("known_devices", &self.inner.known_devices)
            .field("device_name", &self.inner.device_name)
            .finish_non_exhaustive()
    }
}

impl PayloadProtection {
    /// Protection with keys from `keys`: clients whose Client Identifier has a key are
    /// protected.
    pub fn new(keys: Arc<dyn KeyProvider>) -> Self {
        Self::with_parts(keys, Vec::new(), true, DeviceName::ClientId)
    }

    fn with_parts(
        keys: Arc<dyn KeyProvider>,
        listeners: Vec<String>,
        known_devices: bool,
        device_name: DeviceName,
    ) -> Self {
        #[allow(clippy::expect_used)] // a constant, valid name
        let state = PluginState::new(STATE_NAME).expect("a valid state name");
        Self {
            inner: Arc::new(Inner {
                keys,
                listeners,
                known_devices,
                device_name,
                state,
                inbound: Mutex::new(()),
                outbound: Mutex::default(),
                counters: Counters::default(),
            }),
        }
    }

    fn rebuilt(self, f: impl FnOnce(&mut Vec<String>, &mut bool, &mut DeviceName)) -> Self {
        let i = &self.inner;
        let (mut listeners, mut known, mut name) =
            (i.listeners.clone(), i.known_devices, i.device_name);
        f(&mut listeners, &mut known, &mut name);
        Self::with_parts(Arc::clone(&i.keys), listeners, known, name)
    }

    /// Protects every client of the listener named `name`: one without keys can neither
    /// publish (0x87) nor receive anything.
    #[must_use]
    pub fn protect_listener(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.rebuilt(|l, _, _| l.push(name))
    }

    /// Whether a client whose device name has a key is protected wherever it connects
    /// (default true). Off, only the listeners named with
    /// [`protect_listener`](Self::protect_listener) are.
    #[must_use]
    pub fn known_devices(self, on: bool) -> Self {
        self.rebuilt(|_, k, _| *k = on)
    }

    /// Which name a device's keys are filed under (default: its Client Identifier).
    #[must_use]
    pub fn device_name(self, name: DeviceName) -> Self {
        self.rebuilt(|_, _, n| *n = name)
    }

    /// Registers the plugin on `builder`: its hooks (inbound), its delivery transform
    /// (outbound) and its state (replay windows in the broker's storage).
    pub fn install(&self, builder: BrokerBuilder) -> BrokerBuilder {
        builder
            .hooks(Arc::new(self.clone()))
            .delivery_transform(Arc::new(self.clone()))
            .plugin_state(self.inner.state.clone())
    }

    /// What the plugin has done so far.
    pub fn stats(&self) -> ProtectionStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProtectionStats {
            opened: get(&c.opened),
            sealed: get(&c.sealed),
            refused_malformed: get(&c.refused_malformed),
            refused_bad_tag: get(&c.refused_bad_tag),
            refused_replay: get(&c.refused_replay),
            refused_unknown_key: get(&c.refused_unknown_key),
            withheld: get(&c.withheld),
        }
    }

    /// The last sequence number accepted from `device` (0: none yet).
    pub fn last_inbound_seq(&self, device: &str) -> u64 {
        read_u64(&self.inner.state, &state_key("up", device))
    }

    /// The device name of `client`, if it is protected (`Some(None)`: protected, but it
    /// has no device name, so no key).
    fn protected<'c>(&self, client: &'c ClientInfo) -> Option<Option<&'c str>> {
        let i = &self.inner;
        let name = match i.device_name {
            DeviceName::ClientId => Some(&*client.client_id),
            DeviceName::Username => client.identity.username.as_deref(),
        };
        let on_listener = i.listeners.iter().any(|l| **l == *client.listener);
        let known = i.known_devices && name.is_some_and(|n| i.keys.knows(n));
        (on_listener || known).then_some(name)
    }

    /// Verifies and decrypts a protected device's message; the plaintext replaces the
    /// envelope.
    fn open(&self, device: Option<&str>, message: &mut PublishedMessage) -> HookAction {
        let i = &self.inner;
        let c = &i.counters;
        let refuse = |counter: &AtomicU64, code: ReasonCode, why: &str| {
            inc(counter);
            // Debug-formatted: the topic is the client's text, escaped so it cannot break the line.
            tracing::info!(device = ?device.unwrap_or(""), topic = ?message.topic.as_str(), why, "protected payload refused");
            HookAction::Refuse(code)
        };
        let header = match envelope::peek(&message.payload) {
            Ok(h) => h,
            Err(_) => {
                return refuse(
                    &c.refused_malformed,
                    ReasonCode::PayloadFormatInvalid,
                    "not an envelope",
                )
            }
        };
        // A protected client without a device name has no key either.
        let Some((device, key)) = device.and_then(|d| Some((d, i.keys.key(d, header.key_id)?)))
        else {
            return refuse(
                &c.refused_unknown_key,
                ReasonCode::NotAuthorized,
                "unknown key",
            );
        };
        let plaintext = match envelope::open(
            &key,
            Direction::Up,
            message.topic.as_str(),
            &message.payload,
        ) {
            Ok(p) => p,
            Err(OpenError::Malformed) => {
                return refuse(
                    &c.refused_malformed,
                    ReasonCode::PayloadFormatInvalid,
                    "not an envelope",
                )
            }
            Err(OpenError::BadTag) => {
                return refuse(
                    &c.refused_bad_tag,
                    ReasonCode::PayloadFormatInvalid,
                    "authentication failed",
                )
            }
        };
        // Only a verified sequence number moves the window, and it is stored before the
        // message is routed (see `PluginState`).
        {
            let _guard = i.inbound.lock();
            let key = state_key("up", device);
            let last = read_u64(&i.state, &key);
            if header.seq <= last {
                drop(_guard);
                return refuse(
                    &c.refused_replay,
                    ReasonCode::PayloadFormatInvalid,
                    "replayed or stale sequence number",
                );
            }
            i.state.put(&key, &header.seq.to_be_bytes());
        }
        inc(&c.opened);
        message.payload = Bytes::from(plaintext);
        HookAction::Continue
    }

    /// The next outbound sequence number for `device`, reserving more in storage when the
    /// reservation runs out.
    fn next_outbound(&self, device: &str) -> u64 {
        let i = &self.inner;
        let mut map = i.outbound.lock();
        let out = map.entry_ref(device).or_insert_with(|| {
            let reserved = read_u64(&i.state, &state_key("down", device));
            Outbound {
                next: reserved.max(1),
                reserved,
            }
        });
        if out.next >= out.reserved {
            out.reserved = out.next.saturating_add(RESERVE);
            i.state
                .put(&state_key("down", device), &out.reserved.to_be_bytes());
        }
        let seq = out.next;
        out.next += 1;
        seq
    }
}

fn state_key(direction: &str, device: &str) -> Vec<u8> {
    format!("{direction}/{device}").into_bytes()
}

fn read_u64(state: &PluginState, key: &[u8]) -> u64 {
    state.with(key, |v| {
        v.and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes)
    })
}

impl Hooks for PayloadProtection {
    fn message_published(
        &self,
        client: Option<&ClientInfo>,
        message: &mut PublishedMessage,
    ) -> HookAction {
        // The broker's own messages, and wills (opened at CONNECT), are plaintext already.
        let Some(client) = client else {
            return HookAction::Continue;
        };
        if message.will {
            return HookAction::Continue;
        }
        match self.protected(client) {
            Some(device) => self.open(device, message),
            None => HookAction::Continue,
        }
    }

    fn will_received(&self, client: &ClientInfo, will: &mut PublishedMessage) -> HookAction {
        match self.protected(client) {
            Some(device) => self.open(device, will),
            None => HookAction::Continue,
        }
    }
}

impl DeliveryTransform for PayloadProtection {
    fn transform(&self, client: &ClientInfo, message: &Message) -> Transformed {
        let Some(device) = self.protected(client) else {
            return Transformed::Unchanged;
        };
        let c = &self.inner.counters;
        let withheld = || {
            inc(&c.withheld);
            tracing::debug!(device = device.unwrap_or(""), topic = %message.topic, "no key to seal a delivery: withheld");
            Transformed::Withheld
        };
        let Some((device, (key_id, key))) =
            device.and_then(|d| Some((d, self.inner.keys.sending_key(d)?)))
        else {
            return withheld();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        let header = Header {
            key_id,
            seq: self.next_outbound(device),
            nonce,
        };
        let Some(sealed) = envelope::seal(
            &key,
            Direction::Down,
            &header,
            message.topic.as_str(),
            &message.payload,
        ) else {
            return withheld();
        };
        inc(&c.sealed);
        let mut properties = message.properties.clone();
        // The payload is no longer the UTF-8 text it may have been.
        properties.payload_format_indicator = None;
        Transformed::Replaced {
            payload: Bytes::from(sealed),
            properties,
        }
    }
}
