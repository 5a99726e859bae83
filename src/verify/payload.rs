//! The cosign "SimpleSigning" payload: the JSON document a cosign signature is computed over.

use serde::Deserialize;

use crate::reference::Digest;

pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";
/// Real payloads are a few hundred bytes (a few KiB with annotations); the cap bounds what an
/// untrusted registry can make us download and parse per signature.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is {size} bytes, more than the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("payload is not a cosign SimpleSigning document: {0}")]
    Malformed(String),
    #[error("payload type is {0:?}, not {COSIGN_SIGNATURE_TYPE:?}")]
    WrongType(String),
    #[error("payload docker-manifest-digest {0:?} is not a valid digest")]
    BadDigest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload {
    pub docker_reference: String,
    pub manifest_digest: Digest,
}

// "critical" means a verifier must understand every field in it, so unknown fields there are
// rejected (as containers/image does); "optional" is free-form and ignored.
#[derive(Deserialize)]
struct Document {
    critical: Critical,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

impl SignedPayload {
    /// Parses an (already signature-checked or not) payload; never panics on any input.
    pub fn parse(bytes: &[u8]) -> Result<SignedPayload, PayloadError> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge { size: bytes.len() });
        }
        let doc: Document = serde_json::from_slice(bytes).map_err(|e| PayloadError::Malformed(e.to_string()))?;
        let critical = doc.critical;
        if critical.kind != COSIGN_SIGNATURE_TYPE {
            return Err(PayloadError::WrongType(truncated(&critical.kind)));
        }
        let digest = &critical.image.docker_manifest_digest;
        let manifest_digest = digest.parse::<Digest>().map_err(|_| PayloadError::BadDigest(truncated(digest)))?;
        Ok(SignedPayload { docker_reference: critical.identity.docker_reference, manifest_digest })
    }
}

// Values come from an untrusted document and end up in log lines and CRI error messages.
fn truncated(s: &str) -> String {
    const MAX: usize = 100;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

    fn doc(reference: &str, digest: &str, kind: &str) -> String {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"{kind}"}},"optional":null}}"#
        )
    }

    #[test]
    fn parses_cosign_payload() {
        let p = SignedPayload::parse(doc("registry.example/app", DIGEST, COSIGN_SIGNATURE_TYPE).as_bytes()).unwrap();
        assert_eq!(p.docker_reference, "registry.example/app");
        assert_eq!(p.manifest_digest.as_str(), DIGEST);
    }

    #[test]
    fn optional_section_may_hold_anything_or_be_absent() {
        let with = r#"{"critical":{"identity":{"docker-reference":"a/b"},"image":{"docker-manifest-digest":"DIG"},"type":"cosign container image signature"},"optional":{"creator":"x","n":[1,{"y":null}]}}"#;
        assert!(SignedPayload::parse(with.replace("DIG", DIGEST).as_bytes()).is_ok());
        let without = r#"{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"DIG"},"identity":{"docker-reference":"a/b"}}}"#;
        assert!(SignedPayload::parse(without.replace("DIG", DIGEST).as_bytes()).is_ok());
    }

    #[test]
    fn wrong_type_is_reported_as_such() {
        let err = SignedPayload::parse(doc("a/b", DIGEST, "atomic container signature").as_bytes()).unwrap_err();
        assert_eq!(err, PayloadError::WrongType("atomic container signature".into()));
    }

    #[test]
    fn bad_digests_are_rejected() {
        for bad in ["", "sha256:abc", "md5:0123", &DIGEST.to_uppercase(), &format!("{DIGEST}0")] {
            let err = SignedPayload::parse(doc("a/b", bad, COSIGN_SIGNATURE_TYPE).as_bytes()).unwrap_err();
            assert!(matches!(err, PayloadError::BadDigest(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn structural_problems_are_malformed_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"null",
            b"[]",
            b"{}",
            b"{\"critical\":null}",
            b"{\"critical\":{\"identity\":{},\"image\":{},\"type\":\"x\"}}",
            b"\xff\xfe{",
            b"{\"critical\":{\"identity\":{\"docker-reference\":1}",
        ];
        for case in cases {
            assert!(matches!(SignedPayload::parse(case), Err(PayloadError::Malformed(_))), "{case:?}");
        }
    }

    #[test]
    fn unknown_critical_fields_and_duplicates_are_rejected() {
        let extra = doc("a/b", DIGEST, COSIGN_SIGNATURE_TYPE).replace("\"type\"", "\"extra\":1,\"type\"");
        assert!(matches!(SignedPayload::parse(extra.as_bytes()), Err(PayloadError::Malformed(_))));
        // A duplicate key must not let a document say two different things to two parsers.
        let dup = doc("a/b", DIGEST, COSIGN_SIGNATURE_TYPE)
            .replace("\"identity\"", "\"identity\":{\"docker-reference\":\"evil/x\"},\"identity\"");
        assert!(matches!(SignedPayload::parse(dup.as_bytes()), Err(PayloadError::Malformed(_))));
    }

    #[test]
    fn oversize_payload_is_rejected_before_parsing() {
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(SignedPayload::parse(&big), Err(PayloadError::TooLarge { size: MAX_PAYLOAD_BYTES + 1 }));
    }

    #[test]
    fn deep_nesting_in_optional_does_not_overflow_the_stack() {
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let in_optional = doc("a/b", DIGEST, COSIGN_SIGNATURE_TYPE).replace("null", &nested);
        assert!(SignedPayload::parse(in_optional.as_bytes()).is_ok());
        let in_critical = doc("a/b", DIGEST, COSIGN_SIGNATURE_TYPE).replace("\"a/b\"", &nested);
        assert!(matches!(SignedPayload::parse(in_critical.as_bytes()), Err(PayloadError::Malformed(_))));
    }

    #[test]
    fn long_hostile_values_are_truncated_in_errors() {
        let long = "x".repeat(10_000);
        let err = SignedPayload::parse(doc("a/b", DIGEST, &long).as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
    }
}
