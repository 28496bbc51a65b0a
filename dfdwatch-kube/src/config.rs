//! Typed configuration of the Kubernetes identity watcher, validated before anything connects.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeError, TrustDomain};

/// Where the client's credentials and API server address come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientSource {
    /// `$KUBECONFIG` or `~/.kube/config` if present, otherwise the in-cluster service account.
    #[default]
    Infer,
    /// The pod's service account token and `KUBERNETES_SERVICE_HOST`/`_PORT`.
    InCluster,
    /// An explicit kubeconfig file, optionally with a context name.
    Kubeconfig {
        /// Path of the kubeconfig file.
        path: PathBuf,
        /// Context to use; the file's current context when absent.
        #[serde(default)]
        context: Option<String>,
    },
}

/// Bounds on what is accepted from the API server (treated as untrusted input).
///
/// An object over a bound is refused whole (not truncated: a dropped label could change which DFD
/// selector matches), counted in [`crate::Health::refused`] and logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most pods kept (all namespaces, all nodes). Default 200 000.
    pub max_pods: usize,
    /// Most namespaces kept. Default 20 000.
    pub max_namespaces: usize,
    /// Most Services kept. Default 50 000.
    pub max_services: usize,
    /// Most EndpointSlices kept. Default 100 000.
    pub max_endpoint_slices: usize,
    /// Most labels on one object. Default 64.
    pub max_labels: usize,
    /// Longest label key in bytes. Default 317 (Kubernetes: 253-byte prefix, `/`, 63-byte name).
    pub max_label_key_len: usize,
    /// Longest label value in bytes. Default 63 (the Kubernetes limit).
    pub max_label_value_len: usize,
    /// Longest namespace, name, UID or service account in bytes. Default 253.
    pub max_name_len: usize,
    /// Most containers (init, regular and ephemeral together) in one pod. Default 64.
    pub max_containers: usize,
    /// Most IPs on one pod or Service. Default 8.
    pub max_ips: usize,
    /// Most endpoints in one EndpointSlice (Kubernetes caps them at 1000). Default 1000.
    pub max_endpoints_per_slice: usize,
    /// Most ports in one Service or EndpointSlice. Default 100.
    pub max_ports: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pods: 200_000,
            max_namespaces: 20_000,
            max_services: 50_000,
            max_endpoint_slices: 100_000,
            max_labels: 64,
            max_label_key_len: 317,
            max_label_value_len: 63,
            max_name_len: 253,
            max_containers: 64,
            max_ips: 8,
            max_endpoints_per_slice: 1000,
            max_ports: 100,
        }
    }
}

/// Configuration as written by the operator (serde, unknown fields refused).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeConfig {
    /// This node's name as Kubernetes knows it (`spec.nodeName` of the pods running here),
    /// usually from the downward API.
    pub node_name: String,
    /// SPIFFE trust domain; default `cluster.local`.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Where credentials come from; default: infer.
    #[serde(default)]
    pub source: ClientSource,
    /// Size bounds on API server objects.
    #[serde(default)]
    pub limits: Limits,
    /// Seconds between API server reachability probes (`GET /version`). Default 10.
    #[serde(default = "default_probe_interval_secs")]
    pub probe_interval_secs: u64,
    /// Longest wait between watch retries after errors, in seconds. Default 30.
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
}

fn default_trust_domain() -> String {
    DEFAULT_TRUST_DOMAIN.to_owned()
}
fn default_probe_interval_secs() -> u64 {
    10
}
fn default_max_backoff_secs() -> u64 {
    30
}

