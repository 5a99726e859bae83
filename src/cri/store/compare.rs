//! The store check proper, over any reader of containerd's records, so that every way it can
//! refuse is unit-tested without a containerd.

use std::future::Future;

use crate::cri::images_proto::Descriptor;
use crate::reference::Digest;

use super::manifest::{self, Document, Entry};
use super::{MAX_INDEX_ENTRIES, Mismatch, StoreError};

/// What the check reads from containerd.
pub trait Records {
    /// The target of the image record `name`; None when there is no such record.
    fn target(&self, name: &str) -> impl Future<Output = Result<Option<Descriptor>, StoreError>> + Send;

    /// The bytes stored as `digest` (read for image `name`), refused past `MANIFEST_MAX_BYTES`;
    /// None when there are none. Not yet checked against the digest.
    fn content(&self, name: &str, digest: &Digest) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
}

/// Checks that containerd recorded `pinned` as exactly `verified`, and that `image_id` is the
/// config of that manifest (for an index: of an image manifest it lists).
pub async fn compare<R: Records>(
    records: &R,
    pinned: &str,
    verified: &Digest,
    image_id: &str,
) -> Result<(), StoreError> {
    // Both at once, one round trip: the verified digest is known, so its bytes need not wait
    // for the record to name it; they are only used once the record does.
    let (target, bytes) = futures_util::join!(records.target(pinned), content(records, pinned, verified));
    let Some(target) = target? else {
        return Err(Mismatch::NoRecord { name: pinned.to_owned() }.into());
    };
    if target.digest != verified.as_str() {
        let (name, verified) = (pinned.to_owned(), verified.to_string());
        return Err(Mismatch::Target { name, stored: target.digest, verified }.into());
    }
    let Some(bytes) = bytes? else {
        return Err(Mismatch::Missing { name: pinned.to_owned(), digest: verified.to_string() }.into());
    };
    let document = manifest::read(&bytes, &target.media_type).map_err(|error| Mismatch::Document {
        name: pinned.to_owned(),
        digest: verified.to_string(),
        error,
    })?;
    match document {
        Document::Image { config } if config == image_id => Ok(()),
        Document::Image { config } => {
            Err(Mismatch::ImageId { name: pinned.to_owned(), image_id: image_id.to_owned(), config }.into())
        }
        Document::Index { manifests } => find_in_index(records, pinned, &manifests, image_id).await,
    }
}

/// containerd picked one platform's manifest from the verified index and fetched only that one
/// (the others are absent from its store); the image id must be the config of one the index
/// lists, and so of content the index's signature covers.
async fn find_in_index<R: Records>(
    records: &R,
    pinned: &str,
    manifests: &[Entry],
    image_id: &str,
) -> Result<(), StoreError> {
    let candidates: Vec<&Entry> =
        manifests.iter().filter(|entry| manifest::is_image_manifest(&entry.media_type)).collect();
    if candidates.len() > MAX_INDEX_ENTRIES {
        return Err(Mismatch::IndexTooLarge { name: pinned.to_owned(), count: candidates.len() }.into());
    }
    for entry in candidates {
        // An entry that is not a digest cannot be what containerd fetched.
        let Ok(digest) = entry.digest.parse::<Digest>() else { continue };
        let Some(bytes) = content(records, pinned, &digest).await? else { continue };
        if let Ok(Document::Image { config }) = manifest::read(&bytes, &entry.media_type)
            && config == image_id
        {
            return Ok(());
        }
    }
    Err(Mismatch::NotInIndex { name: pinned.to_owned(), image_id: image_id.to_owned() }.into())
}

