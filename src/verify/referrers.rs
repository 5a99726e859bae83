//! OCI 1.1 referrers of a signed image, as cosign v3 writes them: the image index the
//! referrers API answers (or, on registries without it, the index stored under the referrers
//! tag `sha256-<hex>`), and the referrer manifests cosign attaches: a sigstore bundle (its
//! default since v3) or a simple-signing manifest (`--registry-referrers-mode=oci-1-1`).
//!
//! Written by hand, like `signatures`: the OCI descriptors are a few fields, and what matters
//! here is bounding what a registry sends (counts, sizes) before anything is fetched.

use std::str::FromStr as _;

use serde::Deserialize;
use sigstore_types::MediaType as BundleMediaType;

use crate::reference::Digest;
use crate::registry::media_type::{OCI_INDEX, OCI_MANIFEST};

/// The artifact type of a simple-signing manifest pushed as a referrer.
pub const SIMPLE_SIGNING_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Each signature referrer costs a manifest and a blob download and a verification per trusted
/// key; real images carry a handful. As for `.sig` layers, more is an error, not a truncation:
/// which referrers were kept would depend on an order whoever can push controls. Referrers of
/// other kinds (SBOMs, …) are not counted: they are never fetched.
pub const MAX_SIGNATURE_REFERRERS: usize = 64;
/// A keyless bundle with its certificate chain, log entries and a cosign statement is a few
/// KiB; 256 KiB leaves room for long chains and timestamps while bounding what a registry can
/// make us download and parse per referrer.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;

/// Where the referrers of a digest were listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Discovery {
    /// `GET /v2/<name>/referrers/<digest>`.
    ReferrersApi,
    /// The referrers tag schema: the index under the tag `sha256-<hex>`.
    ReferrersTag,
}

impl Discovery {
    pub fn describe(self) -> &'static str {
        match self {
            Discovery::ReferrersApi => "referrers API",
            Discovery::ReferrersTag => "referrers tag",
        }
    }
}

/// What a referrer holds, as its index entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferrerKind {
    Bundle,
    SimpleSigning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub kind: ReferrerKind,
}

/// The bundle layer of a bundle referrer manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleLayer {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferrerError {
    #[error("referrer index is not valid index JSON: {0}")]
    MalformedIndex(String),
    #[error("referrer list has media type {0:?}, not an OCI image index")]
    NotAnIndex(String),
    #[error("referrer index lists {count} signature referrers, more than the limit of {MAX_SIGNATURE_REFERRERS}")]
    TooMany { count: usize },
    #[error("referrer index entry {index} has an invalid digest")]
    BadEntry { index: usize },
    #[error("bundle referrer {digest} is not a valid OCI image manifest: {reason}")]
    MalformedManifest { digest: Digest, reason: String },
    #[error("bundle referrer {digest} refers to {subject}, not to the signed image")]
    WrongSubject { digest: Digest, subject: String },
    #[error("bundle referrer {digest} has {count} bundle layers, not exactly one")]
    BundleLayers { digest: Digest, count: usize },
    #[error("bundle referrer {digest}: bundle of {size} bytes is over the {MAX_BUNDLE_BYTES}-byte limit")]
    TooLarge { digest: Digest, size: u64 },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIndex {
    schema_version: u64,
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<RawDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    #[serde(default)]
    size: u64,
    artifact_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: u64,
    media_type: Option<String>,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
    subject: Option<RawDescriptor>,
}

/// The signature referrers an index lists, in index order; entries of other artifact types
/// are skipped. `content_type` is the media type the registry served the index as.
pub fn parse_referrer_index(bytes: &[u8], content_type: &str) -> Result<Vec<Referrer>, ReferrerError> {
    let raw: RawIndex = serde_json::from_slice(bytes).map_err(|e| ReferrerError::MalformedIndex(short(&e)))?;
    let media_type = raw.media_type.as_deref().unwrap_or(content_type);
    if raw.schema_version != 2 || media_type != OCI_INDEX {
        return Err(ReferrerError::NotAnIndex(media_type.chars().take(100).collect()));
    }
    let signatures: Vec<(usize, RawDescriptor, ReferrerKind)> = raw
        .manifests
        .into_iter()
        .enumerate()
        .filter_map(|(index, entry)| referrer_kind(&entry).map(|kind| (index, entry, kind)))
        .collect();
    if signatures.len() > MAX_SIGNATURE_REFERRERS {
        return Err(ReferrerError::TooMany { count: signatures.len() });
    }
    signatures
        .into_iter()
        .map(|(index, entry, kind)| {
            let digest = entry.digest.and_then(|d| d.parse().ok()).ok_or(ReferrerError::BadEntry { index })?;
            Ok(Referrer { digest, kind })
        })
        .collect()
}

