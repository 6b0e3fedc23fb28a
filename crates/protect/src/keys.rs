//! Device keys: the [`KeyProvider`] trait the plugin asks, the key file format
//! ([`KeyFile`]) and a reloadable holder ([`Keys`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use ccm::consts::{U12, U16};
use hashbrown::HashMap;
use parking_lot::RwLock;

type Aes128Ccm = ccm::Ccm<aes::Aes128, U16, U12>;
type Aes256Ccm = ccm::Ccm<aes::Aes256, U16, U12>;

/// An AEAD a device key is used with. Every one takes a 12-byte nonce and gives a 16-byte
/// tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-128 in Galois/Counter Mode (`aes-128-gcm`).
    Aes128Gcm,
    /// AES-256 in Galois/Counter Mode (`aes-256-gcm`).
    Aes256Gcm,
    /// AES-128 in CCM mode (`aes-128-ccm`), for hardware that accelerates only CCM.
    Aes128Ccm,
    /// AES-256 in CCM mode (`aes-256-ccm`).
    Aes256Ccm,
}

impl Algorithm {
    /// Its name in the key file.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Aes128Gcm => "aes-128-gcm",
            Algorithm::Aes256Gcm => "aes-256-gcm",
            Algorithm::Aes128Ccm => "aes-128-ccm",
            Algorithm::Aes256Ccm => "aes-256-ccm",
        }
    }

    /// Bytes of its key.
    pub fn key_len(self) -> usize {
        match self {
            Algorithm::Aes128Gcm | Algorithm::Aes128Ccm => 16,
            Algorithm::Aes256Gcm | Algorithm::Aes256Ccm => 32,
        }
    }

    /// The algorithm of a key file name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Algorithm::Aes128Gcm,
            Algorithm::Aes256Gcm,
            Algorithm::Aes128Ccm,
            Algorithm::Aes256Ccm,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

enum Cipher {
    Aes128Gcm(Box<Aes128Gcm>),
    Aes256Gcm(Box<Aes256Gcm>),
    Aes128Ccm(Box<Aes128Ccm>),
    Aes256Ccm(Box<Aes256Ccm>),
}

