//! Checking an image against a `signed` rule: resolve the digest, fetch the cosign signatures
//! stored beside it, and evaluate them.

use bytes::Bytes;
use futures_util::future::join_all;

use crate::policy::Rule;
use crate::reference::{Digest, ImageRef};
use crate::registry::{Credentials, Registry, RegistryError};
use crate::verify::payload::MAX_PAYLOAD_BYTES;
use crate::verify::signatures::{SignatureLayer, parse_signature_manifest};
use crate::verify::{Evaluation, evaluate};

use super::Verdict;

/// The result of checking one image against its rule.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub digest: Option<Digest>,
    pub evaluation: Option<Evaluation>,
    pub reason: String,
}

impl Outcome {
    pub fn accept(reason: &str) -> Outcome {
        Outcome { verdict: Verdict::Accepted, digest: None, evaluation: None, reason: reason.to_owned() }
    }

    pub fn reject(reason: &str) -> Outcome {
        Outcome { verdict: Verdict::Rejected, digest: None, evaluation: None, reason: reason.to_owned() }
    }

    pub fn unavailable(reason: String) -> Outcome {
        Outcome { verdict: Verdict::Unavailable, digest: None, evaluation: None, reason }
    }

    fn registry_error(digest: Option<Digest>, context: &str, error: &RegistryError) -> Outcome {
        let verdict = if error.is_unavailable() { Verdict::Unavailable } else { Verdict::Rejected };
        Outcome { verdict, digest, evaluation: None, reason: format!("{context}: {error}") }
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
    let (signatures, unusable) = match fetch_signatures(registry, image, &digest, credentials).await {
        Ok(fetched) => fetched,
        Err(outcome) => return Outcome { digest: Some(digest), ..outcome },
    };
    let evaluation = evaluate(image, &digest, rule, &signatures);
    let verdict = if evaluation.accepted { Verdict::Accepted } else { Verdict::Rejected };
    Outcome { verdict, reason: reason(&evaluation, &unusable), digest: Some(digest), evaluation: Some(evaluation) }
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

/// The digest the pull will be pinned to: the one the reference names (no request: the
/// signature lookup finds nothing for a digest the registry lacks, and containerd pulls by it
/// anyway), or the digest of the manifest bytes the registry serves for the tag now.
pub async fn resolve<R: Registry>(
    registry: &R,
    image: &ImageRef,
    credentials: &Credentials,
) -> Result<Digest, Outcome> {
    if let Some(digest) = image.digest() {
        return Ok(digest.clone());
    }
    let Some(tag) = image.tag() else {
        return Err(Outcome::reject("the reference names neither a tag nor a digest"));
    };
    match registry.manifest(image, tag, credentials).await {
        Ok(Some(manifest)) => Ok(manifest.digest),
        Ok(None) => Err(Outcome::reject("the registry has no such image")),
        Err(error) => Err(Outcome::registry_error(None, "cannot resolve the image", &error)),
    }
}

/// Signature layers paired with their payloads, and the errors of payloads that could not be
/// fetched intact (too large, wrong digest, missing): those only make their signature count
/// for nothing, unless the registry is down altogether.
async fn fetch_signatures<R: Registry>(
    registry: &R,
    image: &ImageRef,
    digest: &Digest,
    credentials: &Credentials,
) -> Result<(Vec<(SignatureLayer, Bytes)>, Vec<RegistryError>), Outcome> {
    let manifest = match registry.manifest(image, &signature_tag(digest), credentials).await {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return Ok((Vec::new(), Vec::new())),
        Err(error) => return Err(Outcome::registry_error(None, "cannot fetch signatures", &error)),
    };
    let layers = parse_signature_manifest(&manifest.bytes, &manifest.media_type)
        .map_err(|error| Outcome::reject(&format!("unusable signature manifest: {error}")))?;
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
    Ok((signatures, unusable))
}
