//! A keyless `.sig` signature (cosign's legacy format) as the sigstore bundle it is equivalent
//! to, so that sigstore-verify does every check and none is written here.
//!
//! The layer carries, in annotations, the signing certificate (PEM), the chain to its root
//! (PEM) and the Rekor entry with its SET (`{"SignedEntryTimestamp": b64, "Payload": {"body":
//! b64, "integratedTime": n, "logIndex": n, "logID": hex}}`); its blob is the signed payload.
//! That is a v0.1 bundle: a message signature over the payload, an X.509 chain, one log entry
//! with its inclusion promise and canonicalized body. The SET signs exactly these four
//! fields, so nothing is lost in the translation and nothing can be added by it. A TSA's
//! timestamp over the signature (`{"SignedRFC3161Timestamp": b64}`), when the layer has one,
//! is the bundle's one RFC 3161 timestamp, as cosign itself translates it: sigstore-verify
//! then verifies it against the root's timestamp authorities (refusing the signature if it
//! does not) and checks the certificate at its time as well as at the log's.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;
use sha2::Digest as _;
use sigstore_verify::types::{Bundle, DerCertificate};

use crate::verify::signatures::{CertificateMaterial, MAX_CHAIN_CERTIFICATES};

/// `dev.sigstore.cosign/bundle`, as cosign writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RekorBundle {
    /// cosign writes null here when the log answered without a SET.
    #[serde(rename = "SignedEntryTimestamp")]
    signed_entry_timestamp: Option<String>,
    #[serde(rename = "Payload")]
    payload: RekorPayload,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// `dev.sigstore.cosign/rfc3161timestamp`, as cosign writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimestampAnnotation {
    /// A DER `TimeStampResp`, base64.
    #[serde(rename = "SignedRFC3161Timestamp")]
    signed_rfc3161_timestamp: String,
}

/// Just what the entry's kind and version are read from; the rest of the body is
/// sigstore-verify's to check against the certificate, signature and payload.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BodyKind {
    kind: String,
    api_version: String,
}

/// Why the annotations do not make a bundle, and which check that is.
#[derive(Debug, PartialEq, Eq)]
pub enum LegacyError {
    /// The certificate or chain annotation is not PEM certificates.
    Certificate(String),
    /// No Rekor entry, or one that does not parse.
    Tlog(String),
    /// A timestamp annotation that does not parse.
    Timestamp(String),
}

/// The v0.1 bundle equivalent to a keyless `.sig` layer signing `payload` with `signature`.
pub fn bundle(material: &CertificateMaterial, signature: &[u8], payload: &[u8]) -> Result<Bundle, LegacyError> {
    let certificates = chain(material)?;
    let entry = tlog_entry(material.rekor_bundle.as_deref())?;
    let timestamps = match material.rfc3161_timestamp.as_deref() {
        Some(annotation) => vec![timestamp(annotation)?],
        None => Vec::new(),
    };
    let digest = sha2::Sha256::digest(payload);
    let bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": {
            "x509CertificateChain": { "certificates": certificates },
            "tlogEntries": [entry],
            "timestampVerificationData": { "rfc3161Timestamps": timestamps },
        },
        "messageSignature": {
            "messageDigest": { "algorithm": "SHA2_256", "digest": STANDARD.encode(digest) },
            "signature": STANDARD.encode(signature),
        },
    });
    Bundle::from_json(&bundle.to_string()).map_err(|e| LegacyError::Tlog(format!("log entry unusable: {e}")))
}

/// Leaf first, then the chain annotation's certificates, as `rawBytes` objects.
fn chain(material: &CertificateMaterial) -> Result<Vec<serde_json::Value>, LegacyError> {
    let leaf = DerCertificate::from_pem(&material.certificate)
        .map_err(|e| LegacyError::Certificate(format!("certificate annotation: {e}")))?;
    let mut ders = vec![leaf.as_bytes().to_vec()];
    if let Some(chain) = &material.chain {
        let blocks = pem::parse_many(chain).map_err(|e| LegacyError::Certificate(format!("chain annotation: {e}")))?;
        if blocks.len() > MAX_CHAIN_CERTIFICATES {
            let text =
                format!("chain annotation holds {} certificates, more than {MAX_CHAIN_CERTIFICATES}", blocks.len());
            return Err(LegacyError::Certificate(text));
        }
        for block in blocks {
            if block.tag() != "CERTIFICATE" {
                return Err(LegacyError::Certificate(format!("chain annotation holds a {} block", block.tag())));
            }
            ders.push(block.into_contents());
        }
    }
    Ok(ders.iter().map(|der| json!({ "rawBytes": STANDARD.encode(der) })).collect())
}

