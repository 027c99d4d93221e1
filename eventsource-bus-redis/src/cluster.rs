//! Redis Cluster: the `redis+cluster://` URL of seed nodes, and the hash
//! tag that keeps every key of a namespace in one slot.
//!
//! The bottom of the crate beside `config.rs`: it imports nothing of ours.

use std::borrow::Cow;
use std::fmt;

/// The scheme that selects the cluster client.
pub(crate) const SCHEME: &str = "redis+cluster://";

/// The seed nodes and credentials of a `redis+cluster://` URL.
///
/// `redis+cluster://[user:password@]host:port[,host:port…]`: the
/// credentials hold for every node, as a cluster's nodes share them.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Seeds {
    /// `redis://host:port`, one per seed node, as the cluster client takes them.
    pub(crate) nodes: Vec<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl fmt::Debug for Seeds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seeds")
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Whether `url` names a cluster (its scheme is `redis+cluster://`).
pub(crate) fn is_cluster_url(url: &str) -> bool {
    url.get(..SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
}

/// The seeds of a `redis+cluster://` URL, or why it is not one, in words
/// that never quote the credentials.
pub(crate) fn parse(url: &str) -> Result<Seeds, String> {
    const FORM: &str = "expected redis+cluster://[user:password@]host:port[,host:port…]";
    if !is_cluster_url(url) {
        return Err(format!("not a cluster url ({FORM})"));
    }
    let rest = &url[SCHEME.len()..];
    let (userinfo, hosts) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            let decode = |part: &str, what: &str| -> Result<Option<String>, String> {
                if part.is_empty() {
                    return Ok(None);
                }
                percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .map(|v| Some(v.into_owned()))
                    .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
            };
            (decode(user, "user name")?, decode(pass, "password")?)
        }
    };
    let hosts = hosts.trim_end_matches('/');
    if hosts.contains('/') || hosts.contains('?') {
        return Err(format!(
            "a cluster has one database and takes no path or query ({FORM})"
        ));
    }
    let mut nodes = Vec::new();
    for node in hosts.split(',') {
        let (host, port) = node.rsplit_once(':').unwrap_or((node, "6379"));
        if host.is_empty() {
            return Err(format!("a seed node has no host ({FORM})"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("seed node `{host}`: invalid port number `{port}`"))?;
        nodes.push(format!("redis://{host}:{port}"));
    }
    Ok(Seeds {
        nodes,
        username,
        password,
    })
}

/// `namespace` as the prefix of every key: on a cluster it is a hash tag
/// (`{shop}`), so each key of the namespace lands in one slot and every
/// multi-key command, script and transaction the bus sends stays legal.
/// Borrowed on a single server: key names are built on every publish.
pub(crate) fn key_prefix(namespace: &str, cluster: bool) -> Cow<'_, str> {
    if cluster {
        Cow::Owned(format!("{{{namespace}}}"))
    } else {
        Cow::Borrowed(namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_credentials_and_default_port_are_read() {
        let seeds =
            parse("redis+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2,h3:7002").expect("parse");
        assert_eq!(
            seeds.nodes,
            [
                "redis://10.0.0.1:7000",
                "redis://10.0.0.2:6379",
                "redis://h3:7002"
            ]
        );
        assert_eq!(seeds.username.as_deref(), Some("app"));
        assert_eq!(seeds.password.as_deref(), Some("p@ss"));
        assert!(!format!("{seeds:?}").contains("p@ss"));
        let bare = parse("REDIS+CLUSTER://127.0.0.1:7101/").expect("parse");
        assert_eq!(bare.nodes, ["redis://127.0.0.1:7101"]);
        assert_eq!(bare.password, None);
    }

    #[test]
    fn a_bad_cluster_url_says_why_without_its_password() {
        for (url, why) in [
            ("redis+cluster://u:hunter2@h:1,:2", "no host"),
            ("redis+cluster://u:hunter2@h:99999", "invalid port"),
            ("redis+cluster://u:hunter2@h:1/3", "one database"),
            ("redis://h:1", "not a cluster url"),
        ] {
            let err = parse(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn a_cluster_prefix_is_a_hash_tag() {
        assert_eq!(key_prefix("shop", true), "{shop}");
        assert_eq!(key_prefix("shop", false), "shop");
    }
}
