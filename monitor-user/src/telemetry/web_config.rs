//! TLS and basic auth for the metrics endpoint, configured as every Prometheus exporter is: a web
//! configuration file (`--web-config-file`) in the Prometheus exporter toolkit's format.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/dfdwatch/web/tls.crt
//!   key_file: /etc/dfdwatch/web/tls.key
//!   # client_auth_type: RequireAndVerifyClientCert   # with client_ca_file: mutual TLS
//! basic_auth_users:
//!   prometheus: $2y$10$...                         # bcrypt, e.g. `htpasswd -nbB prometheus PASSWORD`
//! ```
//!
//! The file is input like any other: an unknown field, a missing file or a hash that is not
//! bcrypt is refused at start with a message that says which. It is read once (a change needs a
//! restart). `/healthz` and `/readyz` answer without basic auth (the kubelet's probes cannot send
//! it); `/metrics` needs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dfdwatch_dfd::yaml::{Value, Yaml};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::escape::escape_path;

/// Why the web configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("--web-config-file {}: {why}", escape_path(.path))]
pub struct WebConfigError {
    path: PathBuf,
    why: String,
}

/// What the metrics endpoint requires.
pub struct WebConfig {
    /// TLS, when `tls_server_config` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name -> bcrypt hash; empty: no basic auth.
    users: BTreeMap<String, String>,
    /// Credentials (SHA-256 of `user:password`) that verified: bcrypt costs tens of milliseconds
    /// per check by design, and Prometheus sends the same credentials every scrape.
    verified: Mutex<Vec<[u8; 32]>>,
}

/// Credentials remembered as verified, at most.
const VERIFIED_CACHE: usize = 16;

fn scalar<'a>(y: &'a Yaml, field: &str) -> Result<&'a str, String> {
    match &y.value {
        Value::Scalar { text, .. } => Ok(text),
        _ => Err(format!("`{field}` must be a string, not {}", y.kind_word())),
    }
}

fn map<'a>(y: &'a Yaml, field: &str, known: &[&str]) -> Result<&'a [(dfdwatch_dfd::yaml::Key, Yaml)], String> {
    let Value::Map(entries) = &y.value else {
        return Err(format!("`{field}` must be a mapping, not {}", y.kind_word()));
    };
    if let Some((k, _)) = entries.iter().find(|(k, _)| !known.is_empty() && !known.contains(&k.text.as_str())) {
        return Err(format!("unknown field `{}` in `{field}` (known: {})", k.text, known.join(", ")));
    }
    Ok(entries)
}

impl WebConfig {
    /// Reads and checks the file, and the certificate and key it names.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let fail = |why: String| WebConfigError { path: path.to_owned(), why };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let mut findings = Vec::new();
        let file: Arc<Path> = Arc::from(path);
        let docs = dfdwatch_dfd::yaml::parse(&text, &file, &mut findings);
        if let Some(f) = findings.first() {
            return Err(fail(f.message.clone()));
        }
        let [doc] = docs.as_slice() else { return Err(fail("expected one YAML document".into())) };
        let mut config = Self { tls: None, users: BTreeMap::new(), verified: Mutex::new(Vec::new()) };
        for (key, value) in map(doc, "the file", &["tls_server_config", "basic_auth_users"]).map_err(fail)? {
            match key.text.as_str() {
                "tls_server_config" => config.tls = Some(Arc::new(tls(value).map_err(fail)?)),
                _ => {
                    for (user, hash) in map(value, "basic_auth_users", &[]).map_err(fail)? {
                        let hash = scalar(hash, "basic_auth_users").map_err(fail)?;
                        // The hash must be bcrypt: a plain password here would be a mistake.
                        bcrypt::verify("", hash)
                            .map_err(|e| fail(format!("user {}: not a bcrypt hash ({e})", user.text)))?;
                        config.users.insert(user.text.clone(), hash.to_owned());
                    }
                }
            }
        }
        Ok(config)
    }

    /// Whether `/metrics` needs basic auth.
    pub fn needs_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `Authorization` header value. Runs bcrypt (slow by design): call off the
    /// runtime's worker threads.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let digest: [u8; 32] = Sha256::digest(&decoded).into();
        if self.verified.lock().is_ok_and(|v| v.contains(&digest)) {
            return true;
        }
        let Ok(text) = std::str::from_utf8(&decoded) else { return false };
        let Some((user, password)) = text.split_once(':') else { return false };
        let ok = self.users.get(user).is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if ok && let Ok(mut v) = self.verified.lock() {
            if v.len() >= VERIFIED_CACHE {
                v.remove(0);
            }
            v.push(digest);
        }
        ok
    }
}

/// The rustls server configuration of `tls_server_config`.
fn tls(y: &Yaml) -> Result<rustls::ServerConfig, String> {
    let known = ["cert_file", "key_file", "client_auth_type", "client_ca_file"];
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in map(y, "tls_server_config", &known)? {
        fields.insert(k.text.as_str(), scalar(v, &k.text)?);
    }
    let need = |f: &str| fields.get(f).copied().ok_or(format!("`tls_server_config.{f}` is required"));
    let (cert, key) = (need("cert_file")?, need("key_file")?);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("cert_file {}: {e}", escape_path(Path::new(cert))))?;
    if certs.is_empty() {
        return Err(format!("cert_file {}: no certificate", escape_path(Path::new(cert))));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key_file {}: {e}", escape_path(Path::new(key))))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match fields.get("client_auth_type").copied().unwrap_or("NoClientCert") {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" => {
            let ca = need("client_ca_file")?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("client_ca_file: {e}"))? {
                roots
                    .add(c.map_err(|e| format!("client_ca_file: {e}"))?)
                    .map_err(|e| format!("client_ca_file: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        other => {
            return Err(format!(
                "client_auth_type {other:?} is not supported: use NoClientCert or RequireAndVerifyClientCert"
            ));
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