/// One device key, ready to use (its AES key schedule made once). Cheap to clone; never
/// shows its bytes in `Debug`; the key schedule is wiped when the last clone goes.
#[derive(Clone)]
pub struct DeviceKey {
    algorithm: Algorithm,
    cipher: Arc<Cipher>,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A key's bytes do not fit its algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {algorithm} key is {expected} bytes, got {got}", algorithm = .algorithm.name())]
pub struct KeyLengthError {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Bytes it needs.
    pub expected: usize,
    /// Bytes given.
    pub got: usize,
}

impl DeviceKey {
    /// A key for `algorithm` from its bytes.
    pub fn new(algorithm: Algorithm, key: &[u8]) -> Result<Self, KeyLengthError> {
        let wrong = || KeyLengthError {
            algorithm,
            expected: algorithm.key_len(),
            got: key.len(),
        };
        if key.len() != algorithm.key_len() {
            return Err(wrong());
        }
        let cipher = match algorithm {
            Algorithm::Aes128Gcm => Cipher::Aes128Gcm(Box::new(
                Aes128Gcm::new_from_slice(key).map_err(|_| wrong())?,
            )),
            Algorithm::Aes256Gcm => Cipher::Aes256Gcm(Box::new(
                Aes256Gcm::new_from_slice(key).map_err(|_| wrong())?,
            )),
            Algorithm::Aes128Ccm => Cipher::Aes128Ccm(Box::new(
                Aes128Ccm::new_from_slice(key).map_err(|_| wrong())?,
            )),
            Algorithm::Aes256Ccm => Cipher::Aes256Ccm(Box::new(
                Aes256Ccm::new_from_slice(key).map_err(|_| wrong())?,
            )),
        };
        Ok(Self {
            algorithm,
            cipher: Arc::new(cipher),
        })
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Encrypts `buffer` in place; returns the tag (`None` past the mode's length limit:
    /// GCM 64 GiB, CCM with a 12-byte nonce 16 MiB − 1).
    pub(crate) fn seal_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Option<[u8; 16]> {
        let n = GenericArray::from_slice(nonce);
        let tag = match &*self.cipher {
            Cipher::Aes128Gcm(c) => c.encrypt_in_place_detached(n, aad, buffer),
            Cipher::Aes256Gcm(c) => c.encrypt_in_place_detached(n, aad, buffer),
            Cipher::Aes128Ccm(c) => c.encrypt_in_place_detached(n, aad, buffer),
            Cipher::Aes256Ccm(c) => c.encrypt_in_place_detached(n, aad, buffer),
        };
        tag.ok().map(Into::into)
    }

    /// Verifies and decrypts `buffer` in place.
    pub(crate) fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), ()> {
        let n = GenericArray::from_slice(nonce);
        let t = GenericArray::from_slice(tag);
        let r = match &*self.cipher {
            Cipher::Aes128Gcm(c) => c.decrypt_in_place_detached(n, aad, buffer, t),
            Cipher::Aes256Gcm(c) => c.decrypt_in_place_detached(n, aad, buffer, t),
            Cipher::Aes128Ccm(c) => c.decrypt_in_place_detached(n, aad, buffer, t),
            Cipher::Aes256Ccm(c) => c.decrypt_in_place_detached(n, aad, buffer, t),
        };
        r.map_err(|_| ())
    }
}

/// Where the plugin finds device keys. Implement it for keys kept elsewhere (a database, a
/// secure element, a secrets service); [`KeyFile`] and [`Keys`] implement it for the key
/// file. Called inline on the publish and delivery paths: answers must come from memory.
pub trait KeyProvider: Send + Sync + 'static {
    /// Key `key_id` of `device`, if it has one: what an inbound envelope names.
    fn key(&self, device: &str, key_id: u8) -> Option<DeviceKey>;
    /// The key the broker seals with for `device`, with its id (`None`: the device has no
    /// key, and nothing is sent to it).
    fn sending_key(&self, device: &str) -> Option<(u8, DeviceKey)>;
    /// True if `device` has at least one key.
    fn knows(&self, device: &str) -> bool {
        self.sending_key(device).is_some()
    }
}

/// Why a key file was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `device key-id algorithm hex-key`.
    #[error("key file line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The keys of a key file, by device. The format, one key per line:
///
/// ```text
/// # device     key-id  algorithm     key (hex)
/// sensor-1     1       aes-128-gcm   000102030405060708090a0b0c0d0e0f
/// sensor-1     2       aes-256-ccm   <64 hex digits>
/// ```
///
/// Blank lines and lines starting with `#` are ignored. A device may have several keys
/// (ids 0–255, unique per device); it may seal with any of them, and the broker seals
/// what it sends to the device with the one listed last. Rotation without downtime:
/// give the device the new key, add its line after the old one and reload (the broker now
/// sends with the new key and takes both), switch the device to the new key, then remove
/// the old line and reload.
#[derive(Clone, Default)]
pub struct KeyFile {
    devices: HashMap<String, Vec<(u8, DeviceKey)>>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("devices", &self.devices.len())
            .finish()
    }
}

impl KeyFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses key file text.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut devices: HashMap<String, Vec<(u8, DeviceKey)>> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| KeyFileError::Line {
                line: i + 1,
                reason,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, id, alg, hex] = fields[..] else {
                return Err(bad(format!(
                    "expected 4 fields (device key-id algorithm hex-key), found {}",
                    fields.len()
                )));
            };
            let id: u8 = id
                .parse()
                .map_err(|_| bad(format!("key id {id:?} is not 0-255")))?;
            let alg = Algorithm::from_name(alg).ok_or_else(|| {
                bad(format!(
                    "unknown algorithm {alg:?} (aes-128-gcm, aes-256-gcm, aes-128-ccm, aes-256-ccm)"
                ))
            })?;
            let bytes = zeroize::Zeroizing::new(
                decode_hex(hex).ok_or_else(|| bad("the key is not hexadecimal".into()))?,
            );
            let key = DeviceKey::new(alg, &bytes).map_err(|e| bad(e.to_string()))?;
            let keys = devices.entry(device.to_string()).or_default();
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(bad(format!("device {device:?} has key id {id} twice")));
            }
            keys.push((id, key));
        }
        Ok(Self { devices })
    }

    /// Adds (or replaces) a key of `device`; it becomes the key the broker sends with.
    pub fn insert(&mut self, device: impl Into<String>, key_id: u8, key: DeviceKey) {
        let keys = self.devices.entry(device.into()).or_default();
        keys.retain(|(k, _)| *k != key_id);
        keys.push((key_id, key));
    }

    /// Devices with keys.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True if no device has a key.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl KeyProvider for KeyFile {
    fn key(&self, device: &str, key_id: u8) -> Option<DeviceKey> {
        self.devices
            .get(device)?
            .iter()
            .find(|(k, _)| *k == key_id)
            .map(|(_, key)| key.clone())
    }

    fn sending_key(&self, device: &str) -> Option<(u8, DeviceKey)> {
        self.devices.get(device)?.last().cloned()
    }

    fn knows(&self, device: &str) -> bool {
        self.devices.contains_key(device)
    }
}

