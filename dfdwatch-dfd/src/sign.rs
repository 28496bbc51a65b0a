//! Signed DFDs: approvers sign a DFD as a whole, and the daemon can refuse any DFD that its
//! trusted keys did not sign.
//!
//! The signed object is a manifest in the DFD's directory, [`MANIFEST`] (`dfd.sha256`), in the
//! format `sha256sum` writes: one line per DFD file, its SHA-256 in hex, two spaces, its file
//! name. Each approver signs the manifest with [minisign](https://jedisct1.github.io/minisign/)
//! (Ed25519), as `dfd.sha256.NAME.minisig` beside it; `dfdwatch sign` writes both, and the
//! `minisign` tool reads and writes the same files. A DFD is verified when enough distinct
//! trusted keys signed the manifest and the directory's DFD files are exactly those it lists,
//! byte for byte: one changed byte, a half-written file, a file added or removed, and the DFD
//! is refused. The signature's trusted comment (signed with it) is where an approver says who
//! approved and under which ticket; the daemon logs it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use minisign::{PublicKey, SecretKey, SignatureBox};

use crate::load::{LoadError, Source, read_sources};

/// The manifest's file name in the DFD directory.
pub const MANIFEST: &str = "dfd.sha256";
/// Suffix of signature files (`dfd.sha256.NAME.minisig`).
const SIGNATURE_SUFFIX: &str = ".minisig";
/// Largest manifest or signature file read.
const MAX_SMALL_FILE: u64 = 256 * 1024;
/// Most signature files read.
const MAX_SIGNATURES: usize = 64;

/// The DFD as read for admission: its files, and the signature material beside them.
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    /// The DFD files, as [`read_sources`] reads them.
    pub sources: Vec<Source>,
    /// The manifest, when the DFD is one directory that holds one.
    pub manifest: Option<Vec<u8>>,
    /// Signature files (`dfd.sha256.*.minisig`) by file name.
    pub signatures: Vec<(String, Vec<u8>)>,
}

impl Bundle {
    /// SHA-256 (hex) over everything read: a new signature is a change too.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for s in &self.sources {
            hasher.update(s.path.as_os_str().as_encoded_bytes());
            hasher.update((s.bytes.len() as u64).to_le_bytes());
            hasher.update(&s.bytes);
        }
        if let Some(m) = &self.manifest {
            hasher.update(b"manifest");
            hasher.update(m);
        }
        for (name, bytes) in &self.signatures {
            hasher.update(name.as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        hex(&hasher.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_small(path: &Path) -> Result<Vec<u8>, LoadError> {
    let io = |source| LoadError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(LoadError::NotRegular { path: path.to_owned() });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SMALL_FILE).read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// Reads the DFD under `paths` and, when it is one directory, its manifest and signatures.
pub fn read_bundle(paths: &[PathBuf]) -> Result<Bundle, LoadError> {
    let sources = read_sources(paths)?;
    let mut bundle = Bundle { sources, ..Bundle::default() };
    let [dir] = paths else { return Ok(bundle) };
    if !dir.is_dir() {
        return Ok(bundle);
    }
    let manifest = dir.join(MANIFEST);
    if manifest.exists() {
        bundle.manifest = Some(read_small(&manifest)?);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io { path: dir.clone(), source })?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(MANIFEST) && n.ends_with(SIGNATURE_SUFFIX))
        .collect();
    names.sort();
    names.truncate(MAX_SIGNATURES);
    for name in names {
        let bytes = read_small(&dir.join(&name))?;
        bundle.signatures.push((name, bytes));
    }
    Ok(bundle)
}

/// The manifest of `sources`: `HEX  NAME` per file, in load order (sorted by name).
pub fn manifest_of(sources: &[Source]) -> String {
    use sha2::{Digest, Sha256};
    sources.iter().map(|s| format!("{}  {}\n", hex(&Sha256::digest(&s.bytes)), file_name(&s.path))).collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A public key the daemon trusts, and what to call it.
pub struct TrustedKey {
    /// Its file name, for the log.
    pub name: String,
    /// Its minisign key id, hex.
    pub id: String,
    key: PublicKey,
}

/// The keys whose signatures count, and how many distinct ones a DFD needs.
pub struct Trust {
    keys: Vec<TrustedKey>,
    /// Distinct trusted keys that must have signed.
    pub required: usize,
}

/// One verified signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    /// The trusted key's name (its file name).
    pub key: String,
    /// Its key id, hex.
    pub key_id: String,
    /// The signature's trusted comment (who approved, which ticket).
    pub comment: String,
}

/// Why a DFD or a key was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key file could not be read or parsed.
    #[error("{}: not a minisign public key: {why}", crate::escape::escape_path(path))]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// No key given, or more required than given.
    #[error("{0}")]
    Usage(String),
    /// The DFD is not one directory with a manifest.
    #[error(
        "the DFD is not signed: no {MANIFEST} in its directory (signing needs the DFD as one directory; run `dfdwatch sign DIR --key KEY`)"
    )]
    Unsigned,
    /// The manifest does not parse.
    #[error("{MANIFEST} line {line}: {why}")]
    Manifest {
        /// 1-based line.
        line: usize,
        /// Why.
        why: String,
    },
    /// The DFD files are not the ones the manifest lists.
    #[error("the DFD files are not the signed ones: {0}")]
    Content(String),
    /// Not enough valid signatures from trusted keys.
    #[error("{valid} valid signature(s) from trusted keys, {required} required{problems}")]
    NotEnough {
        /// Distinct trusted keys with a valid signature.
        valid: usize,
        /// Required.
        required: usize,
        /// What was wrong with the others, `; `-joined after a colon.
        problems: String,
    },
    /// Signing failed.
    #[error("{0}")]
    Sign(String),
}

