//! The JSON of `INFO` (what a server says of itself) and `CONNECT` (what the
//! client says of itself and how it logs in).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The fields of `INFO` a client uses; others are ignored, missing ones take
/// their default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    /// The server's unique id.
    pub server_id: String,
    /// The server's name (its id unless configured).
    pub server_name: String,
    /// The server's version.
    pub version: String,
    /// The protocol level: 1 supports `echo` and asynchronous `INFO`.
    pub proto: i32,
    /// The largest body (headers and payload) the server accepts; 0 if absent.
    pub max_payload: usize,
    /// Whether the server accepts `HPUB` and sends `HMSG`.
    pub headers: bool,
    /// Whether the server wants credentials in `CONNECT`.
    pub auth_required: bool,
    /// Whether the server requires TLS.
    pub tls_required: bool,
    /// The challenge an NKey client signs.
    pub nonce: Option<String>,
    /// Other servers of the cluster (`host:port`).
    pub connect_urls: Vec<String>,
    /// The server's id of this connection.
    pub client_id: u64,
    /// Whether the server is in lame duck mode (about to shut down).
    pub ldm: bool,
}

impl ServerInfo {
    /// Parses the JSON object of an `INFO` line.
    pub fn parse(json: &str) -> Result<ServerInfo, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// The JSON object of `CONNECT`. Its `Debug` hides the password, token and
/// signature.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
pub struct Connect {
    /// `+OK` after every operation: always false here.
    pub verbose: bool,
    /// Extra checks by the server: always false here.
    pub pedantic: bool,
    /// Whether the client requires TLS.
    pub tls_required: bool,
    /// The client's name, shown in the server's monitoring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The implementation language.
    pub lang: String,
    /// The client's version.
    pub version: String,
    /// 1: the client handles asynchronous `INFO` (cluster updates).
    pub protocol: u8,
    /// Whether the server may deliver this connection's own messages back to
    /// its subscriptions.
    pub echo: bool,
    /// Whether the client understands headers (`HPUB`, `HMSG`).
    pub headers: bool,
    /// Whether the server should answer a request nobody listens to with a
    /// 503 status (needs `headers`).
    pub no_responders: bool,
    /// User name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// Token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// NKey public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey: Option<String>,
    /// Signature of the server's nonce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<hidden>");
        f.debug_struct("Connect")
            .field("verbose", &self.verbose)
            .field("pedantic", &self.pedantic)
            .field("tls_required", &self.tls_required)
            .field("name", &self.name)
            .field("lang", &self.lang)
            .field("version", &self.version)
            .field("protocol", &self.protocol)
            .field("echo", &self.echo)
            .field("headers", &self.headers)
            .field("no_responders", &self.no_responders)
            .field("user", &self.user)
            .field("pass", &hidden(&self.pass))
            .field("auth_token", &hidden(&self.auth_token))
            .field("nkey", &self.nkey)
            .field("sig", &hidden(&self.sig))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_info_parses() {
        let info = ServerInfo::parse(r#"{"server_id":"Zk0GQ3JBSrg3oyxCRRlE09","version":"1.2.0","proto":1,"go":"go1.10.3","host":"0.0.0.0","port":4222,"max_payload":1048576,"client_id":2392}"#).unwrap();
        assert_eq!(info.server_id, "Zk0GQ3JBSrg3oyxCRRlE09");
        assert_eq!(info.version, "1.2.0");
        assert_eq!(info.proto, 1);
        assert_eq!(info.max_payload, 1_048_576);
        assert_eq!(info.client_id, 2392);
        assert_eq!(
            (info.headers, info.auth_required, info.nonce),
            (false, false, None)
        );
    }

    #[test]
    fn auth_fields_and_connect_urls_parse() {
        let info = ServerInfo::parse(r#"{"server_id":"x","headers":true,"auth_required":true,"nonce":"DhXdTMAeiHhLDig","connect_urls":["10.0.0.184:4333","[::1]:4222"],"ldm":true}"#).unwrap();
        assert!(info.headers && info.auth_required && info.ldm);
        assert_eq!(info.nonce.as_deref(), Some("DhXdTMAeiHhLDig"));
        assert_eq!(info.connect_urls, ["10.0.0.184:4333", "[::1]:4222"]);
        assert!(ServerInfo::parse("{").is_err());
        assert!(ServerInfo::parse(r#"{"max_payload":-1}"#).is_err());
    }

    #[test]
    fn connect_serialises_only_what_is_set() {
        let c = Connect {
            lang: "rust".into(),
            version: "0.1.0".into(),
            protocol: 1,
            echo: false,
            headers: true,
            no_responders: true,
            user: Some("a".into()),
            pass: Some("s3cret".into()),
            ..Connect::default()
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"verbose":false,"pedantic":false,"tls_required":false,"lang":"rust","version":"0.1.0","protocol":1,"echo":false,"headers":true,"no_responders":true,"user":"a","pass":"s3cret"}"#
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
