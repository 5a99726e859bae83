//! The host directory in memory: every `hosts.toml` of every root, and the certificate files
//! they name, read at once (at startup and at each reload), so that a check looks hosts up
//! without touching the file system.
//!
//! containerd reads the directory at each pull; pullgate reads it when it changes (the
//! reloader watches it with the policy, see `reload`). What cannot be used is kept as its
//! error, for the registries it would serve: containerd would log a `hosts.toml` it cannot
//! parse and fetch from the registry itself, pullgate refuses those pulls, naming the file
//! and line, until the file is fixed. It does not keep an older version of the file in force
//! either: the operator changed it, so the old routes are no longer what containerd uses, and
//! a mirror taken out of a broken file must not stay in use. A file removed is a registry with
//! no mirror configuration.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use super::{HostConfig, HostsError, Tls, TlsMaterial, parse};
use crate::policy::input::read_bounded;
use crate::registry::limits::{
    CERT_FILE_MAX_BYTES, HOST_DIR_MAX_ENTRIES, HOST_FILES_MAX_TOTAL_BYTES, HOSTS_FILE_MAX_BYTES,
    MAX_CERT_FILES_PER_HOST, MAX_HOST_DIRS,
};

const HOSTS_FILE: &str = "hosts.toml";
const DEFAULT_DIR: &str = "_default";

/// containerd's `config_path` is a list, split as Go's `filepath.SplitList` splits it.
pub fn roots(config_path: Option<&str>) -> Vec<PathBuf> {
    config_path.map_or_else(Vec::new, |paths| paths.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect())
}

/// Every root of `config_path` as it was when loaded.
#[derive(Clone, Debug, Default)]
pub struct HostsTable {
    roots: Vec<Root>,
}

#[derive(Clone, Debug)]
struct Root {
    path: PathBuf,
    /// By directory name; Err when the root itself cannot be listed: then nothing looked up
    /// through it can be known, and every lookup fails.
    dirs: Result<BTreeMap<String, HostDir>, HostsError>,
}

#[derive(Clone, Debug)]
struct HostDir {
    path: PathBuf,
    /// `hosts.toml` and the certificate files it names, as far as they are known: watched,
    /// including those that are missing or broken, so that fixing them is seen.
    files: Vec<PathBuf>,
    hosts: Result<Vec<HostConfig>, HostsError>,
}

// === impl HostsTable: lookup (no I/O) ===

impl HostsTable {
    /// The hosts containerd would try for `registry` (the host as the reference writes it), in
    /// order; None when no host directory applies (then containerd asks the registry itself).
    pub fn lookup(&self, registry: &str) -> Result<Option<Vec<HostConfig>>, HostsError> {
        // The host was validated as a registry host; this keeps it a single path component anyway.
        if registry.is_empty() || registry.contains('/') || registry.starts_with('.') {
            return Ok(None);
        }
        // containerd's `hostPaths` over each root: `H_port_`, `H`, `_default`; the first root
        // with any of them decides.
        for root in &self.roots {
            let dirs = root.dirs.as_ref().map_err(Clone::clone)?;
            if let Some(dir) = dir_names(registry).iter().find_map(|name| dirs.get(name)) {
                return dir.hosts.clone().map(Some);
            }
        }
        Ok(None)
    }

    /// What could not be loaded, to report once per load.
    pub fn problems(&self) -> Vec<&HostsError> {
        let mut problems = Vec::new();
        for root in &self.roots {
            match &root.dirs {
                Err(error) => problems.push(error),
                Ok(dirs) => problems.extend(dirs.values().filter_map(|dir| dir.hosts.as_ref().err())),
            }
        }
        problems
    }

