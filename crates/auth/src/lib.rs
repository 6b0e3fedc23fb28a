//! Roost's built-in authentication and authorization providers.
//!
//! The plugin traits (`Authenticator`, `Authorizer`, `Hooks`) live in `roost-core`; this crate
//! will implement them: allow-all (an explicit choice), a static table of users with hashed
//! passwords, Mosquitto's password and ACL file formats, and identities taken from TLS client
//! certificates.
