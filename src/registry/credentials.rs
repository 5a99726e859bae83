//! Registry credentials as the kubelet hands them over in the CRI `AuthConfig`.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use reqwest::header::HeaderValue;
use sha2::{Digest as _, Sha256};

/// Field names and meaning follow CRI `AuthConfig`; an empty string means "not given", as in
/// the protobuf message, so the CRI edge can move the fields over one to one.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of "user:password", the docker config.json form.
    pub auth: String,
    /// OAuth2 refresh token, exchanged at the token endpoint (docker's `identitytoken`).
    pub identity_token: String,
    /// Bearer token sent to the registry as is.
    pub registry_token: String,
    /// The server the kubelet meant them for; not a secret. Empty (the kubelet's usual) means
    /// any host asked for the image, mirrors included, as containerd offers them.
    pub server_address: String,
}

/// Never carries any part of the credentials, only what is wrong with their shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("the auth field is not valid base64")]
    AuthNotBase64,
    #[error("the auth field does not decode to user:password")]
    AuthNotUserPassword,
    #[error("username or password contains bytes not allowed in an HTTP header")]
    NotHeaderSafe,
}

// === impl Credentials ===

impl Credentials {
    pub fn anonymous() -> Self {
        Self::default()
    }

    pub fn is_anonymous(&self) -> bool {
        self.fields().iter().all(|f| f.is_empty())
    }

    /// Whether these credentials may be offered to `host` (`host[:port]`, the host asked),
    /// as containerd's CRI decides (`ParseAuth`): always without a server address, otherwise
    /// only to the host a URL's authority names ("https://host:port/…"). An address without
    /// a scheme ("docker.io") names no host to Go's URL parser, so containerd offers it to
    /// none; neither does pullgate.
    pub fn offered_to(&self, host: &str) -> bool {
        self.server_address.is_empty() || url_host(&self.server_address) == Some(host)
    }

    pub fn identity_token(&self) -> Option<&str> {
        non_empty(&self.identity_token)
    }

    pub fn registry_token(&self) -> Option<&str> {
        non_empty(&self.registry_token)
    }

    /// `Authorization: Basic …` from username/password, else from `auth`; None when neither is
    /// given. Explicit username/password win because that is what containerd does.
    pub fn basic_header(&self) -> Result<Option<HeaderValue>, CredentialsError> {
        let pair = match (non_empty(&self.username), non_empty(&self.auth)) {
            (Some(user), _) => format!("{user}:{}", self.password),
            (None, Some(auth)) => decode_auth(auth)?,
            (None, None) => return Ok(None),
        };
        let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
        let mut header = HeaderValue::from_str(&value).map_err(|_| CredentialsError::NotHeaderSafe)?;
        header.set_sensitive(true);
        Ok(Some(header))
    }

