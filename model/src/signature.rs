//! Signed models (mapping.md M12.3): RSASSA-PKCS1-v1_5 with SHA-256 over the model
//! lines, each followed by one NUL byte, as Quixote's `sign-model` makes them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

/// Why a key or signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The `key` line does not hold a base64 PEM public key.
    #[error("bad key line: {0}")]
    BadKey(String),
    /// The private key file is not an RSA private key in PEM.
    #[error("bad private key: {0}")]
    BadPrivateKey(String),
    /// The `signature` line is not base64.
    #[error("bad signature encoding: {0}")]
    BadEncoding(String),
    /// The signature does not verify with the key.
    #[error("signature does not verify")]
    Mismatch,
    /// Key generation or signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The public key of a `key` line: base64 of the PEM text.
pub fn public_key_from_line_value(value: &str) -> Result<RsaPublicKey, SignatureError> {
    let pem = BASE64
        .decode(value.trim())
        .map_err(|e| SignatureError::BadKey(e.to_string()))?;
    let pem = String::from_utf8(pem).map_err(|e| SignatureError::BadKey(e.to_string()))?;
    RsaPublicKey::from_public_key_pem(&pem).map_err(|e| SignatureError::BadKey(e.to_string()))
}

/// A public key's fingerprint: SHA-256 of its DER encoding
/// (SubjectPublicKeyInfo), in hex, as `openssl pkey -pubin -outform DER |
/// sha256sum` prints it.
pub fn fingerprint(key: &RsaPublicKey) -> Result<String, SignatureError> {
    use sha2::Digest as _;
    let der = key
        .to_public_key_der()
        .map_err(|e| SignatureError::BadKey(e.to_string()))?;
    Ok(Sha256::digest(der.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A public key from PEM: a public key (`PUBLIC KEY`), or the public half of
/// a private key (`sign -G` writes those).
pub fn public_key_from_pem(pem: &str) -> Result<RsaPublicKey, SignatureError> {
    match RsaPublicKey::from_public_key_pem(pem) {
        Ok(key) => Ok(key),
        Err(e) => private_key_from_pem(pem)
            .map(|k| k.to_public_key())
            .map_err(|_| SignatureError::BadKey(e.to_string())),
    }
}

/// The signed data: each line's bytes followed by one NUL.
pub fn signed_data<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut data = Vec::new();
    for line in lines {
        data.extend_from_slice(line.as_bytes());
        data.push(0);
    }
    data
}

/// Verifies a base64 signature over `data`.
pub fn verify(key: &RsaPublicKey, data: &[u8], signature_b64: &str) -> Result<(), SignatureError> {
    let raw = BASE64
        .decode(signature_b64.trim())
        .map_err(|e| SignatureError::BadEncoding(e.to_string()))?;
    let sig = Signature::try_from(raw.as_slice())
        .map_err(|e| SignatureError::BadEncoding(e.to_string()))?;
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(data, &sig)
        .map_err(|_| SignatureError::Mismatch)
}

/// Reads an RSA private key in PEM (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
pub fn private_key_from_pem(pem: &str) -> Result<RsaPrivateKey, SignatureError> {
    RsaPrivateKey::from_pkcs1_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem))
        .map_err(|e| SignatureError::BadPrivateKey(e.to_string()))
}

/// Generates a 2048-bit RSA key (e = 65537) as PKCS#1 PEM, like `sign-model -G`.
pub fn generate_private_key_pem() -> Result<String, SignatureError> {
    let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
        .map_err(|e| SignatureError::Signing(e.to_string()))?;
    key.to_pkcs1_pem(LineEnding::LF)
        .map(|p| p.to_string())
        .map_err(|e| SignatureError::Signing(e.to_string()))
}

/// Signs a model text as `sign-model -k KEY -m MODEL` does: a `key` line, the
/// model's lines unchanged, then a `signature` line over all of them.
pub fn sign_model(model: &str, key: &RsaPrivateKey) -> Result<String, SignatureError> {
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignatureError::Signing(e.to_string()))?;
    let key_line = format!("key {}", BASE64.encode(pem.as_bytes()));
    let mut lines = vec![key_line.as_str()];
    lines.extend(model.lines());
    let data = signed_data(lines.iter().copied());
    let sig = SigningKey::<Sha256>::new(key.clone())
        .try_sign(&data)
        .map_err(|e| SignatureError::Signing(e.to_string()))?;
    let mut out = String::with_capacity(model.len() + 1024);
    for l in &lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("signature ");
    out.push_str(&BASE64.encode(sig.to_bytes()));
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_data_matches_spec_v22() {
        let agg = "aggregate de2b9c37eb1ceefa4bcbc6d8412920693d3272f30eb5ba98d51d2f898d620289";
        let state = "state be625ed6bb24968652a7e61c9966b3588879dd9d69f3b3d728fefde57c60331b";
        let data = signed_data(["key QUJDRA==", agg, state, "seal", "end"]);
        assert_eq!(data.len(), 168);
        assert_eq!(
            crate::Digest::of(&[&data]).to_hex(),
            "2d168be9aec0e4169315df36384418a2ec071f6c2a05b8292cade06d943995c5"
        );
    }
}
