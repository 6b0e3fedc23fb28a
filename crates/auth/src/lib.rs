//! Roost's built-in authentication and authorization providers.
//!
//! The plugin traits live in `roost_core::plugin`; these implement them:
//!
//! * [`AllowAll`]: lets every client in and allows everything. An explicit choice, for tests
//!   and loopback-only brokers.
//! * [`StaticUsers`]: a table of users whose passwords are kept as PBKDF2-HMAC-SHA512 hashes.
//! * [`PasswordFile`]: Mosquitto's password file, as written by `mosquitto_passwd` (`$6$`
//!   salted SHA-512 and `$7$` PBKDF2-SHA512 entries), reloadable without dropping
//!   connections.
//! * [`CertificateIdentity`]: the user named by a verified TLS client certificate (Common
//!   Name or Subject Alternative Name), for mutual TLS.
//! * [`AclFile`]: Mosquitto's ACL file (`user`, `topic [read|write|readwrite|deny]`,
//!   `pattern` with `%c` and `%u`), reloadable.
//!
//! Authenticators answer "defer" for clients they know nothing about (no user name, or a
//! user not in their table), so several can be stacked; a wrong password is a denial.
//!
//! Features: `files` (the users table, password and ACL files, with their hashing crates)
//! and `certificates` (`CertificateIdentity`, with an X.509 parser); both on by default.

#[cfg(feature = "files")]
mod acl;
mod allow_all;
#[cfg(feature = "certificates")]
mod certificate;
mod error;
#[cfg(feature = "files")]
mod password;
#[cfg(feature = "files")]
mod users;

#[cfg(feature = "files")]
pub use acl::{Access, AclFile, AclRules};
pub use allow_all::AllowAll;
#[cfg(feature = "certificates")]
pub use certificate::{CertificateIdentity, CertificateName};
pub use error::AuthError;
#[cfg(feature = "files")]
pub use password::PasswordHash;
#[cfg(feature = "files")]
pub use users::{PasswordFile, StaticUsers};
