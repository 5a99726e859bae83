//! `registry.insecure`: the registries pullgate speaks plain HTTP to. Entries are compared as
//! registry hosts, canonically (see `reference::host`), as policy scopes are: containerd reaches
//! `127.0.0.1:5000` and `localhost:5000` alike, so an entry naming either covers both, and an
//! image cannot fail verification (or reach a different protocol) just by its host's spelling.

use reqwest::Url;

use crate::reference::RegistryHost;

/// The configured entries, read once.
#[derive(Debug, Default)]
pub struct InsecureHosts(Vec<Entry>);

#[derive(Debug)]
struct Entry {
    host: RegistryHost,
    /// Written without a port: the host on every port.
    any_port: bool,
}

impl InsecureHosts {
    /// An entry that is no registry host covers nothing, so that registry is spoken to over
    /// HTTPS; the configuration refuses such entries before this (see `entry_problem`).
    pub fn new(entries: &[String]) -> InsecureHosts {
        let parse = |entry: &String| {
            let host = entry.parse::<RegistryHost>().ok()?;
            Some(Entry { host, any_port: !has_port(entry) })
        };
        InsecureHosts(entries.iter().filter_map(parse).collect())
    }

    pub fn covers(&self, host: &RegistryHost) -> bool {
        self.0.iter().any(|entry| {
            if entry.any_port {
                without_port(entry.host.canonical()) == without_port(host.canonical())
            } else {
                entry.host == *host
            }
        })
    }

    /// For redirects and token realms: a URL's host, with the scheme's port when none is written.
    pub fn covers_url(&self, url: &Url) -> bool {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        format!("{host}:{port}").parse::<RegistryHost>().is_ok_and(|host| self.covers(&host))
    }
}

/// What is wrong with an entry of `registry.insecure`, for the configuration's validation.
pub fn entry_problem(entry: &str) -> Option<String> {
    let bare = entry.split_once("://").map_or(entry, |(_, rest)| rest);
    let bare = bare.split('/').next().unwrap_or_default();
    if bare != entry || entry.is_empty() {
        return Some(format!(
            "registry.insecure {entry:?}: write host:port (e.g. {bare:?}) or host, without a scheme or path"
        ));
    }
    let error = entry.parse::<RegistryHost>().err()?;
    Some(format!("registry.insecure {entry:?}: {error}"))
}

fn has_port(entry: &str) -> bool {
    match entry.rsplit_once(':') {
        Some((host, _)) => !entry.starts_with('[') || host.ends_with(']'),
        None => false,
    }
}

/// "reg:5000" → "reg", "[2001:db8::1]:5000" → "[2001:db8::1]", "reg" → "reg".
fn without_port(canonical: &str) -> &str {
    match canonical.rsplit_once(':') {
        Some((host, port)) if !port.ends_with(']') && (!host.starts_with('[') || host.ends_with(']')) => host,
        _ => canonical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> InsecureHosts {
        InsecureHosts::new(&entries.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    fn covers(insecure: &InsecureHosts, host: &str) -> bool {
        insecure.covers(&host.parse().unwrap_or_else(|e| panic!("{host}: {e}")))
    }

    #[test]
    fn an_entry_covers_every_spelling_of_its_registry_and_no_other_port() {
        let insecure = hosts(&["127.0.0.1:5000"]);
        for same in ["127.0.0.1:5000", "localhost:5000", "[::1]:5000", "127.0.0.1:05000"] {
            assert!(covers(&insecure, same), "{same}");
        }
        for other in ["127.0.0.1:5001", "localhost", "localhost.example:5000"] {
            assert!(!covers(&insecure, other), "{other}");
        }
        let insecure = hosts(&["localhost:5000"]);
        assert!(covers(&insecure, "127.0.0.1:5000"));
    }

    #[test]
    fn an_entry_without_a_port_covers_every_port() {
        let insecure = hosts(&["localhost", "reg.example", "[2001:db8::1]"]);
        for covered in
            ["127.0.0.1", "127.0.0.1:5000", "[::1]:443", "reg.example:5000", "reg.example", "[2001:db8::1]:80"]
        {
            assert!(covers(&insecure, covered), "{covered}");
        }
        for other in ["reg.example.org", "other.example:5000", "[2001:db8::2]:80"] {
            assert!(!covers(&insecure, other), "{other}");
        }
        assert!(!covers(&hosts(&["reg.example:5000"]), "reg.example"));
        assert!(covers(&hosts(&["[2001:db8::1]:5000"]), "[2001:db8:0::1]:5000"));
        assert!(!covers(&hosts(&["[2001:db8::1]:5000"]), "[2001:db8::1]:5001"));
    }

    #[test]
    fn urls_are_matched_on_their_host_and_port() {
        let insecure = hosts(&["127.0.0.1:5000", "cdn.example"]);
        for (url, expected) in [
            ("http://localhost:5000/v2/", true),
            ("http://127.0.0.1:5001/v2/", false),
            ("http://cdn.example/blob", true),
            ("http://cdn.example:8080/blob", true),
            ("http://evil.example:5000/", false),
        ] {
            assert_eq!(insecure.covers_url(&Url::parse(url).unwrap()), expected, "{url}");
        }
    }

    #[test]
    fn entries_that_are_no_host_are_refused_and_cover_nothing() {
        for good in ["127.0.0.1:5000", "localhost", "reg.example:5000", "[::1]:5000"] {
            assert_eq!(entry_problem(good), None, "{good}");
        }
        let url = entry_problem("http://127.0.0.1:41085").expect("a URL accepted");
        assert!(url.contains("write host:port (e.g. \"127.0.0.1:41085\")"), "{url}");
        for bad in ["Reg.Example:5000", "reg.example:99999", "", "reg.example/v2"] {
            assert!(entry_problem(bad).is_some(), "{bad}");
        }
        assert!(!covers(&hosts(&["Reg.Example:5000", "http://reg.example:5000"]), "reg.example:5000"));
    }
}
