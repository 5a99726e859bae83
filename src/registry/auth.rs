//! What a registry asks for (`WWW-Authenticate` challenges) and what we remember between
//! requests: each registry's scheme and the bearer tokens it issued.
//!
//! Only the registry's own host is answered. Blob requests are redirected to storage hosts the
//! registry picks, and one of those asking for credentials is not the registry asking: its
//! challenge is neither answered with the pull secret nor remembered. A realm the registry
//! itself names (Docker Hub's `auth.docker.io`) is its token service and gets the credentials.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::HeaderValue;

use super::limits::{MAX_TOKEN_LIFETIME, TOKEN_CACHE_MAX_ENTRIES, TOKEN_EXPIRY_MARGIN};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer(BearerChallenge),
}

/// The challenge's own `scope` is not kept: we always ask for `repository:<repo>:pull`, so
/// that the token cache key and the token's rights agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
}

/// The challenge to answer from all `WWW-Authenticate` values of a response. Bearer wins over
/// Basic because it works with every kind of credential, Basic only with user/password.
pub fn preferred_challenge<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    let all: Vec<Challenge> = header_values.into_iter().flat_map(parse_challenges).collect();
    let bearer = all.iter().find(|c| matches!(c, Challenge::Bearer(_)));
    bearer.or_else(|| all.first()).cloned()
}

/// Every Basic or Bearer challenge in one header value (RFC 7235 allows several, comma
/// separated); other schemes and Bearer without a realm are skipped, garbage ends parsing.
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut lexer = Lexer { bytes: value.as_bytes(), pos: 0 };
    let mut found = Vec::new();
    loop {
        lexer.skip_separators();
        let Some(scheme) = lexer.token() else { break };
        let params = lexer.params();
        if let Some(challenge) = to_challenge(&scheme, params) {
            found.push(challenge);
        }
    }
    found
}

fn to_challenge(scheme: &str, params: Vec<(String, String)>) -> Option<Challenge> {
    let mut params: HashMap<String, String> = params.into_iter().collect();
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let realm = params.remove("realm").filter(|r| !r.is_empty())?;
    let service = params.remove("service").filter(|s| !s.is_empty());
    Some(Challenge::Bearer(BearerChallenge { realm, service }))
}

/// Works on bytes and cuts only at ASCII delimiters, so no input can split a UTF-8 sequence.
struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_while(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
    }

    fn skip_separators(&mut self) {
        self.skip_while(|b| b == b',' || b.is_ascii_whitespace());
    }

    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        self.skip_while(|b| !(b == b',' || b == b'=' || b == b'"' || b.is_ascii_whitespace()));
        let raw = self.bytes.get(start..self.pos).filter(|t| !t.is_empty())?;
        Some(String::from_utf8_lossy(raw).into_owned())
    }

    /// `key=value` pairs up to the next scheme: a token not followed by `=` starts a new challenge.
    fn params(&mut self) -> Vec<(String, String)> {
        let mut params = Vec::new();
        loop {
            let before = self.pos;
            self.skip_separators();
            let Some(key) = self.token() else { break };
            self.skip_while(|b| b == b' ' || b == b'\t');
            if self.peek() != Some(b'=') {
                self.pos = before;
                break;
            }
            self.pos += 1;
            self.skip_while(|b| b == b' ' || b == b'\t');
            params.push((key.to_ascii_lowercase(), self.value()));
        }
        params
    }

    fn value(&mut self) -> String {
        if self.peek() != Some(b'"') {
            return self.token().unwrap_or_default();
        }
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => out.extend(self.peek().inspect(|_| self.pos += 1)),
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

// === Issuer ===

/// The host and port a response came from, as the URL parser spells them (lowercase, IP
/// addresses canonical, the scheme's default port filled in), so two spellings of one
/// origin compare equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Issuer(String);

impl Issuer {
    pub fn of(url: &Url) -> Issuer {
        let host = url.host_str().unwrap_or_default();
        match url.port_or_known_default() {
            Some(port) => Issuer(format!("{host}:{port}")),
            None => Issuer(host.to_owned()),
        }
    }
}

impl std::fmt::Display for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// === Token cache ===

/// Tokens are scoped to one repository and were issued for one set of credentials; both are
/// in the key so no pull ever rides on a token obtained for another repository or user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub registry: String,
    pub repository: String,
    /// `Credentials::fingerprint`, never the credentials.
    pub credentials: String,
}

