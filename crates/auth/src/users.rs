//! Users with passwords: a static table built in code ([`StaticUsers`]) and Mosquitto's
//! password file ([`PasswordFile`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use roost_core::codec::ReasonCode;
use roost_core::plugin::{AuthOutcome, Authenticator, ConnectInfo, Identity};

use crate::{AuthError, PasswordHash};

/// User names and password hashes.
#[derive(Debug, Clone, Default)]
struct UserTable {
    users: HashMap<String, PasswordHash>,
    /// [`UserTable::dummy`], made once per table (it scans every entry).
    dummy: std::sync::OnceLock<PasswordHash>,
}

/// Password checks in progress at once, at most: one per core. PBKDF2 is slow on purpose,
/// and a burst of guesses must not take every blocking thread (or every core) from the
/// broker; further checks wait their turn without using CPU.
#[derive(Debug, Clone)]
struct Verifier {
    permits: Arc<tokio::sync::Semaphore>,
}

impl Default for Verifier {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier {
            permits: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }
}

impl UserTable {
    /// A hash that costs what the table's costliest entry costs to verify, for clients whose
    /// user name is unknown: they wait as long as a known user with a wrong password, so the
    /// time taken does not tell which names exist.
    fn dummy(&self) -> &PasswordHash {
        self.dummy.get_or_init(|| self.make_dummy())
    }

    fn make_dummy(&self) -> PasswordHash {
        let costliest = self
            .users
            .values()
            .max_by_key(|h| match h {
                PasswordHash::Pbkdf2Sha512 { iterations, .. } => *iterations,
                PasswordHash::Sha512 { .. } => 0,
            })
            .cloned();
        match costliest {
            Some(PasswordHash::Pbkdf2Sha512 {
                iterations, hash, ..
            }) => PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt: vec![0x5a; 16],
                hash: vec![0; hash.len()],
            },
            _ => PasswordHash::Sha512 {
                salt: vec![0x5a; 16],
                hash: vec![0; 64],
            },
        }
    }

    /// Checks a client against the table: defer for clients without a user name or with one
    /// the table does not know (after verifying a dummy hash, so that takes as long as a
    /// wrong password), allow on the right password, deny otherwise.
    async fn check(
        table: Arc<UserTable>,
        verifier: &Verifier,
        client: &ConnectInfo,
    ) -> AuthOutcome {
        let Some(user) = client.username.as_ref().map(|u| u.to_string()) else {
            return AuthOutcome::Defer;
        };
        let known = table.users.contains_key(&user);
        let password = client.password.clone().unwrap_or_default();
        let Ok(_permit) = verifier.permits.acquire().await else {
            return AuthOutcome::Deny(ReasonCode::ServerUnavailable);
        };
        let name = user.clone();
        // PBKDF2 is deliberately slow: verify off the async workers.
        let ok = tokio::task::spawn_blocking(move || match table.users.get(&name) {
            Some(hash) => hash.verify(&password),
            None => {
                let _ = table.dummy().verify(&password);
                false
            }
        })
        .await
        .unwrap_or(false);
        match (known, ok && client.password.is_some()) {
            (false, _) => AuthOutcome::Defer,
            (true, true) => AuthOutcome::Allow(Identity::user(user), None),
            (true, false) => AuthOutcome::Deny(ReasonCode::BadUserNameOrPassword),
        }
    }
}

/// A fixed table of users, built in code. Passwords are hashed (PBKDF2-HMAC-SHA512 with a
/// random salt) as they are added; the plain text is not kept.
///
/// ```
/// use roost::auth::StaticUsers;
/// let users = StaticUsers::new()
///     .with_user("sensor-1", "correct horse")?
///     .with_user("dashboard", "battery staple")?;
/// assert_eq!(users.len(), 2);
/// # Ok::<(), roost::auth::AuthError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticUsers {
    table: Arc<UserTable>,
    verifier: Verifier,
}

impl StaticUsers {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a user, hashing the password.
    pub fn with_user(self, name: &str, password: &str) -> Result<Self, AuthError> {
        Ok(self.with_hash(name, PasswordHash::new(password)?))
    }

    /// Adds (or replaces) a user with an already hashed password.
    pub fn with_hash(mut self, name: &str, hash: PasswordHash) -> Self {
        let table = Arc::make_mut(&mut self.table);
        table.users.insert(name.to_string(), hash);
        table.dummy = std::sync::OnceLock::new();
        self
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.table.users.len()
    }

    /// True when there are no users.
    pub fn is_empty(&self) -> bool {
        self.table.users.is_empty()
    }
}

#[async_trait]
impl Authenticator for StaticUsers {
    async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
        UserTable::check(Arc::clone(&self.table), &self.verifier, client).await
    }
}

/// Mosquitto's password file: one `user:hash` line per user, as written by
/// `mosquitto_passwd` (`$6$` and `$7$` hashes). Blank lines and lines starting with `#` are
/// ignored.
///
/// [`PasswordFile::reload`] re-reads the file; connected clients stay connected, and new
/// connections are checked against the new contents. A file that fails to load leaves the
/// previous contents in force.
#[derive(Debug)]
pub struct PasswordFile {
    path: PathBuf,
    table: RwLock<Arc<UserTable>>,
    verifier: Verifier,
}

impl PasswordFile {
    /// Loads `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref().to_path_buf();
        let table = Self::read(&path)?;
        Ok(Self {
            path,
            table: RwLock::new(Arc::new(table)),
            verifier: Verifier::default(),
        })
    }

    /// Re-reads the file.
    pub fn reload(&self) -> Result<(), AuthError> {
        let table = Self::read(&self.path)?;
        *self.table.write() = Arc::new(table);
        Ok(())
    }

    /// Number of users loaded.
    pub fn len(&self) -> usize {
        self.table.read().users.len()
    }

    /// True when no user is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(path: &Path) -> Result<UserTable, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut table = UserTable::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parse = |reason| AuthError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| parse("expected user:hash"))?;
            if user.is_empty() {
                return Err(parse("empty user name"));
            }
            let hash = PasswordHash::parse(hash).ok_or_else(|| {
                parse("unsupported hash (expected $6$ or $7$; plain text is not accepted)")
            })?;
            table.users.insert(user.to_string(), hash);
        }
        Ok(table)
    }
}

#[async_trait]
impl Authenticator for PasswordFile {
    async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
        let table = Arc::clone(&self.table.read());
        UserTable::check(table, &self.verifier, client).await
    }
}
