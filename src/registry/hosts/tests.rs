//! hosts.toml read as containerd 2.x reads it (core/remotes/docker/config/hosts.go).

use std::os::unix::fs::symlink;

use super::table::dir_names;
use super::*;
use crate::registry::limits::{HOSTS_FILE_MAX_BYTES, MAX_HOST_DIRS};

fn lookup(roots: &[PathBuf], registry: &str) -> Result<Option<Vec<HostConfig>>, HostsError> {
    HostsTable::load(roots).lookup(registry)
}

fn parsed(text: &str) -> Vec<HostConfig> {
    parse(text, Path::new("/etc/containerd/certs.d/r.io")).unwrap_or_else(|e| panic!("{e}"))
}

fn server_of(config: &HostConfig) -> (&str, &str, &str) {
    let server = config.server.as_ref().expect("a server");
    (server.scheme.as_str(), server.authority.as_str(), server.path.as_str())
}

const PULL_RESOLVE: Capabilities = Capabilities { pull: true, resolve: true, push: false };

#[test]
fn hosts_come_in_file_order_then_the_server() {
    let hosts = parsed(
        "server = \"https://r.io\"\n\
         [host.\"https://b.mirror\"]\ncapabilities = [\"pull\", \"resolve\"]\n\
         [host.\"http://a.mirror:5000\"]\ncapabilities = [\"pull\"]\n",
    );
    assert_eq!(hosts.len(), 3);
    assert_eq!(server_of(&hosts[0]), ("https", "b.mirror", "/v2"));
    assert_eq!(hosts[0].capabilities, PULL_RESOLVE);
    assert_eq!(server_of(&hosts[1]), ("http", "a.mirror:5000", "/v2"));
    assert_eq!(hosts[1].capabilities, Capabilities { pull: true, resolve: false, push: false });
    assert_eq!(server_of(&hosts[2]), ("https", "r.io", "/v2"));
    assert_eq!(hosts[2].capabilities, Capabilities::ALL);
}

#[test]
fn without_server_the_last_host_is_the_registry_itself_with_every_capability() {
    let hosts = parsed("capabilities = [\"pull\"]\n[host.\"m.local\"]\n");
    assert_eq!(hosts.len(), 2);
    assert_eq!(server_of(&hosts[0]), ("https", "m.local", "/v2"), "no scheme means https");
    assert_eq!(hosts[0].capabilities, Capabilities::ALL, "no capabilities means all");
    assert!(hosts[1].server.is_none());
    assert_eq!(hosts[1].capabilities, Capabilities::ALL);
    assert_eq!(parsed("skip_verify = true\n").len(), 1);
}

#[test]
fn a_subtable_does_not_reorder_or_repeat_its_host() {
    let hosts = parsed(
        "[host.\"https://b\"]\n[host.\"https://b\".header]\nx-a = \"1\"\n[host.\"https://a\"]\n\
         [host.\"https://c\"]\nheader = { x-c = \"3\" }\n",
    );
    let order: Vec<_> = hosts.iter().filter_map(|h| h.server.as_ref()).map(|s| s.authority.as_str()).collect();
    assert_eq!(order, ["b", "a", "c"]);
    assert_eq!(hosts[0].headers.len(), 1);
    assert_eq!(hosts[2].headers.len(), 1);
}

#[test]
fn inline_host_tables_are_ignored_as_containerd_ignores_them() {
    let hosts = parsed("host = { \"https://m\" = { capabilities = [\"pull\"] } }\n");
    assert_eq!(hosts.len(), 1, "only the server");
}

#[test]
fn api_root_follows_override_path() {
    let path = |text: &str| server_of(&parsed(text)[0]).2.to_owned();
    assert_eq!(path("[host.\"https://m/v2\"]\n"), "/v2");
    assert_eq!(path("[host.\"https://m/cache/\"]\n"), "/cache/v2");
    assert_eq!(path("[host.\"https://m/a/./b/../c\"]\n"), "/a/c/v2");
    assert_eq!(path("[host.\"https://m/api/v3\"]\noverride_path = true\n"), "/api/v3");
    assert_eq!(path("[host.\"https://m\"]\noverride_path = true\n"), "");
    assert_eq!(path("[host.\"https://m/x/v2\"]\noverride_path = true\n"), "/x/v2");
}

