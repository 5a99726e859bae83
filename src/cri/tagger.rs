//! Points the requested tag at the digest containerd just pulled.
//!
//! pullgate forwards a verified pull as `repo@digest`, so the tag cannot move between
//! verification and pull. containerd's CRI records such a pull under the digest name only, so
//! the kubelet would not find `repo:tag` afterwards and would pull again. The tag is therefore
//! written through containerd's own images API, onto exactly the target containerd resolved for
//! the verified digest once the store check (`cri::store`) has shown that target to be the
//! verified digest, and pullgate waits until the CRI image store shows it.

use std::time::Duration;

use tonic::Code;
use tonic::Status;
use tonic::transport::Channel;

use crate::cri::images_proto::images_client::ImagesClient;
use crate::cri::images_proto::{CreateImageRequest, GetImageRequest, Image, UpdateImageRequest};
use crate::cri::proto::image_service_client::ImageServiceClient;
use crate::cri::store::{STORE_SYNC_LIMIT, Store, await_shown, namespaced};

#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("containerd has no image record for {name}: {message}")]
    Lookup { name: String, message: String },
    #[error("cannot record tag {name}: {message}")]
    Write { name: String, message: String },
    #[error("containerd's CRI store did not show {name} as {image_id} within {limit:?}")]
    NotVisible { name: String, image_id: String, limit: Duration },
}

pub struct Tagger {
    images: ImagesClient<Channel>,
    cri: ImageServiceClient<Channel>,
    store: Store,
}

impl Tagger {
    pub fn new(channel: Channel) -> Tagger {
        let store = Store::new(channel.clone());
        Tagger { images: ImagesClient::new(channel.clone()), cri: ImageServiceClient::new(channel), store }
    }

    /// The check that must pass before a tag is written: what containerd stored for the
    /// pinned name is what was verified.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes `name` (repo:tag) refer to the image pulled as `pinned` (repo@digest), whose CRI
    /// image id is `image_id`.
    pub async fn tag(&self, name: &str, pinned: &str, image_id: &str) -> Result<(), TagError> {
        let mut image = self.lookup(pinned).await?;
        image.name = name.to_owned();
        self.write(image).await?;
        self.await_visible(name, image_id).await
    }

    /// Whether `name` already targets the manifest digest in `pinned`, so a repeat pull of an
    /// unchanged tag needs no write. Asked while containerd pulls, to keep it off the warm path.
    pub async fn points_at(&self, name: &str, pinned: &str) -> bool {
        let Some((_, digest)) = pinned.rsplit_once('@') else { return false };
        let request = namespaced(GetImageRequest { name: name.to_owned() });
        let Ok(response) = self.images.clone().get(request).await else { return false };
        let target = response.into_inner().image.and_then(|image| image.target);
        target.is_some_and(|target| target.digest == digest)
    }

    async fn lookup(&self, pinned: &str) -> Result<Image, TagError> {
        let lookup_error = |message: String| TagError::Lookup { name: pinned.to_owned(), message };
        let request = namespaced(GetImageRequest { name: pinned.to_owned() });
        let response = self.images.clone().get(request).await.map_err(|s| lookup_error(s.message().to_owned()))?;
        response.into_inner().image.ok_or_else(|| lookup_error("empty response".to_owned()))
    }

    async fn write(&self, image: Image) -> Result<(), TagError> {
        let name = image.name.clone();
        let write_error = |status: Status| TagError::Write { name: name.clone(), message: status.message().to_owned() };
        let mut images = self.images.clone();
        match images.create(namespaced(CreateImageRequest { image: Some(image.clone()) })).await {
            Ok(_) => Ok(()),
            // The tag already exists (an earlier version, or a concurrent pull): move it.
            Err(status) if status.code() == Code::AlreadyExists => images
                .update(namespaced(UpdateImageRequest { image: Some(image) }))
                .await
                .map(|_| ())
                .map_err(write_error),
            Err(status) => Err(write_error(status)),
        }
    }

    async fn await_visible(&self, name: &str, image_id: &str) -> Result<(), TagError> {
        if await_shown(&self.cri, name, Some(image_id)).await {
            return Ok(());
        }
        let (name, image_id) = (name.to_owned(), image_id.to_owned());
        Err(TagError::NotVisible { name, image_id, limit: STORE_SYNC_LIMIT })
    }
}