fn tlog_entry(annotation: Option<&str>) -> Result<serde_json::Value, LegacyError> {
    let annotation = annotation.ok_or_else(|| {
        LegacyError::Tlog(
            "no transparency-log entry: no dev.sigstore.cosign/bundle annotation, so no inclusion promise (SET)".into(),
        )
    })?;
    let tlog = |text: String| LegacyError::Tlog(format!("Rekor bundle annotation: {text}"));
    let rekor: RekorBundle = serde_json::from_str(annotation).map_err(|e| tlog(short(&e)))?;
    let set = rekor.signed_entry_timestamp.filter(|set| !set.is_empty());
    let set = set.ok_or_else(|| tlog("no SET (SignedEntryTimestamp): no inclusion promise".into()))?;
    let payload = rekor.payload;
    let body = STANDARD.decode(&payload.body).map_err(|_| tlog("body is not base64".into()))?;
    let kind: BodyKind = serde_json::from_slice(&body).map_err(|e| tlog(format!("body: {}", short(&e))))?;
    let log_id = hex::decode(&payload.log_id).map_err(|_| tlog("logID is not hex".into()))?;
    Ok(json!({
        "logIndex": payload.log_index.to_string(),
        "logId": { "keyId": STANDARD.encode(log_id) },
        "kindVersion": { "kind": kind.kind, "version": kind.api_version },
        "integratedTime": payload.integrated_time.to_string(),
        "inclusionPromise": { "signedEntryTimestamp": set },
        "canonicalizedBody": payload.body,
    }))
}

/// The annotation's timestamp as a bundle's `rfc3161Timestamps` entry; its content is
/// sigstore-verify's to check.
fn timestamp(annotation: &str) -> Result<serde_json::Value, LegacyError> {
    let timestamp = |text: String| LegacyError::Timestamp(format!("RFC 3161 timestamp annotation: {text}"));
    let parsed: TimestampAnnotation = serde_json::from_str(annotation).map_err(|e| timestamp(short(&e)))?;
    let der = STANDARD.decode(&parsed.signed_rfc3161_timestamp).map_err(|_| timestamp("not base64".into()))?;
    if der.is_empty() {
        return Err(timestamp("empty".into()));
    }
    Ok(json!({ "signedTimestamp": STANDARD.encode(der) }))
}

