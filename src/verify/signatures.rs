//! The cosign signature manifest (`sha256-<hex>.sig` tag): one layer per signature, whose blob
//! is the signed payload and whose annotation carries the signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::payload::MAX_PAYLOAD_BYTES;
use crate::reference::Digest;

pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
use crate::registry::media_type::{DOCKER_MANIFEST, OCI_MANIFEST};
/// Same ceiling the registry client applies when downloading a manifest.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Each signature layer costs a blob download and up to one verification per trusted key on the
/// pull path. Real images carry a handful of signatures. Exceeding the cap is an error rather
/// than a silent truncation: truncation would make the verdict depend on layer order, which
/// whoever can push the .sig tag controls, and an explicit error tells the operator why.
pub const MAX_SIGNATURE_LAYERS: usize = 64;
/// Base64 of a 8192-bit RSA signature is 1368 characters; anything far beyond is not a signature.
const MAX_SIGNATURE_ANNOTATION_LEN: usize = 4096;
/// Keyless signatures (cosign's legacy format): the signing certificate, the chain to its root
/// and the Rekor SET ride in these annotations of the signature layer.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// An RFC 3161 timestamp over the signature from a timestamp authority, as cosign writes it
/// (`cosign sign --timestamp-server-url`): `{"SignedRFC3161Timestamp": base64 DER}`.
pub const RFC3161_TIMESTAMP_ANNOTATION: &str = "dev.sigstore.cosign/rfc3161timestamp";
/// A Fulcio leaf in PEM is about 1.5 KiB (its SAN, CI claims and SCT included); a leaf with
/// many long extensions a few KiB.
pub const MAX_CERTIFICATE_ANNOTATION_LEN: usize = 16 * 1024;
/// Intermediates and root in PEM: Fulcio's are two certificates, under 2 KiB.
pub const MAX_CHAIN_ANNOTATION_LEN: usize = 32 * 1024;
/// The SET and the log entry's body, which holds the signature and the certificate again, in
/// base64 inside JSON: about 4 KiB for a Fulcio certificate.
pub const MAX_REKOR_BUNDLE_ANNOTATION_LEN: usize = 64 * 1024;
/// A timestamp response is a CMS SignedData holding the TSA's signature and, usually, its
/// certificate chain: 2 to 6 KiB in base64 inside JSON; a TSA with a long chain a little more.
pub const MAX_RFC3161_TIMESTAMP_ANNOTATION_LEN: usize = 32 * 1024;
/// Certificates in the chain annotation: Fulcio sends an intermediate and its root; a private
/// PKI a few more. Path building is costly in the number of candidates an attacker may add.
pub const MAX_CHAIN_CERTIFICATES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    pub digest: Digest,
    pub size: u64,
    pub signature: Vec<u8>,
    /// Set when the layer was signed keyless (it carries a certificate annotation).
    pub certificate: Option<CertificateMaterial>,
}

/// A keyless `.sig` signature's annotations, as given (PEM, PEM, JSON); verified only by the
/// keyless check, which turns them into a sigstore bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateMaterial {
    pub certificate: String,
    pub chain: Option<String>,
    /// The Rekor SET with its log entry (`{"SignedEntryTimestamp": …, "Payload": {…}}`).
    pub rekor_bundle: Option<String>,
    /// A TSA's timestamp over the signature (`{"SignedRFC3161Timestamp": …}`).
    pub rfc3161_timestamp: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("signature manifest is {size} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("signature manifest is not valid manifest JSON: {0}")]
    Malformed(String),
    #[error("signature manifest has media type {0:?}; expected an OCI image manifest or Docker schema 2 manifest")]
    UnsupportedMediaType(String),
    #[error("signature manifest is served as {header:?} but declares {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("signature manifest has schemaVersion {0}, expected 2")]
    SchemaVersion(u64),
    #[error("signature manifest has {count} signature layers, more than the limit of {MAX_SIGNATURE_LAYERS}")]
    TooManyLayers { count: usize },
    #[error("signature layer {index}: {reason}")]
    BadLayer { index: usize, reason: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest<'a> {
    schema_version: u64,
    media_type: Option<String>,
    // Kept as raw text so that layers of other media types, which we ignore, cannot make the
    // whole manifest unparseable by carrying fields in shapes we do not expect, and so that a
    // manifest listing thousands of layers costs a pointer per layer until the count is checked.
    #[serde(default, borrow)]
    layers: Vec<&'a RawValue>,
}

/// Just enough of a layer to tell whether it is a signature layer.
#[derive(Deserialize)]
struct LayerKind {
    #[serde(rename = "mediaType")]
    media_type: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLayer {
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// `content_type` is the Content-Type the registry served the manifest with (may be empty).
/// Returns the signature layers in manifest order; layers of other media types, and
/// simplesigning layers without a signature annotation, are skipped.
pub fn parse_signature_manifest(bytes: &[u8], content_type: &str) -> Result<Vec<SignatureLayer>, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { size: bytes.len() });
    }
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    check_media_type(content_type, raw.media_type.as_deref())?;
    if raw.schema_version != 2 {
        return Err(ManifestError::SchemaVersion(raw.schema_version));
    }
    let candidates: Vec<(usize, &RawValue)> =
        raw.layers.into_iter().enumerate().filter(|(_, layer)| is_signature_layer(layer)).collect();
    if candidates.len() > MAX_SIGNATURE_LAYERS {
        return Err(ManifestError::TooManyLayers { count: candidates.len() });
    }
    let mut layers = Vec::with_capacity(candidates.len());
    for (index, value) in candidates {
        if let Some(layer) = parse_layer(index, value)? {
            layers.push(layer);
        }
    }
    Ok(layers)
}