#[test]
fn capabilities_are_checked_and_operations_filter_on_them() {
    let caps = |list: &str| parsed(&format!("[host.\"m\"]\ncapabilities = {list}\n"))[0].capabilities;
    assert_eq!(caps("[\"PULL\", \"Resolve\"]"), PULL_RESOLVE, "case does not matter");
    assert_eq!(caps("[]"), Capabilities::ALL);
    let err = parse("[host.\"m\"]\ncapabilities = [\"fetch\"]\n", Path::new("/d")).unwrap_err();
    assert!(err.contains("unknown capability \"fetch\""), "{err}");
    let pull_only = Capabilities { pull: true, resolve: false, push: false };
    let resolve_only = Capabilities { pull: false, resolve: true, push: false };
    assert!(!Operation::Resolve.allowed_on(pull_only));
    assert!(!Operation::Resolve.allowed_on(resolve_only), "containerd resolves only where it can pull");
    assert!(Operation::Resolve.allowed_on(PULL_RESOLVE));
    assert!(Operation::Pull.allowed_on(pull_only));
    assert!(!Operation::Pull.allowed_on(resolve_only));
}

#[test]
fn tls_files_are_taken_relative_to_the_host_directory() {
    let hosts = parsed(
        "[host.\"https://m\"]\nca = \"ca.pem\"\nskip_verify = false\n\
         client = [[\"c.pem\", \"k.pem\"], \"both.pem\"]\n\
         [host.\"https://n\"]\nca = [\"/abs/ca.pem\", \"b.pem\"]\nclient = \"one.pem\"\nskip_verify = true\n",
    );
    let dir = Path::new("/etc/containerd/certs.d/r.io");
    assert_eq!(hosts[0].tls.ca, [dir.join("ca.pem")]);
    assert_eq!(hosts[0].tls.client, [(dir.join("c.pem"), Some(dir.join("k.pem"))), (dir.join("both.pem"), None)]);
    assert_eq!(hosts[0].tls.skip_verify, Some(false));
    assert_eq!(hosts[1].tls.ca, [PathBuf::from("/abs/ca.pem"), dir.join("b.pem")]);
    assert_eq!(hosts[1].tls.client, [(dir.join("one.pem"), None)]);
    assert_eq!(hosts[1].tls.skip_verify, Some(true));
    assert!(hosts[2].tls.is_default());
    let bad = parse("[host.\"m\"]\nclient = [[\"only-one\"]]\n", Path::new("/d")).unwrap_err();
    assert!(bad.contains("[certificate, key]"), "{bad}");
}

#[test]
fn header_values_are_sensitive_and_never_quoted_in_errors() {
    let hosts = parsed("[host.\"m\".header]\nauthorization = \"Bearer s3cret\"\nx-multi = [\"a\", \"b\"]\n");
    let headers = &hosts[0].headers;
    assert_eq!(headers.len(), 3);
    assert!(headers.iter().all(|(_, v)| v.is_sensitive()));
    assert!(!format!("{hosts:?}").contains("s3cret"), "Debug must not show header values");
    let err = parse("[host.\"m\".header]\nx-token = \"s3cret\\n\"\n", Path::new("/d")).unwrap_err();
    assert!(err.contains("x-token") && !err.contains("s3cret"), "{err}");
    let err = parse("[host.\"m\".header]\n\"bad name\" = \"v\"\n", Path::new("/d")).unwrap_err();
    assert!(err.contains("not a valid HTTP header name"), "{err}");
}

#[test]
fn bounds_are_enforced() {
    let many_hosts: String = (0..=MAX_HOSTS_PER_FILE).map(|i| format!("[host.\"https://m{i}\"]\n")).collect();
    assert!(parse(&many_hosts, Path::new("/d")).unwrap_err().contains("[host] entries"));
    let at_limit: String = (0..MAX_HOSTS_PER_FILE).map(|i| format!("[host.\"https://m{i}\"]\n")).collect();
    assert_eq!(parse(&at_limit, Path::new("/d")).unwrap().len(), MAX_HOSTS_PER_FILE + 1);
    let many_headers: String = (0..=MAX_HEADERS_PER_HOST).map(|i| format!("x-h{i} = \"v\"\n")).collect();
    let err = parse(&format!("[host.\"m\".header]\n{many_headers}"), Path::new("/d")).unwrap_err();
    assert!(err.contains("header values"), "{err}");
    let long = "v".repeat(MAX_HEADER_BYTES + 1);
    let err = parse(&format!("[host.\"m\".header]\nx-long = \"{long}\"\n"), Path::new("/d")).unwrap_err();
    assert!(err.contains("longer than"), "{err}");
}