/// The signature referrers of every page of a referrers list, in order; the limit applies to
/// all of them together. Each page comes with the media type the registry served it as.
pub fn parse_referrer_pages<'p>(
    pages: impl IntoIterator<Item = (&'p [u8], &'p str)>,
) -> Result<Vec<Referrer>, ReferrerError> {
    let mut all = Vec::new();
    for (bytes, content_type) in pages {
        all.extend(parse_referrer_index(bytes, content_type)?);
        if all.len() > MAX_SIGNATURE_REFERRERS {
            return Err(ReferrerError::TooMany { count: all.len() });
        }
    }
    Ok(all)
}

/// Older cosign set the artifact type only on the referrer's config; the referrers API and
/// cosign's tag-schema index copy it into the entry's `artifactType` either way.
fn referrer_kind(entry: &RawDescriptor) -> Option<ReferrerKind> {
    let artifact_type = entry.artifact_type.as_deref()?;
    if entry.media_type.as_deref().is_some_and(|t| t != OCI_MANIFEST) {
        return None;
    }
    if artifact_type == SIMPLE_SIGNING_ARTIFACT_TYPE {
        Some(ReferrerKind::SimpleSigning)
    } else {
        BundleMediaType::from_str(artifact_type).ok().map(|_| ReferrerKind::Bundle)
    }
}

/// The one bundle layer of a bundle referrer, once its `subject` is seen to be `signed`: a
/// referrer index is only a tag anyone with push rights can write, so each manifest must say
/// itself which image it belongs to.
pub fn parse_bundle_manifest(digest: &Digest, bytes: &[u8], signed: &Digest) -> Result<BundleLayer, ReferrerError> {
    let malformed = |reason: String| ReferrerError::MalformedManifest { digest: digest.clone(), reason };
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| malformed(short(&e)))?;
    if raw.schema_version != 2 || raw.media_type.as_deref().is_some_and(|t| t != OCI_MANIFEST) {
        return Err(malformed("not schema 2 of an OCI image manifest".to_owned()));
    }
    let subject = raw.subject.and_then(|s| s.digest).unwrap_or_default();
    if subject != signed.as_str() {
        return Err(ReferrerError::WrongSubject {
            digest: digest.clone(),
            subject: subject.chars().take(80).collect(),
        });
    }
    let bundles: Vec<RawDescriptor> = raw
        .layers
        .into_iter()
        .filter(|layer| layer.media_type.as_deref().is_some_and(|t| BundleMediaType::from_str(t).is_ok()))
        .collect();
    let [layer] = <[RawDescriptor; 1]>::try_from(bundles)
        .map_err(|all| ReferrerError::BundleLayers { digest: digest.clone(), count: all.len() })?;
    let layer_digest =
        layer.digest.and_then(|d| d.parse().ok()).ok_or_else(|| malformed("invalid layer digest".into()))?;
    if layer.size > MAX_BUNDLE_BYTES as u64 {
        return Err(ReferrerError::TooLarge { digest: digest.clone(), size: layer.size });
    }
    Ok(BundleLayer { digest: layer_digest, size: layer.size })
}

