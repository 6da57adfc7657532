//! The TLS settings of `tls` listeners: flags and top-level keys for every
//! such listener, `[[listener]]` keys for one, merged and loaded.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use ringport_engine::spec::ListenerSpec;
use ringport_engine::tls::{
    IdentityPattern, ListenerTls, TlsSettings, TlsVersion, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_HANDSHAKES_PER_SOURCE,
};

/// TLS settings as given (a flag, a top-level key or a listener's key);
/// `None`: not given at this level.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsInputs {
    /// `tls_cert`.
    pub cert: Option<PathBuf>,
    /// `tls_key`.
    pub key: Option<PathBuf>,
    /// `tls_client_ca`.
    pub client_ca: Option<PathBuf>,
    /// `tls_allow_identity`.
    pub allow_identity: Option<Vec<String>>,
    /// `tls_min_version`.
    pub min_version: Option<TlsVersion>,
    /// `tls_alpn`.
    pub alpn: Option<Vec<String>>,
    /// `tls_handshake_timeout` (seconds).
    pub handshake_timeout: Option<f64>,
    /// `tls_max_handshakes_per_source`.
    pub max_handshakes_per_source: Option<u32>,
    /// `tls_no_resumption`.
    pub no_resumption: Option<bool>,
}

impl TlsInputs {
    /// These inputs, with `base` filling what they leave out.
    pub fn over(&self, base: &TlsInputs) -> TlsInputs {
        TlsInputs {
            cert: self.cert.clone().or_else(|| base.cert.clone()),
            key: self.key.clone().or_else(|| base.key.clone()),
            client_ca: self.client_ca.clone().or_else(|| base.client_ca.clone()),
            allow_identity: self
                .allow_identity
                .clone()
                .or_else(|| base.allow_identity.clone()),
            min_version: self.min_version.or(base.min_version),
            alpn: self.alpn.clone().or_else(|| base.alpn.clone()),
            handshake_timeout: self.handshake_timeout.or(base.handshake_timeout),
            max_handshakes_per_source: self
                .max_handshakes_per_source
                .or(base.max_handshakes_per_source),
            no_resumption: self.no_resumption.or(base.no_resumption),
        }
    }

    /// The name of the first setting given, if any (for errors about
    /// settings where they do not apply).
    pub fn first_given(&self) -> Option<&'static str> {
        [
            (self.cert.is_some(), "tls_cert"),
            (self.key.is_some(), "tls_key"),
            (self.client_ca.is_some(), "tls_client_ca"),
            (self.allow_identity.is_some(), "tls_allow_identity"),
            (self.min_version.is_some(), "tls_min_version"),
            (self.alpn.is_some(), "tls_alpn"),
            (self.handshake_timeout.is_some(), "tls_handshake_timeout"),
            (
                self.max_handshakes_per_source.is_some(),
                "tls_max_handshakes_per_source",
            ),
            (self.no_resumption.is_some(), "tls_no_resumption"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }

    /// The engine's settings for `spec`, a `tls` listener.
    pub fn settings(&self, spec: &ListenerSpec) -> Result<TlsSettings> {
        if let Some(n) = self.max_handshakes_per_source {
            crate::config::in_range("tls_max_handshakes_per_source", f64::from(n))
                .with_context(|| format!("listener `{spec}`"))?;
        }
        if let Some(v) = self.handshake_timeout {
            crate::config::in_range("tls_handshake_timeout", v)
                .with_context(|| format!("listener `{spec}`"))?;
        }
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            let missing = if self.cert.is_none() {
                "tls_cert (--tls-cert)"
            } else {
                "tls_key (--tls-key)"
            };
            bail!(
                "listener `{spec}` is a `tls` listener but has no {missing}: give --tls-cert FILE \
                 and --tls-key FILE (or tls_cert and tls_key in its [[listener]] table)"
            );
        };
        let allow_identities = self
            .allow_identity
            .iter()
            .flatten()
            .map(|p| p.parse::<IdentityPattern>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("listener `{spec}`: tls_allow_identity"))?;
        let handshake_timeout = match self.handshake_timeout {
            None => Some(DEFAULT_HANDSHAKE_TIMEOUT),
            Some(v) if !v.is_finite() || !(0.0..=86400.0).contains(&v) => bail!(
                "listener `{spec}`: tls_handshake_timeout = {v} must be 0 (no limit) to 86400 seconds"
            ),
            Some(v) => (v > 0.0).then(|| std::time::Duration::from_secs_f64(v)),
        };
        if let Some(a) = self
            .alpn
            .iter()
            .flatten()
            .find(|a| a.is_empty() || a.len() > 255)
        {
            bail!("listener `{spec}`: tls_alpn `{a}` must be 1 to 255 bytes (e.g. `h2`, `mqtt`)");
        }
        Ok(TlsSettings {
            cert_chain: cert.clone(),
            key: key.clone(),
            client_ca: self.client_ca.clone(),
            min_version: self.min_version.unwrap_or_default(),
            alpn: self.alpn.clone().unwrap_or_default(),
            allow_identities,
            handshake_timeout,
            max_handshakes_per_source: self
                .max_handshakes_per_source
                .unwrap_or(DEFAULT_MAX_HANDSHAKES_PER_SOURCE),
            resumption: !self.no_resumption.unwrap_or(false),
        })
    }

