//! SPIFFE IDs for pods: `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT`, validated, never escaped.
//!
//! The SPIFFE ID standard allows, in the trust domain, only lowercase ASCII letters, digits, `.`,
//! `-` and `_` (at most 255 bytes), and in each path segment only ASCII letters, digits, `.`, `-`
//! and `_`; a segment may not be empty, `.` or `..`, and percent-encoding is not allowed. So this
//! module percent-encodes nothing: a trust domain or a name with any other character (uppercase in
//! the trust domain, `/`, `%`, `:`, `@`, spaces, non-ASCII, ...) is rejected with a typed error,
//! and the caller counts it. Kubernetes' own name rules (namespaces are DNS labels, service
//! accounts DNS subdomains) always pass.

use std::fmt;

/// The longest trust domain the SPIFFE standard allows, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The longest SPIFFE ID (the whole URI) the SPIFFE standard allows, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The trust domain used when the configuration names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Why a trust domain or a SPIFFE ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// The trust domain is empty.
    #[error("the SPIFFE trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain is longer than 255 bytes.
    #[error("the SPIFFE trust domain is {len} bytes long; at most {MAX_TRUST_DOMAIN_LEN} are allowed")]
    TrustDomainTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The trust domain holds a character SPIFFE forbids there.
    #[error("the SPIFFE trust domain {trust_domain:?} holds {found:?}; only a-z, 0-9, '.', '-' and '_' are allowed")]
    TrustDomainCharacter {
        /// The refused trust domain.
        trust_domain: String,
        /// The first forbidden character.
        found: char,
    },
    /// A path segment (namespace or service account) is empty, `.` or `..`.
    #[error("the {field} {value:?} cannot be a SPIFFE path segment (empty, '.' or '..')")]
    BadSegment {
        /// Which field: "namespace" or "service account".
        field: &'static str,
        /// The refused value.
        value: String,
    },
    /// A path segment holds a character SPIFFE forbids there.
    #[error("the {field} {value:?} holds {found:?}; a SPIFFE path segment allows only A-Z, a-z, 0-9, '.', '-' and '_'")]
    SegmentCharacter {
        /// Which field: "namespace" or "service account".
        field: &'static str,
        /// The refused value.
        value: String,
        /// The first forbidden character.
        found: char,
    },
    /// The whole ID would be longer than 2048 bytes.
    #[error("the SPIFFE ID would be {len} bytes long; at most {MAX_SPIFFE_ID_LEN} are allowed")]
    IdTooLong {
        /// Its length in bytes.
        len: usize,
    },
}

/// A trust domain that the SPIFFE standard accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates a trust domain. Nothing is lowercased or trimmed: `Cluster.Local` is an error,
    /// not silently `cluster.local`.
    pub fn new(value: &str) -> Result<Self, SpiffeError> {
        if value.is_empty() {
            return Err(SpiffeError::EmptyTrustDomain);
        }
        if value.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeError::TrustDomainTooLong { len: value.len() });
        }
        if let Some(found) =
            value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
        {
            return Err(SpiffeError::TrustDomainCharacter { trust_domain: value.to_owned(), found });
        }
        Ok(Self(value.to_owned()))
    }

    /// The trust domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        Self(DEFAULT_TRUST_DOMAIN.to_owned())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID of the form `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId(String);

impl SpiffeId {
    /// Derives the ID of a workload from its namespace and service account.
    pub fn for_workload(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeError> {
        check_segment("namespace", namespace)?;
        check_segment("service account", service_account)?;
        let id = format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}");
        if id.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeError::IdTooLong { len: id.len() });
        }
        Ok(Self(id))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_segment(field: &'static str, value: &str) -> Result<(), SpiffeError> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(SpiffeError::BadSegment { field, value: value.to_owned() });
    }
    if let Some(found) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        return Err(SpiffeError::SegmentCharacter { field, value: value.to_owned(), found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_standard_form() {
        let td = TrustDomain::new("prod.example.org").unwrap();
        let id = SpiffeId::for_workload(&td, "shop", "checkout-sa").unwrap();
        assert_eq!(id.as_str(), "spiffe://prod.example.org/ns/shop/sa/checkout-sa");
        assert_eq!(id.to_string(), id.as_str());
    }

    #[test]
    fn default_trust_domain_is_cluster_local() {
        let id = SpiffeId::for_workload(&TrustDomain::default(), "default", "default").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/default/sa/default");
        assert_eq!(TrustDomain::new(DEFAULT_TRUST_DOMAIN).unwrap(), TrustDomain::default());
    }

    #[test]
    fn kubernetes_names_with_dots_and_underscores_pass() {
        let td = TrustDomain::new("my_domain-1.local").unwrap();
        let id = SpiffeId::for_workload(&td, "kube-system", "system.node_agent").unwrap();
        assert_eq!(id.as_str(), "spiffe://my_domain-1.local/ns/kube-system/sa/system.node_agent");
    }

    #[test]
    fn trust_domain_is_not_silently_fixed() {
        assert_eq!(
            TrustDomain::new("Cluster.local"),
            Err(SpiffeError::TrustDomainCharacter { trust_domain: "Cluster.local".into(), found: 'C' })
        );
        for bad in ["a b", "a/b", "a:8080", "user@a", "a%2f", "é.local", " cluster.local"] {
            assert!(
                matches!(TrustDomain::new(bad), Err(SpiffeError::TrustDomainCharacter { .. })),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(TrustDomain::new(""), Err(SpiffeError::EmptyTrustDomain));
        let long = "a".repeat(256);
        assert_eq!(TrustDomain::new(&long), Err(SpiffeError::TrustDomainTooLong { len: 256 }));
        assert!(TrustDomain::new(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn forbidden_segment_characters_are_rejected_not_encoded() {
        let td = TrustDomain::default();
        for (ns, sa, found) in [
            ("ns/evil", "sa", '/'),
            ("ns", "sa%2fx", '%'),
            ("ns", "sa x", ' '),
            ("ns", "sä", 'ä'),
            ("n?s", "sa", '?'),
            ("ns", "sa#frag", '#'),
        ] {
            match SpiffeId::for_workload(&td, ns, sa) {
                Err(SpiffeError::SegmentCharacter { found: f, .. }) => assert_eq!(f, found),
                other => panic!("{ns}/{sa}: expected a refusal, got {other:?}"),
            }
        }
        for (ns, sa) in [("", "sa"), ("ns", ""), (".", "sa"), ("ns", "..")] {
            assert!(matches!(SpiffeId::for_workload(&td, ns, sa), Err(SpiffeError::BadSegment { .. })));
        }
    }

    #[test]
    fn overlong_ids_are_rejected() {
        let td = TrustDomain::default();
        let sa = "s".repeat(2100);
        assert!(matches!(SpiffeId::for_workload(&td, "ns", &sa), Err(SpiffeError::IdTooLong { .. })));
    }
}