struct CachedToken {
    header: HeaderValue,
    usable_until: Instant,
}

#[derive(Default)]
pub struct TokenCache {
    entries: HashMap<TokenKey, CachedToken>,
}

impl TokenCache {
    pub fn get(&self, key: &TokenKey, now: Instant) -> Option<HeaderValue> {
        let entry = self.entries.get(key).filter(|e| now < e.usable_until)?;
        Some(entry.header.clone())
    }

    pub fn insert(&mut self, key: TokenKey, header: HeaderValue, lifetime: Duration, now: Instant) {
        if self.entries.len() >= TOKEN_CACHE_MAX_ENTRIES && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| now < e.usable_until);
            if self.entries.len() >= TOKEN_CACHE_MAX_ENTRIES {
                // Still full of live tokens: dropping them all costs one token fetch each later,
                // which is cheaper than tracking recency for a cache this small.
                self.entries.clear();
            }
        }
        self.entries.insert(key, CachedToken { header, usable_until: now + usable_for(lifetime) });
    }

    pub fn remove(&mut self, key: &TokenKey) {
        self.entries.remove(key);
    }
}

/// Short-lived tokens keep at least half their life, so a 5 s token is still worth caching.
fn usable_for(lifetime: Duration) -> Duration {
    let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
    lifetime - TOKEN_EXPIRY_MARGIN.min(lifetime / 2)
}

// === Shared state ===

/// Per-registry memory shared by all requests of one `HttpRegistry`. The locks are std
/// mutexes held only for a map operation, never across an await.
#[derive(Default)]
pub struct AuthState {
    /// Keyed by registry and by the host that issued the challenge, so a challenge is only
    /// ever answered up front to the host that asked for it.
    schemes: Mutex<HashMap<(String, Issuer), Challenge>>,
    tokens: Mutex<TokenCache>,
}

