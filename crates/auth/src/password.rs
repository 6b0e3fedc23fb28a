//! Password hashes in Mosquitto's formats.
//!
//! * `$6$<salt>$<hash>`: SHA-512 of the password followed by the salt (Mosquitto 1.6 and
//!   earlier).
//! * `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 (Mosquitto 2.0's default, and what
//!   [`PasswordHash::new`] produces).
//!
//! Salt and hash are standard base64 with padding. Verification compares in constant time.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha512};

use crate::AuthError;

/// Iterations for new PBKDF2 hashes (OWASP's guidance for PBKDF2-HMAC-SHA512 is in this
/// range). Mosquitto writes 101; verification reads the count from each entry, and runs on
/// tokio's blocking pool so a slow hash never stalls connections.
const NEW_ITERATIONS: u32 = 100_000;

/// A stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        /// Salt bytes.
        salt: Vec<u8>,
        /// 64-byte digest.
        hash: Vec<u8>,
    },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// Iteration count.
        iterations: u32,
        /// Salt bytes.
        salt: Vec<u8>,
        /// Derived key.
        hash: Vec<u8>,
    },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print hash material.
        match self {
            PasswordHash::Sha512 { .. } => f.write_str("PasswordHash::Sha512(..)"),
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "PasswordHash::Pbkdf2Sha512({iterations} iterations, ..)")
            }
        }
    }
}

fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PasswordHash {
    /// Hashes `password` with PBKDF2-HMAC-SHA512 and a fresh 16-byte random salt.
    pub fn new(password: &str) -> Result<Self, AuthError> {
        let mut salt = vec![0u8; 16];
        getrandom::fill(&mut salt).map_err(|_| AuthError::Random)?;
        let hash = pbkdf2(password.as_bytes(), &salt, NEW_ITERATIONS, 64);
        Ok(PasswordHash::Pbkdf2Sha512 {
            iterations: NEW_ITERATIONS,
            salt,
            hash,
        })
    }

    /// Parses a Mosquitto hash (`$6$...` or `$7$...`); `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split('$').collect();
        let b64 = |s: &str| STANDARD.decode(s).ok();
        match parts.as_slice() {
            ["", "6", salt, hash] => Some(PasswordHash::Sha512 {
                salt: b64(salt)?,
                hash: b64(hash)?,
            }),
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations.parse().ok().filter(|&n| n > 0)?;
                Some(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt: b64(salt)?,
                    hash: b64(hash)?,
                })
            }
            _ => None,
        }
    }

    /// True if `password` matches.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                constant_time_eq(&h.finalize(), hash)
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => constant_time_eq(&pbkdf2(password, salt, *iterations, hash.len()), hash),
        }
    }
}

impl fmt::Display for PasswordHash {
    /// The Mosquitto form of the hash, as stored in a password file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_hashes_written_by_mosquitto_passwd() {
        // Made with mosquitto_passwd 2.0 (-H sha512-pbkdf2, the default, and -H sha512).
        let pbkdf2 = PasswordHash::parse(
            "$7$101$KQrdzw+fWI5S+ExQ$4pedN0Cma4cKLRew8GRnR+mVgHra3VDz93uiN2MJfHdZCaTVSfA9wXWTA6wv/WNrIFAXPoCo6H3gQLZ0ThRiVA==",
        )
        .expect("parses");
        assert!(pbkdf2.verify(b"wonderland"));
        assert!(!pbkdf2.verify(b"wonderlanD"));
        let sha = PasswordHash::parse(
            "$6$9iW1cDCIMyrCW356$CrtBnyq0ohr6eDVuUjK7+GtI9tPsDFv6pRHC/QYcdDLar6fN51eh4oJVgv11DsSpm3uWY2lKupsL5RHK7Qv7ig==",
        )
        .expect("parses");
        assert!(sha.verify(b"singer"));
        assert!(!sha.verify(b""));
    }

    #[test]
    fn new_hashes_round_trip_through_their_text_form() {
        let h = PasswordHash::new("s3cret").expect("random salt");
        let again = PasswordHash::parse(&h.to_string()).expect("parses");
        assert_eq!(again, h);
        assert!(again.verify(b"s3cret"));
        assert!(!again.verify(b"s3cre"));
        assert!(!format!("{h:?}").contains('$'), "Debug hides the hash");
    }

    #[test]
    fn rejects_other_formats() {
        for bad in [
            "plain",
            "$5$abc$def",
            "$7$0$AA==$AA==",
            "$7$x$AA==$AA==",
            "$6$!!$AA==",
        ] {
            assert_eq!(PasswordHash::parse(bad), None, "{bad}");
        }
    }
}