#[test]
fn malformed_entries_are_refused() {
    for (text, expect) in [
        ("server = 5\n", "\"server\" must be a string"),
        ("[host.\"ftp://m\"]\n", "scheme must be http or https"),
        ("[host.\"https://user:pw@m\"]\n", "credentials in the URL"),
        ("[host.\"m\"]\nskip_verify = \"yes\"\n", "skip_verify"),
        ("[host.\"m\"]\noverride_path = 1\n", "override_path"),
        ("[host.\"m\"]\ncapabilities = \"pull\"\n", "list of strings"),
        ("[host.\"m\"\n", "line 1:"),
        ("[host.\"m\"]\n\ncapabilities = [\"pull\",, ]\nskip_verify = true\n", "line 3:"),
    ] {
        let err = parse(text, Path::new("/d")).expect_err(text);
        assert!(err.contains(expect), "{text}: {err}");
    }
}

#[test]
fn directory_names_follow_containerd() {
    assert_eq!(dir_names("r.io:5000"), ["r.io_5000_", "r.io:5000", "_default"]);
    assert_eq!(dir_names("r.io"), ["r.io", "_default"]);
    assert_eq!(dir_names("[::1]:5000"), ["[::1]_5000_", "[::1]:5000", "_default"]);
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn lookup_prefers_port_directory_then_host_then_default_then_next_root() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let roots = [a.path().to_owned(), b.path().to_owned()];
    let server = |registry: &str| {
        let hosts = lookup(&roots, registry).unwrap()?;
        Some(hosts[0].server.as_ref().map_or(String::new(), |s| s.authority.clone()))
    };
    assert_eq!(server("r.io:5000"), None, "no directory: the registry itself");
    write(&b.path().join("r.io/hosts.toml"), "[host.\"https://in-b\"]\n");
    assert_eq!(server("r.io").as_deref(), Some("in-b"));
    write(&a.path().join("_default/hosts.toml"), "[host.\"https://default-a\"]\n");
    assert_eq!(server("r.io").as_deref(), Some("default-a"), "the first root with any match wins");
    write(&a.path().join("r.io:5000/hosts.toml"), "[host.\"https://colon\"]\n");
    assert_eq!(server("r.io:5000").as_deref(), Some("colon"));
    write(&a.path().join("r.io_5000_/hosts.toml"), "[host.\"https://underscore\"]\n");
    assert_eq!(server("r.io:5000").as_deref(), Some("underscore"));
}

#[test]
fn a_directory_without_hosts_toml_is_docker_certificates_for_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("r.io");
    for name in ["ca.crt", "me.cert", "me.key", "lone.cert", "notes.txt"] {
        write(&host.join(name), "x");
    }
    let hosts = lookup(&[dir.path().to_owned()], "r.io").unwrap().unwrap();
    assert_eq!(hosts.len(), 1);
    assert!(hosts[0].server.is_none());
    assert_eq!(hosts[0].tls.ca, [host.join("ca.crt")]);
    assert_eq!(
        hosts[0].tls.client,
        [(host.join("lone.cert"), None), (host.join("me.cert"), Some(host.join("me.key")))]
    );
    write(&host.join("hosts.toml"), "");
    assert_eq!(lookup(&[dir.path().to_owned()], "r.io").unwrap().unwrap()[0].tls.ca.len(), 1, "empty file: same");
}

