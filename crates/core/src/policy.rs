//! Trust policies that are broker-wide choices rather than plugins: who a persistent session
//! belongs to, and whether clients may connect without being authenticated.
//!
//! # Session ownership
//! A persistent session belongs to the identity that created it (the
//! [`Identity::username`](crate::plugin::Identity::username) its authenticators vouched
//! for). A CONNECT with that client identifier from another identity never resumes it: the
//! messages queued for one user must not reach another who merely knows the client id.
//! [`SessionOwnership`] chooses what happens instead.
//!
//! # Anonymous access
//! [`AnonymousAccess`] decides whether a client that no authenticator vouched for may
//! connect. The default is safe for the deployment the broker is built for: anonymous
//! clients are let in only when nothing suggests the broker is reachable by strangers or
//! meant to check credentials (see [`AnonymousAccess::Auto`]).

use std::fmt;

/// Client identifiers under this prefix name bridges' local sessions (see
/// [`crate::bridge`]): only a bridge's own link may use one.
pub(crate) const BRIDGE_CLIENT_PREFIX: &str = "$bridge/";

/// True for a client identifier that only a bridge's own link may use.
pub(crate) fn is_bridge_client_id(client_id: &str) -> bool {
    client_id.starts_with(BRIDGE_CLIENT_PREFIX)
}

/// What happens when a client connects with the client identifier of a session that belongs
/// to another identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionOwnership {
    /// The old session is discarded (its queue dropped, its will published, its connection
    /// closed with 0x8E Session taken over) and the new client starts a fresh session
    /// (Session Present 0). Logged, and counted in `sessions_ownership_discarded`. This is
    /// the MQTT standard's rule that a client identifier names one session, with the
    /// guarantee that nothing crosses from one identity to another.
    #[default]
    Discard,
    /// The CONNECT is refused with 0x87 Not authorized (3.1.1: return code 0x05) and the
    /// session, with any connection holding it, is left alone. Counted in
    /// `sessions_ownership_refused`. Use it when client identifiers are assigned to users
    /// and one user must not be able to end another's session.
    Refuse,
}

/// Whether clients that no authenticator vouched for may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnonymousAccess {
    /// Decided at start. Anonymous access is on only when every one of these holds: no
    /// authenticator is registered, every network listener is bound to a loopback address,
    /// no listener requires the PROXY protocol (its clients come from elsewhere), no TLS
    /// listener asks for client certificates, and every custom [`Listener`](crate::Listener)
    /// says it is [`local_only`](crate::Listener::local_only) (of others the broker cannot
    /// tell where their clients come from). The start-up log states the outcome and the
    /// reason.
    #[default]
    Auto,
    /// Clients without credentials are let in when no authenticator accepts or refuses
    /// them. With authenticators registered, this applies to clients that send no user
    /// name and that every authenticator deferred.
    Allow,
    /// Only clients an authenticator accepted may connect.
    Deny,
}

/// The anonymous-access decision the broker took at start, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AnonymousDecision {
    pub(crate) allowed: bool,
    pub(crate) why: &'static str,
}

impl fmt::Display for AnonymousDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.allowed { "allowed" } else { "refused" };
        write!(f, "anonymous clients {what}: {}", self.why)
    }
}

/// What [`AnonymousAccess::Auto`] looks at.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Exposure {
    pub(crate) authenticators: bool,
    pub(crate) non_loopback_listener: bool,
    pub(crate) proxy_protocol: bool,
    pub(crate) client_certificates: bool,
    pub(crate) custom_listener: bool,
}

impl AnonymousAccess {
    /// The decision for a broker exposed as `exposure` says. Pure, so the rule is tested
    /// without sockets.
    pub(crate) fn decide(self, exposure: Exposure) -> AnonymousDecision {
        let (allowed, why) = match self {
            AnonymousAccess::Allow => (true, "explicitly allowed"),
            AnonymousAccess::Deny => (false, "explicitly refused"),
            AnonymousAccess::Auto if exposure.authenticators => {
                (false, "authenticators are registered")
            }
            AnonymousAccess::Auto if exposure.non_loopback_listener => {
                (false, "a listener is not on a loopback address")
            }
            AnonymousAccess::Auto if exposure.proxy_protocol => {
                (false, "a listener takes clients through the PROXY protocol")
            }
            AnonymousAccess::Auto if exposure.client_certificates => {
                (false, "a TLS listener asks for client certificates")
            }
            AnonymousAccess::Auto if exposure.custom_listener => (
                false,
                "a custom listener is not local-only (its clients' origin is unknown)",
            ),
            AnonymousAccess::Auto => (
                true,
                "no authenticator, and every listener is on a loopback address",
            ),
        };
        AnonymousDecision { allowed, why }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 §1.3: anything that suggests strangers or credentials turns anonymous
    /// access off unless it is explicitly on.
    #[test]
    fn auto_allows_anonymous_only_for_a_closed_loopback_broker() {
        let closed = Exposure::default();
        assert!(AnonymousAccess::Auto.decide(closed).allowed);
        let exposed = [
            Exposure {
                authenticators: true,
                ..closed
            },
            Exposure {
                non_loopback_listener: true,
                ..closed
            },
            Exposure {
                proxy_protocol: true,
                ..closed
            },
            Exposure {
                client_certificates: true,
                ..closed
            },
            Exposure {
                custom_listener: true,
                ..closed
            },
        ];
        for e in exposed {
            let d = AnonymousAccess::Auto.decide(e);
            assert!(!d.allowed, "{e:?}");
            assert!(d.to_string().starts_with("anonymous clients refused: "));
            assert!(AnonymousAccess::Allow.decide(e).allowed, "explicit wins");
        }
        assert!(!AnonymousAccess::Deny.decide(closed).allowed);
    }
}
