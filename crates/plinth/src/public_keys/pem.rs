//! Reading an uploaded PEM public key: which algorithm, how strong, and its fingerprint.

use jsonwebtoken::DecodingKey;
use spki::der::{Decode, Document};
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::limits::{PEM_MAX_BYTES, RSA_MIN_BITS};
use crate::secrets;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub algorithm: &'static str,
    pub bits: u64,
    pub fingerprint: String,
}

fn rsa_bits(pkcs1_der: &[u8]) -> Result<u64, String> {
    let key = pkcs1::RsaPublicKey::from_der(pkcs1_der).map_err(|_| "malformed RSA public key".to_string())?;
    let modulus = key.modulus.as_bytes();
    let Some(first) = modulus.first() else { return Err("empty RSA modulus".into()) };
    Ok((modulus.len() as u64 - 1) * 8 + u64::from(8 - first.leading_zeros()))
}

fn hex_sha256(der: &[u8]) -> String {
    // Fingerprint over the exact DER bytes.
    secrets::sha256_hex_bytes(der)
}

/// Reads `pem`, accepting RSA keys of 2,048 bits or more and EC keys on P-256.
pub fn parse(pem: &str) -> Result<ParsedKey, String> {
    let pem = pem.trim();
    if pem.len() > PEM_MAX_BYTES {
        return Err(format!("must be at most {PEM_MAX_BYTES} bytes"));
    }
    let (label, document) = Document::from_pem(pem).map_err(|_| "is not a PEM document".to_string())?;
    let der = document.as_bytes();
    let parsed = match label {
        "RSA PUBLIC KEY" => ParsedKey { algorithm: "RS256", bits: rsa_bits(der)?, fingerprint: hex_sha256(der) },
        "PUBLIC KEY" => {
            let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|_| "malformed public key".to_string())?;
            let key_bytes = spki.subject_public_key.as_bytes().ok_or("malformed public key")?;
            if spki.algorithm.oid == RSA_ENCRYPTION {
                ParsedKey { algorithm: "RS256", bits: rsa_bits(key_bytes)?, fingerprint: hex_sha256(der) }
            } else if spki.algorithm.oid == EC_PUBLIC_KEY {
                match spki.algorithm.parameters_oid() {
                    Ok(curve) if curve == P256 => {
                        ParsedKey { algorithm: "ES256", bits: 256, fingerprint: hex_sha256(der) }
                    }
                    _ => return Err("EC keys must be on the P-256 curve".into()),
                }
            } else {
                return Err("must be an RSA or EC P-256 public key".into());
            }
        }
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
            return Err("is a private key: upload only the public key, and keep the private key secret".into())
        }
        other => return Err(format!("unexpected PEM label `{other}`: expected `PUBLIC KEY`")),
    };
    if parsed.algorithm == "RS256" && parsed.bits < RSA_MIN_BITS {
        return Err(format!("RSA keys need at least {RSA_MIN_BITS} bits; this one has {}", parsed.bits));
    }
    let usable = match parsed.algorithm {
        "RS256" => DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok(),
        _ => DecodingKey::from_ec_pem(pem.as_bytes()).is_ok(),
    };
    if !usable {
        return Err("cannot be used to verify tokens".into());
    }
    Ok(parsed)
}