#[test]
fn hostile_files_are_refused_without_blocking_or_reading_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let roots = [dir.path().to_owned()];
    let host = dir.path().join("fifo.io");
    std::fs::create_dir_all(&host).unwrap();
    let status = std::process::Command::new("mkfifo").arg(host.join("hosts.toml")).status().unwrap();
    assert!(status.success());
    let err = lookup(&roots, "fifo.io").unwrap_err();
    assert!(err.to_string().contains("FIFO"), "{err}");

    write(&dir.path().join("huge.io/hosts.toml"), &"#".repeat(HOSTS_FILE_MAX_BYTES as usize + 1));
    let err = lookup(&roots, "huge.io").unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");

    // A symlink is followed (configuration management links files), to a regular file only.
    write(&dir.path().join("real.toml"), "[host.\"https://linked\"]\n");
    std::fs::create_dir_all(dir.path().join("link.io")).unwrap();
    symlink(dir.path().join("real.toml"), dir.path().join("link.io/hosts.toml")).unwrap();
    let hosts = lookup(&roots, "link.io").unwrap().unwrap();
    assert_eq!(hosts[0].server.as_ref().unwrap().authority, "linked");
    std::fs::create_dir_all(dir.path().join("dev.io")).unwrap();
    symlink("/dev/zero", dir.path().join("dev.io/hosts.toml")).unwrap();
    assert!(lookup(&roots, "dev.io").unwrap_err().to_string().contains("character device"));

    write(&dir.path().join("bad.io/hosts.toml"), "[host.\"https://m\"\n");
    let err = lookup(&roots, "bad.io").unwrap_err();
    assert!(err.to_string().contains("bad.io/hosts.toml"), "{err}");
}

/// What a lookup returns comes from memory: the certificate files were read at load, and
/// neither removing the directory nor putting a FIFO in place of a file changes it.
#[test]
fn tls_files_are_read_at_load_and_lookups_read_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("r.io");
    write(&host.join("ca.pem"), "CA BYTES");
    write(&host.join("c.pem"), "CERT");
    write(&host.join("k.pem"), "KEY");
    write(&host.join("hosts.toml"), "[host.\"https://m\"]\nca = \"ca.pem\"\nclient = [[\"c.pem\", \"k.pem\"]]\n");
    let table = HostsTable::load(&[dir.path().to_owned()]);
    let material = |table: &HostsTable| table.lookup("r.io").unwrap().unwrap()[0].material.clone().unwrap();
    let loaded = material(&table);
    assert_eq!(loaded.ca, [b"CA BYTES".to_vec()]);
    assert_eq!(loaded.identities, [b"CERT\nKEY".to_vec()]);
    assert!(!format!("{loaded:?}").contains("KEY"), "Debug shows no key material");
    let mut files: Vec<_> = table.files().map(Path::to_owned).collect();
    files.sort();
    assert_eq!(files, [host.join("c.pem"), host.join("ca.pem"), host.join("hosts.toml"), host.join("k.pem")]);

    std::fs::remove_dir_all(&host).unwrap();
    std::fs::create_dir_all(&host).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(host.join("ca.pem")).status().unwrap().success());
    assert_eq!(material(&table), loaded, "a lookup read a file");
    let reloaded = HostsTable::load(&[dir.path().to_owned()]);
    assert!(reloaded.lookup("r.io").unwrap().is_some_and(|hosts| hosts[0].server.is_none()), "no hosts.toml now");
}

#[test]
fn a_missing_certificate_file_refuses_its_registry_and_is_still_watched() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("r.io");
    write(&host.join("hosts.toml"), "[host.\"https://m\"]\nca = \"/nonexistent/ca.pem\"\n");
    let table = HostsTable::load(&[dir.path().to_owned()]);
    let err = table.lookup("r.io").unwrap_err().to_string();
    assert!(err.contains("r.io/hosts.toml") && err.contains("/nonexistent/ca.pem"), "{err}");
    assert_eq!(table.problems().len(), 1);
    assert!(table.lookup("other.io").unwrap().is_none(), "other registries are not affected");
    assert!(table.files().any(|file| file == Path::new("/nonexistent/ca.pem")), "its fix must be seen");
}

#[test]
fn a_root_with_too_many_entries_refuses_every_lookup_through_it() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..MAX_HOST_DIRS {
        std::fs::create_dir(dir.path().join(format!("r{i}.io"))).unwrap();
    }
    let roots = [dir.path().to_owned()];
    assert!(HostsTable::load(&roots).problems().is_empty(), "at the limit");
    std::fs::create_dir(dir.path().join("one-more.io")).unwrap();
    let table = HostsTable::load(&roots);
    let err = table.lookup("anything.io").unwrap_err().to_string();
    assert!(err.contains(&format!("more than {MAX_HOST_DIRS} entries")), "{err}");
    assert!(HostsTable::load(&[dir.path().join("absent")]).lookup("r.io").unwrap().is_none());
}
