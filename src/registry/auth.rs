//! What a registry asks for (`WWW-Authenticate` challenges) and what we remember between
//! requests: each registry's scheme and the bearer tokens it issued.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

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
    schemes: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<TokenCache>,
}

/// A panic elsewhere while holding the lock leaves a map that is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AuthState {
    /// Lets the next request to this registry carry credentials up front instead of
    /// collecting a 401 first.
    pub fn remember(&self, registry: &str, challenge: &Challenge) {
        let mut schemes = lock(&self.schemes);
        if schemes.len() >= TOKEN_CACHE_MAX_ENTRIES && !schemes.contains_key(registry) {
            schemes.clear();
        }
        schemes.insert(registry.to_owned(), challenge.clone());
    }

    pub fn scheme(&self, registry: &str) -> Option<Challenge> {
        lock(&self.schemes).get(registry).cloned()
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
    fn garbage_never_panics() {
        let sample = "Bearer realm=\"https://t/é\",service=\"s\\\"x\", Basic , =,\"\",é=\"";
        for end in 0..=sample.len() {
            if let Some(prefix) = sample.get(..end) {
                let _ = parse_challenges(prefix);
            }
        }
        for junk in ["", ",,,", "=", "\"", "\\", "Bearer realm=\"unterminated", "Bearer realm=", "é"] {
            let _ = parse_challenges(junk);
        }
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

    #[test]
    fn auth_state_remembers_scheme_per_registry() {
        let state = AuthState::default();
        state.remember("a.example", &Challenge::Basic);
        assert_eq!(state.scheme("a.example"), Some(Challenge::Basic));
        assert_eq!(state.scheme("b.example"), None);
    }
}
