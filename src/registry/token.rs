//! The token endpoint of the docker token protocol: exchange credentials (or nothing, for
//! anonymous pulls) for a bearer token scoped to pulling one repository.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Client, RequestBuilder, Url};
use serde::Deserialize;

use super::RegistryError;
use super::auth::BearerChallenge;
use super::credentials::Credentials;
use super::limits::{DEFAULT_TOKEN_LIFETIME, TOKEN_RESPONSE_MAX_BYTES};
use super::response::{Origin, check_status, read_capped, transport_error};

/// Identifies us to token servers that log OAuth clients; the spec requires some client_id
/// for the refresh-token grant.
const CLIENT_ID: &str = "pullgate";

pub struct Token {
    /// The complete `Authorization` value, already marked sensitive.
    pub header: HeaderValue,
    pub lifetime: Duration,
}

/// No Debug on purpose: it holds the token.
#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

pub struct TokenRequest<'a> {
    pub challenge: &'a BearerChallenge,
    pub registry: &'a str,
    pub repository: &'a str,
    /// Whether the realm may be plain HTTP (only for registries configured insecure).
    pub allow_http: &'a (dyn Fn(&Url) -> bool + Sync),
}

pub async fn fetch(client: &Client, req: &TokenRequest<'_>, creds: &Credentials) -> Result<Token, RegistryError> {
    let realm = realm_url(req)?;
    let what = format!("token for {}/{}", req.registry, req.repository);
    let origin = Origin { registry: req.registry, repository: req.repository, what: &what };
    let request = build_request(client, realm, req, creds)?;
    let response = request.send().await.map_err(|e| transport_error(req.registry, e))?;
    check_status(response.status(), &origin, creds.is_anonymous())?;
    let body = read_capped(response, TOKEN_RESPONSE_MAX_BYTES, &origin).await?;
    parse_token(&body, req.registry)
}

/// A plain-HTTP realm would expose the credentials we send it, so it is accepted only where
/// the operator already accepted plain HTTP.
fn realm_url(req: &TokenRequest<'_>) -> Result<Url, RegistryError> {
    let protocol = |why: &str| RegistryError::Protocol(format!("{}: token realm {why}", req.registry));
    let url = Url::parse(&req.challenge.realm).map_err(|_| protocol("is not a valid URL"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if (req.allow_http)(&url) => Ok(url),
        _ => Err(protocol("must use https")),
    }
}

/// With an identity token, the OAuth2 refresh-token grant (POST form); otherwise a GET with
/// Basic credentials when we have them, anonymous when not.
fn build_request(
    client: &Client,
    realm: Url,
    req: &TokenRequest<'_>,
    creds: &Credentials,
) -> Result<RequestBuilder, RegistryError> {
    let scope = format!("repository:{}:pull", req.repository);
    let service = req.challenge.service.as_deref();
    if let Some(refresh_token) = creds.identity_token() {
        let mut form = vec![("grant_type", "refresh_token"), ("client_id", CLIENT_ID)];
        form.extend(service.map(|s| ("service", s)));
        form.extend([("scope", scope.as_str()), ("refresh_token", refresh_token)]);
        return Ok(client.post(realm).form(&form));
    }
    let mut query = vec![("scope", scope.as_str())];
    query.extend(service.map(|s| ("service", s)));
    let request = client.get(realm).query(&query);
    let basic = creds.basic_header().map_err(|e| RegistryError::Unauthorized(format!("{}: {e}", req.registry)))?;
    Ok(match basic {
        Some(header) => request.header(AUTHORIZATION, header),
        None => request,
    })
}

fn parse_token(body: &[u8], registry: &str) -> Result<Token, RegistryError> {
    let protocol = |why: &str| RegistryError::Protocol(format!("{registry}: token response {why}"));
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|_| protocol("is not valid JSON"))?;
    let token = [parsed.token, parsed.access_token].into_iter().flatten().find(|t| !t.is_empty());
    let token = token.ok_or_else(|| protocol("holds no token"))?;
    let header = bearer_header(&token).ok_or_else(|| protocol("holds a token that is not header-safe"))?;
    // 0 would mean "already expired"; servers that send it mean "unspecified".
    let lifetime = parsed.expires_in.filter(|s| *s > 0).map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
    Ok(Token { header, lifetime })
}

/// `Authorization: Bearer <token>`, marked sensitive so that no HTTP layer logs it.
pub fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut header = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    header.set_sensitive(true);
    Some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_field_or_access_token() {
        let t = parse_token(br#"{"token":"abc","expires_in":300}"#, "r").unwrap();
        assert_eq!(t.header.to_str().unwrap(), "Bearer abc");
        assert_eq!(t.lifetime, Duration::from_secs(300));
        let t = parse_token(br#"{"access_token":"xyz"}"#, "r").unwrap();
        assert_eq!(t.header.to_str().unwrap(), "Bearer xyz");
        assert_eq!(t.lifetime, DEFAULT_TOKEN_LIFETIME);
        let t = parse_token(br#"{"token":"","access_token":"xyz","expires_in":0}"#, "r").unwrap();
        assert_eq!(t.header.to_str().unwrap(), "Bearer xyz");
        assert_eq!(t.lifetime, DEFAULT_TOKEN_LIFETIME);
    }

    #[test]
    fn bad_token_responses_are_protocol_errors_without_the_token() {
        for body in [&b"not json"[..], br#"{"expires_in":5}"#, b"{\"token\":\"a\\nb\"}"] {
            let err = parse_token(body, "r").err().unwrap();
            assert!(matches!(&err, RegistryError::Protocol(m) if !m.contains("a\nb")), "{err}");
        }
    }

    #[test]
    fn realm_must_be_https_unless_allowed() {
        let challenge = BearerChallenge { realm: "http://auth.example/token".into(), service: None };
        let deny = |_: &Url| false;
        let allow = |_: &Url| true;
        let mut req = TokenRequest { challenge: &challenge, registry: "r", repository: "a", allow_http: &deny };
        assert!(realm_url(&req).is_err());
        req.allow_http = &allow;
        assert!(realm_url(&req).is_ok());
        let ftp = BearerChallenge { realm: "ftp://auth.example/".into(), service: None };
        req.challenge = &ftp;
        assert!(realm_url(&req).is_err());
    }

    #[test]
    fn bearer_header_is_sensitive() {
        assert!(bearer_header("t").unwrap().is_sensitive());
        assert!(bearer_header("bad\r\nheader").is_none());
    }
}
