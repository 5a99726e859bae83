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
#[derive(Debug)]
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

pub async fn signed<R: Registry>(registry: &R, image: &ImageRef, rule: &Rule, credentials: &Credentials) -> Outcome {
    let digest = match resolve(registry, image, credentials).await {
        Ok(digest) => digest,
        Err(outcome) => return outcome,
    };
    let signatures = match fetch_signatures(registry, image, &digest, credentials).await {
        Ok(signatures) => signatures,
        Err(outcome) => return Outcome { digest: Some(digest), ..outcome },
    };
    let evaluation = evaluate(image, &digest, rule, &signatures);
    let verdict = if evaluation.accepted { Verdict::Accepted } else { Verdict::Rejected };
    Outcome { verdict, reason: evaluation.reason.clone(), digest: Some(digest), evaluation: Some(evaluation) }
}

/// The digest the pull will be pinned to: the one the reference names, or the digest of the
/// manifest bytes the registry serves for the tag now.
async fn resolve<R: Registry>(registry: &R, image: &ImageRef, credentials: &Credentials) -> Result<Digest, Outcome> {
    let reference = match (image.digest(), image.tag()) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.to_owned(),
        (None, None) => return Err(Outcome::reject("the reference names neither a tag nor a digest")),
    };
    match registry.manifest(image, &reference, credentials).await {
        Ok(Some(manifest)) => Ok(image.digest().cloned().unwrap_or(manifest.digest)),
        Ok(None) => Err(Outcome::reject("the registry has no such image")),
        Err(error) => Err(Outcome::registry_error(None, "cannot resolve the image", &error)),
    }
}

/// Signature layers paired with their payloads. A payload that cannot be fetched (other than
/// the registry being down) only makes its signature count for nothing.
async fn fetch_signatures<R: Registry>(
    registry: &R,
    image: &ImageRef,
    digest: &Digest,
    credentials: &Credentials,
) -> Result<Vec<(SignatureLayer, Bytes)>, Outcome> {
    let manifest = match registry.manifest(image, &signature_tag(digest), credentials).await {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return Ok(Vec::new()),
        Err(error) => return Err(Outcome::registry_error(None, "cannot fetch signatures", &error)),
    };
    let layers = parse_signature_manifest(&manifest.bytes, &manifest.media_type)
        .map_err(|error| Outcome::reject(&format!("unusable signature manifest: {error}")))?;
    let payloads = join_all(layers.iter().map(|layer| registry.blob(image, &layer.digest, MAX_PAYLOAD_BYTES, credentials))).await;
    let mut signatures = Vec::with_capacity(layers.len());
    for (layer, payload) in layers.into_iter().zip(payloads) {
        match payload {
            Ok(bytes) => signatures.push((layer, bytes)),
            Err(error) if error.is_unavailable() => {
                return Err(Outcome::registry_error(None, "cannot fetch a signature payload", &error));
            }
            Err(error) => tracing::debug!(layer = %layer.digest, %error, "signature payload unusable"),
        }
    }
    Ok(signatures)
}
