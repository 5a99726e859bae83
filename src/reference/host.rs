//! Registry hosts: as containerd reads them from a reference, and in the canonical form that
//! pullgate compares.
//!
//! containerd connects to the host exactly as the reference spells it, and keys its node
//! configuration (`certs.d/<host>/hosts.toml`, the CRI plugin's registry settings) by that
//! spelling, so the written host is what pullgate forwards and connects to. But several
//! spellings reach one registry, and a policy rule must not be dodged by choosing another
//! one; so scopes, cached verdicts and verification slots use the canonical host:
//!
//! - A port is a number: `:08123` is `:8123` (Go's dialer reads it so); port 0 and ports
//!   above 65535 are refused, containerd cannot connect to them.
//! - `:443` is dropped: containerd speaks https to a registry unless configured otherwise.
//! - IPv6 literals are written as RFC 5952 says (`[0::1]` is `[::1]`); an IPv4-mapped IPv6
//!   literal is its IPv4 address, which is where Go connects.
//! - Loopback: `localhost`, every `127.0.0.0/8` address and `[::1]` are `localhost`. On
//!   loopback containerd chooses http or https itself (1.6: http; 2.x: https, then http), so
//!   `:80` and `:443` both mean the bare host there.
//! - Docker Hub: `registry-1.docker.io` (the API host containerd uses for `docker.io`) and
//!   `index.docker.io`, with or without `:443`, are `docker.io`.
//!
//! Refused, because containerd or the node's resolver would read them differently from us:
//! capital letters (containerd compares hosts case-sensitively: `Docker.io` is not Docker Hub
//! to it, and `certs.d` is looked up as written); numeric hosts other than plain dotted quads
//! (`127.000.0.1`, `127.1`, `0x7f.0.0.1`, `2130706433`: Go's parser refuses them and sends
//! them to the resolver, where the C library reads them as addresses, octal included); the
//! unspecified addresses `0.0.0.0` and `[::]` (they reach the node itself); names under
//! `.localhost` (some resolvers send them to loopback, others do not).
//!
//! Aliases that exist only through a node's configuration (an `/etc/hosts` entry, a mirror in
//! `certs.d`, the node's own addresses, a registry configured for plain http on port 80) are
//! invisible here: a policy must name each of them.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::{ReferenceError, quote, valid_dns_label};

/// Docker's default registry; short names resolve here.
pub const DOCKER_HUB: &str = "docker.io";
/// distribution/reference rewrites exactly this host to `docker.io` when it parses a name.
const LEGACY_HUB: &str = "index.docker.io";
/// Hosts that serve Docker Hub's registry API besides `docker.io` itself.
const HUB_ALIASES: [&str; 3] = [DOCKER_HUB, LEGACY_HUB, "registry-1.docker.io"];
const LOCALHOST: &str = "localhost";
/// Longest host name (RFC 1035), without the port.
const MAX_DOMAIN_LEN: usize = 253;
const HTTPS_PORT: u16 = 443;
const HTTP_PORT: u16 = 80;

/// A registry host. Equal (and hashed) by its canonical form: two spellings of one registry
/// are the same registry; `Display` shows it as written.
#[derive(Clone, Debug)]
pub struct RegistryHost {
    written: String,
    canonical: String,
}

/// What a host names, once its spelling is set aside.
enum Name<'a> {
    Loopback,
    Ip(IpAddr),
    Domain(&'a str),
}

// === impl RegistryHost ===

impl RegistryHost {
    pub fn docker_hub() -> RegistryHost {
        RegistryHost { written: DOCKER_HUB.to_owned(), canonical: DOCKER_HUB.to_owned() }
    }

    /// The host as containerd reads it from the reference: what it connects to, and what
    /// pullgate forwards and connects to.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// The form policy scopes, caches and slots compare.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// Other spellings well known to reach this registry, which a scope naming it covers too:
    /// loopback's and Docker Hub's (every `127.x.y.z` is left out of the list, not the scope).
    pub fn well_known_aliases(&self) -> Vec<String> {
        let spellings = match self.canonical.strip_prefix(LOCALHOST) {
            Some(port) if port.is_empty() || port.starts_with(':') => {
                [LOCALHOST, "127.0.0.1", "[::1]"].map(|name| format!("{name}{port}"))
            }
            _ if self.canonical == DOCKER_HUB => HUB_ALIASES.map(str::to_owned),
            _ => return Vec::new(),
        };
        spellings.into_iter().filter(|alias| *alias != self.written).collect()
    }

    /// A Docker Hub host spelled other than `docker.io`, where containerd does not put
    /// one-component names under `library/`.
    pub(super) fn is_hub_alias(&self) -> bool {
        self.canonical == DOCKER_HUB && self.written != DOCKER_HUB
    }
}

impl FromStr for RegistryHost {
    type Err = ReferenceError;