/// A key file that can be reloaded while the broker runs (the broker program reloads it on
/// SIGHUP): lookups see the old keys or the new ones, never a mix, and a file that does not
/// parse leaves the old keys in force.
#[derive(Debug, Clone)]
pub struct Keys {
    path: PathBuf,
    current: Arc<RwLock<Arc<KeyFile>>>,
}

impl Keys {
    /// Loads the key file at `path`.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, KeyFileError> {
        let path = path.into();
        let file = KeyFile::load(&path)?;
        Ok(Self {
            path,
            current: Arc::new(RwLock::new(Arc::new(file))),
        })
    }

    /// Reads the file again; on success its keys replace the old ones (returns how many
    /// devices have keys), on failure the old ones stay.
    pub fn reload(&self) -> Result<usize, KeyFileError> {
        let file = KeyFile::load(&self.path)?;
        let n = file.len();
        *self.current.write() = Arc::new(file);
        Ok(n)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl KeyProvider for Keys {
    fn key(&self, device: &str, key_id: u8) -> Option<DeviceKey> {
        self.current.read().key(device, key_id)
    }

    fn sending_key(&self, device: &str) -> Option<(u8, DeviceKey)> {
        self.current.read().sending_key(device)
    }

    fn knows(&self, device: &str) -> bool {
        self.current.read().knows(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K16: &str = "000102030405060708090a0b0c0d0e0f";

    #[test]
    fn the_key_file_parses_and_the_last_key_is_the_sending_key() {
        let k32 = K16.repeat(2);
        let text = format!(
            "# comment\n\n  dev-a 1 aes-128-gcm {K16}\ndev-a 2 AES-256-CCM {k32}\ndev-b 0 aes-128-ccm {K16}\n"
        );
        let f = KeyFile::parse(&text).expect("parses");
        assert_eq!(f.len(), 2);
        assert_eq!(f.sending_key("dev-a").map(|(id, _)| id), Some(2));
        assert_eq!(
            f.key("dev-a", 1).map(|k| k.algorithm()),
            Some(Algorithm::Aes128Gcm)
        );
        assert_eq!(
            f.key("dev-a", 2).map(|k| k.algorithm()),
            Some(Algorithm::Aes256Ccm)
        );
        assert!(f.key("dev-a", 3).is_none());
        assert!(f.knows("dev-b") && !f.knows("dev-c"));
        assert!(!format!("{:?}", f.key("dev-a", 1)).contains("0001"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, want) in [
            ("a 1 aes-128-gcm", "expected 4 fields"),
            ("a 256 aes-128-gcm 00", "not 0-255"),
            ("a 1 des 00", "unknown algorithm"),
            ("a 1 aes-128-gcm zz", "not hexadecimal"),
            ("a 1 aes-128-gcm 0001", "16 bytes, got 2"),
        ] {
            let e = KeyFile::parse(&format!("# x\n{text}\n")).expect_err(text);
            let msg = e.to_string();
            assert!(
                msg.contains("line 2") && msg.contains(want),
                "{text}: {msg}"
            );
        }
        let dup = format!("a 1 aes-128-gcm {K16}\na 1 aes-128-gcm {K16}\n");
        assert!(KeyFile::parse(&dup)
            .expect_err("dup")
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn a_reload_that_fails_keeps_the_old_keys() {
        let dir = std::env::temp_dir().join(format!("roost-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("devices.keys");
        std::fs::write(&path, format!("a 1 aes-128-gcm {K16}\n")).expect("write");
        let keys = Keys::load(&path).expect("loads");
        assert!(keys.knows("a"));
        std::fs::write(&path, "broken\n").expect("write");
        assert!(keys.reload().is_err());
        assert!(keys.knows("a"), "old keys stay");
        std::fs::write(&path, format!("b 1 aes-128-gcm {K16}\n")).expect("write");
        assert_eq!(keys.reload().expect("reloads"), 1);
        assert!(keys.knows("b") && !keys.knows("a"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
