//! Who may use the console: the `Host` a request names (DNS rebinding),
//! the origin a form was posted from (cross-site requests), the login
//! token and the sessions it opens, and each session's CSRF token.
//!
//! A browser sends the console's cookie with a form that another page
//! on the same host posts (a cookie is not bound to a port, and
//! `SameSite` treats every port of a host as the same site). So a write
//! needs three things no other page has: a session cookie, the form's
//! CSRF token (only the console's own pages carry it, and the `Host`
//! check keeps other pages from reading them), and an `Origin` (or
//! `Referer`) that is the console itself.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use parking_lot::Mutex;
use subtle::ConstantTimeEq;

/// The cookie that carries a session.
pub(crate) const SESSION_COOKIE: &str = "eventsource_console";

/// The shortest token accepted from `--token-file` or the environment.
pub(crate) const MIN_TOKEN_LEN: usize = 16;

/// Sessions kept at once; the oldest is forgotten past this.
const MAX_SESSIONS: usize = 256;

/// A random value as 64 hex digits (256 bits from the OS).
pub(crate) fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `a == b` in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Where the login token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// Generated at start; the login link is printed once.
    Generated,
    /// Read from `--token-file` or `EVENTSOURCE_CONSOLE_TOKEN`.
    Given,
}

/// The access rules of one console.
pub(crate) struct Access {
    /// Host names (lower case, no port) besides IP literals and `localhost`.
    allowed_hosts: Vec<String>,
    /// The login token; `None` when every page is open (a read-only
    /// console on a loopback address without a token).
    token: Option<String>,
    /// Session id → that session's CSRF token.
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    csrf: HashMap<String, String>,
    order: VecDeque<String>,
}

/// A logged-in request's session: what its forms must carry.
#[derive(Clone)]
pub(crate) struct Session {
    /// The CSRF token of the session's forms.
    pub(crate) csrf: String,
}

impl Session {
    /// Whether a posted form carries this session's CSRF token.
    pub(crate) fn csrf_matches(&self, posted: &str) -> bool {
        !posted.is_empty() && same(posted, &self.csrf)
    }
}

impl Access {
    /// Rules answering to `allowed_hosts` (besides IP literals and
    /// `localhost`), with a login `token` if any.
    pub(crate) fn new(allowed_hosts: &[String], token: Option<String>) -> Self {
        Access {
            allowed_hosts: allowed_hosts.iter().map(|h| normalize_host(h)).collect(),
            token,
            sessions: Mutex::new(Sessions::default()),
        }
    }

    /// Whether pages need a login.
    pub(crate) fn needs_login(&self) -> bool {
        self.token.is_some()
    }

    /// Whether the console answers to `host` (a `Host` header): an IP
    /// literal (no DNS name, so no rebinding), `localhost`, or a name
    /// given with `--allowed-host`.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        let name = name.as_str();
        if name.is_empty() {
            return false;
        }
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || self.allowed_hosts.iter().any(|h| h == name)
    }

    /// Opens a session if `token` is the login token; its id.
    pub(crate) fn login(&self, token: &str) -> Option<String> {
        let expected = self.token.as_deref()?;
        if !same(token, expected) {
            return None;
        }
        let id = random_hex();
        let mut sessions = self.sessions.lock();
        if sessions.order.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.order.pop_front() {
                sessions.csrf.remove(&oldest);
            }
        }
        sessions.csrf.insert(id.clone(), random_hex());
        sessions.order.push_back(id.clone());
        Some(id)
    }

    /// The session whose id the request's `Cookie` header carries.
    pub(crate) fn session(&self, cookie_header: Option<&str>) -> Option<Session> {
        let id = cookie_header?
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value)?;
        let sessions = self.sessions.lock();
        // Looked up by value, then compared in constant time: a HashMap
        // lookup alone could tell by timing how much of an id matched.
        let (known, csrf) = sessions.csrf.get_key_value(id)?;
        same(known, id).then(|| Session { csrf: csrf.clone() })
    }
}

/// The name part of a `Host` header, lower case, without port or a
/// trailing dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        // [v6]:port
        match host.find(']') {
            Some(end) => &host[..=end],
            None => return String::new(),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return String::new(),
            None => host,
        }
    };
    normalize_host(name)
}

fn normalize_host(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a POST comes from the console's own pages: its `Origin`, or
/// failing that its `Referer`, is `http://{host}`. A request with
/// neither is refused (every browser sends `Origin` with a form).
pub(crate) fn same_origin(host: &str, origin: Option<&str>, referer: Option<&str>) -> bool {
    let own = format!("http://{}", host.trim()).to_ascii_lowercase();
    if let Some(origin) = origin {
        return origin.trim().to_ascii_lowercase() == own;
    }
    if let Some(referer) = referer {
        let referer = referer.trim().to_ascii_lowercase();
        // The origin of a URL is everything before its path.
        let end = referer
            .match_indices('/')
            .nth(2)
            .map_or(referer.len(), |(i, _)| i);
        return referer[..end] == own;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_literals_localhost_and_named_hosts_are_answered() {
        let access = Access::new(&["ops.example.com".into()], None);
        for host in [
            "127.0.0.1:9400",
            "127.0.0.1",
            "[::1]:9400",
            "10.1.2.3:80",
            "localhost:9400",
            "LOCALHOST",
            "localhost.:9400",
            "ops.example.com:9400",
            "OPS.example.com",
        ] {
            assert!(access.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9400",
            "localhost.evil.example",
            "127.0.0.1.evil.example:9400",
            "",
            ":9400",
            "[::1",
            "localhost:x",
        ] {
            assert!(!access.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn a_post_must_come_from_the_console_itself() {
        let host = "127.0.0.1:9400";
        assert!(same_origin(host, Some("http://127.0.0.1:9400"), None));
        assert!(!same_origin(host, Some("http://127.0.0.1:9401"), None));
        assert!(!same_origin(host, Some("http://evil.example"), None));
        assert!(!same_origin(host, Some("null"), None));
        // Origin wins over a matching Referer.
        assert!(!same_origin(
            host,
            Some("http://evil.example"),
            Some("http://127.0.0.1:9400/group")
        ));
        assert!(same_origin(
            host,
            None,
            Some("http://127.0.0.1:9400/group?x")
        ));
        assert!(same_origin(host, None, Some("http://127.0.0.1:9400")));
        assert!(!same_origin(
            host,
            None,
            Some("http://127.0.0.1:9400.evil.example/")
        ));
        assert!(!same_origin(host, None, None));
    }

    #[test]
    fn a_session_needs_the_token_and_its_cookie() {
        let access = Access::new(&[], Some("t".repeat(32)));
        assert!(access.login("wrong").is_none());
        assert!(access.login(&"t".repeat(31)).is_none());
        let id = access
            .login(&"t".repeat(32))
            .expect("the token opens a session");
        let cookie = format!("a=b; {SESSION_COOKIE}={id}; c=d");
        let session = access.session(Some(&cookie)).expect("known session");
        assert_eq!(session.csrf.len(), 64);
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches(&id));
        assert!(access
            .session(Some(&format!("{SESSION_COOKIE}=x{id}")))
            .is_none());
        assert!(access.session(Some("a=b")).is_none());
        assert!(access.session(None).is_none());
        // A console without a token opens no session.
        assert!(Access::new(&[], None).login("").is_none());
    }
}