    /// Loads the files of `spec`'s TLS: `None` for a listener that is not
    /// `tls` (whose own table must then set no TLS key: `own`).
    pub fn load(
        &self,
        own: &TlsInputs,
        spec: &ListenerSpec,
        dry_run: bool,
    ) -> Result<Option<Arc<ListenerTls>>> {
        if !spec.tls {
            if let Some(key) = own.first_given() {
                bail!(
                    "listener `{spec}` sets {key} but is not a `tls` listener: write its \
                     transport as `tls` (e.g. `echo@tls:127.0.0.1:9000`)"
                );
            }
            return Ok(None);
        }
        let settings = own.over(self).settings(spec)?;
        let tls =
            ListenerTls::new(settings, dry_run).with_context(|| format!("listener `{spec}`"))?;
        Ok(Some(Arc::new(tls)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ListenerSpec {
        s.parse().unwrap()
    }

    #[test]
    fn listener_keys_override_global_ones_and_errors_name_the_fix() {
        let global = TlsInputs {
            cert: Some("a.pem".into()),
            key: Some("a-key.pem".into()),
            allow_identity: Some(vec!["dns:a.example".into()]),
            ..TlsInputs::default()
        };
        let own = TlsInputs {
            cert: Some("b.pem".into()),
            min_version: Some(TlsVersion::V1_2),
            handshake_timeout: Some(0.0),
            ..TlsInputs::default()
        };
        let s = own
            .over(&global)
            .settings(&spec("echo@tls:127.0.0.1:9000"))
            .unwrap();
        assert_eq!(s.cert_chain, PathBuf::from("b.pem"));
        assert_eq!(s.key, PathBuf::from("a-key.pem"));
        assert_eq!(s.min_version, TlsVersion::V1_2);
        assert_eq!(s.handshake_timeout, None);
        assert_eq!(s.allow_identities, vec!["dns:a.example".parse().unwrap()]);
        assert!(s.resumption);

        let e = TlsInputs::default()
            .settings(&spec("echo@tls:127.0.0.1:9000"))
            .unwrap_err();
        assert!(
            e.to_string().contains("has no tls_cert (--tls-cert)"),
            "{e}"
        );
        let e = own
            .load(&own, &spec("echo@tcp:127.0.0.1:9000"), false)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "listener `echo@tcp:127.0.0.1:9000` sets tls_cert but is not a `tls` listener: \
             write its transport as `tls` (e.g. `echo@tls:127.0.0.1:9000`)"
        );
        let bad = TlsInputs {
            allow_identity: Some(vec!["sensor-7".into()]),
            ..global.clone()
        };
        let e = bad.settings(&spec("echo@tls:127.0.0.1:9000")).unwrap_err();
        assert!(format!("{e:#}").contains("identity `sensor-7`"), "{e:#}");
        let slow = TlsInputs {
            handshake_timeout: Some(1e19),
            ..global
        };
        let e = slow.settings(&spec("echo@tls:127.0.0.1:9000")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "listener `echo@tls:127.0.0.1:9000`: tls_handshake_timeout = \
             10000000000000000000 is out of range: use 0 to 86400"
        );
    }
}
