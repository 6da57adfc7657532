//! Who may connect: the interface the broker calls on each CONNECT.
//!
//! The broker builds an [`AuthRequest`] from the CONNECT packet (and, on a
//! TLS listener with client certificates, from the certificate's subject
//! alternative names) and asks an [`Authenticator`]. The answer is an
//! [`AuthOutcome`]: allowed under an identity, which is the name the ACL
//! ([`crate::mqtt::acl`]) sees as the username and substitutes for `%u`, or
//! refused with the reason code the client is sent:
//!
//! | outcome                        | MQTT 3.1.1 CONNACK | MQTT 5.0 CONNACK |
//! |--------------------------------|--------------------|------------------|
//! | [`AuthOutcome::BadCredentials`] | 4                  | 0x86             |
//! | [`AuthOutcome::NotAuthorized`]  | 5                  | 0x87             |
//!
//! The implementations here are pure: [`AllowAnonymous`], [`DenyAll`] and
//! [`CertificateIdentity`]. The password file (`mosquitto_passwd` format,
//! slow hashes) needs a hash function and a file, so it lives in the tools
//! crate (`ringport_tools::mqtt_auth::PasswordFile`) and implements the same
//! trait.

/// What a client presented when connecting.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The client identifier of the CONNECT (after the broker assigned one
    /// to an empty id).
    pub client_id: &'a str,
    /// The User Name field, if the CONNECT had one.
    pub username: Option<&'a str>,
    /// The Password field, if the CONNECT had one.
    pub password: Option<&'a [u8]>,
    /// The identities in the client certificate's subject alternative names,
    /// written `dns:NAME`, `uri:URI` (for example `spiffe://...`), `ip:ADDR`
    /// or `email:ADDR`, as the TLS layer verified them; empty without a
    /// client certificate.
    pub tls_identities: &'a [&'a str],
}

/// The answer to an [`AuthRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The client may connect.
    Allowed {
        /// The name the ACL sees as the username and substitutes for `%u`;
        /// the empty string is an anonymous client (see [`acl_user`]).
        identity: String,
    },
    /// The username or password is wrong (or missing where one is needed).
    BadCredentials,
    /// The client is not allowed to connect at all.
    NotAuthorized,
}

/// The `user` argument of [`crate::mqtt::acl::Acl::check`] for an identity
/// from [`AuthOutcome::Allowed`]: `None` (anonymous) for the empty identity.
pub fn acl_user(identity: &str) -> Option<&str> {
    if identity.is_empty() {
        None
    } else {
        Some(identity)
    }
}

/// Decides whether a CONNECT may proceed.
///
/// Called on the shard thread that owns the connection, once per CONNECT;
/// one authenticator is shared by every shard, hence `Send + Sync`.
/// Implementations that do slow work (password hashing) say how slow.
pub trait Authenticator: Send + Sync {
    /// Judges one CONNECT.
    fn authenticate(&self, req: &AuthRequest<'_>) -> AuthOutcome;
}

/// Every client may connect, as an anonymous client (identity `""`).
///
/// A username the client claims is not trusted: it does not become the
/// identity, so a client cannot take another user's ACL entries by naming
/// them. (Mosquitto with `allow_anonymous true` and no password file does use
/// the claimed username for its ACL; ringport deliberately does not.)
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAnonymous;

impl Authenticator for AllowAnonymous {
    fn authenticate(&self, _req: &AuthRequest<'_>) -> AuthOutcome {
        AuthOutcome::Allowed {
            identity: String::new(),
        }
    }
}

/// No client may connect ([`AuthOutcome::NotAuthorized`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl Authenticator for DenyAll {
    fn authenticate(&self, _req: &AuthRequest<'_>) -> AuthOutcome {
        AuthOutcome::NotAuthorized
    }
}

/// Clients are identified by their TLS client certificate: the identity is
/// the first of the certificate's identities (in the certificate's order)
/// that an allowed entry accepts.
///
/// An entry accepts an identity equal to it, or, when the entry ends in `*`,
/// any identity that starts with the part before the `*`
/// (`uri:spiffe://plant.example/sensor/*`). The MQTT username and password
/// are ignored, as with Mosquitto's `use_identity_as_username`. A client
/// without an accepted identity (or without a certificate) is
/// [`AuthOutcome::NotAuthorized`].
///
/// The identity is the whole SAN, prefix included; a `/` in it spans levels
/// when the ACL substitutes it for `%u`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateIdentity {
    allowed: Vec<String>,
}

impl CertificateIdentity {
    /// Accepts the identities that the entries of `allowed` accept.
    pub fn new(allowed: Vec<String>) -> Self {
        CertificateIdentity { allowed }
    }

    fn accepts(&self, identity: &str) -> bool {
        self.allowed
            .iter()
            .any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => identity.starts_with(prefix),
                None => identity == entry,
            })
    }
}

impl Authenticator for CertificateIdentity {
    fn authenticate(&self, req: &AuthRequest<'_>) -> AuthOutcome {
        match req.tls_identities.iter().find(|id| self.accepts(id)) {
            Some(id) => AuthOutcome::Allowed {
                identity: (*id).to_owned(),
            },
            None => AuthOutcome::NotAuthorized,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(
        username: Option<&'a str>,
        password: Option<&'a [u8]>,
        tls: &'a [&'a str],
    ) -> AuthRequest<'a> {
        AuthRequest {
            client_id: "c1",
            username,
            password,
            tls_identities: tls,
        }
    }

    #[test]
    fn allow_anonymous_never_trusts_a_claimed_username() {
        assert_eq!(
            AllowAnonymous.authenticate(&req(Some("admin"), Some(b"x"), &[])),
            AuthOutcome::Allowed {
                identity: String::new()
            }
        );
        assert_eq!(acl_user(""), None);
        assert_eq!(acl_user("bob"), Some("bob"));
    }

    #[test]
    fn deny_all() {
        assert_eq!(
            DenyAll.authenticate(&req(None, None, &[])),
            AuthOutcome::NotAuthorized
        );
    }

    #[test]
    fn certificate_identity_takes_the_first_accepted_san() {
        let auth = CertificateIdentity::new(vec![
            "uri:spiffe://plant.example/sensor/*".into(),
            "dns:gw1.plant.internal".into(),
        ]);
        let sans = [
            "dns:other.example",
            "dns:gw1.plant.internal",
            "uri:spiffe://plant.example/sensor/7",
        ];
        assert_eq!(
            auth.authenticate(&req(Some("ignored"), None, &sans)),
            AuthOutcome::Allowed {
                identity: "dns:gw1.plant.internal".into()
            }
        );
        assert_eq!(
            auth.authenticate(&req(None, None, &["uri:spiffe://plant.example/sensor/9"])),
            AuthOutcome::Allowed {
                identity: "uri:spiffe://plant.example/sensor/9".into()
            }
        );
        // Exact entries do not match by prefix; no certificate, no entry.
        assert_eq!(
            auth.authenticate(&req(None, None, &["dns:gw1.plant.internal.evil"])),
            AuthOutcome::NotAuthorized
        );
        assert_eq!(
            auth.authenticate(&req(Some("u"), Some(b"p"), &[])),
            AuthOutcome::NotAuthorized
        );
        assert_eq!(
            CertificateIdentity::default().authenticate(&req(None, None, &sans)),
            AuthOutcome::NotAuthorized
        );
    }
}
