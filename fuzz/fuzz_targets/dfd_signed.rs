//! A signed DFD's manifest and signature files, as anyone who can write the DFD's directory can
//! make them: verified against a trusted key without a panic, and never verified unless signed.
#![no_main]

use dfdwatch_dfd::load::Source;
use dfdwatch_dfd::sign::{Bundle, Trust, verify};
use libfuzzer_sys::fuzz_target;

/// A public key whose secret key is not in this repository: nothing the fuzzer makes verifies.
const KEY: &str = "RWSNQwhLF70aCK/qeXgsO1VZUbfXAguVMyrrNM/AZCeK1Lh6tmSaREFo";

fuzz_target!(|data: &[u8]| {
    // manifest NUL signature NUL DFD file
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(manifest), Some(signature), Some(file)) = (parts.next(), parts.next(), parts.next()) else { return };
    let Ok(trust) = Trust::from_key_lines(&[("fuzz.pub", KEY)], 1) else { return };
    let bundle = Bundle {
        sources: vec![Source { path: "dfd/shop.yaml".into(), bytes: file.to_vec() }],
        manifest: Some(manifest.to_vec()),
        signatures: vec![("dfd.sha256.fuzz.minisig".into(), signature.to_vec())],
    };
    assert!(verify(&bundle, &trust).is_err(), "verified without the secret key");
});
