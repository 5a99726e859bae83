//! Checks what containerd stored for a pinned pull, not what the pull promised.
//!
//! pullgate verifies digest D and asks containerd for `repo@D`, but containerd does not always
//! store D under that name: given a Docker schema1 manifest for D, containerd before 2.1
//! converts it, without checking it against D, into a new image and records that as `repo@D`.
//! So after every pinned pull pullgate reads containerd's own records: the image record for
//! `repo@D` must target exactly D, and the CRI image id must be the config of D's manifest
//! (for an index, of an image manifest the index lists), read from containerd's content store,
//! which is content-addressed (and pullgate hashes what it reads once more). Otherwise the pull
//! fails and the records it made are removed, before any tag is written.

mod compare;
pub mod manifest;

use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::cri::content_proto::ReadContentRequest;
use crate::cri::content_proto::content_client::ContentClient;
use crate::cri::images_proto::images_client::ImagesClient;
use crate::cri::images_proto::{DeleteImageRequest, Descriptor, GetImageRequest};
use crate::cri::proto::image_service_client::ImageServiceClient;
use crate::cri::proto::{ImageSpec, ImageStatusRequest};
use crate::reference::Digest;
use crate::registry::limits::MANIFEST_MAX_BYTES;
use compare::Records;
use manifest::DocumentError;

/// The containerd namespace the CRI plugin keeps Kubernetes images in.
const CRI_NAMESPACE: &str = "k8s.io";
/// containerd updates the CRI image store from an image event, asynchronously; in practice
/// within milliseconds. Past this, pullgate stops waiting for the CRI to show a change.
pub const STORE_SYNC_LIMIT: Duration = Duration::from_secs(3);
const STORE_SYNC_POLL: Duration = Duration::from_millis(5);
/// Index entries the check reads from the content store, at most; each is a round trip to
/// containerd. Real indexes list a few platforms and attestations; one listing more image
/// manifests than this is refused rather than checked in part.
pub const MAX_INDEX_ENTRIES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// containerd stored something other than what was verified.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    /// containerd could not be asked what it stored, so nothing is known to be verified.
    #[error("cannot read what containerd stored for {name}: {message}")]
    Unreadable { name: String, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error("containerd has no image record for {name} after pulling it")]
    NoRecord { name: String },
    #[error(
        "containerd recorded {name} as {stored}, not the verified {verified}: the registry or a mirror \
         served other content for the verified digest (containerd turns a Docker schema1 manifest into an \
         image of its own)"
    )]
    Target { name: String, stored: String, verified: String },
    #[error("containerd's content store has no {digest}, which it recorded for {name}")]
    Missing { name: String, digest: String },
    #[error("containerd stored {size} bytes as {digest}, more than a manifest may have ({MANIFEST_MAX_BYTES})")]
    TooLarge { digest: String, size: u64 },
    #[error("the bytes containerd stored as {digest} do not hash to it")]
    Corrupt { digest: String },
    #[error("the manifest containerd stored as {digest} for {name} is refused: {error}")]
    Document { name: String, digest: String, error: DocumentError },
    #[error("containerd's image id for {name} is {image_id}, not the verified manifest's config {config}")]
    ImageId { name: String, image_id: String, config: String },
    #[error("containerd's image id for {name} is {image_id}, the config of no image manifest the verified index lists")]
    NotInIndex { name: String, image_id: String },
    #[error(
        "the verified index for {name} lists {count} image manifests, more than pullgate checks ({MAX_INDEX_ENTRIES})"
    )]
    IndexTooLarge { name: String, count: usize },
}

/// pullgate's reader of containerd's image records, content store and CRI image store.
#[derive(Clone)]
pub struct Store {
    images: ImagesClient<Channel>,
    content: ContentClient<Channel>,
    cri: ImageServiceClient<Channel>,
}

impl Store {
    pub fn new(channel: Channel) -> Store {
        Store {
            images: ImagesClient::new(channel.clone()),
            content: ContentClient::new(channel.clone()),
            cri: ImageServiceClient::new(channel),
        }
    }

    /// Checks that containerd recorded `pinned` (repo@digest) as exactly that digest and that
    /// `image_id`, the CRI image id its pull returned, is the config of that manifest. When it
    /// is not, removes what the pull recorded (see `remove`) before answering.
    pub async fn check(&self, pinned: &str, image_id: &str) -> Result<(), StoreError> {
        // Spawned, so that the check and any removal finish even if the kubelet gives up on the
        // call meanwhile: a substitute left under `repo@digest` would be found there next time.
        let (store, name, image_id) = (self.clone(), pinned.to_owned(), image_id.to_owned());
        let task = tokio::spawn(async move { store.check_here(&name, &image_id).await });
        task.await.unwrap_or_else(|error| {
            Err(StoreError::Unreadable {
                name: pinned.to_owned(),
                message: format!("the check did not finish: {error}"),
            })
        })
    }