impl KubeConfig {
    /// A configuration with defaults for everything but the node name.
    pub fn for_node(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            trust_domain: default_trust_domain(),
            source: ClientSource::default(),
            limits: Limits::default(),
            probe_interval_secs: default_probe_interval_secs(),
            max_backoff_secs: default_max_backoff_secs(),
        }
    }

    /// Checks everything and reports every error at once.
    pub fn validate(&self) -> Result<Settings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.node_name.is_empty() {
            errors.push(ConfigError::EmptyNodeName);
        } else if self.node_name.len() > 253 {
            errors.push(ConfigError::NodeNameTooLong { len: self.node_name.len() });
        }
        let trust_domain = match TrustDomain::new(&self.trust_domain) {
            Ok(td) => Some(td),
            Err(source) => {
                errors.push(ConfigError::TrustDomain { source });
                None
            }
        };
        if self.probe_interval_secs == 0 {
            errors.push(ConfigError::ZeroDuration { field: "probe_interval_secs" });
        }
        if self.max_backoff_secs == 0 {
            errors.push(ConfigError::ZeroDuration { field: "max_backoff_secs" });
        }
        let l = &self.limits;
        for (field, value) in [
            ("limits.max_pods", l.max_pods),
            ("limits.max_namespaces", l.max_namespaces),
            ("limits.max_services", l.max_services),
            ("limits.max_endpoint_slices", l.max_endpoint_slices),
            ("limits.max_label_key_len", l.max_label_key_len),
            ("limits.max_label_value_len", l.max_label_value_len),
            ("limits.max_name_len", l.max_name_len),
            ("limits.max_containers", l.max_containers),
            ("limits.max_ips", l.max_ips),
            ("limits.max_endpoints_per_slice", l.max_endpoints_per_slice),
            ("limits.max_ports", l.max_ports),
        ] {
            if value == 0 {
                errors.push(ConfigError::ZeroLimit { field });
            }
        }
        match trust_domain {
            Some(trust_domain) if errors.is_empty() => Ok(Settings {
                node_name: self.node_name.clone(),
                trust_domain,
                limits: self.limits.clone(),
                probe_interval: Duration::from_secs(self.probe_interval_secs),
                max_backoff: Duration::from_secs(self.max_backoff_secs),
            }),
            _ => Err(errors),
        }
    }
}

/// A validated configuration, what the watcher runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// This node's name.
    pub node_name: String,
    /// SPIFFE trust domain.
    pub trust_domain: TrustDomain,
    /// Size bounds.
    pub limits: Limits,
    /// Interval between reachability probes.
    pub probe_interval: Duration,
    /// Longest wait between watch retries.
    pub max_backoff: Duration,
}

impl Settings {
    /// Defaults for a node name (trust domain `cluster.local`, default limits, 10 s probe, 30 s
    /// backoff cap).
    pub fn for_node(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            trust_domain: TrustDomain::default(),
            limits: Limits::default(),
            probe_interval: Duration::from_secs(default_probe_interval_secs()),
            max_backoff: Duration::from_secs(default_max_backoff_secs()),
        }
    }
}

/// One configuration error; [`KubeConfig::validate`] returns all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `node_name` is empty.
    #[error("node_name is empty; set it to this node's Kubernetes name (downward API spec.nodeName)")]
    EmptyNodeName,
    /// `node_name` is longer than a Kubernetes name can be.
    #[error("node_name is {len} bytes long; Kubernetes names have at most 253")]
    NodeNameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The trust domain is not a valid SPIFFE trust domain.
    #[error("trust_domain: {source}")]
    TrustDomain {
        /// Why it was refused.
        #[source]
        source: SpiffeError,
    },
    /// A duration is zero.
    #[error("{field} must be at least 1")]
    ZeroDuration {
        /// The field.
        field: &'static str,
    },
    /// A limit is zero.
    #[error("{field} must be at least 1")]
    ZeroLimit {
        /// The field.
        field: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_error_at_once() {
        let mut c = KubeConfig::for_node("");
        c.trust_domain = "Bad Domain".into();
        c.probe_interval_secs = 0;
        c.limits.max_pods = 0;
        let errors = c.validate().unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors.contains(&ConfigError::EmptyNodeName));
        assert!(errors.contains(&ConfigError::ZeroLimit { field: "limits.max_pods" }));
    }

    #[test]
    fn defaults_validate() {
        let s = KubeConfig::for_node("node-a").validate().unwrap();
        assert_eq!(s, Settings::for_node("node-a"));
        assert_eq!(s.trust_domain.as_str(), "cluster.local");
    }
}