impl Trust {
    /// Reads minisign public key files (the `.pub` file `minisign -G` writes, or its second line).
    pub fn from_files(paths: &[PathBuf], required: usize) -> Result<Self, SignError> {
        let mut texts = Vec::new();
        for path in paths {
            let bad = |why: String| SignError::Key { path: path.clone(), why };
            let bytes = read_small(path).map_err(|e| bad(e.to_string()))?;
            texts.push((file_name(path), String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?));
        }
        let texts: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        Self::from_key_lines(&texts, required)
    }

    /// Keys from their text, by name: a `.pub` file's content, or just its key line.
    pub fn from_key_lines(keys: &[(&str, &str)], required: usize) -> Result<Self, SignError> {
        if keys.is_empty() {
            return Err(SignError::Usage("no trusted key given".into()));
        }
        let mut trusted = Vec::new();
        for (name, text) in keys {
            let bad = |why: String| SignError::Key { path: PathBuf::from(name), why };
            let encoded = text.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"));
            let key = encoded
                .ok_or_else(|| bad("empty".into()))
                .and_then(|e| PublicKey::from_base64(e).map_err(|e| bad(e.to_string())))?;
            trusted.push(TrustedKey { name: (*name).to_owned(), id: key_id(key.keynum()), key });
        }
        if required == 0 || required > trusted.len() {
            return Err(SignError::Usage(format!(
                "{required} signatures required, {} trusted key(s) given: use 1 to {}",
                trusted.len(),
                trusted.len()
            )));
        }
        Ok(Self { keys: trusted, required })
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }
}

fn key_id(keynum: &[u8]) -> String {
    // minisign prints key ids as the little-endian u64, in upper-case hex.
    keynum.iter().rev().map(|b| format!("{b:02X}")).collect()
}

/// Parses the manifest into file name -> SHA-256 hex.
fn parse_manifest(text: &[u8]) -> Result<BTreeMap<String, String>, SignError> {
    let text = std::str::from_utf8(text).map_err(|_| SignError::Manifest { line: 0, why: "not UTF-8".into() })?;
    let mut files = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |why: &str| SignError::Manifest { line: i + 1, why: why.into() };
        let (hash, name) = line.split_once("  ").ok_or_else(|| bad("expected `SHA256  FILE`"))?;
        let name = name.strip_prefix('*').unwrap_or(name);
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not a SHA-256 in hex"));
        }
        if name.contains('/') || name.is_empty() {
            return Err(bad("file names only, no directories"));
        }
        if files.insert(name.to_owned(), hash.to_ascii_lowercase()).is_some() {
            return Err(bad("file listed twice"));
        }
    }
    Ok(files)
}

