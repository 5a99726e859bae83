//! Turning a registry's HTTP answer into bytes or a `RegistryError`: status classes, transport
//! failures, and reading a body under a hard cap.

use bytes::{Bytes, BytesMut};
use reqwest::{Response, StatusCode};
use sha2::{Digest as _, Sha512};

use super::RegistryError;
use super::buffering;
use super::limits::MAX_ERROR_DETAIL_CHARS;
use crate::reference::Digest;

/// Everything an error message may say about a request: no URL (a redirect target can hold a
/// presigned query) and nothing from the request headers.
pub struct Origin<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    /// e.g. "manifest docker.io/library/nginx:1.27"
    pub what: &'a str,
}

/// Maps a non-success status; 404 is left to the caller, which knows whether it means "none".
pub fn check_status(status: StatusCode, origin: &Origin<'_>, anonymous: bool) -> Result<(), RegistryError> {
    let (registry, repository) = (origin.registry, origin.repository);
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            let hint = if anonymous { ", no credentials were given" } else { "" };
            Err(RegistryError::Unauthorized(format!(
                "{registry} refused pull of {repository} (HTTP {}){hint}",
                status.as_u16()
            )))
        }
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            Err(RegistryError::Unreachable(format!("{registry} answered HTTP {} for {}", s.as_u16(), origin.what)))
        }
        s => Err(RegistryError::Protocol(format!("{registry} answered HTTP {} for {}", s.as_u16(), origin.what))),
    }
}

/// reqwest errors carry the URL; it is dropped before anything is quoted.
pub fn transport_error(registry: &str, err: reqwest::Error) -> RegistryError {
    let err = err.without_url();
    if err.is_timeout() {
        return RegistryError::Unreachable(format!("{registry}: request timed out"));
    }
    if err.is_redirect() || err.is_builder() {
        return RegistryError::Protocol(format!("{registry}: {}", detail(&err)));
    }
    let detail = detail(&err);
    let hint = tls_hint(&detail).map(|hint| format!("; {hint}")).unwrap_or_default();
    RegistryError::Unreachable(format!("{registry}: {detail}{hint}"))
}

fn detail(err: &reqwest::Error) -> String {
    crate::error_text::with_causes(err).chars().take(MAX_ERROR_DETAIL_CHARS).collect()
}

/// What to do about the two TLS failures a node's own registry runs into, which rustls words
/// for TLS experts. Read from the text because rustls's error sits behind an io::Error whose
/// `source()` skips it; the words matched are rustls's stable names for these alerts.
fn tls_hint(detail: &str) -> Option<&'static str> {
    if detail.contains("InvalidContentType") {
        // A TLS client hello answered with something that is not TLS: an HTTP response.
        return Some("the registry answered in plain HTTP; add it to registry.insecure (host:port) to allow that");
    }
    if detail.contains("UnknownIssuer") {
        // A mirror listed in a hosts.toml is trusted by that file's `ca`, as containerd trusts it.
        return Some(
            "its certificate is signed by a CA the node does not trust; set registry.ca_file to that CA's PEM \
             file (for a host listed in a hosts.toml: that host's `ca`)",
        );
    }
    None
}

/// Reads at most `limit` bytes. Fails as soon as the declared length or the received bytes pass
/// the limit; dropping the response then closes the connection instead of draining it. Every
/// byte kept is reserved from the running check's [`buffering`] first.
pub async fn read_capped(mut response: Response, limit: usize, origin: &Origin<'_>) -> Result<Bytes, RegistryError> {
    let too_large = || RegistryError::TooLarge { what: origin.what.to_owned(), limit };
    let declared = response.content_length();
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    // The declared length sizes nothing: a registry can declare 4 MiB and then stall, and bytes
    // it never sent must cost neither memory nor a reservation. They are reserved as they arrive.
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(origin.registry, e))? {
        if chunk.len() > limit - body.len() {
            return Err(too_large());
        }
        buffering::reserve(chunk.len()).await;
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

pub fn verify_digest(expected: &Digest, bytes: &[u8], what: &str) -> Result<(), RegistryError> {
    if expected.verify(bytes) {
        return Ok(());
    }
    let actual = digest_like(expected, bytes);
    Err(RegistryError::DigestMismatch { what: what.to_owned(), expected: expected.clone(), actual })
}

/// The actual digest in the expected digest's algorithm, so the two can be compared by eye.
fn digest_like(expected: &Digest, bytes: &[u8]) -> Digest {
    if expected.algorithm() == "sha512" {
        let sha512 = format!("sha512:{}", hex::encode(Sha512::digest(bytes)));
        if let Ok(d) = sha512.parse() {
            return d;
        }
    }
    Digest::sha256_of(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin<'static> {
        Origin { registry: "r.example", repository: "team/app", what: "manifest r.example/team/app:v1" }
    }

    #[test]
    fn status_classes() {
        assert!(check_status(StatusCode::OK, &origin(), true).is_ok());
        let unauthorized = check_status(StatusCode::FORBIDDEN, &origin(), true).unwrap_err();
        assert!(
            matches!(&unauthorized, RegistryError::Unauthorized(m) if m.contains("r.example") && m.contains("team/app"))
        );
        assert!(check_status(StatusCode::BAD_GATEWAY, &origin(), false).unwrap_err().is_unavailable());
        assert!(check_status(StatusCode::TOO_MANY_REQUESTS, &origin(), false).unwrap_err().is_unavailable());
        let teapot = check_status(StatusCode::IM_A_TEAPOT, &origin(), false).unwrap_err();
        assert!(matches!(teapot, RegistryError::Protocol(_)));
    }

    #[test]
    fn tls_failures_say_what_to_configure() {
        let plain =
            "error sending request: client error (Connect): received corrupt message of type InvalidContentType";
        assert!(tls_hint(plain).is_some_and(|hint| hint.contains("plain HTTP; add it to registry.insecure")));
        let private = "client error (Connect): invalid peer certificate: UnknownIssuer";
        assert!(tls_hint(private).is_some_and(|hint| hint.contains("set registry.ca_file")));
        assert!(tls_hint(private).is_some_and(|hint| hint.contains("in a hosts.toml: that host's `ca`")));
        assert_eq!(tls_hint("client error (Connect): tcp connect error: Connection refused"), None);
    }

    #[test]
    fn digest_check_reports_both_digests() {
        let expected = Digest::sha256_of(b"good");
        assert!(verify_digest(&expected, b"good", "blob").is_ok());
        match verify_digest(&expected, b"evil", "blob") {
            Err(RegistryError::DigestMismatch { actual, .. }) => {
                assert_eq!(actual, Digest::sha256_of(b"evil"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sha512_mismatch_reports_sha512() {
        let expected: Digest = format!("sha512:{}", hex::encode(Sha512::digest(b"good"))).parse().unwrap();
        match verify_digest(&expected, b"evil", "blob") {
            Err(RegistryError::DigestMismatch { actual, .. }) => {
                assert_eq!(actual.algorithm(), "sha512")
            }
            other => panic!("{other:?}"),
        }
    }
}
