//! Reading a manifest containerd stored, the way containerd reads it: by the media type in its
//! image record. No I/O; the caller reads the bytes from containerd's content store.
//!
//! Only what the store check needs is read: an image manifest's config (the CRI image id) and an
//! index's entries. A document containerd could read as something else than its record says
//! (its own `mediaType` disagrees, or it carries both an image's and an index's fields) is
//! refused, and so is Docker schema1, which containerd converts into an image nobody signed.

use serde::Deserialize;
use serde::de::IgnoredAny;

pub use crate::registry::media_type::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::registry::media_type::{DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED};

/// A stored manifest, as far as the store check reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Document {
    /// An image manifest; its config digest is the CRI image id.
    Image { config: String },
    /// An image index or Docker manifest list; containerd picks one entry for the platform.
    Index { manifests: Vec<Entry> },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub media_type: String,
    pub digest: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error(
        "it is a Docker schema1 manifest; pullgate refuses schema1, which containerd converts into an \
         image whose digest nobody signed"
    )]
    Schema1,
    #[error("containerd recorded it as {0:?}, which is no image manifest or index pullgate knows")]
    UnknownMediaType(String),
    #[error("it names its own media type {found:?}, but containerd recorded it as {recorded:?}")]
    MediaTypeConflict { recorded: String, found: String },
    #[error("it is not a well-formed {0}")]
    Malformed(&'static str),
}

/// The fields that tell the kinds apart; every one is read, so none can be smuggled past.
#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<IgnoredAny>,
    manifests: Option<Vec<Descriptor>>,
    #[serde(rename = "fsLayers")]
    fs_layers: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
}

/// Reads `bytes`, which containerd's record calls `media_type`.
pub fn read(bytes: &[u8], media_type: &str) -> Result<Document, DocumentError> {
    if media_type == DOCKER_SCHEMA1 || media_type == DOCKER_SCHEMA1_SIGNED {
        return Err(DocumentError::Schema1);
    }
    let index = match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        OCI_INDEX | DOCKER_LIST => true,
        other => return Err(DocumentError::UnknownMediaType(other.to_owned())),
    };
    let kind = if index { "index" } else { "image manifest" };
    let raw: Raw = serde_json::from_slice(bytes).map_err(|_| DocumentError::Malformed(kind))?;
    // A schemaVersion 1 document is schema1 whatever it is called.
    if raw.schema_version == Some(1) || raw.fs_layers.is_some() {
        return Err(DocumentError::Schema1);
    }
    if let Some(found) = raw.media_type.filter(|found| found != media_type) {
        return Err(DocumentError::MediaTypeConflict { recorded: media_type.to_owned(), found });
    }
    match (index, raw.config, raw.manifests) {
        (false, Some(config), None) => Ok(Document::Image { config: config.digest }),
        (true, None, Some(manifests)) if raw.layers.is_none() => Ok(Document::Index {
            manifests: manifests
                .into_iter()
                .map(|entry| Entry { media_type: entry.media_type, digest: entry.digest })
                .collect(),
        }),
        _ => Err(DocumentError::Malformed(kind)),
    }
}

/// Whether an index entry is an image manifest, one containerd could have chosen for the
/// platform. (Nested indexes are not followed; an image id found in none of the entries read
/// fails the check, so that only ever refuses.)
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CONFIG: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const ENTRY: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn bytes(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut manifest = json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": CONFIG, "size": 2},
            "layers": [],
        });
        if let Some(media_type) = media_type {
            manifest["mediaType"] = json!(media_type);
        }
        bytes(manifest)
    }

    #[test]
    fn reads_the_config_of_oci_and_docker_manifests() {
        for media_type in [OCI_MANIFEST, DOCKER_MANIFEST] {
            let want = Document::Image { config: CONFIG.to_owned() };
            assert_eq!(read(&image(Some(media_type)), media_type), Ok(want), "{media_type}");
        }
        // OCI allows leaving the field out; the record's media type says then.
        assert_eq!(read(&image(None), OCI_MANIFEST), Ok(Document::Image { config: CONFIG.to_owned() }));
    }

    #[test]
    fn reads_the_entries_of_indexes_and_lists() {
        for media_type in [OCI_INDEX, DOCKER_LIST] {
            let index = json!({"schemaVersion": 2, "mediaType": media_type,
                "manifests": [{"mediaType": OCI_MANIFEST, "digest": ENTRY, "size": 7}]});
            let want = vec![Entry { media_type: OCI_MANIFEST.to_owned(), digest: ENTRY.to_owned() }];
            assert_eq!(read(&bytes(index), media_type), Ok(Document::Index { manifests: want }), "{media_type}");
        }
    }

    #[test]
    fn refuses_schema1_however_it_is_labelled() {
        let schema1 = bytes(json!({"schemaVersion": 1, "name": "x", "fsLayers": [], "history": []}));
        for media_type in [DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED] {
            assert_eq!(read(&schema1, media_type), Err(DocumentError::Schema1), "{media_type}");
        }
        // A record that calls it an image manifest, with or without a schemaVersion.
        assert_eq!(read(&schema1, OCI_MANIFEST), Err(DocumentError::Schema1));
        let unversioned = bytes(json!({"fsLayers": [], "config": {"digest": CONFIG}}));
        assert_eq!(read(&unversioned, DOCKER_MANIFEST), Err(DocumentError::Schema1));
    }

    #[test]
    fn refuses_a_document_that_reads_as_another_kind() {
        assert_eq!(
            read(&image(Some(OCI_INDEX)), OCI_MANIFEST),
            Err(DocumentError::MediaTypeConflict { recorded: OCI_MANIFEST.into(), found: OCI_INDEX.into() })
        );
        let both = bytes(json!({"schemaVersion": 2, "config": {"digest": CONFIG},
            "layers": [], "manifests": [{"mediaType": OCI_MANIFEST, "digest": ENTRY}]}));
        assert_eq!(read(&both, OCI_MANIFEST), Err(DocumentError::Malformed("image manifest")));
        assert_eq!(read(&both, OCI_INDEX), Err(DocumentError::Malformed("index")));
        // An image manifest recorded as an index has no entries to choose from.
        assert_eq!(read(&image(None), OCI_INDEX), Err(DocumentError::Malformed("index")));
    }

    #[test]
    fn refuses_unknown_media_types_and_malformed_bytes() {
        assert_eq!(read(&image(None), "text/plain"), Err(DocumentError::UnknownMediaType("text/plain".into())));
        assert_eq!(read(b"not json", OCI_MANIFEST), Err(DocumentError::Malformed("image manifest")));
        let duplicate = br#"{"schemaVersion":2,"config":{"digest":"a"},"config":{"digest":"b"},"layers":[]}"#;
        assert_eq!(read(duplicate, OCI_MANIFEST), Err(DocumentError::Malformed("image manifest")));
        let no_config = bytes(json!({"schemaVersion": 2, "layers": []}));
        assert_eq!(read(&no_config, OCI_MANIFEST), Err(DocumentError::Malformed("image manifest")));
    }

    #[test]
    fn knows_which_entries_are_image_manifests() {
        assert!(is_image_manifest(OCI_MANIFEST) && is_image_manifest(DOCKER_MANIFEST));
        assert!(!is_image_manifest(OCI_INDEX) && !is_image_manifest(""));
    }
}
