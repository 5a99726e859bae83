//! Which directories to watch for a change of the policy or of containerd's host directory,
//! and inotify watches on them.
//!
//! Directories, not files: editors save by writing a new file and renaming it over the old
//! one, and Kubernetes updates a ConfigMap volume by re-pointing its `..data` symlink. Either
//! way the watched file's inode is gone, while the directory sees the rename.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};

use crate::policy::Policy;
use crate::registry::hosts::HostsTable;

/// Room for dozens of events per read; a burst larger than the kernel queue is reported as an
/// overflow, which triggers a reload like any change.
const EVENT_BUFFER: usize = 16 * 1024;

/// Where the policy and the host directory are read from: the part of the configuration a
/// reload looks at.
#[derive(Clone, Debug)]
pub struct Sources {
    pub policy_dir: PathBuf,
    pub policy_json: Option<PathBuf>,
    /// containerd's `config_path` roots; empty without one.
    pub host_roots: Vec<PathBuf>,
}

/// The names in one directory whose change matters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    names: BTreeSet<OsString>,
    /// Any visible `*.toml`: the directory is `policy_dir`.
    policy_files: bool,
    /// Any visible name: a root of the host directory (a registry's directory comes or goes)
    /// or a registry's directory (its `hosts.toml`, Docker-style certificates).
    every_name: bool,
}

impl Interest {
    fn merge(&mut self, other: Interest) {
        self.names.extend(other.names);
        self.policy_files |= other.policy_files;
        self.every_name |= other.every_name;
    }

    fn wants(&self, name: &OsStr) -> bool {
        let bytes = name.as_bytes();
        let visible = !bytes.starts_with(b".");
        // `..data` and `..<timestamp>`: a ConfigMap volume swapping in a new version.
        bytes.starts_with(b"..")
            || self.names.contains(name)
            || (self.policy_files && visible && bytes.ends_with(b".toml"))
            || (self.every_name && visible)
    }
}

/// The directories to watch for one policy and host directory: `policy_dir`, the directory
/// of every file the policy was read from (policy.json, the policy files, key files, trusted
/// roots), each root of the host directory and each registry's directory in it, and the
/// directory of every certificate file a `hosts.toml` names; also where a symlink points.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    dirs: BTreeMap<PathBuf, Interest>,
}

impl Plan {
    /// Does blocking I/O (resolving symlinks).
    pub fn new(sources: &Sources, policy: &Policy, hosts: &HostsTable) -> Plan {
        let mut plan = Plan::default();
        let policy_files = Interest { policy_files: true, ..Interest::default() };
        plan.dirs.entry(sources.policy_dir.clone()).or_default().merge(policy_files);
        plan.file(&sources.policy_dir);
        if let Some(path) = &sources.policy_json {
            plan.file(path);
        }
        for rule in policy.rules() {
            plan.file(&rule.source);
            for path in rule.keys.iter().filter_map(|key| key.path.as_deref()) {
                plan.file(path);
            }
            for path in rule.identities.iter().flat_map(|signer| signer.trust.source.files()) {
                plan.file(path);
            }
        }
        plan.hosts(hosts);
        plan
    }

    fn hosts(&mut self, hosts: &HostsTable) {
        // A root that does not exist yet is seen when it is created in its parent.
        for dir in hosts.roots().chain(hosts.dirs()) {
            self.file(dir);
            self.every_name(dir);
            if let Ok(real) = std::fs::canonicalize(dir) {
                self.every_name(&real);
            }
        }
        for path in hosts.files() {
            self.file(path);
        }
    }

    fn every_name(&mut self, dir: &Path) {
        // Only what exists can be watched; the parent's watch sees it appear.
        if dir.is_dir() {
            self.dirs.entry(dir.to_owned()).or_default().every_name = true;
        }
    }

    fn file(&mut self, path: &Path) {
        self.entry(path);
        if let Ok(real) = std::fs::canonicalize(path) {
            self.entry(&real);
        }
    }

    fn entry(&mut self, path: &Path) {
        let Some(name) = path.file_name() else { return };
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        self.dirs.entry(dir.to_owned()).or_default().names.insert(name.to_owned());
    }
}

/// inotify watches on a [`Plan`]'s directories. When inotify is unavailable or fails, it
/// reports nothing and SIGHUP remains the way to reload.
pub struct Watcher {
    active: Option<Active>,
    interests: HashMap<WatchDescriptor, Interest>,
}

