//! Checking an image against a `signed` rule: resolve the digest, fetch the cosign signatures
//! stored beside it (the `.sig` tag and the OCI referrers), and evaluate them.

use futures_util::future::{join, join_all};

use crate::policy::Rule;
use crate::reference::{Digest, ImageRef};
use crate::registry::{Credentials, Manifest, ReferrerPages, Registry, RegistryError, media_type};
use crate::verify::payload::MAX_PAYLOAD_BYTES;
use crate::verify::referrers::{
    Discovery, MAX_BUNDLE_BYTES, Referrer, ReferrerKind, parse_bundle_manifest, parse_referrer_pages,
};
use crate::verify::signatures::{SignatureLayer, parse_signature_manifest};
use crate::verify::{Evaluation, Format, Found, Shortfall, evaluate_found};

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
    format!("{}.sig", referrers_tag(digest))
}

/// The tag of the referrers tag schema (OCI distribution spec 1.1), where registries without
/// the referrers API keep the index of a digest's referrers: `sha256-<hex>`.
pub fn referrers_tag(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm(), digest.hex())
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
    let Fetched { found: signatures, unusable, answered, unread } =
        match fetch_all(registry, store, &digest, &credentials).await {
            Ok(fetched) => fetched,
            Err(outcome) => return Outcome { digest: Some(digest), ..outcome },
        };
    let evaluation = evaluate_found(image, &digest, rule, &signatures);
    let verdict = if evaluation.accepted { Verdict::Accepted } else { Verdict::Rejected };
    let code = code(&evaluation, &unusable);
    let reason = reason(&evaluation, &unusable, unread.as_deref());
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
fn code(evaluation: &Evaluation, unusable: &[String]) -> ReasonCode {
    match evaluation.shortfall {
        None => ReasonCode::Verified,
        Some(Shortfall::NoSignatures) if !unusable.is_empty() => ReasonCode::UnusableSignature,
        Some(shortfall) => ReasonCode::of_shortfall(shortfall),
    }
}

/// A payload the registry would not hand over intact never reaches the evaluation, so a
/// refusal names it: otherwise it would read "no signatures found" while there were some. So
/// does a refusal after a referrers list that was not read to its end.
fn reason(evaluation: &Evaluation, unusable: &[String], unread: Option<&str>) -> String {
    let reason = unusable_reason(evaluation, unusable);
    match unread.filter(|_| !evaluation.accepted) {
        Some(unread) => format!("{reason}; {unread}"),
        None => reason,
    }
}

