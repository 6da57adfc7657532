//! Server addresses: the configured `nats://` URLs and the `connect_urls`
//! servers announce, tried in turn.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The port a URL without one means.
pub const DEFAULT_PORT: u16 = 4222;

/// One server to connect to. Its `Display` is `host:port`, never the
/// credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User of `nats://user:pass@host`, used instead of the configured login.
    pub user: Option<String>,
    /// Password of `nats://user:pass@host`.
    pub pass: Option<String>,
    /// Token of `nats://token@host`, used instead of the configured login.
    pub token: Option<String>,
    /// Whether a server announced it (`connect_urls`) rather than the
    /// configuration.
    pub learned: bool,
}

impl fmt::Debug for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAddr")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("has_secret", &(self.pass.is_some() || self.token.is_some()))
            .field("learned", &self.learned)
            .finish()
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a server URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    /// The URL, credentials removed.
    pub url: String,
    /// What is wrong and how to write it.
    pub reason: &'static str,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NATS server URL `{}`: {}", self.url, self.reason)
    }
}

impl std::error::Error for UrlError {}

impl ServerAddr {
    /// Parses `nats://[user:pass@|token@]host[:port]`, or `host[:port]` as in
    /// `connect_urls`; IPv6 hosts in brackets.
    pub fn parse(url: &str) -> Result<ServerAddr, UrlError> {
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some(("nats", rest)) => rest,
            Some(_) => {
                return Err(UrlError {
                    url: url.rsplit('@').next().unwrap_or("").to_owned(),
                    reason: "only nats:// URLs are supported (nats://HOST:PORT)",
                })
            }
            None => url,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let bad = |reason| UrlError {
            url: format!("nats://{hostport}"),
            reason,
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing bracket ([::1]:4222)"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("write the port after the bracket ([::1]:4222)"))?,
                ),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err(bad("the host is missing or malformed (nats://HOST:PORT)"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        let (user, pass, token) = match userinfo {
            None => (None, None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_owned()), Some(pass.to_owned()), None),
                None => (None, None, Some(u.to_owned())),
            },
        };
        Ok(ServerAddr {
            host: host.to_owned(),
            port,
            user,
            pass,
            token,
            learned: false,
        })
    }

    /// The socket address, when the host is an IP address (a name is the
    /// caller's to resolve).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }

    fn same_place(&self, other: &ServerAddr) -> bool {
        self.host == other.host && self.port == other.port
    }
}

/// The servers to try, in turn: the configured ones first, then those learned
/// from `connect_urls`.
#[derive(Debug, Clone)]
pub struct ServerList {
    servers: Vec<ServerAddr>,
    next: usize,
    current: Option<usize>,
}

impl ServerList {
    /// The list of `urls`; fails on the first bad one, or on none.
    pub fn new<S: AsRef<str>>(urls: &[S]) -> Result<ServerList, UrlError> {
        let mut list = ServerList {
            servers: Vec::new(),
            next: 0,
            current: None,
        };
        for url in urls {
            let addr = ServerAddr::parse(url.as_ref())?;
            if !list.servers.iter().any(|s| s.same_place(&addr)) {
                list.servers.push(addr);
            }
        }
        if list.servers.is_empty() {
            return Err(UrlError {
                url: String::new(),
                reason: "give at least one server (--nats nats://HOST:PORT)",
            });
        }
        Ok(list)
    }

    /// Adds the servers of a `connect_urls` list that are not known yet;
    /// returns how many were added. Entries that do not parse are skipped.
    pub fn learn<S: AsRef<str>>(&mut self, urls: &[S]) -> usize {
        let mut added = 0;
        for url in urls {
            if let Ok(mut addr) = ServerAddr::parse(url.as_ref()) {
                if !self.servers.iter().any(|s| s.same_place(&addr)) {
                    addr.learned = true;
                    self.servers.push(addr);
                    added += 1;
                }
            }
        }
        added
    }

    /// The server to try next, round robin over the whole list; it becomes
    /// the current one.
    pub fn next_server(&mut self) -> &ServerAddr {
        let i = self.next % self.servers.len();
        self.next = i + 1;
        self.current = Some(i);
        &self.servers[i]
    }

    /// The server last returned by [`ServerList::next_server`].
    pub fn current(&self) -> Option<&ServerAddr> {
        self.current.map(|i| &self.servers[i])
    }

    /// Every server, configured first.
    pub fn iter(&self) -> impl Iterator<Item = &ServerAddr> {
        self.servers.iter()
    }

    /// How many servers there are.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Never true: a list holds at least one server.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let a = ServerAddr::parse("nats://127.0.0.1:4223").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.user.clone()),
            ("127.0.0.1", 4223, None)
        );
        assert_eq!(a.socket_addr(), Some("127.0.0.1:4223".parse().unwrap()));
        let a = ServerAddr::parse("nats://alice:s3cret@nats.internal").unwrap();
        assert_eq!(a.host, "nats.internal");
        assert_eq!(a.port, DEFAULT_PORT);
        assert_eq!(
            (a.user.as_deref(), a.pass.as_deref()),
            (Some("alice"), Some("s3cret"))
        );
        assert_eq!(a.socket_addr(), None);
        assert_eq!(a.to_string(), "nats.internal:4222");
        assert!(!format!("{a:?}").contains("s3cret"));
        let a = ServerAddr::parse("nats://tok@10.0.0.1:1").unwrap();
        assert_eq!(a.token.as_deref(), Some("tok"));
        let a = ServerAddr::parse("[::1]:4333").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 4333));
        assert_eq!(a.to_string(), "[::1]:4333");
        let a = ServerAddr::parse("10.0.0.184:4333").unwrap();
        assert_eq!(a.to_string(), "10.0.0.184:4333");
    }

    #[test]
    fn bad_urls_name_the_fix() {
        for (url, reason) in [
            (
                "tls://a:1",
                "only nats:// URLs are supported (nats://HOST:PORT)",
            ),
            ("nats://a:0", "the port must be a number from 1 to 65535"),
            ("nats://a:x", "the port must be a number from 1 to 65535"),
            (
                "nats://:4222",
                "the host is missing or malformed (nats://HOST:PORT)",
            ),
            (
                "nats://[::1",
                "an IPv6 address needs its closing bracket ([::1]:4222)",
            ),
        ] {
            assert_eq!(ServerAddr::parse(url).unwrap_err().reason, reason, "{url}");
        }
        let e = ServerAddr::parse("tls://u:secret@a:1").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(ServerList::new::<&str>(&[]).is_err());
    }

    #[test]
    fn next_server_is_round_robin_over_learned_ones_too() {
        let mut list =
            ServerList::new(&["nats://127.0.0.1:1", "nats://127.0.0.1:2", "127.0.0.1:1"]).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list.learn(&["127.0.0.1:2", "127.0.0.1:3", "bad:port"]), 1);
        let order: Vec<u16> = (0..7).map(|_| list.next_server().port).collect();
        assert_eq!(order, [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(list.current().map(|s| s.port), Some(1));
        assert!(list.iter().nth(2).unwrap().learned);
    }
}