/// A panic elsewhere while holding the lock leaves a map that is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AuthState {
    /// Lets the next request to this registry's `issuer` carry credentials up front instead of
    /// collecting a 401 first. Callers pass only the registry's own host as the issuer.
    pub fn remember(&self, registry: &str, issuer: &Issuer, challenge: &Challenge) {
        let key = (registry.to_owned(), issuer.clone());
        let mut schemes = lock(&self.schemes);
        if schemes.len() >= TOKEN_CACHE_MAX_ENTRIES && !schemes.contains_key(&key) {
            schemes.clear();
        }
        schemes.insert(key, challenge.clone());
    }

    pub fn scheme(&self, registry: &str, issuer: &Issuer) -> Option<Challenge> {
        lock(&self.schemes).get(&(registry.to_owned(), issuer.clone())).cloned()
    }

    pub fn token(&self, key: &TokenKey) -> Option<HeaderValue> {
        lock(&self.tokens).get(key, Instant::now())
    }

    pub fn store_token(&self, key: TokenKey, header: HeaderValue, lifetime: Duration) {
        lock(&self.tokens).insert(key, header, lifetime, Instant::now());
    }

    pub fn forget_token(&self, key: &TokenKey) {
        lock(&self.tokens).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>) -> Challenge {
        Challenge::Bearer(BearerChallenge { realm: realm.into(), service: service.map(Into::into) })
    }

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#;
        assert_eq!(parse_challenges(h), vec![bearer("https://auth.docker.io/token", Some("registry.docker.io"))]);
    }

    #[test]
    fn parses_basic_challenge_case_insensitively() {
        assert_eq!(parse_challenges(r#"basic realm="Registry Realm""#), vec![Challenge::Basic]);
        assert_eq!(parse_challenges("BASIC"), vec![Challenge::Basic]);
    }

    #[test]
    fn parses_unquoted_params_spaces_and_mixed_case_keys() {
        let h = "Bearer  Realm = https://r.example/token , Service=svc";
        assert_eq!(parse_challenges(h), vec![bearer("https://r.example/token", Some("svc"))]);
    }

    #[test]
    fn parses_several_challenges_in_one_value() {
        let h = r#"Basic realm="x", Bearer realm="https://t/", Negotiate abc, Bearer service="no-realm""#;
        assert_eq!(parse_challenges(h), vec![Challenge::Basic, bearer("https://t/", None)]);
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let h = r#"Bearer realm="https://t/?a=1,b=\"2\"""#;
        assert_eq!(parse_challenges(h), vec![bearer(r#"https://t/?a=1,b="2""#, None)]);
    }

    #[test]
    fn bearer_without_realm_is_skipped() {
        assert!(parse_challenges(r#"Bearer service="x""#).is_empty());
        assert!(parse_challenges(r#"Bearer realm="""#).is_empty());
    }

    #[test]
    fn bearer_is_preferred_over_basic() {
        let got = preferred_challenge([r#"Basic realm="r""#, r#"Bearer realm="https://t/""#]);
        assert_eq!(got, Some(bearer("https://t/", None)));
        assert_eq!(preferred_challenge(["Basic"]), Some(Challenge::Basic));
        assert_eq!(preferred_challenge(["Digest nonce=1"]), None);
    }

    #[test]
    fn truncated_input_yields_only_prefixes_of_what_was_sent() {
        const REALM: &str = "https://t/é";
        const SERVICE: &str = "s\"x";
        let sample = "Bearer realm=\"https://t/é\",service=\"s\\\"x\", Basic , =,\"\",é=\"";
        assert_eq!(parse_challenges(sample), vec![bearer(REALM, Some(SERVICE)), Challenge::Basic]);
        // A header cut anywhere (a char boundary): what is parsed is a prefix of what was sent.
        for prefix in (0..=sample.len()).filter_map(|end| sample.get(..end)) {
            let found = parse_challenges(prefix);
            let (bearers, basics): (Vec<_>, Vec<_>) = found.iter().partition(|c| matches!(c, Challenge::Bearer(_)));
            assert!(
                bearers.len() <= 1 && basics.len() <= usize::from(prefix.contains("Basic")),
                "{prefix:?}: {found:?}"
            );
            if let Some(Challenge::Bearer(b)) = bearers.first() {
                assert!(!b.realm.is_empty() && REALM.starts_with(&b.realm), "{prefix:?}: {found:?}");
                assert!(b.service.as_deref().is_none_or(|s| SERVICE.starts_with(s)), "{prefix:?}: {found:?}");
                if prefix.contains("é\"") {
                    assert_eq!(b.realm, REALM, "{prefix:?}");
                }
            }
        }
    }

    #[test]
    fn junk_yields_nothing_and_an_unterminated_quote_runs_to_the_end() {
        for junk in ["", ",,,", "=", "\"", "\\", "Bearer realm=", "Bearer", "é", "=Basic"] {
            assert_eq!(parse_challenges(junk), vec![], "{junk:?}");
        }
        assert_eq!(parse_challenges("Bearer realm=\"unterminated"), vec![bearer("unterminated", None)]);
    }

    fn key(repo: &str, creds: &str) -> TokenKey {
        TokenKey { registry: "r.example".into(), repository: repo.into(), credentials: creds.into() }
    }

    #[test]
    fn token_is_reused_until_shortly_before_expiry() {
        let mut cache = TokenCache::default();
        let t0 = Instant::now();
        cache.insert(key("a", "anon"), HeaderValue::from_static("Bearer t"), Duration::from_secs(60), t0);
        assert!(cache.get(&key("a", "anon"), t0 + Duration::from_secs(49)).is_some());
        assert!(cache.get(&key("a", "anon"), t0 + Duration::from_secs(50)).is_none());
    }

    #[test]
    fn short_tokens_keep_half_their_life() {
        let mut cache = TokenCache::default();
        let t0 = Instant::now();
        cache.insert(key("a", "anon"), HeaderValue::from_static("Bearer t"), Duration::from_secs(4), t0);
        assert!(cache.get(&key("a", "anon"), t0 + Duration::from_millis(1999)).is_some());
        assert!(cache.get(&key("a", "anon"), t0 + Duration::from_secs(2)).is_none());
    }

    #[test]
    fn huge_lifetimes_are_clamped() {
        let mut cache = TokenCache::default();
        let t0 = Instant::now();
        cache.insert(key("a", "anon"), HeaderValue::from_static("Bearer t"), Duration::MAX, t0);
        assert!(cache.get(&key("a", "anon"), t0 + MAX_TOKEN_LIFETIME).is_none());
    }

    #[test]
    fn tokens_are_per_repository_and_credentials() {
        let mut cache = TokenCache::default();
        let t0 = Instant::now();
        cache.insert(key("a", "alice"), HeaderValue::from_static("Bearer t"), Duration::from_secs(60), t0);
        assert!(cache.get(&key("b", "alice"), t0).is_none());
        assert!(cache.get(&key("a", "bob"), t0).is_none());
        cache.remove(&key("a", "alice"));
        assert!(cache.get(&key("a", "alice"), t0).is_none());
    }

    #[test]
    fn cache_size_is_bounded() {
        let mut cache = TokenCache::default();
        let t0 = Instant::now();
        for i in 0..TOKEN_CACHE_MAX_ENTRIES + 5 {
            cache.insert(key(&i.to_string(), "c"), HeaderValue::from_static("Bearer t"), Duration::from_secs(60), t0);
        }
        assert!(cache.entries.len() <= TOKEN_CACHE_MAX_ENTRIES);
        assert!(!cache.entries.is_empty());
    }

    fn issuer(url: &str) -> Issuer {
        Issuer::of(&Url::parse(url).unwrap())
    }

    #[test]
    fn issuer_is_host_and_port_with_the_default_filled_in() {
        assert_eq!(issuer("https://Reg.Example/v2/a/blobs/x").to_string(), "reg.example:443");
        assert_eq!(issuer("https://reg.example:443/v2/"), issuer("https://reg.example/v2/"));
        assert_eq!(issuer("http://127.0.0.1:08123/v2/").to_string(), "127.0.0.1:8123");
        assert_eq!(issuer("http://[0::1]:5000/").to_string(), "[::1]:5000");
        assert_ne!(issuer("https://reg.example:5000/"), issuer("https://reg.example/"));
        assert_ne!(issuer("https://cdn.reg.example/"), issuer("https://reg.example/"));
    }

    #[test]
    fn auth_state_remembers_scheme_per_registry_and_issuer() {
        let state = AuthState::default();
        let own = issuer("https://a.example/v2/");
        state.remember("a.example", &own, &Challenge::Basic);
        assert_eq!(state.scheme("a.example", &own), Some(Challenge::Basic));
        assert_eq!(state.scheme("b.example", &own), None);
        assert_eq!(state.scheme("a.example", &issuer("https://cdn.example/")), None);
        let foreign = bearer("https://other.example/token", None);
        state.remember("a.example", &issuer("https://cdn.example/"), &foreign);
        assert_eq!(state.scheme("a.example", &own), Some(Challenge::Basic), "another host's challenge replaced it");
    }

    #[test]
    fn remembered_schemes_are_bounded() {
        let state = AuthState::default();
        for n in 0..=TOKEN_CACHE_MAX_ENTRIES {
            state.remember(&format!("r{n}.example"), &issuer("https://r.example/"), &Challenge::Basic);
        }
        assert!(lock(&state.schemes).len() <= TOKEN_CACHE_MAX_ENTRIES);
    }
}
