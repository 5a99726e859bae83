//! Hard limits on what a registry can make us do. Each bound exists because the registry is
//! remote input: without it a broken or hostile registry could pin memory or a pull forever.

use std::num::NonZeroUsize;
use std::time::Duration;

/// The OCI distribution spec only obliges registries to accept manifests up to 4 MiB and
/// containerd refuses larger ones, so anything bigger is broken or hostile.
pub const MANIFEST_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Blob storage commonly sits behind one or two redirects (CDN, presigned object store); a
/// longer chain is a loop or a detour we have no reason to follow.
pub const MAX_REDIRECTS: usize = 3;

/// Token responses are a JWT plus a little JSON (a few KiB even with large claim sets);
/// the cap keeps a misbehaving token endpoint from streaming into memory.
pub const TOKEN_RESPONSE_MAX_BYTES: usize = 256 * 1024;

/// The docker token spec says a token without `expires_in` lives 60 seconds.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Reusing a token for longer than this would hide revocation from us, and clamping also
/// keeps `Instant + expires_in` from overflowing on absurd values.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// A token is dropped this long before it expires so that a request started just before
/// expiry does not arrive with a dead token and cost a 401 round-trip.
pub const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// One entry per (registry, repository, credentials); the bound keeps a node that pulls from
/// very many repositories from growing the cache without end.
pub const TOKEN_CACHE_MAX_ENTRIES: usize = 1024;

/// Connecting should take milliseconds; a node that cannot reach its registry should learn
/// that well before the whole request timeout, so the kubelet can back off and retry.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept per host for the next request (reqwest would keep any number). A
/// check asks for up to three documents at once (see `decision::check`), then its payloads,
/// and `checks_per_registry` (default 4) checks run at once: this keeps a busy registry's
/// connections, so cold checks need no new TCP (or TLS) handshake, and bounds what a burst
/// against one host leaves open.
pub const MAX_IDLE_CONNECTIONS_PER_HOST: usize = 16;

/// An idle connection is dropped after this: pulls of one rollout arrive within seconds of
/// each other, and a connection idle for longer is likely to have been closed by the
/// registry or a middlebox already (reqwest's default, written down).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);

/// Default whole-request deadline (connect, headers and body) when the config gives none:
/// long enough for a slow registry, short enough to stay inside the kubelet's pull deadline.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Pages of the referrers API followed for one digest (`Link: <…>; rel="next"`). A page
/// usually lists every referrer, or hundreds; signature referrers are capped at 64 anyway, so
/// eight pages leave room for registries that page small, while a registry that pages forever
/// costs a check eight round trips, not its whole budget. Referrers on later pages are not
/// seen, and a refusal says the list was not read to its end.
pub const MAX_REFERRER_PAGES: usize = 8;

/// Tags are at most 128 characters and digests at most `sha512:` + 128 hex; anything longer
/// is not a reference and must not reach a URL.
pub const MAX_REFERENCE_LEN: usize = 135;

/// Transport error chains are quoted into error messages; the cap keeps a chatty TLS or IO
/// error from flooding the CRI status message.
pub const MAX_ERROR_DETAIL_CHARS: usize = 300;

/// The kubelet pulls one image at a time unless told otherwise, and a check takes a few
/// registry round trips, so four keep a burst of pods from one registry moving, while a
/// registry that stalls every request holds no more than four pulls' worth of memory.
pub const DEFAULT_CHECKS_PER_REGISTRY: NonZeroUsize = NonZeroUsize::new(4).expect("nonzero");

/// A check can buffer a manifest of up to `MANIFEST_MAX_BYTES`; sixteen such checks at once
/// keep the worst case within ~64 MiB however many registries the pulls name (checks keeping
/// less need no total slot, see `decision::slots`).
pub const DEFAULT_CHECKS_TOTAL: NonZeroUsize = NonZeroUsize::new(16).expect("nonzero");

// Response heads need no bound of ours: hyper's HTTP/1 client, which reqwest uses and gives
// no setting for, stops reading a head at ~408 KiB or 100 headers (`hostile/huge-head` in
// tests/it/hostile.rs sends 16 MiB of headers and is refused at once).

/// containerd's `hosts.toml` is a handful of lines per mirror; 64 KiB is hundreds of hosts'
/// worth, and keeps a file replaced by something huge from being read into memory.
pub const HOSTS_FILE_MAX_BYTES: u64 = 64 * 1024;

/// Every host is tried in turn for every request, so the list bounds how many requests (and
/// timeouts) one registry request can become; real configurations list one to three mirrors.
pub const MAX_HOSTS_PER_FILE: usize = 8;

/// Header values one host entry may add to each request: a few tokens or routing hints.
pub const MAX_HEADERS_PER_HOST: usize = 32;

/// One header value from `hosts.toml`; tokens are a few KiB at most, and the sum stays far
/// below what registries accept in a request head.
pub const MAX_HEADER_BYTES: usize = 4 * 1024;

/// Entries in a `hosts.toml` list (`capabilities`, `ca`, a header's values).
pub const MAX_LIST_ENTRIES: usize = 32;

/// CA and client certificate files one host may name; each is read when its client is built.
pub const MAX_CERT_FILES_PER_HOST: usize = 16;

/// A PEM bundle of CAs or a client certificate with its key.
pub const CERT_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// A host directory without `hosts.toml` is listed for Docker-style certificate files; a
/// directory with more entries than this is not a certificate directory.
pub const HOST_DIR_MAX_ENTRIES: usize = 256;

/// Entries in one root of `config_path` (`certs.d`): one directory per registry, a handful on
/// a real node. Every one is read at each reload, so the count bounds that work; a root with
/// more is refused as a whole.
pub const MAX_HOST_DIRS: usize = 256;

/// All `hosts.toml` and certificate files of the host directory together, held in memory
/// between reloads (each file counted once, however many hosts name it): far above any real
/// configuration, far below what `MAX_HOST_DIRS` directories of maximal files would be.
pub const HOST_FILES_MAX_TOTAL_BYTES: u64 = 16 * 1024 * 1024;

/// Clients built for hosts with their own TLS settings, kept for reuse (connection pooling);
/// past this many distinct settings the cache starts over.
pub const MAX_TLS_CLIENTS: usize = 16;

/// How long a host's 404 to the referrers API is taken to mean it has none (see
/// `referrers_api`): registries gain the API by an upgrade, rarely, and an image signed only
/// through it in the meantime is refused for at most this long, about one of the kubelet's
/// longest pull back-offs (5 min). Within it, a cold check asks one request fewer.
pub const REFERRERS_API_ABSENT_TTL: Duration = Duration::from_secs(5 * 60);

/// Repositories remembered without a referrers API; past this many the memory starts over,
/// which only costs each its API request again. A node runs a few hundred images at most.
pub const MAX_REFERRERS_API_ABSENT_REPOSITORIES: usize = 1024;