struct Active {
    events: EventStream<Vec<u8>>,
    watches: Watches,
}

// === impl Watcher ===

impl Watcher {
    pub fn new() -> Watcher {
        let active = Inotify::init().and_then(|inotify| {
            let watches = inotify.watches();
            let events = inotify.into_event_stream(vec![0; EVENT_BUFFER])?;
            Ok(Active { events, watches })
        });
        let active =
            active.inspect_err(|error| tracing::warn!(%error, "cannot watch policy files; reload with SIGHUP")).ok();
        Watcher { active, interests: HashMap::new() }
    }

    /// Watches exactly the plan's directories (adding a watch that exists is a no-op).
    pub fn arm(&mut self, plan: Plan) {
        let Some(active) = &mut self.active else { return };
        let mut interests: HashMap<WatchDescriptor, Interest> = HashMap::new();
        for (dir, interest) in plan.dirs {
            match active.watches.add(&dir, mask()) {
                // A directory reached under two names has one descriptor.
                Ok(wd) => interests.entry(wd).or_default().merge(interest),
                Err(error) => tracing::warn!(dir = %dir.display(), %error, "cannot watch for policy changes"),
            }
        }
        for stale in self.interests.keys().filter(|wd| !interests.contains_key(*wd)) {
            // Fails when the directory is gone, which removed the watch already.
            let _ = active.watches.remove(stale.clone());
        }
        self.interests = interests;
    }

    /// Resolves at the next change that matters; never, if nothing can be watched.
    pub async fn changed(&mut self) {
        loop {
            let Some(active) = &mut self.active else { return std::future::pending().await };
            match active.events.next().await {
                Some(Ok(event)) if self.relevant(&event.wd, event.mask, event.name.as_deref()) => return,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "policy file watch failed; reload with SIGHUP");
                    self.active = None;
                }
                None => self.active = None,
            }
        }
    }

    fn relevant(&self, wd: &WatchDescriptor, mask: EventMask, name: Option<&OsStr>) -> bool {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return true;
        }
        match (self.interests.get(wd), name) {
            (None, _) => false,
            // The directory itself was deleted or moved.
            (Some(_), None) => true,
            (Some(interest), Some(name)) => interest.wants(name),
        }
    }
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interest(names: &[&str], policy_files: bool) -> Interest {
        Interest { names: names.iter().map(OsString::from).collect(), policy_files, every_name: false }
    }

    #[test]
    fn interest_in_names() {
        let keys = interest(&["a.pub"], false);
        assert!(keys.wants(OsStr::new("a.pub")));
        assert!(keys.wants(OsStr::new("..data")));
        assert!(!keys.wants(OsStr::new("b.pub")));
        assert!(!keys.wants(OsStr::new("x.toml")));
        let dir = interest(&[], true);
        assert!(dir.wants(OsStr::new("10-team.toml")));
        assert!(!dir.wants(OsStr::new(".10-team.toml.swp")));
        assert!(!dir.wants(OsStr::new("10-team.toml~")));
    }

    #[test]
    fn plan_covers_policy_dir_json_and_key_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (policy_dir, keys) = (root.join("policy.d"), root.join("keys"));
        std::fs::create_dir_all(&policy_dir).unwrap();
        std::fs::create_dir_all(&keys).unwrap();
        let key = crate::policy::test_support::KEY_A;
        std::fs::write(keys.join("a.pub"), key).unwrap();
        let rule = "[[rule]]\nscope = \"r.io\"\nrequire = \"signed\"\nkeys = [\"../keys/a.pub\"]\n";
        std::fs::write(policy_dir.join("a.toml"), rule).unwrap();
        let json = root.join("etc/policy.json");
        let sources = Sources { policy_dir: policy_dir.clone(), policy_json: Some(json), host_roots: Vec::new() };
        let policy = Policy::load(&policy_dir, None).unwrap();
        let plan = Plan::new(&sources, &policy, &HostsTable::default());
        // The key as the policy names it, and where that path really leads.
        let expected: BTreeMap<PathBuf, Interest> = [
            (root.clone(), interest(&["policy.d"], false)),
            (root.join("etc"), interest(&["policy.json"], false)),
            (policy_dir.join("../keys"), interest(&["a.pub"], false)),
            (policy_dir, interest(&["a.toml"], true)),
            (keys, interest(&["a.pub"], false)),
        ]
        .into_iter()
        .collect();
        assert_eq!(plan.dirs, expected);
    }
}