/// The bytes stored as `digest`, which must hash to it: the content store is content-addressed,
/// and pullgate checks that once more rather than trust it.
async fn content<R: Records>(records: &R, name: &str, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
    let bytes = records.content(name, digest).await?;
    match bytes {
        Some(bytes) if !digest.verify(&bytes) => Err(Mismatch::Corrupt { digest: digest.to_string() }.into()),
        bytes => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::cri::store::manifest::{DOCKER_LIST, OCI_INDEX, OCI_MANIFEST};

    const NAME: &str = "registry.test/app@sha256:placeholder";
    const CONFIG: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER_CONFIG: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    /// containerd as the check sees it: one record (`NAME`) and a content store.
    #[derive(Default)]
    struct Fake {
        target: Option<Descriptor>,
        content: HashMap<String, Vec<u8>>,
        unreadable: bool,
    }

    impl Records for Fake {
        async fn target(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
            if self.unreadable {
                return Err(StoreError::Unreadable { name: name.to_owned(), message: "down".into() });
            }
            Ok(self.target.clone())
        }

        async fn content(&self, _: &str, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.content.get(digest.as_str()).cloned())
        }
    }

    impl Fake {
        /// Stores `bytes` under their digest; returns it.
        fn store(&mut self, bytes: Vec<u8>) -> Digest {
            let digest = Digest::sha256_of(&bytes);
            self.content.insert(digest.to_string(), bytes);
            digest
        }

        fn record(&mut self, digest: &Digest, media_type: &str) {
            let target = Descriptor { media_type: media_type.into(), digest: digest.to_string(), ..Default::default() };
            self.target = Some(target);
        }
    }

    fn image_manifest(config: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": []}))
        .unwrap()
    }

    fn index(entries: &[(&str, &Digest)]) -> Vec<u8> {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(media_type, digest)| json!({"mediaType": media_type, "digest": digest.as_str()}))
            .collect();
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})).unwrap()
    }

    async fn check(fake: &Fake, verified: &Digest, image_id: &str) -> Result<(), StoreError> {
        compare(fake, NAME, verified, image_id).await
    }

    fn mismatch(result: Result<(), StoreError>) -> Mismatch {
        match result {
            Err(StoreError::Mismatch(mismatch)) => mismatch,
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn accepts_the_verified_manifest_and_its_config() {
        let mut fake = Fake::default();
        let verified = fake.store(image_manifest(CONFIG));
        fake.record(&verified, OCI_MANIFEST);
        check(&fake, &verified, CONFIG).await.unwrap();
    }

    #[tokio::test]
    async fn refuses_a_record_that_targets_other_content() {
        let mut fake = Fake::default();
        let verified = fake.store(image_manifest(CONFIG));
        let converted = fake.store(image_manifest(OTHER_CONFIG));
        fake.record(&converted, OCI_MANIFEST);
        let refused = mismatch(check(&fake, &verified, OTHER_CONFIG).await);
        assert!(matches!(refused, Mismatch::Target { ref stored, .. } if *stored == converted.to_string()));
        assert!(refused.to_string().contains(&format!("not the verified {verified}")), "{refused}");
        assert!(matches!(mismatch(check(&Fake::default(), &verified, CONFIG).await), Mismatch::NoRecord { .. }));
    }

    #[tokio::test]
    async fn refuses_an_image_id_that_is_not_the_config() {
        let mut fake = Fake::default();
        let verified = fake.store(image_manifest(CONFIG));
        fake.record(&verified, OCI_MANIFEST);
        let refused = mismatch(check(&fake, &verified, OTHER_CONFIG).await);
        assert!(matches!(refused, Mismatch::ImageId { ref config, .. } if config == CONFIG), "{refused}");
    }

    #[tokio::test]
    async fn refuses_missing_corrupt_and_unreadable_content() {
        let mut fake = Fake::default();
        let verified = Digest::sha256_of(&image_manifest(CONFIG));
        fake.record(&verified, OCI_MANIFEST);
        assert!(matches!(mismatch(check(&fake, &verified, CONFIG).await), Mismatch::Missing { .. }));
        // Bytes under the digest that do not hash to it.
        fake.content.insert(verified.to_string(), image_manifest(OTHER_CONFIG));
        assert!(matches!(mismatch(check(&fake, &verified, OTHER_CONFIG).await), Mismatch::Corrupt { .. }));
        fake.unreadable = true;
        assert!(matches!(check(&fake, &verified, CONFIG).await, Err(StoreError::Unreadable { .. })));
    }

    #[tokio::test]
    async fn refuses_schema1_stored_under_the_verified_digest() {
        let mut fake = Fake::default();
        let verified = fake.store(br#"{"schemaVersion":1,"fsLayers":[],"history":[]}"#.to_vec());
        fake.record(&verified, "application/vnd.docker.distribution.manifest.v1+prettyjws");
        let refused = mismatch(check(&fake, &verified, CONFIG).await);
        assert!(matches!(refused, Mismatch::Document { error: manifest::DocumentError::Schema1, .. }), "{refused}");
    }

    #[tokio::test]
    async fn accepts_the_config_of_a_listed_manifest_containerd_fetched() {
        let mut fake = Fake::default();
        let chosen = fake.store(image_manifest(CONFIG));
        // Listed but never fetched (another platform), and a nested index, which is not followed.
        let absent = Digest::sha256_of(b"another platform");
        let verified = fake.store(index(&[(OCI_MANIFEST, &absent), (OCI_INDEX, &absent), (OCI_MANIFEST, &chosen)]));
        fake.record(&verified, OCI_INDEX);
        check(&fake, &verified, CONFIG).await.unwrap();
        let refused = mismatch(check(&fake, &verified, OTHER_CONFIG).await);
        assert!(matches!(refused, Mismatch::NotInIndex { .. }), "{refused}");
    }

    #[tokio::test]
    async fn refuses_an_image_id_from_a_manifest_the_index_does_not_list() {
        let mut fake = Fake::default();
        // containerd holds a manifest with that config, but the verified index does not list it.
        fake.store(image_manifest(OTHER_CONFIG));
        let listed = fake.store(image_manifest(CONFIG));
        let verified = fake.store(index(&[(OCI_MANIFEST, &listed)]));
        fake.record(&verified, OCI_INDEX);
        assert!(matches!(mismatch(check(&fake, &verified, OTHER_CONFIG).await), Mismatch::NotInIndex { .. }));
        // A listed entry whose stored bytes do not hash to it fails the check outright.
        fake.content.insert(listed.to_string(), image_manifest(OTHER_CONFIG));
        assert!(matches!(mismatch(check(&fake, &verified, OTHER_CONFIG).await), Mismatch::Corrupt { .. }));
    }

    #[tokio::test]
    async fn refuses_an_index_recorded_as_another_kind_or_too_long() {
        let mut fake = Fake::default();
        let listed = fake.store(image_manifest(CONFIG));
        let verified = fake.store(index(&[(OCI_MANIFEST, &listed)]));
        // The document says OCI index; the record says Docker list.
        fake.record(&verified, DOCKER_LIST);
        assert!(matches!(mismatch(check(&fake, &verified, CONFIG).await), Mismatch::Document { .. }));
        let entries: Vec<(&str, &Digest)> = vec![(OCI_MANIFEST, &listed); MAX_INDEX_ENTRIES + 1];
        let long = fake.store(index(&entries));
        fake.record(&long, OCI_INDEX);
        let refused = mismatch(check(&fake, &long, CONFIG).await);
        assert!(matches!(refused, Mismatch::IndexTooLarge { count, .. } if count == MAX_INDEX_ENTRIES + 1));
    }
}
