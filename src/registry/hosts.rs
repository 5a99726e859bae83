//! containerd's registry host directory (`config_path`, usually `/etc/containerd/certs.d`):
//! which hosts containerd asks, in which order, for an image on a given registry, so that
//! pullgate fetches from where containerd will fetch.
//!
//! Read as containerd 2.x reads it (`core/remotes/docker/config`):
//! - For registry `H`, each root of `config_path` (a `:`-separated list) is searched in turn
//!   for the directory `H_port_` (only when `H` has a `:port`), then `H`, then `_default`; the
//!   first that exists is used and the later roots are not looked at.
//! - In that directory, `hosts.toml` holds the ordered `[host."URL"]` entries, then the root
//!   entry: `server` (default: the registry itself, with every capability). Each entry may set
//!   `capabilities` (default: all), `ca`, `client`, `skip_verify`, `override_path`, `header`.
//!   A URL without a scheme is https; its path is the API root, `/v2` appended unless
//!   `override_path`. Hosts written as inline tables are ignored, as containerd's ordering
//!   reader ignores them.
//! - A directory without `hosts.toml` (or with an empty one) is Docker's layout: `*.crt` files
//!   are CAs and `*.cert`/`*.key` pairs client certificates, for the registry itself.
//!
//! Where pullgate departs, it refuses: a `hosts.toml` containerd cannot parse makes containerd
//! log and fall back to the registry itself; pullgate refuses the pull instead (a broken mirror
//! configuration is the operator's to fix, and refusing is the fail-closed reading). Files are
//! read with the bounded, non-blocking reads of `policy::input`, and every count is bounded.
//! Header values are marked sensitive: they often carry tokens and are never logged.
//!
//! The directory is read into memory ([`HostsTable`]) at startup and again at each reload, with
//! the policy: a check reads no file. A `hosts.toml` that cannot be used is kept as its error,
//! so the pulls it would route are refused until it is fixed (see `table`).

mod table;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::limits::{
    MAX_CERT_FILES_PER_HOST, MAX_HEADER_BYTES, MAX_HEADERS_PER_HOST, MAX_HOSTS_PER_FILE, MAX_LIST_ENTRIES,
};

pub use table::{HostsTable, SharedHosts, roots};

/// What a host may be asked. containerd resolves a tag only on hosts that can both resolve
/// and pull, and fetches by digest on hosts that can pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities { pull: true, resolve: true, push: true };
}

/// What a request does, and so which hosts may answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A tag to a digest: hosts with `pull` and `resolve`.
    Resolve,
    /// Anything named by its digest (manifests, signatures, blobs): hosts with `pull`.
    Pull,
}

impl Operation {
    pub fn allowed_on(self, caps: Capabilities) -> bool {
        match self {
            Operation::Resolve => caps.pull && caps.resolve,
            Operation::Pull => caps.pull,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where a host entry points: scheme, `host[:port]`, and the API root path (`/v2` unless
/// `override_path` says otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub scheme: Scheme,
    pub authority: String,
    /// The host as written in hosts.toml (case and default port kept), which containerd's CRI
    /// compares with a pull secret's `server_address` (see `Credentials::offered_to`).
    pub written: String,
    pub path: String,
}

/// TLS settings of one host, as `hosts.toml` names them; the files are read when the
/// directory is loaded (`TlsMaterial`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tls {
    pub ca: Vec<PathBuf>,
    /// Certificate file and, when separate, key file.
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    pub skip_verify: Option<bool>,
}

impl Tls {
    pub fn is_default(&self) -> bool {
        *self == Tls::default()
    }
}

/// One host to try, in containerd's order.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// None for the root entry without `server`: the registry itself.
    pub server: Option<Server>,
    pub capabilities: Capabilities,
    pub tls: Tls,
    /// Sent with every request to this host; values are sensitive (never in logs or `Debug`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What `tls` names, read when the directory was loaded; None when `tls` is the default.
    pub material: Option<Arc<TlsMaterial>>,
}

impl HostConfig {
    /// The registry itself, as when no host directory applies.
    pub fn registry_itself() -> HostConfig {
        HostConfig {
            server: None,
            capabilities: Capabilities::ALL,
            tls: Tls::default(),
            headers: Vec::new(),
            material: None,
        }
    }
}

/// The bytes of the files a host's TLS settings name. Client keys are in here: `Debug` shows
/// only how many files there are.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TlsMaterial {
    /// PEM bundles of CAs.
    pub ca: Vec<Vec<u8>>,
    /// Certificate and key in one PEM, as reqwest takes them.
    pub identities: Vec<Vec<u8>>,
    pub skip_verify: bool,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_files", &self.ca.len())
            .field("identities", &self.identities.len())
            .field("skip_verify", &self.skip_verify)
            .finish()
    }
}