fn check_media_type(content_type: &str, body: Option<&str>) -> Result<(), ManifestError> {
    let header = content_type.split(';').next().unwrap_or("").trim();
    // A registry serving a generic type (application/json) says nothing; a manifest type that
    // disagrees with the body means something between us and the pusher is confused.
    let header_is_manifest_type =
        header.starts_with("application/vnd.oci.") || header.starts_with("application/vnd.docker.");
    let effective = match body {
        Some(body) if header_is_manifest_type && header != body => {
            return Err(ManifestError::MediaTypeMismatch { header: header.to_string(), body: body.to_string() });
        }
        Some(body) => body,
        None => header,
    };
    if effective == OCI_MANIFEST || effective == DOCKER_MANIFEST {
        Ok(())
    } else {
        Err(ManifestError::UnsupportedMediaType(effective.chars().take(100).collect()))
    }
}

/// A layer that is not an object with a string `mediaType` is some other kind of layer.
fn is_signature_layer(layer: &RawValue) -> bool {
    serde_json::from_str::<LayerKind>(layer.get())
        .ok()
        .and_then(|kind| kind.media_type)
        .is_some_and(|media_type| media_type == SIMPLESIGNING_MEDIA_TYPE)
}

fn parse_layer(index: usize, value: &RawValue) -> Result<Option<SignatureLayer>, ManifestError> {
    let bad = |reason: String| ManifestError::BadLayer { index, reason };
    let raw: RawLayer = serde_json::from_str(value.get()).map_err(|e| bad(e.to_string()))?;
    let digest = raw.digest.parse::<Digest>().map_err(|_| bad("invalid digest".into()))?;
    if raw.size > MAX_PAYLOAD_BYTES as u64 {
        return Err(bad(format!("payload size {} exceeds the {MAX_PAYLOAD_BYTES}-byte limit", raw.size)));
    }
    let Some(encoded) = raw.annotations.get(SIGNATURE_ANNOTATION) else {
        return Ok(None);
    };
    if encoded.len() > MAX_SIGNATURE_ANNOTATION_LEN {
        return Err(bad(format!("signature annotation is longer than {MAX_SIGNATURE_ANNOTATION_LEN} characters")));
    }
    let signature = STANDARD.decode(encoded).map_err(|_| bad("signature annotation is not valid base64".into()))?;
    let certificate = certificate_material(&raw.annotations).map_err(bad)?;
    Ok(Some(SignatureLayer { digest, size: raw.size, signature, certificate }))
}

