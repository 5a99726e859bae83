//! A private registry as a node meets it: basic auth, one image signed by a trusted key.

use super::cosign::CosignKey;
use super::lab::Lab;
use super::policy;

pub const REPO: &str = "private/app";

pub struct PrivateImage {
    pub lab: Lab,
    /// The basic-auth registry, "host:port".
    pub registry: String,
    /// `REGISTRY/private/app:v1`.
    pub image: String,
    pub digest: String,
    pub key: CosignKey,
    /// A policy requiring a signature by `key`, read from the key file "a.pub".
    pub policy: String,
}

/// Starts a lab whose auth registry takes `user`/`password`, and pushes `private/app:v1`
/// there, signed by a fresh key.
pub fn signed_image(user: &str, password: &str) -> PrivateImage {
    let lab = Lab::start_with_auth(user, password);
    let registry = lab.auth_registry.clone().expect("auth registry");
    let key = CosignKey::generate();
    let digest = lab.push_image_to(&registry, &format!("{REPO}:v1"), "private", Some((user, password)));
    key.signing(&registry, REPO, &digest).creds(&format!("{user}:{password}")).run();
    let policy = policy::signed(&format!("{registry}/private"), &["a.pub"]);
    let image = format!("{registry}/{REPO}:v1");
    PrivateImage { lab, registry, image, digest, key, policy }
}
