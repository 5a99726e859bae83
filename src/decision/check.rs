//! Checking an image against a `signed` rule: resolve the digest, fetch the cosign signatures
//! stored beside it, and evaluate them.

use bytes::Bytes;
use futures_util::future::join_all;

use crate::policy::Rule;
use crate::reference::{Digest, ImageRef};
use crate::registry::{Credentials, Manifest, Registry, RegistryError, media_type};
use crate::verify::payload::MAX_PAYLOAD_BYTES;
use crate::verify::signatures::{SignatureLayer, parse_signature_manifest};
use crate::verify::{Evaluation, Shortfall, evaluate};

use super::Verdict;
use super::reason::ReasonCode;

/// The result of checking one image against its rule.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub digest: Option<Digest>,
    pub evaluation: Option<Evaluation>,
    pub reason: String,
    pub code: ReasonCode,
    /// Which host answered each registry request of the check ("signatures … from HOST"):
    /// the registry itself or one of its mirrors.
    pub answered: Vec<String>,
}

impl Outcome {
    pub fn accept(code: ReasonCode, reason: &str) -> Outcome {
        Outcome::new(Verdict::Accepted, code, reason.to_owned())
    }

    pub fn reject(code: ReasonCode, reason: &str) -> Outcome {
        Outcome::new(Verdict::Rejected, code, reason.to_owned())
    }

    pub fn unavailable(code: ReasonCode, reason: String) -> Outcome {
        Outcome::new(Verdict::Unavailable, code, reason)
    }

    fn new(verdict: Verdict, code: ReasonCode, reason: String) -> Outcome {
        Outcome { verdict, digest: None, evaluation: None, reason, code, answered: Vec::new() }
    }

    fn registry_error(digest: Option<Digest>, context: &str, error: &RegistryError) -> Outcome {
        let verdict = if error.is_unavailable() { Verdict::Unavailable } else { Verdict::Rejected };
        let code = ReasonCode::of_registry_error(error);
        Outcome { digest, ..Outcome::new(verdict, code, format!("{context}: {error}")) }
    }
}

/// The tag cosign stores an image's signatures under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm(), digest.hex())
}

/// The signature check proper, for a digest already resolved: fetch the signatures stored
/// beside it and evaluate them against the rule.
pub async fn signatures<R: Registry>(
    registry: &R,
    image: &ImageRef,
    digest: Digest,
    rule: &Rule,
    credentials: &Credentials,
) -> Outcome {
    let (store, credentials) = signature_store(image, rule, credentials);
    let Fetched { signatures, unusable, host } = match fetch_signatures(registry, store, &digest, &credentials).await {
        Ok(fetched) => fetched,
        Err(outcome) => return Outcome { digest: Some(digest), ..outcome },
    };
    let tag = signature_tag(&digest);
    let answered = vec![match host {
        Some(host) => format!("signatures {}:{tag} from {host}", store.name()),
        None => format!("signatures {}:{tag}: no host has them", store.name()),
    }];
    let evaluation = evaluate(image, &digest, rule, &signatures);
    let verdict = if evaluation.accepted { Verdict::Accepted } else { Verdict::Rejected };
    let code = code(&evaluation, &unusable);
    let reason = reason(&evaluation, &unusable);
    Outcome { verdict, reason, code, digest: Some(digest), evaluation: Some(evaluation), answered }
}

/// Where the signatures are looked up: beside the image, or in the rule's `signatures_from`
/// repository. The kubelet's credentials are for the image's registry: they go to a separate
/// signature repository only on that same registry, and otherwise it is asked anonymously.
fn signature_store<'a>(image: &'a ImageRef, rule: &'a Rule, credentials: &Credentials) -> (&'a ImageRef, Credentials) {
    match &rule.signatures_from {
        None => (image, credentials.clone()),
        Some(store) if store.registry() == image.registry() => (store, credentials.clone()),
        Some(store) => (store, Credentials::default()),
    }
}

/// Signatures whose payload never arrived intact are not "no signatures".
fn code(evaluation: &Evaluation, unusable: &[RegistryError]) -> ReasonCode {
    match evaluation.shortfall {
        None => ReasonCode::Verified,
        Some(Shortfall::NoSignatures) if !unusable.is_empty() => ReasonCode::UnusableSignature,
        Some(shortfall) => ReasonCode::of_shortfall(shortfall),
    }
}