fn short(error: &serde_json::Error) -> String {
    error.to_string().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const IMAGE: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn entry(digest: &str, artifact_type: &str) -> serde_json::Value {
        json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 700, "artifactType": artifact_type})
    }

    fn index(entries: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})).unwrap()
    }

    fn bundle_manifest(subject: &str, layers: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": D1, "size": 2},
            "layers": layers,
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 401},
        }))
        .unwrap()
    }

    #[test]
    fn picks_bundles_and_simple_signing_referrers_and_skips_the_rest() {
        let entries = vec![
            entry(D1, BUNDLE),
            entry(D2, "application/spdx+json"),
            entry(D2, SIMPLE_SIGNING_ARTIFACT_TYPE),
            entry(D1, "application/vnd.dev.sigstore.bundle+json;version=0.1"),
            json!({"mediaType": OCI_MANIFEST, "digest": D2, "size": 1}),
        ];
        let got = parse_referrer_index(&index(entries), "").unwrap();
        let kinds: Vec<ReferrerKind> = got.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [ReferrerKind::Bundle, ReferrerKind::SimpleSigning, ReferrerKind::Bundle]);
        assert_eq!(got[1].digest.as_str(), D2);
    }

    #[test]
    fn only_an_oci_index_is_a_referrer_list() {
        let manifest = bundle_manifest(IMAGE, vec![]);
        assert!(matches!(parse_referrer_index(&manifest, ""), Err(ReferrerError::NotAnIndex(_))));
        let bare = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(parse_referrer_index(bare, OCI_INDEX).unwrap(), []);
        for junk in [&b""[..], b"null", b"[]", b"{\"schemaVersion\":2,\"manifests\":{}}", b"\xff"] {
            assert!(parse_referrer_index(junk, OCI_INDEX).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn too_many_signature_referrers_is_an_error_but_other_referrers_do_not_count() {
        let mut entries: Vec<_> = (0..MAX_SIGNATURE_REFERRERS).map(|_| entry(D1, BUNDLE)).collect();
        entries.extend((0..500).map(|_| entry(D2, "application/spdx+json")));
        assert_eq!(parse_referrer_index(&index(entries.clone()), "").unwrap().len(), MAX_SIGNATURE_REFERRERS);
        entries.push(entry(D1, BUNDLE));
        let err = parse_referrer_index(&index(entries), "").unwrap_err();
        assert_eq!(err, ReferrerError::TooMany { count: MAX_SIGNATURE_REFERRERS + 1 });
    }

    #[test]
    fn the_signature_referrer_limit_counts_every_page_together() {
        let half: Vec<_> = (0..MAX_SIGNATURE_REFERRERS / 2).map(|_| entry(D1, BUNDLE)).collect();
        let (page, last) = (index(half), index(vec![entry(D2, SIMPLE_SIGNING_ARTIFACT_TYPE)]));
        let two = parse_referrer_pages([(&page[..], ""), (&last[..], "")]).unwrap();
        assert_eq!(two.len(), MAX_SIGNATURE_REFERRERS / 2 + 1);
        assert_eq!(two.last().map(|r| r.kind), Some(ReferrerKind::SimpleSigning), "in page order");
        let err = parse_referrer_pages([(&page[..], ""), (&page[..], ""), (&last[..], "")]).unwrap_err();
        assert_eq!(err, ReferrerError::TooMany { count: MAX_SIGNATURE_REFERRERS + 1 });
        assert!(parse_referrer_pages([(&page[..], ""), (&b"{}"[..], "")]).is_err(), "a broken page breaks the list");
    }

    #[test]
    fn a_bundle_manifest_names_the_signed_image_and_holds_one_bounded_bundle() {
        let own: Digest = D1.parse().unwrap();
        let signed: Digest = IMAGE.parse().unwrap();
        let layer = json!({"mediaType": BUNDLE, "digest": D2, "size": 667});
        let good = bundle_manifest(IMAGE, vec![layer.clone()]);
        assert_eq!(
            parse_bundle_manifest(&own, &good, &signed).unwrap(),
            BundleLayer { digest: D2.parse().unwrap(), size: 667 }
        );

        let elsewhere = bundle_manifest(D2, vec![layer.clone()]);
        assert!(matches!(parse_bundle_manifest(&own, &elsewhere, &signed), Err(ReferrerError::WrongSubject { .. })));
        let two = bundle_manifest(IMAGE, vec![layer.clone(), layer]);
        assert!(matches!(
            parse_bundle_manifest(&own, &two, &signed),
            Err(ReferrerError::BundleLayers { count: 2, .. })
        ));
        let none = bundle_manifest(IMAGE, vec![json!({"mediaType": "text/plain", "digest": D2, "size": 1})]);
        assert!(matches!(
            parse_bundle_manifest(&own, &none, &signed),
            Err(ReferrerError::BundleLayers { count: 0, .. })
        ));
        let big =
            bundle_manifest(IMAGE, vec![json!({"mediaType": BUNDLE, "digest": D2, "size": MAX_BUNDLE_BYTES + 1})]);
        assert!(matches!(parse_bundle_manifest(&own, &big, &signed), Err(ReferrerError::TooLarge { .. })));
        assert!(matches!(parse_bundle_manifest(&own, b"{}", &signed), Err(ReferrerError::MalformedManifest { .. })));
    }
}