/// serde's message, bounded: it ends up in CRI errors.
fn short(error: &serde_json::Error) -> String {
    error.to_string().chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";

    fn rekor(body: &serde_json::Value) -> String {
        json!({
            "SignedEntryTimestamp": STANDARD.encode(b"set"),
            "Payload": {
                "body": STANDARD.encode(body.to_string()),
                "integratedTime": 1_700_000_000,
                "logIndex": 42,
                "logID": "c0ffee",
            },
        })
        .to_string()
    }

    fn material(chain: Option<&str>, rekor_bundle: Option<String>) -> CertificateMaterial {
        CertificateMaterial {
            certificate: PEM_CERT.into(),
            chain: chain.map(str::to_owned),
            rekor_bundle,
            rfc3161_timestamp: None,
        }
    }

    #[test]
    fn annotations_become_a_v01_bundle_with_the_same_facts() {
        let body = json!({ "apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {} });
        let chain = format!("{PEM_CERT}{PEM_CERT}");
        let bundle = bundle(&material(Some(&chain), Some(rekor(&body))), b"sig", b"payload").unwrap();
        let json: serde_json::Value = serde_json::from_str(&bundle.to_json().unwrap()).unwrap();
        let material = &json["verificationMaterial"];
        assert_eq!(material["x509CertificateChain"]["certificates"].as_array().unwrap().len(), 3);
        let entry = &material["tlogEntries"][0];
        assert_eq!(entry["logIndex"], "42");
        assert_eq!(entry["integratedTime"], "1700000000");
        assert_eq!(entry["logId"]["keyId"], STANDARD.encode([0xc0, 0xff, 0xee]));
        assert_eq!(entry["kindVersion"], json!({ "kind": "hashedrekord", "version": "0.0.1" }));
        assert_eq!(entry["inclusionPromise"]["signedEntryTimestamp"], STANDARD.encode(b"set"));
        let signature = &json["messageSignature"];
        assert_eq!(signature["signature"], STANDARD.encode(b"sig"));
        assert_eq!(signature["messageDigest"]["digest"], STANDARD.encode(sha2::Sha256::digest(b"payload")));
        let timestamps = &material["timestampVerificationData"]["rfc3161Timestamps"];
        assert!(timestamps.as_array().is_none_or(Vec::is_empty), "no annotation, no timestamp: {timestamps}");
    }

    #[test]
    fn the_timestamp_annotation_becomes_the_bundles_rfc3161_timestamp() {
        let body = json!({ "apiVersion": "0.0.1", "kind": "hashedrekord" });
        let with = |annotation: &str| {
            let material = CertificateMaterial {
                rfc3161_timestamp: Some(annotation.to_owned()),
                ..material(None, Some(rekor(&body)))
            };
            bundle(&material, b"s", b"p")
        };
        let annotation = json!({ "SignedRFC3161Timestamp": STANDARD.encode(b"tsr") }).to_string();
        let json: serde_json::Value = serde_json::from_str(&with(&annotation).unwrap().to_json().unwrap()).unwrap();
        let timestamps = &json["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"];
        assert_eq!(timestamps, &json!([{ "signedTimestamp": STANDARD.encode(b"tsr") }]));
        for bad in ["{}", "[]", "not json", r#"{"SignedRFC3161Timestamp": "!!"}"#, r#"{"SignedRFC3161Timestamp": ""}"#]
        {
            let err = with(bad).unwrap_err();
            assert!(
                matches!(&err, LegacyError::Timestamp(t) if t.starts_with("RFC 3161 timestamp annotation")),
                "{bad}: {err:?}"
            );
        }
        let extra = json!({ "SignedRFC3161Timestamp": STANDARD.encode(b"tsr"), "Other": "x" }).to_string();
        assert!(matches!(with(&extra), Err(LegacyError::Timestamp(_))), "unknown fields are refused");
    }

    #[test]
    fn unusable_annotations_are_refused_naming_the_check() {
        let body = json!({ "apiVersion": "0.0.1", "kind": "hashedrekord" });
        let no_set = bundle(&material(None, None), b"s", b"p").unwrap_err();
        assert!(matches!(&no_set, LegacyError::Tlog(t) if t.contains("no transparency-log entry")), "{no_set:?}");
        let mut empty: serde_json::Value = serde_json::from_str(&rekor(&body)).unwrap();
        for set in [json!(null), json!("")] {
            empty["SignedEntryTimestamp"] = set;
            let err = bundle(&material(None, Some(empty.to_string())), b"s", b"p").unwrap_err();
            assert!(matches!(&err, LegacyError::Tlog(t) if t.contains("no SET")), "{err:?}");
        }
        let garbage = bundle(&material(None, Some("{}".into())), b"s", b"p").unwrap_err();
        assert!(matches!(garbage, LegacyError::Tlog(_)));
        let key_chain = "-----BEGIN PUBLIC KEY-----\nAQID\n-----END PUBLIC KEY-----\n";
        let err = bundle(&material(Some(key_chain), Some(rekor(&body))), b"s", b"p").unwrap_err();
        assert_eq!(err, LegacyError::Certificate("chain annotation holds a PUBLIC KEY block".into()));
        let long = PEM_CERT.repeat(MAX_CHAIN_CERTIFICATES + 1);
        let err = bundle(&material(Some(&long), Some(rekor(&body))), b"s", b"p").unwrap_err();
        assert!(matches!(&err, LegacyError::Certificate(t) if t.contains("more than 8")), "{err:?}");
        let not_pem = CertificateMaterial { certificate: "junk".into(), ..material(None, Some(rekor(&body))) };
        assert!(matches!(bundle(&not_pem, b"s", b"p"), Err(LegacyError::Certificate(_))));
    }
}