    fn from_str(host: &str) -> Result<Self, Self::Err> {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::CapitalisedRegistry(quote(host)));
        }
        let (name, port) = split_port(host).ok_or_else(|| ReferenceError::InvalidRegistry(quote(host)))?;
        let port = port.map(|p| parse_port(host, p)).transpose()?;
        let canonical = canonical(&classify(host, name)?, port);
        let written = if host == LEGACY_HUB { DOCKER_HUB } else { host };
        Ok(RegistryHost { written: written.to_owned(), canonical })
    }
}

impl PartialEq for RegistryHost {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for RegistryHost {}

impl Hash for RegistryHost {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl PartialOrd for RegistryHost {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RegistryHost {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.canonical.cmp(&other.canonical)
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

// === parsing ===

/// Split "host[:port]" (host may be a bracketed IPv6 literal). None if malformed.
fn split_port(host: &str) -> Option<(&str, Option<&str>)> {
    if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        return match rest.strip_prefix(':') {
            Some(port) => Some((&host[..=end], Some(port))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    Some(match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    })
}

/// Decimal digits, read as Go's dialer reads them (leading zeros allowed), 1..=65535.
fn parse_port(host: &str, port: &str) -> Result<u16, ReferenceError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ReferenceError::InvalidRegistry(quote(host)));
    }
    // Why strip first: the digits may be many more than any integer holds.
    let significant = port.trim_start_matches('0');
    let number = if significant.len() <= 5 { significant.parse::<u16>().ok() } else { None };
    number.filter(|&p| p != 0).ok_or_else(|| ReferenceError::InvalidPort(quote(host)))
}

fn classify<'a>(host: &str, name: &'a str) -> Result<Name<'a>, ReferenceError> {
    let ambiguous = |why| ReferenceError::AmbiguousHost { host: quote(host), why };
    let ip = match name.strip_prefix('[') {
        Some(literal) => IpAddr::V6(parse_ipv6(literal).ok_or_else(|| ReferenceError::InvalidRegistry(quote(host)))?),
        None if name.len() > MAX_DOMAIN_LEN || !name.split('.').all(valid_dns_label) => {
            return Err(ReferenceError::InvalidRegistry(quote(host)));
        }
        None if name == LOCALHOST => return Ok(Name::Loopback),
        None if name.ends_with(".localhost") => return Err(ambiguous("names under .localhost")),
        None if !name.split('.').all(numeric_label) => return Ok(Name::Domain(name)),
        None => IpAddr::V4(parse_ipv4(name).ok_or_else(|| ambiguous("numeric hosts other than a dotted quad"))?),
    };
    // Go dials an IPv4-mapped IPv6 address as IPv4.
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        Err(ambiguous("the unspecified address"))
    } else if ip.is_loopback() {
        Ok(Name::Loopback)
    } else {
        Ok(Name::Ip(ip))
    }
}

/// "…]" after the '[': distribution/reference allows hex digits and ':' only.
fn parse_ipv6(literal: &str) -> Option<Ipv6Addr> {
    let inner = literal.strip_suffix(']')?;
    let allowed = |b: u8| b.is_ascii_hexdigit() || b == b':';
    if inner.is_empty() || !inner.bytes().all(allowed) {
        return None;
    }
    inner.parse().ok()
}

/// Only the one spelling Go's parser and the C resolver agree on: four decimal octets without
/// leading zeros, exactly as the address prints.
fn parse_ipv4(name: &str) -> Option<Ipv4Addr> {
    name.parse::<Ipv4Addr>().ok().filter(|ip| ip.to_string() == name)
}

/// A label the C resolver's `inet_aton` could read as part of an address: decimal, octal
/// (leading 0) or hex (`0x…`).
fn numeric_label(label: &str) -> bool {
    let hex = label.strip_prefix("0x").is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || label.bytes().all(|b| b.is_ascii_digit())
}