    /// The roots, whose entries (host directories) come and go.
    pub fn roots(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|root| root.path.as_path())
    }

    /// The host directories, whose entries (`hosts.toml`, Docker-style certificates) matter.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.host_dirs().map(|dir| dir.path.as_path())
    }

    /// The files read, or that were to be read, outside the host directories too.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.host_dirs().flat_map(|dir| dir.files.iter().map(PathBuf::as_path))
    }

    fn host_dirs(&self) -> impl Iterator<Item = &HostDir> {
        self.roots.iter().filter_map(|root| root.dirs.as_ref().ok()).flat_map(BTreeMap::values)
    }
}

/// "reg:5000" → ["reg_5000_", "reg:5000", "_default"]; "reg" → ["reg", "_default"].
pub(super) fn dir_names(registry: &str) -> Vec<String> {
    let mut names = Vec::with_capacity(3);
    if let Some(idx) = registry.rfind(':').filter(|&i| i > 0) {
        names.push(format!("{}_{}_", &registry[..idx], &registry[idx + 1..]));
    }
    names.push(registry.to_owned());
    names.push(DEFAULT_DIR.to_owned());
    names
}

// === impl HostsTable: loading (I/O) ===

impl HostsTable {
    /// Reads every host directory of every root. Never fails as a whole: what cannot be used
    /// is kept as the error of the registries it concerns.
    pub fn load(roots: &[PathBuf]) -> HostsTable {
        let mut reader = Reader::default();
        let roots = roots.iter().map(|path| Root { path: path.clone(), dirs: reader.root(path) }).collect();
        HostsTable { roots }
    }
}

/// Reads files within one overall budget, each file once however many hosts name it (one CA
/// for every mirror is the usual case).
#[derive(Default)]
struct Reader {
    read: HashMap<PathBuf, Arc<Vec<u8>>>,
    total: u64,
}

impl Reader {
    fn root(&mut self, root: &Path) -> Result<BTreeMap<String, HostDir>, HostsError> {
        let fail = |reason: String| HostsError { path: root.to_owned(), reason };
        let entries = match std::fs::read_dir(root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(fail(e.to_string())),
            Ok(entries) => entries,
        };
        let mut names = Vec::new();
        for entry in entries.take(MAX_HOST_DIRS + 1) {
            names.push(entry.map_err(|e| fail(e.to_string()))?.file_name());
        }
        if names.len() > MAX_HOST_DIRS {
            return Err(fail(format!("has more than {MAX_HOST_DIRS} entries")));
        }
        names.sort();
        let mut dirs = BTreeMap::new();
        // Registry hosts are ASCII and never start with '.': other names are never looked up
        // (`..data` of a ConfigMap volume, editors' files).
        for name in names.into_iter().filter_map(|n| n.into_string().ok()).filter(|n| !n.starts_with('.')) {
            let path = root.join(&name);
            let mut files = Vec::new();
            let hosts = self.host_dir(&path, &mut files);
            dirs.insert(name, HostDir { path, files, hosts });
        }
        Ok(dirs)
    }

