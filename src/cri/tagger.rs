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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use tonic::transport::{Endpoint, Server};
    use tonic::{Request, Response};

    use super::*;
    use crate::cri::images_proto::images_server::{Images, ImagesServer};
    use crate::cri::images_proto::{
        CreateImageResponse, DeleteImageRequest, DeleteImageResponse, Descriptor, GetImageResponse, UpdateImageResponse,
    };
    use crate::cri::proto::image_service_server::{ImageService, ImageServiceServer};
    use crate::cri::proto::{
        ImageFsInfoRequest, ImageFsInfoResponse, ImageStatusRequest, ImageStatusResponse, ListImagesRequest,
        ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest, RemoveImageResponse,
        StreamImagesRequest, StreamImagesResponse,
    };

    const PINNED: &str = "r.example/app@sha256:aaaa";
    const DIGEST: &str = "sha256:aaaa";
    const TAG: &str = "r.example/app:v1";
    const IMAGE_ID: &str = "sha256:c0f1";

    /// containerd's images API and CRI ImageStatus, in memory: records by name, the CRI id of
    /// each target digest, and the status a call should fail with, by method.
    #[derive(Clone, Default)]
    struct Fake {
        records: Arc<Mutex<HashMap<String, Option<Image>>>>,
        ids: Arc<Mutex<HashMap<String, String>>>,
        failing: Arc<Mutex<HashMap<&'static str, Code>>>,
        calls: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Fake {
        fn record(&self, name: &str, digest: &str) {
            let target = Descriptor { digest: digest.to_owned(), ..Default::default() };
            let image = Image { name: name.to_owned(), target: Some(target), ..Default::default() };
            self.records.lock().unwrap().insert(name.to_owned(), Some(image));
        }

        fn target(&self, name: &str) -> Option<String> {
            let records = self.records.lock().unwrap();
            records.get(name).cloned().flatten().and_then(|image| image.target).map(|target| target.digest)
        }

        fn fail(&self, method: &'static str, code: Code) {
            self.failing.lock().unwrap().insert(method, code);
        }

        /// Records the call; Err with the status set for `method`, as the service returns it.
        #[allow(clippy::result_large_err)] // tonic's Status, which the service methods return anyway
        fn called(&self, method: &'static str) -> Result<(), Status> {
            self.calls.lock().unwrap().push(method);
            match self.failing.lock().unwrap().get(method) {
                Some(code) => Err(Status::new(*code, format!("{method} fails"))),
                None => Ok(()),
            }
        }

        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }

        /// A tagger talking to this fake over an in-memory connection.
        async fn tagger(&self) -> Tagger {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let router = Server::builder()
                .add_service(ImagesServer::new(self.clone()))
                .add_service(ImageServiceServer::new(self.clone()));
            let incoming = futures_util::stream::iter([Ok::<_, std::io::Error>(server)]);
            tokio::spawn(router.serve_with_incoming(incoming));
            let mut client = Some(client);
            let channel = Endpoint::from_static("http://fake.invalid")
                .connect_with_connector(tower::service_fn(move |_| {
                    let client = client.take().ok_or_else(|| std::io::Error::other("one connection only"));
                    async move { client.map(hyper_util::rt::TokioIo::new) }
                }))
                .await
                .expect("in-memory channel");
            Tagger::new(channel)
        }
    }

    #[tonic::async_trait]
    impl Images for Fake {
        async fn get(&self, request: Request<GetImageRequest>) -> Result<Response<GetImageResponse>, Status> {
            self.called("get")?;
            let name = request.into_inner().name;
            match self.records.lock().unwrap().get(&name) {
                Some(image) => Ok(Response::new(GetImageResponse { image: image.clone() })),
                None => Err(Status::not_found(format!("image {name:?}: not found"))),
            }
        }

        async fn create(&self, request: Request<CreateImageRequest>) -> Result<Response<CreateImageResponse>, Status> {
            self.called("create")?;
            let image = request.into_inner().image.ok_or_else(|| Status::invalid_argument("no image"))?;
            let mut records = self.records.lock().unwrap();
            if records.contains_key(&image.name) {
                return Err(Status::already_exists(format!("image {:?}: already exists", image.name)));
            }
            records.insert(image.name.clone(), Some(image.clone()));
            Ok(Response::new(CreateImageResponse { image: Some(image) }))
        }

        async fn update(&self, request: Request<UpdateImageRequest>) -> Result<Response<UpdateImageResponse>, Status> {
            self.called("update")?;
            let image = request.into_inner().image.ok_or_else(|| Status::invalid_argument("no image"))?;
            self.records.lock().unwrap().insert(image.name.clone(), Some(image.clone()));
            Ok(Response::new(UpdateImageResponse { image: Some(image) }))
        }

        async fn delete(&self, _: Request<DeleteImageRequest>) -> Result<Response<DeleteImageResponse>, Status> {
            Err(Status::unimplemented("the tagger never deletes"))
        }
    }

    #[tonic::async_trait]
    impl ImageService for Fake {
        type StreamImagesStream = futures_util::stream::Empty<Result<StreamImagesResponse, Status>>;

        async fn image_status(
            &self,
            request: Request<ImageStatusRequest>,
        ) -> Result<Response<ImageStatusResponse>, Status> {
            self.called("image_status")?;
            let name = request.into_inner().image.unwrap_or_default().image;
            let id = self.target(&name).and_then(|digest| self.ids.lock().unwrap().get(&digest).cloned());
            let image = id.map(|id| crate::cri::proto::Image { id, ..Default::default() });
            Ok(Response::new(ImageStatusResponse { image, ..Default::default() }))
        }

        async fn list_images(&self, _: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
            Err(Status::unimplemented("not used by the tagger"))
        }

        async fn stream_images(
            &self,
            _: Request<StreamImagesRequest>,
        ) -> Result<Response<Self::StreamImagesStream>, Status> {
            Err(Status::unimplemented("not used by the tagger"))
        }

        async fn pull_image(&self, _: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
            Err(Status::unimplemented("not used by the tagger"))
        }

        async fn remove_image(&self, _: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
            Err(Status::unimplemented("not used by the tagger"))
        }

        async fn image_fs_info(&self, _: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
            Err(Status::unimplemented("not used by the tagger"))
        }
    }

    /// containerd holds the pinned pull and shows its target's CRI id.
    fn pulled() -> Fake {
        let fake = Fake::default();
        fake.record(PINNED, DIGEST);
        fake.ids.lock().unwrap().insert(DIGEST.to_owned(), IMAGE_ID.to_owned());
        fake
    }

    #[tokio::test]
    async fn a_new_tag_is_created_on_the_pinned_target() {
        let fake = pulled();
        fake.tagger().await.tag(TAG, PINNED, IMAGE_ID).await.expect("tagged");
        assert_eq!(fake.target(TAG).as_deref(), Some(DIGEST));
        assert!(!fake.calls().contains(&"update"), "{:?}", fake.calls());
    }

    #[tokio::test]
    async fn a_tag_that_already_exists_is_moved_to_the_pinned_target() {
        let fake = pulled();
        fake.record(TAG, "sha256:0000");
        fake.tagger().await.tag(TAG, PINNED, IMAGE_ID).await.expect("tag moved");
        assert_eq!(fake.target(TAG).as_deref(), Some(DIGEST));
        let writes: Vec<_> = fake.calls().into_iter().filter(|call| *call == "create" || *call == "update").collect();
        assert_eq!(writes, ["create", "update"]);
    }

    #[tokio::test]
    async fn no_record_for_the_pinned_name_is_a_lookup_error() {
        let fake = Fake::default();
        let error = fake.tagger().await.tag(TAG, PINNED, IMAGE_ID).await.expect_err("tagged without a record");
        assert!(
            matches!(&error, TagError::Lookup { name, message } if name == PINNED && message.contains("not found"))
        );
        // An answer without an image is no record either.
        fake.records.lock().unwrap().insert(PINNED.to_owned(), None);
        let error = fake.tagger().await.tag(TAG, PINNED, IMAGE_ID).await.expect_err("tagged without an image");
        assert!(matches!(&error, TagError::Lookup { message, .. } if message == "empty response"), "{error}");
        assert_eq!(fake.target(TAG), None);
    }

    #[tokio::test]
    async fn a_refused_create_is_a_write_error() {
        let fake = pulled();
        fake.fail("create", Code::PermissionDenied);
        let error = fake.tagger().await.tag(TAG, PINNED, IMAGE_ID).await.expect_err("tagged");
        assert!(matches!(&error, TagError::Write { name, message } if name == TAG && message == "create fails"));
        assert!(!fake.calls().contains(&"update"), "only AlreadyExists may turn into an update");
    }

    #[tokio::test]
    async fn a_refused_update_of_an_existing_tag_is_a_write_error() {
        let fake = pulled();
        fake.record(TAG, "sha256:0000");
        fake.fail("update", Code::Unavailable);
        let error = fake.tagger().await.tag(TAG, PINNED, IMAGE_ID).await.expect_err("tagged");
        assert!(matches!(&error, TagError::Write { name, message } if name == TAG && message == "update fails"));
        assert_eq!(fake.target(TAG).as_deref(), Some("sha256:0000"));
    }

    /// The CRI store never shows the tag as the pulled image: after `STORE_SYNC_LIMIT` (3 s of
    /// real time: the fake answers over real I/O) the tag is reported as not visible.
    #[tokio::test]
    async fn a_tag_the_cri_store_never_shows_is_not_visible() {
        let fake = pulled();
        let error = fake.tagger().await.tag(TAG, PINNED, "sha256:other").await.expect_err("visible");
        let expected = (TAG, "sha256:other", STORE_SYNC_LIMIT);
        assert!(
            matches!(&error, TagError::NotVisible { name, image_id, limit } if (name.as_str(), image_id.as_str(), *limit) == expected),
            "{error}"
        );
    }

    #[tokio::test]
    async fn points_at_only_when_the_tag_targets_the_pinned_digest() {
        let fake = pulled();
        let tagger = fake.tagger().await;
        assert!(!tagger.points_at(TAG, PINNED).await, "no tag yet");
        fake.record(TAG, "sha256:0000");
        assert!(!tagger.points_at(TAG, PINNED).await, "the tag targets another digest");
        fake.record(TAG, DIGEST);
        assert!(tagger.points_at(TAG, PINNED).await);
        assert!(!tagger.points_at(TAG, "r.example/app:v1").await, "a name without a digest");
        fake.fail("get", Code::Unavailable);
        assert!(!tagger.points_at(TAG, PINNED).await, "an unanswered Get");
    }
}