    async fn check_here(&self, pinned: &str, image_id: &str) -> Result<(), StoreError> {
        let Some(verified) = pinned.rsplit_once('@').and_then(|(_, digest)| digest.parse::<Digest>().ok()) else {
            let message = "the pinned name carries no digest".to_owned();
            return Err(StoreError::Unreadable { name: pinned.to_owned(), message });
        };
        let result = compare::compare(self, pinned, &verified, image_id).await;
        if let Err(error) = &result {
            tracing::warn!(image = pinned, %error, "store check failed; removing what the pull recorded");
            self.remove(pinned, &verified, image_id).await;
        }
        result
    }

    /// Removes the records a refused pull made: the digest name, and the CRI's image-id record
    /// when it now targets something other than the verified digest (the CRI moves that record
    /// to whatever it just pulled). Then waits, bounded, until the CRI no longer shows an image
    /// under the digest name, so the kubelet cannot find it there. Best effort: the pull is
    /// refused whatever happens here.
    async fn remove(&self, pinned: &str, verified: &Digest, image_id: &str) {
        self.delete(pinned).await;
        if !image_id.is_empty()
            && let Ok(Some(target)) = self.target(image_id).await
            && target.digest != verified.as_str()
        {
            self.delete(image_id).await;
        }
        if !await_shown(&self.cri, pinned, None).await {
            tracing::warn!(image = pinned, limit = ?STORE_SYNC_LIMIT, "the CRI still shows a removed image");
        }
    }

    async fn delete(&self, name: &str) {
        let request = namespaced(DeleteImageRequest { name: name.to_owned() });
        match self.images.clone().delete(request).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => tracing::warn!(image = name, error = status.message(), "cannot remove image record"),
        }
    }
}

impl Records for Store {
    async fn target(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        let request = namespaced(GetImageRequest { name: name.to_owned() });
        match self.images.clone().get(request).await {
            Ok(response) => Ok(response.into_inner().image.and_then(|image| image.target)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(unreadable(name, &status)),
        }
    }

    async fn content(&self, name: &str, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        // Read without asking its size first (size 0: to the end), one round trip instead of
        // two on every pinned pull; the loop below bounds it as an Info answer would have.
        let request = ReadContentRequest { digest: digest.to_string(), offset: 0, size: 0 };
        let mut stream = match self.content.clone().read(namespaced(request)).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(unreadable(name, &status)),
        };
        let mut bytes = Vec::new();
        loop {
            let chunk = match stream.message().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(Some(bytes)),
                // containerd may say NotFound only once the stream has started.
                Err(status) if status.code() == Code::NotFound && bytes.is_empty() => return Ok(None),
                Err(status) => return Err(unreadable(name, &status)),
            };
            if bytes.len() + chunk.data.len() > MANIFEST_MAX_BYTES {
                let size = (bytes.len() + chunk.data.len()) as u64;
                return Err(Mismatch::TooLarge { digest: digest.to_string(), size }.into());
            }
            bytes.extend_from_slice(&chunk.data);
        }
    }
}

/// Waits, up to `STORE_SYNC_LIMIT`, until the CRI image store shows image id `want` under
/// `name` (None: no image); whether it did.
pub async fn await_shown(cri: &ImageServiceClient<Channel>, name: &str, want: Option<&str>) -> bool {
    let deadline = tokio::time::Instant::now() + STORE_SYNC_LIMIT;
    let request =
        ImageStatusRequest { image: Some(ImageSpec { image: name.to_owned(), ..Default::default() }), verbose: false };
    loop {
        // An unanswered ImageStatus shows nothing either way; keep asking, but never past the
        // deadline, even when containerd does not answer at all.
        let status = tokio::time::timeout_at(deadline, cri.clone().image_status(request.clone())).await;
        if let Ok(Ok(response)) = status
            && response.into_inner().image.map(|image| image.id).as_deref() == want
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(STORE_SYNC_POLL).await;
    }
}

/// A request to containerd's own services, in the CRI plugin's namespace.
pub fn namespaced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("containerd-namespace", tonic::metadata::MetadataValue::from_static(CRI_NAMESPACE));
    request
}

fn unreadable(name: &str, status: &Status) -> StoreError {
    StoreError::Unreadable { name: name.to_owned(), message: status.message().to_owned() }
}