/// Verifies `bundle` against `trust`: enough trusted signatures over its manifest, and its DFD
/// files exactly those the manifest lists. Returns who signed.
pub fn verify(bundle: &Bundle, trust: &Trust) -> Result<Vec<Approver>, SignError> {
    let manifest = bundle.manifest.as_ref().ok_or(SignError::Unsigned)?;
    let mut approvers: Vec<Approver> = Vec::new();
    let mut problems = Vec::new();
    for (name, bytes) in &bundle.signatures {
        match verify_one(manifest, bytes, trust) {
            Ok(a) if approvers.iter().any(|x| x.key_id == a.key_id) => {}
            Ok(a) => approvers.push(a),
            Err(why) => problems.push(format!("{}: {why}", crate::escape::escape_bytes(name.as_bytes()))),
        }
    }
    if approvers.len() < trust.required {
        let problems = if problems.is_empty() { String::new() } else { format!(": {}", problems.join("; ")) };
        return Err(SignError::NotEnough { valid: approvers.len(), required: trust.required, problems });
    }
    let listed = parse_manifest(manifest)?;
    let present: BTreeMap<String, &Source> = bundle.sources.iter().map(|s| (file_name(&s.path), s)).collect();
    let mut wrong = Vec::new();
    let esc = |n: &str| crate::escape::escape_bytes(n.as_bytes());
    for (name, s) in &present {
        let shown = esc(name);
        match listed.get(name) {
            None => wrong.push(format!("{shown} is not in the signed manifest")),
            Some(hash) => {
                use sha2::{Digest, Sha256};
                if hex(&Sha256::digest(&s.bytes)) != *hash {
                    wrong.push(format!("{shown} differs from the signed content (changed, or written only in part)"));
                }
            }
        }
    }
    let present: BTreeSet<&String> = present.keys().collect();
    wrong.extend(listed.keys().filter(|n| !present.contains(n)).map(|n| format!("{} is signed but missing", esc(n))));
    if !wrong.is_empty() {
        return Err(SignError::Content(wrong.join("; ")));
    }
    Ok(approvers)
}

fn verify_one(manifest: &[u8], signature: &[u8], trust: &Trust) -> Result<Approver, String> {
    let text = std::str::from_utf8(signature).map_err(|_| "not UTF-8".to_owned())?;
    let sig = SignatureBox::from_string(text).map_err(|e| format!("not a minisign signature: {e}"))?;
    let id = key_id(sig.keynum());
    let key = trust.keys.iter().find(|k| k.key.keynum() == sig.keynum()).ok_or(format!("key {id} is not trusted"))?;
    minisign::verify(&key.key, &sig, Cursor::new(manifest), true, false, false)
        .map_err(|e| format!("does not verify with key {id}: {e}"))?;
    let comment = sig.trusted_comment().unwrap_or_default();
    Ok(Approver { key: key.name.clone(), key_id: id, comment })
}

/// Writes the manifest of the DFD directory `dir` and signs it with `secret`, as
/// `dfd.sha256.NAME.minisig` (NAME: `name`, or the key id). Returns the signature's path.
pub fn sign(dir: &Path, secret: &SecretKey, name: Option<&str>, comment: &str) -> Result<PathBuf, SignError> {
    let fail = |e: &dyn std::fmt::Display| SignError::Sign(e.to_string());
    if !dir.is_dir() {
        return Err(SignError::Usage(format!(
            "{}: not a directory (a signed DFD is one directory)",
            crate::escape::escape_path(dir)
        )));
    }
    let sources = read_sources(&[dir.to_owned()]).map_err(|e| fail(&e))?;
    let manifest = manifest_of(&sources);
    let public = PublicKey::from_secret_key(secret).map_err(|e| fail(&e))?;
    let name = name.map_or_else(|| key_id(public.keynum()), str::to_owned);
    if name.is_empty() || name.contains(['/', '\0']) {
        return Err(SignError::Usage(format!("--name {name:?}: a file name part, no '/'")));
    }
    let sig = minisign::sign(Some(&public), secret, Cursor::new(manifest.as_bytes()), Some(comment), None)
        .map_err(|e| fail(&e))?;
    std::fs::write(dir.join(MANIFEST), &manifest).map_err(|e| fail(&e))?;
    let path = dir.join(format!("{MANIFEST}.{name}{SIGNATURE_SUFFIX}"));
    std::fs::write(&path, sig.into_string()).map_err(|e| fail(&e))?;
    Ok(path)
}

