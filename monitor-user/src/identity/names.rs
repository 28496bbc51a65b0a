//! The static identity file: names for addresses that no cgroup or cluster API can name, for
//! hosts without Kubernetes and for remote ends (a database host, a SaaS range). Documented in
//! docs/identity.md. Lookup is a longest-prefix match whose cost depends on the number of distinct
//! prefix lengths (at most 33 + 129), not on the number of entries.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

/// Longest name accepted.
const MAX_NAME: usize = 253;

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// One entry per named host or network.
    #[serde(default)]
    host: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default)]
    cidrs: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    #[serde(default)]
    hostnames: Vec<String>,
}

/// Why the identity file was refused.
#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    #[error("cannot read identity file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("identity file {path}: host {name:?}: {message}")]
    Invalid { path: PathBuf, name: String, message: String },
}

#[derive(Debug)]
struct Named {
    name: String,
    except: Vec<IpNet>,
}

/// The compiled names.
#[derive(Debug, Default)]
pub struct StaticNames {
    entries: Vec<Named>,
    /// (is_v6, prefix length) -> masked network bits -> entry index; longest prefixes first.
    tables: Vec<((bool, u8), HashMap<u128, usize>)>,
}

impl StaticNames {
    /// Loads and validates the file; every hostname is resolved once, now.
    pub fn load(path: &Path) -> Result<Self, NamesError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| NamesError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses the text of an identity file (`path` is for messages only).
    pub fn parse(text: &str, path: &Path) -> Result<Self, NamesError> {
        let file: File =
            toml::from_str(text).map_err(|e| NamesError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let mut names = StaticNames::default();
        let mut tables: HashMap<(bool, u8), HashMap<u128, usize>> = HashMap::new();
        for entry in file.host {
            let invalid =
                |message: String| NamesError::Invalid { path: path.to_owned(), name: entry.name.clone(), message };
            if entry.name.is_empty() || entry.name.len() > MAX_NAME || entry.name.chars().any(char::is_control) {
                return Err(invalid(format!("a name is 1 to {MAX_NAME} printable characters")));
            }
            let mut nets = Vec::new();
            for c in &entry.cidrs {
                nets.push(
                    c.parse::<IpNet>()
                        .map_err(|e| invalid(format!("cidr {c:?}: {e} (write it like 10.0.0.0/8 or 2001:db8::/32)")))?,
                );
            }
            for h in &entry.hostnames {
                let addrs = (h.as_str(), 0)
                    .to_socket_addrs()
                    .map_err(|e| invalid(format!("hostname {h:?} does not resolve: {e}")))?;
                nets.extend(addrs.map(|a| IpNet::from(a.ip())));
            }
            if nets.is_empty() {
                return Err(invalid("give at least one of `cidrs` or `hostnames`".into()));
            }
            let mut except = Vec::new();
            for c in &entry.except {
                except.push(c.parse::<IpNet>().map_err(|e| invalid(format!("except {c:?}: {e}")))?);
            }
            let index = names.entries.len();
            for net in nets {
                let key = (net.addr().is_ipv6(), net.prefix_len());
                let bits = masked(net.network(), net.prefix_len());
                if let Some(other) = tables.entry(key).or_default().insert(bits, index) {
                    let other = names.entries.get(other).map(|n| n.name.clone()).unwrap_or_default();
                    return Err(invalid(format!("{net} is also named {other:?}")));
                }
            }
            names.entries.push(Named { name: entry.name, except });
        }
        let mut tables: Vec<_> = tables.into_iter().collect();
        tables.sort_by_key(|((_, len), _)| std::cmp::Reverse(*len));
        names.tables = tables;
        Ok(names)
    }

    /// The name of `ip`, from the most specific entry that covers it and does not except it.
    pub fn name(&self, ip: IpAddr) -> Option<&str> {
        let v6 = ip.is_ipv6();
        for ((is_v6, len), table) in &self.tables {
            if *is_v6 != v6 {
                continue;
            }
            if let Some(&i) = table.get(&masked(ip, *len))
                && let Some(named) = self.entries.get(i)
                && !named.except.iter().any(|e| e.contains(&ip))
            {
                return Some(&named.name);
            }
        }
        None
    }

    /// Number of named entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is named.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The first `len` bits of `ip`, as a number.
fn masked(ip: IpAddr, len: u8) -> u128 {
    let (bits, width) = match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
        IpAddr::V6(a) => (u128::from(a), 128u32),
    };
    let keep = u32::from(len).min(width);
    if keep == 0 { 0 } else { bits >> (width - keep) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StaticNames, NamesError> {
        StaticNames::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn longest_prefix_wins_and_except_excludes() {
        let n = parse(
            r#"
            [[host]]
            name = "saas"
            cidrs = ["203.0.113.0/24", "2001:db8:5::/48"]
            except = ["203.0.113.99/32"]
            [[host]]
            name = "saas-admin"
            cidrs = ["203.0.113.128/25"]
            [[host]]
            name = "loopback"
            hostnames = ["localhost"]
            "#,
        )
        .unwrap();
        assert_eq!(n.name("203.0.113.5".parse().unwrap()), Some("saas"));
        assert_eq!(n.name("203.0.113.200".parse().unwrap()), Some("saas-admin"));
        assert_eq!(n.name("203.0.113.99".parse().unwrap()), None);
        assert_eq!(n.name("2001:db8:5::1".parse().unwrap()), Some("saas"));
        assert_eq!(n.name("2001:db8:6::1".parse().unwrap()), None);
        assert_eq!(n.name("127.0.0.1".parse().unwrap()), Some("loopback"));
        assert_eq!(n.len(), 3);
    }

    #[test]
    fn refuses_bad_files_with_reasons() {
        let cases = [
            ("[[host]]\nname = \"x\"\ncidrs = [\"10.0.0.0/33\"]\n", "cidr"),
            ("[[host]]\nname = \"x\"\n", "at least one"),
            ("[[host]]\nname = \"x\"\ncidrs = [\"10.0.0.0/8\"]\ncolour = 1\n", "unknown field"),
            ("[[host]]\nname = \"\"\ncidrs = [\"10.0.0.0/8\"]\n", "printable"),
            (
                "[[host]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\n[[host]]\nname = \"b\"\ncidrs = [\"10.0.0.0/8\"]\n",
                "also named",
            ),
            ("[[host]\n", "test.toml"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