/// The keyless annotations, bounded; None when the layer has no certificate (a key signature,
/// even if it was logged and so has a Rekor bundle annotation).
fn certificate_material(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Option<CertificateMaterial>, String> {
    let bounded = |name: &str, limit: usize| match annotations.get(name) {
        Some(value) if value.len() > limit => Err(format!("annotation {name} is longer than {limit} characters")),
        value => Ok(value.cloned()),
    };
    let Some(certificate) = bounded(CERTIFICATE_ANNOTATION, MAX_CERTIFICATE_ANNOTATION_LEN)? else {
        return Ok(None);
    };
    Ok(Some(CertificateMaterial {
        certificate,
        chain: bounded(CHAIN_ANNOTATION, MAX_CHAIN_ANNOTATION_LEN)?,
        rekor_bundle: bounded(REKOR_BUNDLE_ANNOTATION, MAX_REKOR_BUNDLE_ANNOTATION_LEN)?,
        rfc3161_timestamp: bounded(RFC3161_TIMESTAMP_ANNOTATION, MAX_RFC3161_TIMESTAMP_ANNOTATION_LEN)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn sig_layer(digest: &str, sig: Option<&str>) -> serde_json::Value {
        let mut layer = json!({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": digest, "size": 250});
        if let Some(sig) = sig {
            layer["annotations"] = json!({ SIGNATURE_ANNOTATION: sig, "dev.sigstore.cosign/bundle": "{}" });
        }
        layer
    }

    fn manifest(media_type: Option<&str>, layers: Vec<serde_json::Value>) -> Vec<u8> {
        let mut m = json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 233},
            "layers": layers,
        });
        if let Some(t) = media_type {
            m["mediaType"] = json!(t);
        }
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn extracts_signature_layers_and_ignores_other_media_types() {
        let layers = vec![
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 9_999_999,
                   "annotations": {"weird": ["not", "a", "string"]}}),
            sig_layer(D1, Some("AAEC")),
            sig_layer(D2, None),
            json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": D2, "size": 1}),
            sig_layer(D2, Some("/w==")),
        ];
        let got = parse_signature_manifest(&manifest(Some(OCI_MANIFEST), layers), OCI_MANIFEST).unwrap();
        assert_eq!(got.len(), 2);
        let expected =
            SignatureLayer { digest: D1.parse().unwrap(), size: 250, signature: vec![0, 1, 2], certificate: None };
        assert_eq!(got[0], expected);
        assert_eq!(got[1].signature, vec![0xff]);
    }

    #[test]
    fn accepts_docker_schema2_and_oci_without_media_type_field() {
        let layers = || vec![sig_layer(D1, Some("AAEC"))];
        let docker = manifest(Some(DOCKER_MANIFEST), layers());
        assert_eq!(parse_signature_manifest(&docker, DOCKER_MANIFEST).unwrap().len(), 1);
        let bare = manifest(None, layers());
        assert_eq!(
            parse_signature_manifest(&bare, "application/vnd.oci.image.manifest.v1+json; charset=utf-8").unwrap().len(),
            1
        );
        let generic_header = manifest(Some(OCI_MANIFEST), layers());
        assert_eq!(parse_signature_manifest(&generic_header, "application/json").unwrap().len(), 1);
    }

    #[test]
    fn rejects_indexes_schema1_and_unknown_types() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(parse_signature_manifest(index, ""), Err(ManifestError::UnsupportedMediaType(_))));
        let v1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        let err =
            parse_signature_manifest(v1, "application/vnd.docker.distribution.manifest.v1+prettyjws").unwrap_err();
        assert!(matches!(err, ManifestError::UnsupportedMediaType(_)), "{err}");
        let untyped = manifest(None, vec![]);
        assert_eq!(parse_signature_manifest(&untyped, ""), Err(ManifestError::UnsupportedMediaType(String::new())));
    }

    #[test]
    fn header_and_body_media_types_must_agree() {
        let m = manifest(Some(OCI_MANIFEST), vec![]);
        let err = parse_signature_manifest(&m, DOCKER_MANIFEST).unwrap_err();
        assert!(matches!(err, ManifestError::MediaTypeMismatch { .. }), "{err}");
    }

    #[test]
    fn wrong_schema_version_is_rejected() {
        let m = br#"{"schemaVersion":3,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        assert_eq!(parse_signature_manifest(m, ""), Err(ManifestError::SchemaVersion(3)));
    }

    #[test]
    fn too_many_signature_layers_is_an_error_not_a_truncation() {
        let at_cap: Vec<_> = (0..MAX_SIGNATURE_LAYERS).map(|_| sig_layer(D1, Some("AA=="))).collect();
        assert_eq!(
            parse_signature_manifest(&manifest(Some(OCI_MANIFEST), at_cap), "").unwrap().len(),
            MAX_SIGNATURE_LAYERS
        );
        let over: Vec<_> = (0..=MAX_SIGNATURE_LAYERS).map(|_| sig_layer(D1, Some("AA=="))).collect();
        let err = parse_signature_manifest(&manifest(Some(OCI_MANIFEST), over), "").unwrap_err();
        assert_eq!(err, ManifestError::TooManyLayers { count: MAX_SIGNATURE_LAYERS + 1 });
    }

    #[test]
    fn bad_signature_layers_are_named_by_index() {
        let cases = [
            (sig_layer("sha256:nothex", Some("AA==")), "invalid digest"),
            (sig_layer(D1, Some("not base64!")), "base64"),
            (sig_layer(D1, Some(&"A".repeat(5000))), "longer than"),
            (json!({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": D1, "size": 70_000}), "exceeds"),
            (json!({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": D1, "size": -1}), "invalid value"),
            (json!({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "size": 1}), "digest"),
        ];
        for (layer, needle) in cases {
            let layers = vec![sig_layer(D2, Some("AA==")), layer];
            let err = parse_signature_manifest(&manifest(Some(OCI_MANIFEST), layers), "").unwrap_err();
            let ManifestError::BadLayer { index: 1, reason } = &err else { panic!("{err:?}") };
            assert!(reason.contains(needle), "{needle}: {reason}");
        }
    }

    #[test]
    fn garbage_and_oversize_never_panic() {
        for junk in
            [&b""[..], b"null", b"[]", b"{\"schemaVersion\":\"2\"}", b"{\"schemaVersion\":2,\"layers\":{}}", b"\xff"]
        {
            assert!(parse_signature_manifest(junk, OCI_MANIFEST).is_err(), "{junk:?}");
        }
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert_eq!(parse_signature_manifest(&big, ""), Err(ManifestError::TooLarge { size: MAX_MANIFEST_BYTES + 1 }));
    }

    #[test]
    fn keyless_annotations_are_kept_bounded() {
        let layer = |extra: serde_json::Value| {
            let mut layer = sig_layer(D1, Some("AAEC"));
            for (name, value) in extra.as_object().unwrap() {
                layer["annotations"][name] = value.clone();
            }
            parse_signature_manifest(&manifest(Some(OCI_MANIFEST), vec![layer]), "")
        };
        // A Rekor bundle alone (a logged key signature) is no certificate.
        assert_eq!(layer(json!({})).unwrap()[0].certificate, None);
        let got = layer(json!({ CERTIFICATE_ANNOTATION: "LEAF", CHAIN_ANNOTATION: "CHAIN" })).unwrap();
        let material = got[0].certificate.clone().unwrap();
        assert_eq!((material.certificate.as_str(), material.chain.as_deref()), ("LEAF", Some("CHAIN")));
        assert_eq!(material.rekor_bundle.as_deref(), Some("{}"));
        assert_eq!(material.rfc3161_timestamp, None);
        let got = layer(json!({ CERTIFICATE_ANNOTATION: "LEAF", RFC3161_TIMESTAMP_ANNOTATION: "TS" })).unwrap();
        assert_eq!(got[0].certificate.as_ref().unwrap().rfc3161_timestamp.as_deref(), Some("TS"));
        let cases = [
            (CERTIFICATE_ANNOTATION, MAX_CERTIFICATE_ANNOTATION_LEN),
            (CHAIN_ANNOTATION, MAX_CHAIN_ANNOTATION_LEN),
            (REKOR_BUNDLE_ANNOTATION, MAX_REKOR_BUNDLE_ANNOTATION_LEN),
            (RFC3161_TIMESTAMP_ANNOTATION, MAX_RFC3161_TIMESTAMP_ANNOTATION_LEN),
        ];
        for (name, limit) in cases {
            let at_limit = json!({ CERTIFICATE_ANNOTATION: "LEAF", name: "x".repeat(limit) });
            assert!(layer(at_limit).is_ok(), "{name} at its limit");
            let over = json!({ CERTIFICATE_ANNOTATION: "LEAF", name: "x".repeat(limit + 1) });
            let err = layer(over).unwrap_err().to_string();
            assert!(err.contains(&format!("annotation {name} is longer than {limit}")), "{err}");
        }
    }
}