/// A payload the registry would not hand over intact never reaches the evaluation, so a
/// refusal names it: otherwise it would read "no signatures found" while there were some.
fn reason(evaluation: &Evaluation, unusable: &[RegistryError]) -> String {
    let Some(first) = unusable.first().filter(|_| !evaluation.accepted) else { return evaluation.reason.clone() };
    let what = match unusable.len() {
        1 => "1 signature payload is unusable".to_owned(),
        n => format!("{n} signature payloads are unusable"),
    };
    if evaluation.signatures.is_empty() {
        format!("no signature by a trusted key: {what} ({first})")
    } else {
        format!("{}; {what} ({first})", evaluation.reason)
    }
}

/// A tag's digest, and the host that said so.
pub struct Resolved {
    pub digest: Digest,
    pub host: String,
}

/// The digest `tag` names now: the digest of the manifest bytes the registry serves for it.
/// Only manifests containerd fetches by their digest are admitted: a Docker schema1 manifest
/// (or anything else) is refused, since containerd before 2.1 converts schema1 on its own and
/// would store something other than the bytes verified here.
pub async fn resolve_tag<R: Registry>(
    registry: &R,
    image: &ImageRef,
    tag: &str,
    credentials: &Credentials,
) -> Result<Resolved, Outcome> {
    match registry.manifest(image, tag, credentials).await {
        Ok(Some(manifest)) => match pinnable(&manifest) {
            Ok(()) => Ok(Resolved { digest: manifest.digest, host: manifest.host }),
            Err(reason) => Err(Outcome {
                digest: Some(manifest.digest),
                ..Outcome::reject(ReasonCode::UnsupportedManifest, &reason)
            }),
        },
        Ok(None) => Err(Outcome::reject(ReasonCode::NotFound, &format!("the registry has no tag {tag:?} for it"))),
        Err(error) => Err(Outcome::registry_error(None, "cannot resolve the image", &error)),
    }
}

fn pinnable(manifest: &Manifest) -> Result<(), String> {
    if media_type::PINNABLE.contains(&manifest.media_type.as_str()) {
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u64>,
    }
    let version = serde_json::from_slice::<Version>(&manifest.bytes).ok().and_then(|v| v.schema_version);
    // An OCI manifest may leave out its mediaType; schema 2 is then all there is to go by.
    if manifest.media_type.is_empty() && version == Some(2) {
        return Ok(());
    }
    let shown = if manifest.media_type.is_empty() { "no media type" } else { manifest.media_type.as_str() };
    let kind = match version {
        Some(1) => "a Docker schema1 manifest".to_owned(),
        _ => format!("a manifest of an unsupported kind ({})", shown.chars().take(100).collect::<String>()),
    };
    Err(format!("the tag resolves to {kind}; only OCI and Docker schema 2 images and indexes are verified and pinned"))
}

/// Signature layers paired with their payloads, the errors of payloads that could not be
/// fetched intact (too large, wrong digest, missing): those only make their signature count
/// for nothing, unless the registry is down altogether; and the host that had the signatures.
struct Fetched {
    signatures: Vec<(SignatureLayer, Bytes)>,
    unusable: Vec<RegistryError>,
    host: Option<String>,
}

async fn fetch_signatures<R: Registry>(
    registry: &R,
    image: &ImageRef,
    digest: &Digest,
    credentials: &Credentials,
) -> Result<Fetched, Outcome> {
    let manifest = match registry.artifact_manifest(image, &signature_tag(digest), credentials).await {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return Ok(Fetched { signatures: Vec::new(), unusable: Vec::new(), host: None }),
        Err(error) => return Err(Outcome::registry_error(None, "cannot fetch signatures", &error)),
    };
    let layers = parse_signature_manifest(&manifest.bytes, &manifest.media_type).map_err(|error| {
        Outcome::reject(ReasonCode::UnusableSignature, &format!("unusable signature manifest: {error}"))
    })?;
    let payloads =
        join_all(layers.iter().map(|layer| registry.blob(image, &layer.digest, MAX_PAYLOAD_BYTES, credentials))).await;
    let (mut signatures, mut unusable) = (Vec::with_capacity(layers.len()), Vec::new());
    for (layer, payload) in layers.into_iter().zip(payloads) {
        match payload {
            Ok(bytes) => signatures.push((layer, bytes)),
            Err(error) if error.is_unavailable() => {
                return Err(Outcome::registry_error(None, "cannot fetch a signature payload", &error));
            }
            Err(error) => unusable.push(error),
        }
    }
    Ok(Fetched { signatures, unusable, host: Some(manifest.host) })
}