/// Reads a minisign secret key, decrypting it with `password` unless it was made without one
/// (`minisign -G -W`, whose key says "no KDF" and carries no checksum).
pub fn secret_key(path: &Path, password: &str) -> Result<SecretKey, SignError> {
    use base64::Engine;
    let fail = |why: String| {
        SignError::Sign(format!("{}: cannot read the secret key: {why}", crate::escape::escape_path(path)))
    };
    let text =
        String::from_utf8(read_small(path).map_err(|e| fail(e.to_string()))?).map_err(|_| fail("not UTF-8".into()))?;
    let encoded = text.lines().nth(1).map(str::trim).ok_or_else(|| fail("no key line".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|e| fail(e.to_string()))?;
    // Bytes 2-3 name the key derivation: zero for a key stored without a password.
    if bytes.get(2..4) == Some(&[0, 0][..]) {
        return SecretKey::from_bytes(&bytes).map_err(|e| fail(e.to_string()));
    }
    SecretKey::from_box(text.into(), Some(password.to_owned())).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, text: &str) -> Source {
        Source { path: PathBuf::from("/dfd").join(name), bytes: text.as_bytes().to_vec() }
    }

    fn keypair() -> (PublicKey, SecretKey) {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        (kp.pk, kp.sk)
    }

    fn signed(sources: Vec<Source>, sk: &SecretKey, pk: &PublicKey) -> Bundle {
        let manifest = manifest_of(&sources);
        let sig = minisign::sign(Some(pk), sk, Cursor::new(manifest.as_bytes()), Some("ok SEC-1"), None).unwrap();
        Bundle {
            sources,
            manifest: Some(manifest.into_bytes()),
            signatures: vec![("dfd.sha256.a.minisig".into(), sig.into_string().into_bytes())],
        }
    }

    fn trust(pks: &[&PublicKey], required: usize) -> Trust {
        let keys = pks
            .iter()
            .enumerate()
            .map(|(i, pk)| TrustedKey { name: format!("k{i}"), id: key_id(pk.keynum()), key: (*pk).clone() })
            .collect();
        Trust { keys, required }
    }

    #[test]
    fn a_signed_dfd_verifies_and_any_change_is_refused() {
        let (pk, sk) = keypair();
        let files = vec![source("a.yaml", "one\n"), source("b.yaml", "two\n")];
        let bundle = signed(files.clone(), &sk, &pk);
        let approvers = verify(&bundle, &trust(&[&pk], 1)).unwrap();
        assert_eq!(approvers[0].comment, "ok SEC-1");

        let mut changed = bundle.clone();
        changed.sources[1].bytes[0] ^= 1;
        assert!(
            matches!(verify(&changed, &trust(&[&pk], 1)), Err(SignError::Content(m)) if m.contains("b.yaml differs"))
        );
        let mut half = bundle.clone();
        half.sources[0].bytes.truncate(2);
        assert!(matches!(verify(&half, &trust(&[&pk], 1)), Err(SignError::Content(_))));
        let mut added = bundle.clone();
        added.sources.push(source("c.yaml", "three\n"));
        assert!(
            matches!(verify(&added, &trust(&[&pk], 1)), Err(SignError::Content(m)) if m.contains("c.yaml is not in"))
        );
        let mut removed = bundle.clone();
        removed.sources.pop();
        assert!(
            matches!(verify(&removed, &trust(&[&pk], 1)), Err(SignError::Content(m)) if m.contains("b.yaml is signed but missing"))
        );
        let mut forged = bundle.clone();
        forged.manifest = Some(manifest_of(&changed.sources).into_bytes());
        assert!(matches!(verify(&forged, &trust(&[&pk], 1)), Err(SignError::NotEnough { valid: 0, .. })));
    }

    #[test]
    fn signatures_count_once_per_trusted_key() {
        let (pk, sk) = keypair();
        let (other, _) = keypair();
        let bundle = signed(vec![source("a.yaml", "one\n")], &sk, &pk);
        assert!(
            matches!(verify(&bundle, &trust(&[&other], 1)), Err(SignError::NotEnough { problems, .. }) if problems.contains("is not trusted"))
        );
        let mut twice = bundle.clone();
        twice.signatures.push(("dfd.sha256.b.minisig".into(), twice.signatures[0].1.clone()));
        assert!(matches!(
            verify(&twice, &trust(&[&pk, &other], 2)),
            Err(SignError::NotEnough { valid: 1, required: 2, .. })
        ));
        assert!(matches!(verify(&Bundle::default(), &trust(&[&pk], 1)), Err(SignError::Unsigned)));
    }

    #[test]
    fn an_encrypted_secret_key_needs_its_password() {
        let dir = std::env::temp_dir().join(format!("dfdwatch-sign-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut public, mut secret) = (Vec::new(), Vec::new());
        minisign::KeyPair::generate_and_write_encrypted_keypair(&mut public, &mut secret, None, Some("s3cret".into()))
            .unwrap();
        let path = dir.join("k.key");
        std::fs::write(&path, &secret).unwrap();
        assert!(secret_key(&path, "s3cret").is_ok());
        assert!(matches!(secret_key(&path, "wrong"), Err(SignError::Sign(m)) if m.contains("Wrong password")));
        assert!(secret_key(&path, "").is_err(), "no password for an encrypted key");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn manifests_are_strict() {
        assert!(parse_manifest(b"abc  a.yaml\n").is_err());
        let h = "0".repeat(64);
        assert!(parse_manifest(format!("{h}  ../a.yaml\n").as_bytes()).is_err());
        assert!(parse_manifest(format!("{h}  a.yaml\n{h}  a.yaml\n").as_bytes()).is_err());
        assert_eq!(parse_manifest(format!("{h}  a.yaml\n").as_bytes()).unwrap().len(), 1);
    }
}