    /// One host directory, as containerd's `loadHostDir` reads it.
    fn host_dir(&mut self, dir: &Path, files: &mut Vec<PathBuf>) -> Result<Vec<HostConfig>, HostsError> {
        let file = dir.join(HOSTS_FILE);
        files.push(file.clone());
        let fail = |path: &Path, reason: String| HostsError { path: path.to_owned(), reason };
        // containerd takes whatever the name is; one that is not a directory fails its pulls.
        match std::fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => return Err(fail(dir, "is not a directory".to_owned())),
            Err(e) => return Err(fail(dir, e.to_string())),
            Ok(_) => {}
        }
        let mut hosts = match std::fs::symlink_metadata(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => docker_certs(dir)?,
            Err(e) => return Err(fail(&file, e.to_string())),
            Ok(_) => {
                let bytes =
                    self.read(&file, HOSTS_FILE_MAX_BYTES, "hosts.toml").map_err(|reason| fail(&file, reason))?;
                if bytes.is_empty() {
                    docker_certs(dir)?
                } else {
                    let text = std::str::from_utf8(&bytes).map_err(|_| fail(&file, "is not UTF-8 text".to_owned()))?;
                    parse(text, dir).map_err(|reason| fail(&file, reason))?
                }
            }
        };
        for host in &mut hosts {
            files.extend(host.tls.ca.iter().cloned());
            files.extend(host.tls.client.iter().flat_map(|(cert, key)| std::iter::once(cert).chain(key)).cloned());
            host.material = self.material(&host.tls).map_err(|reason| fail(&file, reason))?;
        }
        Ok(hosts)
    }

    /// The files `tls` names, read now so that no request reads them.
    fn material(&mut self, tls: &Tls) -> Result<Option<Arc<TlsMaterial>>, String> {
        if tls.is_default() {
            return Ok(None);
        }
        let mut read = |path: &Path| {
            self.read(path, CERT_FILE_MAX_BYTES, "certificate file").map_err(|e| format!("{}: {e}", path.display()))
        };
        let mut ca = Vec::new();
        for path in &tls.ca {
            ca.push(read(path)?.to_vec());
        }
        let mut identities = Vec::new();
        for (cert, key) in &tls.client {
            let mut pem = read(cert)?.to_vec();
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(read(key)?.iter());
            }
            identities.push(pem);
        }
        Ok(Some(Arc::new(TlsMaterial { ca, identities, skip_verify: tls.skip_verify == Some(true) })))
    }

    fn read(&mut self, path: &Path, limit: u64, what: &str) -> Result<Arc<Vec<u8>>, String> {
        if let Some(bytes) = self.read.get(path) {
            return Ok(Arc::clone(bytes));
        }
        let bytes = Arc::new(read_bounded(path, limit, what)?);
        self.total += bytes.len() as u64;
        if self.total > HOST_FILES_MAX_TOTAL_BYTES {
            return Err(format!(
                "the host directory's files together are larger than {HOST_FILES_MAX_TOTAL_BYTES} bytes"
            ));
        }
        self.read.insert(path.to_owned(), Arc::clone(&bytes));
        Ok(bytes)
    }
}

/// Docker's layout: `*.crt` are CAs, `*.cert` client certificates with an optional `*.key`.
fn docker_certs(dir: &Path) -> Result<Vec<HostConfig>, HostsError> {
    let fail = |reason: String| HostsError { path: dir.to_owned(), reason };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))?.take(HOST_DIR_MAX_ENTRIES + 1) {
        let entry = entry.map_err(|e| fail(e.to_string()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    if names.len() > HOST_DIR_MAX_ENTRIES {
        return Err(fail(format!("has more than {HOST_DIR_MAX_ENTRIES} entries")));
    }
    names.sort();
    let mut tls = Tls::default();
    for name in &names {
        if name.ends_with(".crt") {
            tls.ca.push(dir.join(name));
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = format!("{stem}.key");
            tls.client.push((dir.join(name), names.contains(&key).then(|| dir.join(&key))));
        }
    }
    if tls.ca.len() + tls.client.len() > MAX_CERT_FILES_PER_HOST {
        return Err(fail(format!("names more than {MAX_CERT_FILES_PER_HOST} certificate files")));
    }
    // containerd sets the TLS fields only when files were found; none means its defaults.
    Ok(vec![HostConfig { tls, ..HostConfig::registry_itself() }])
}

// === SharedHosts ===

/// The table in force, shared between the registry client and the reloader that replaces it.
/// Readers take an `Arc` snapshot: one lookup sees one version of the directory.
#[derive(Clone, Debug, Default)]
pub struct SharedHosts {
    current: Arc<RwLock<Arc<HostsTable>>>,
}

impl SharedHosts {
    pub fn new(table: HostsTable) -> SharedHosts {
        SharedHosts { current: Arc::new(RwLock::new(Arc::new(table))) }
    }

    pub fn current(&self) -> Arc<HostsTable> {
        // The lock only guards an Arc swap, which cannot leave it half-written.
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn replace(&self, table: HostsTable) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }
}