/// Why a host directory could not be used. Never quotes header values.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct HostsError {
    pub path: PathBuf,
    pub reason: String,
}

// === parsing (no I/O) ===

/// `hosts.toml` as containerd reads it: the `[host."…"]` entries in file order, then the root
/// entry. Relative file paths are taken from `dir`.
pub fn parse(text: &str, dir: &Path) -> Result<Vec<HostConfig>, String> {
    let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| syntax_error(text, &e))?;
    let root = doc.as_table();
    let mut hosts = Vec::new();
    if let Some(table) = root.get("host") {
        let table = table.as_table_like().ok_or("\"host\" must be a table")?;
        for (url, item) in table.iter() {
            // Inline tables are not `[host."…"]` headers: containerd's ordering reader skips them.
            let Item::Table(entry) = item else { continue };
            if hosts.len() == MAX_HOSTS_PER_FILE {
                return Err(format!("more than {MAX_HOSTS_PER_FILE} [host] entries"));
            }
            let config = entry_config(Some(url), entry, dir).map_err(|e| format!("[host.{url:?}]: {e}"))?;
            hosts.push(config);
        }
    }
    let server = match root.get("server") {
        None => None,
        Some(item) => Some(item.as_str().ok_or("\"server\" must be a string")?),
    };
    let mut root_config = entry_config(server, root, dir)?;
    if root_config.server.is_none() {
        // containerd gives the registry itself every capability, whatever the root entry says.
        root_config.capabilities = Capabilities::ALL;
    }
    hosts.push(root_config);
    Ok(hosts)
}