fn canonical(name: &Name<'_>, port: Option<u16>) -> String {
    // Why both defaults on loopback: containerd picks the scheme there itself (see above).
    let default_port = |p: u16| p == HTTPS_PORT || matches!(name, Name::Loopback) && p == HTTP_PORT;
    let host = match name {
        Name::Loopback => LOCALHOST.to_owned(),
        Name::Ip(IpAddr::V4(ip)) => ip.to_string(),
        Name::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        Name::Domain(domain) if HUB_ALIASES.contains(domain) && port.is_none_or(default_port) => DOCKER_HUB.to_owned(),
        Name::Domain(domain) => (*domain).to_owned(),
    };
    match port {
        Some(p) if !default_port(p) => format!("{host}:{p}"),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(host: &str) -> String {
        host.parse::<RegistryHost>().unwrap_or_else(|e| panic!("{host}: {e}")).canonical().to_owned()
    }

    fn refused(host: &str) -> ReferenceError {
        host.parse::<RegistryHost>().expect_err(host)
    }

    #[test]
    fn ports_are_numbers() {
        assert_eq!(canonical("10.0.0.1:08123"), "10.0.0.1:8123");
        assert_eq!(canonical("r.io:000000000000000005000"), "r.io:5000");
        assert_eq!(canonical("r.io:65535"), "r.io:65535");
        for bad in ["r.io:65536", "r.io:0", "r.io:000", "r.io:99999999999999999999999", "r.io:5000000"] {
            assert!(matches!(refused(bad), ReferenceError::InvalidPort(_)), "{bad}");
        }
        for bad in ["r.io:", "r.io:+5", "r.io:5x", "[::1]:", "[::1]x"] {
            assert!(matches!(refused(bad), ReferenceError::InvalidRegistry(_)), "{bad}");
        }
    }

    #[test]
    fn https_default_port_is_dropped() {
        assert_eq!(canonical("example.com:443"), "example.com");
        assert_eq!(canonical("10.1.2.3:443"), "10.1.2.3");
        assert_eq!(canonical("[2001:db8::1]:0443"), "[2001:db8::1]");
        assert_eq!(canonical("example.com:80"), "example.com:80", "http is not the default off loopback");
    }

    #[test]
    fn addresses_have_one_text() {
        assert_eq!(canonical("[2001:0db8:0:0::1]:5000"), "[2001:db8::1]:5000");
        assert_eq!(canonical("[::ffff:a01:203]:5000"), "10.1.2.3:5000");
        for bad in ["[::ffff:10.1.2.3]", "[fe80::1%eth0]", "[]", "[1::2::3]", "[::1"] {
            assert!(matches!(refused(bad), ReferenceError::InvalidRegistry(_)), "{bad}");
        }
    }

    #[test]
    fn loopback_spellings_are_localhost() {
        for host in ["localhost:5000", "127.0.0.1:5000", "127.0.0.1:05000", "127.9.8.7:5000", "[::1]:5000"] {
            assert_eq!(canonical(host), "localhost:5000", "{host}");
        }
        assert_eq!(canonical("[0:0::1]:5000"), "localhost:5000");
        assert_eq!(canonical("[::ffff:7f00:1]:5000"), "localhost:5000");
        for host in ["localhost", "localhost:80", "localhost:443", "127.0.0.1:443", "[::1]:80"] {
            assert_eq!(canonical(host), "localhost", "{host}");
        }
    }

    #[test]
    fn docker_hub_aliases() {
        for host in ["docker.io", "docker.io:443", "index.docker.io", "index.docker.io:443", "registry-1.docker.io"] {
            assert_eq!(canonical(host), "docker.io", "{host}");
        }
        assert_eq!(canonical("registry-1.docker.io:00443"), "docker.io");
        assert_eq!(canonical("registry-1.docker.io:5000"), "registry-1.docker.io:5000");
        assert_eq!(canonical("hub.docker.io"), "hub.docker.io");
        let legacy: RegistryHost = "index.docker.io".parse().unwrap();
        assert_eq!(legacy.as_str(), "docker.io", "distribution/reference rewrites this one host");
        let api: RegistryHost = "registry-1.docker.io:443".parse().unwrap();
        assert_eq!((api.as_str(), api.is_hub_alias()), ("registry-1.docker.io:443", true));
    }

    #[test]
    fn well_known_aliases_are_named() {
        let aliases = |host: &str| host.parse::<RegistryHost>().unwrap().well_known_aliases();
        assert_eq!(aliases("127.0.0.1:05000"), ["localhost:5000", "127.0.0.1:5000", "[::1]:5000"]);
        assert_eq!(aliases("localhost:5000"), ["127.0.0.1:5000", "[::1]:5000"]);
        assert_eq!(aliases("localhost"), ["127.0.0.1", "[::1]"]);
        assert_eq!(aliases("docker.io"), ["index.docker.io", "registry-1.docker.io"]);
        assert_eq!(aliases("registry-1.docker.io:443"), ["docker.io", "index.docker.io", "registry-1.docker.io"]);
        assert!(aliases("registry.example.com:5000").is_empty());
        assert!(aliases("[2001:db8::1]").is_empty());
        assert!(aliases("localhostx.example:5000").is_empty());
    }

    #[test]
    fn written_form_is_kept_and_equality_is_canonical() {
        let a: RegistryHost = "127.0.0.1:08123".parse().unwrap();
        let b: RegistryHost = "localhost:8123".parse().unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:08123");
        assert_eq!(a, b);
        assert_ne!(a, "localhost:8124".parse().unwrap());
    }

    #[test]
    fn spellings_read_differently_elsewhere_are_refused() {
        for bad in ["Docker.io", "LOCALHOST", "Registry.Example.com", "[::A]"] {
            assert!(matches!(refused(bad), ReferenceError::CapitalisedRegistry(_)), "{bad}");
        }
        for bad in [
            "127.000.000.001",
            "127.1",
            "0x7f.0.0.1",
            "2130706433:5000",
            "010.0.0.1",
            "1.2.3.4.5",
            "0.0.0.0:5000",
            "[::]:5000",
            "[0::0]",
            "evil.localhost:5000",
        ] {
            assert!(matches!(refused(bad), ReferenceError::AmbiguousHost { .. }), "{bad}");
        }
        // A name that merely has numeric labels is a name.
        assert_eq!(canonical("10.example.com"), "10.example.com");
        assert_eq!(canonical("0x7f.example"), "0x7f.example");
    }
}