    /// Cache key part that tells credential sets apart without holding them: a token fetched
    /// with one user's credentials must never be served to a pull made with another's.
    pub fn fingerprint(&self) -> String {
        if self.is_anonymous() {
            return "anonymous".to_owned();
        }
        let mut hasher = Sha256::new();
        for field in self.fields() {
            // Length prefix so that ("ab", "c") and ("a", "bc") hash differently.
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    fn fields(&self) -> [&str; 5] {
        [&self.username, &self.password, &self.auth, &self.identity_token, &self.registry_token]
    }
}

/// The host part Go's `url.Parse` gives "scheme://[user@]host[:port]/…" or "//host…"; None
/// when it gives none (no `//` after a valid scheme).
/// The host of a URL as Go's `url.Parse` gives it: as written (case and port kept), without
/// userinfo; None when there is no `//` authority.
pub(crate) fn url_host(address: &str) -> Option<&str> {
    let after_scheme = match address.split_once(':') {
        Some((scheme, rest)) if valid_scheme(scheme) => rest,
        _ => address,
    };
    let authority = after_scheme.strip_prefix("//")?;
    let end = authority.find(['/', '?', '#']).unwrap_or(authority.len());
    let authority = &authority[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    (!host.is_empty()).then_some(host)
}

fn valid_scheme(scheme: &str) -> bool {
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

/// docker config.json writers differ on padding, so accept both forms.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn decode_auth(auth: &str) -> Result<String, CredentialsError> {
    let raw = LENIENT_BASE64.decode(auth.trim()).map_err(|_| CredentialsError::AuthNotBase64)?;
    let pair = String::from_utf8(raw).map_err(|_| CredentialsError::AuthNotUserPassword)?;
    match pair.split_once(':') {
        Some((user, _)) if !user.is_empty() => Ok(pair),
        _ => Err(CredentialsError::AuthNotUserPassword),
    }
}

/// Shows only which fields are set: even a prefix of a secret in a log line is a leak.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |s: &str| {
            if s.is_empty() { "<empty>" } else { "<redacted>" }
        };
        f.debug_struct("Credentials")
            .field("username", &shown(&self.username))
            .field("password", &shown(&self.password))
            .field("auth", &shown(&self.auth))
            .field("identity_token", &shown(&self.identity_token))
            .field("registry_token", &shown(&self.registry_token))
            .field("server_address", &self.server_address)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(username: &str, password: &str, auth: &str) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
            auth: auth.into(),
            ..Credentials::default()
        }
    }

    fn header(c: &Credentials) -> String {
        let h = c.basic_header().unwrap().unwrap();
        h.to_str().unwrap().to_owned()
    }

    #[test]
    fn username_password_make_basic_header() {
        // "alice:s3cret" in base64.
        assert_eq!(header(&creds("alice", "s3cret", "")), "Basic YWxpY2U6czNjcmV0");
    }

    #[test]
    fn auth_field_is_decoded_and_reencoded() {
        assert_eq!(header(&creds("", "", "YWxpY2U6czNjcmV0")), "Basic YWxpY2U6czNjcmV0");
    }

    #[test]
    fn auth_field_without_padding_is_accepted() {
        // "bob:pw" → "Ym9iOnB3" needs no padding; "bob:pwd" → "Ym9iOnB3ZA==" does.
        assert_eq!(header(&creds("", "", "Ym9iOnB3ZA")), "Basic Ym9iOnB3ZA==");
    }

    #[test]
    fn password_may_contain_colons() {
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        assert_eq!(header(&creds("", "", &auth)), format!("Basic {auth}"));
    }

    #[test]
    fn explicit_username_wins_over_auth() {
        assert_eq!(header(&creds("alice", "s3cret", "Ym9iOnB3ZA==")), "Basic YWxpY2U6czNjcmV0");
    }

    #[test]
    fn bad_auth_fields_are_errors() {
        assert_eq!(creds("", "", "!!!").basic_header().err(), Some(CredentialsError::AuthNotBase64));
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert_eq!(creds("", "", &no_colon).basic_header().err(), Some(CredentialsError::AuthNotUserPassword));
        let no_user = base64::engine::general_purpose::STANDARD.encode(":pw");
        assert_eq!(creds("", "", &no_user).basic_header().err(), Some(CredentialsError::AuthNotUserPassword));
    }

    #[test]
    fn no_basic_credentials_means_none() {
        assert!(Credentials::anonymous().basic_header().unwrap().is_none());
        let token_only = Credentials { registry_token: "t".into(), ..Credentials::default() };
        assert!(token_only.basic_header().unwrap().is_none());
    }

    #[test]
    fn basic_header_is_marked_sensitive() {
        assert!(creds("a", "b", "").basic_header().unwrap().unwrap().is_sensitive());
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Credentials { identity_token: "idtok".into(), ..creds("alice", "s3cret", "YWxpY2U6czNjcmV0") };
        let shown = format!("{c:?}");
        for secret in ["alice", "s3cret", "YWxpY2U6czNjcmV0", "idtok"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("<redacted>") && shown.contains("<empty>"));
    }

    #[test]
    fn fingerprint_separates_credentials_and_hides_them() {
        let a = creds("ab", "c", "");
        let b = creds("a", "bc", "");
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_eq!(Credentials::anonymous().fingerprint(), "anonymous");
        assert_eq!(a.fingerprint().len(), 64);
    }

    #[test]
    fn offered_to_follows_containerds_server_address_check() {
        let with = |address: &str| Credentials { server_address: address.into(), ..creds("u", "p", "") };
        assert!(with("").offered_to("mirror:5000"), "no address: every host of the image");
        assert!(with("https://r.io").offered_to("r.io"));
        assert!(with("https://u@r.io:5000/v1/").offered_to("r.io:5000"));
        assert!(with("//r.io/x").offered_to("r.io"));
        assert!(!with("https://r.io").offered_to("mirror:5000"));
        assert!(!with("https://r.io:443").offered_to("r.io"), "compared as written, as Go does");
        for nameless in ["r.io", "r.io:5000", "localhost:5000", "1.2.3.4:5000", "https:r.io"] {
            assert!(!with(nameless).offered_to("r.io"), "{nameless}");
            assert!(!with(nameless).offered_to("r.io:5000"), "{nameless}");
        }
    }
}