/// "line 3: expected `]`": where the operator has to look.
fn syntax_error(text: &str, error: &toml_edit::TomlError) -> String {
    let message = error.message().trim_end().replace('\n', ": ");
    match error.span() {
        Some(span) => {
            let line = text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

fn entry_config(url: Option<&str>, entry: &dyn TableLike, dir: &Path) -> Result<HostConfig, String> {
    let override_path = match entry.get("override_path") {
        None => false,
        Some(item) => item.as_bool().ok_or("\"override_path\" must be true or false")?,
    };
    let server = url.filter(|u| !u.is_empty()).map(|u| server(u, override_path)).transpose()?;
    let skip_verify = match entry.get("skip_verify") {
        None => None,
        Some(item) => Some(item.as_bool().ok_or("\"skip_verify\" must be true or false")?),
    };
    let tls = Tls { ca: ca_files(entry.get("ca"), dir)?, client: client_files(entry.get("client"), dir)?, skip_verify };
    if tls.ca.len() + tls.client.len() > MAX_CERT_FILES_PER_HOST {
        return Err(format!("more than {MAX_CERT_FILES_PER_HOST} certificate files"));
    }
    let capabilities = capabilities(entry.get("capabilities"))?;
    let headers = match entry.get("header") {
        None => Vec::new(),
        Some(item) => headers(item)?,
    };
    Ok(HostConfig { server, capabilities, tls, headers, material: None })
}

/// containerd prefixes "https://" to anything not starting with "http", keeps the URL's
/// path as the API root and appends "/v2" unless told not to.
fn server(url: &str, override_path: bool) -> Result<Server, String> {
    if url.contains("://") && !url.starts_with("http") {
        return Err(format!("{url:?}: the scheme must be http or https"));
    }
    let full = if url.starts_with("http") { url.to_owned() } else { format!("https://{url}") };
    let parsed = Url::parse(&full).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = match parsed.scheme() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(format!("{url:?}: the scheme must be http or https, not {other:?}")),
    };
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("{url:?} names no host"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{url:?}: credentials in the URL are not supported"));
    }
    let authority = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let written = super::credentials::url_host(&full).unwrap_or(&authority).to_owned();
    Ok(Server { scheme, authority, written, path: api_root(parsed.path(), override_path) })
}

/// Go's `path.Clean` of the URL's path, with "/v2" appended unless it ends so already or
/// `override_path` is set.
fn api_root(path: &str, override_path: bool) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let cleaned = if parts.is_empty() { String::new() } else { format!("/{}", parts.join("/")) };
    if override_path || cleaned.ends_with("/v2") { cleaned } else { format!("{cleaned}/v2") }
}

fn capabilities(item: Option<&Item>) -> Result<Capabilities, String> {
    let Some(item) = item else { return Ok(Capabilities::ALL) };
    let names = strings(item, "capabilities")?;
    if names.is_empty() {
        return Ok(Capabilities::ALL);
    }
    let mut caps = Capabilities { pull: false, resolve: false, push: false };
    for name in names {
        match name.to_ascii_lowercase().as_str() {
            "pull" => caps.pull = true,
            "resolve" => caps.resolve = true,
            "push" => caps.push = true,
            _ => return Err(format!("unknown capability {:?}", quote(&name))),
        }
    }
    Ok(caps)
}

fn ca_files(item: Option<&Item>, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let Some(item) = item else { return Ok(Vec::new()) };
    let names = match item.as_str() {
        Some(one) => vec![one.to_owned()],
        None => strings(item, "ca")?,
    };
    Ok(names.iter().map(|name| dir.join(name)).collect())
}

/// A string, a list of strings (certificate and key in one file), or a list of
/// [certificate, key] pairs.
fn client_files(item: Option<&Item>, dir: &Path) -> Result<Vec<(PathBuf, Option<PathBuf>)>, String> {
    let Some(item) = item else { return Ok(Vec::new()) };
    if let Some(one) = item.as_str() {
        return Ok(vec![(dir.join(one), None)]);
    }
    let list = item.as_array().ok_or("\"client\" must be a string or a list")?;
    let mut pairs = Vec::new();
    for value in list.iter().take(MAX_CERT_FILES_PER_HOST + 1) {
        match value {
            Value::String(one) => pairs.push((dir.join(one.value()), None)),
            Value::Array(pair) => {
                match (pair.len(), pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_str)) {
                    (2, Some(cert), Some(key)) => pairs.push((dir.join(cert), Some(dir.join(key)))),
                    _ => return Err("a \"client\" pair must be [certificate, key]".to_owned()),
                }
            }
            _ => return Err("\"client\" entries must be strings or [certificate, key] pairs".to_owned()),
        }
    }
    Ok(pairs)
}

/// `header.Name = "value"` or `= ["value", …]`; names and values must be valid HTTP.
fn headers(item: &Item) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let table = item.as_table_like().ok_or("\"header\" must be a table")?;
    let mut headers = Vec::new();
    for (name, value) in table.iter() {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {:?} is not a valid HTTP header name", quote(name)))?;
        let values = match value.as_str() {
            Some(one) => vec![one.to_owned()],
            None => strings(value, "header values")?,
        };
        for text in values {
            if headers.len() == MAX_HEADERS_PER_HOST {
                return Err(format!("more than {MAX_HEADERS_PER_HOST} header values"));
            }
            if text.len() > MAX_HEADER_BYTES {
                return Err(format!("header {header} is longer than {MAX_HEADER_BYTES} bytes"));
            }
            // The value is never quoted: it is often a credential.
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| format!("header {header} has a value that is not valid in HTTP"))?;
            value.set_sensitive(true);
            headers.push((header.clone(), value));
        }
    }
    Ok(headers)
}

fn strings(item: &Item, what: &str) -> Result<Vec<String>, String> {
    let list = item.as_array().ok_or_else(|| format!("\"{what}\" must be a list of strings"))?;
    if list.len() > MAX_LIST_ENTRIES {
        return Err(format!("\"{what}\" has more than {MAX_LIST_ENTRIES} entries"));
    }
    list.iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("\"{what}\" must be a list of strings")))
        .collect()
}

/// Names from the file quoted in errors, bounded.
fn quote(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests;