fn unusable_reason(evaluation: &Evaluation, unusable: &[String]) -> String {
    let Some(first) = unusable.first().filter(|_| !evaluation.accepted) else { return evaluation.reason.clone() };
    let what = match unusable.len() {
        1 => "1 signature is unusable".to_owned(),
        n => format!("{n} signatures are unusable"),
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

/// Every signature found for the digest, in either format; why those that could not be
/// fetched intact were left out (too large, wrong digest, missing: those only make their
/// signature count for nothing, unless the registry is down altogether); and which host
/// answered each lookup; and why the referrers list was not read to its end, if it was not.
struct Fetched {
    found: Vec<Found>,
    unusable: Vec<String>,
    answered: Vec<String>,
    unread: Option<String>,
}

impl Fetched {
    fn nothing(answered: Vec<String>) -> Fetched {
        Fetched { found: Vec::new(), unusable: Vec::new(), answered, unread: None }
    }

    fn of(found: Vec<Found>, unusable: Vec<String>) -> Fetched {
        Fetched { found, unusable, ..Fetched::nothing(Vec::new()) }
    }

    fn extend(&mut self, more: Fetched) {
        self.found.extend(more.found);
        self.unusable.extend(more.unusable);
        self.answered.extend(more.answered);
        self.unread = self.unread.take().or(more.unread);
    }
}

/// The `.sig` tag and the referrers are asked for at once, so a cold check waits for the
/// slower of them, not for both. `store` is where the signatures are kept: the image's own
/// repository or the rule's `signatures_from`.
async fn fetch_all<R: Registry>(
    registry: &R,
    store: &ImageRef,
    digest: &Digest,
    credentials: &Credentials,
) -> Result<Fetched, Outcome> {
    let (tagged, referred) = join(
        fetch_signatures(registry, store, digest, credentials),
        fetch_referrers(registry, store, digest, credentials),
    )
    .await;
    let mut fetched = tagged?;
    fetched.extend(referred?);
    Ok(fetched)
}

async fn fetch_signatures<R: Registry>(
    registry: &R,
    store: &ImageRef,
    digest: &Digest,
    credentials: &Credentials,
) -> Result<Fetched, Outcome> {
    let tag = signature_tag(digest);
    let manifest = match registry.artifact_manifest(store, &tag, credentials).await {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return Ok(Fetched::nothing(vec![format!("signatures {}:{tag}: no host has them", store.name())])),
        Err(error) => return Err(Outcome::registry_error(None, "cannot fetch signatures", &error)),
    };
    let layers = parse_signature_manifest(&manifest.bytes, &manifest.media_type).map_err(|error| {
        Outcome::reject(ReasonCode::UnusableSignature, &format!("unusable signature manifest: {error}"))
    })?;
    let (found, unusable) = simple_signing_payloads(registry, store, layers, Format::SigTag, credentials).await?;
    let answered = vec![format!("signatures {}:{tag} from {}", store.name(), manifest.host)];
    Ok(Fetched { answered, ..Fetched::of(found, unusable) })
}

async fn simple_signing_payloads<R: Registry>(
    registry: &R,
    image: &ImageRef,
    layers: Vec<SignatureLayer>,
    format: Format,
    credentials: &Credentials,
) -> Result<(Vec<Found>, Vec<String>), Outcome> {
    let payloads =
        join_all(layers.iter().map(|layer| registry.blob(image, &layer.digest, MAX_PAYLOAD_BYTES, credentials))).await;
    let (mut signatures, mut unusable) = (Vec::with_capacity(layers.len()), Vec::new());
    for (layer, payload) in layers.into_iter().zip(payloads) {
        match payload {
            Ok(payload) => signatures.push(Found::Simple { layer, payload, format }),
            Err(error) if error.is_unavailable() => {
                return Err(Outcome::registry_error(None, "cannot fetch a signature payload", &error));
            }
            Err(error) => unusable.push(error.to_string()),
        }
    }
    Ok((signatures, unusable))
}

/// The signatures among the digest's OCI referrers. The referrers API and the referrers tag
/// schema's `sha256-<hex>` tag are asked at once, so a registry without the API (it answers
/// 404) costs no round trip more; the API's list wins when there is one. A referrer that
/// cannot be used (a broken list, a manifest the list names but the registry does not have, a
/// bundle for another image) counts for nothing and is named in the refusal.
async fn fetch_referrers<R: Registry>(
    registry: &R,
    store: &ImageRef,
    digest: &Digest,
    credentials: &Credentials,
) -> Result<Fetched, Outcome> {
    let (api, tag) = join(
        registry.referrers(store, digest, credentials),
        registry.artifact_manifest(store, &referrers_tag(digest), credentials),
    )
    .await;
    // Registries without the API should answer 404, but some refuse the unknown path otherwise
    // (400, 405, …): only an unreachable registry keeps the tag from being read.
    let (list, via) = match (api, tag) {
        (Ok(Some(list)), _) => (list, Discovery::ReferrersApi),
        (Err(error), _) if error.is_unavailable() => {
            return Err(Outcome::registry_error(None, "cannot list the referrers", &error));
        }
        (_, Ok(Some(index))) => (ReferrerPages { pages: vec![index], unread: None }, Discovery::ReferrersTag),
        (_, Ok(None)) => return Ok(Fetched::nothing(Vec::new())),
        (_, Err(error)) => {
            let (found, unusable) = unusable_or_unavailable(error, "cannot fetch the referrers tag")?;
            return Ok(Fetched::of(found, unusable));
        }
    };
    let unread = list.unread.as_ref().map(|why| format!("{}: not read to its end ({why})", via.describe()));
    let answered = vec![listed_by(store, digest, &list, via, unread.as_deref())];
    let pages = list.pages.iter().map(|page| (&page.bytes[..], page.media_type.as_str()));
    let referrers = match parse_referrer_pages(pages) {
        Ok(referrers) => referrers,
        Err(error) => {
            let unusable = vec![format!("{}: {error}", via.describe())];
            return Ok(Fetched { answered, unread, ..Fetched::of(Vec::new(), unusable) });
        }
    };
    let fetched =
        join_all(referrers.iter().map(|referrer| fetch_referrer(registry, store, digest, referrer, via, credentials)))
            .await;
    let mut all = Fetched { unread, ..Fetched::nothing(answered) };
    for result in fetched {
        let (found, unusable) = result?;
        all.extend(Fetched::of(found, unusable));
    }
    Ok(all)
}

/// "referrers of NAME@DIGEST from HOST (referrers API, 3 pages; …)", for `pullgate verify`.
fn listed_by(store: &ImageRef, digest: &Digest, list: &ReferrerPages, via: Discovery, unread: Option<&str>) -> String {
    let host = list.pages.first().map_or("", |page| page.host.as_str());
    let mut how = via.describe().to_owned();
    if list.pages.len() > 1 {
        how.push_str(&format!(", {} pages", list.pages.len()));
    }
    if let Some(unread) = unread {
        how.push_str(&format!("; {unread}"));
    }
    format!("referrers of {}@{digest} from {host} ({how})", store.name())
}

/// One referrer's signatures: its manifest, then the bundle or the payloads it holds.
async fn fetch_referrer<R: Registry>(
    registry: &R,
    image: &ImageRef,
    digest: &Digest,
    referrer: &Referrer,
    via: Discovery,
    credentials: &Credentials,
) -> Result<(Vec<Found>, Vec<String>), Outcome> {
    let what = match referrer.kind {
        ReferrerKind::Bundle => "bundle referrer",
        ReferrerKind::SimpleSigning => "simple-signing referrer",
    };
    let manifest = match registry.manifest(image, referrer.digest.as_str(), credentials).await {
        Ok(Some(manifest)) => manifest,
        Ok(None) => {
            let text = format!("{what} {} listed by the {} is missing", referrer.digest, via.describe());
            return Ok((Vec::new(), vec![text]));
        }
        Err(error) => return unusable_or_unavailable(error, &format!("cannot fetch {what} {}", referrer.digest)),
    };
    match referrer.kind {
        ReferrerKind::Bundle => fetch_bundle(registry, image, digest, referrer, &manifest, via, credentials).await,
        ReferrerKind::SimpleSigning => match parse_signature_manifest(&manifest.bytes, &manifest.media_type) {
            Ok(layers) => {
                let format = Format::SimpleSigningReferrer(via);
                simple_signing_payloads(registry, image, layers, format, credentials).await
            }
            Err(error) => Ok((Vec::new(), vec![format!("{what} {}: {error}", referrer.digest)])),
        },
    }
}

async fn fetch_bundle<R: Registry>(
    registry: &R,
    image: &ImageRef,
    digest: &Digest,
    referrer: &Referrer,
    manifest: &Manifest,
    via: Discovery,
    credentials: &Credentials,
) -> Result<(Vec<Found>, Vec<String>), Outcome> {
    let layer = match parse_bundle_manifest(&referrer.digest, &manifest.bytes, digest) {
        Ok(layer) => layer,
        Err(error) => return Ok((Vec::new(), vec![error.to_string()])),
    };
    match registry.blob(image, &layer.digest, MAX_BUNDLE_BYTES, credentials).await {
        Ok(bundle) => Ok((vec![Found::Bundle { layer: layer.digest, bundle, via }], Vec::new())),
        Err(error) => unusable_or_unavailable(error, &format!("cannot fetch the bundle of {}", referrer.digest)),
    }
}

/// A registry that cannot be reached leaves nothing decided; any other failure only makes
/// what was asked for count for nothing.
// Same shape as the async fetchers it answers for, which clippy does not size-check.
#[allow(clippy::result_large_err)]
fn unusable_or_unavailable(error: RegistryError, context: &str) -> Result<(Vec<Found>, Vec<String>), Outcome> {
    if error.is_unavailable() {
        return Err(Outcome::registry_error(None, context, &error));
    }
    Ok((Vec::new(), vec![format!("{context}: {error}")]))
}
