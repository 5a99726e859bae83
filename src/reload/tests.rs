//! The reloader against real files and real inotify, without a daemon around it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::policy::Requirement;
use crate::policy::test_support::{KEY_A, KEY_B};

/// What the daemon promises: a change applies within this long.
const LIMIT: Duration = Duration::from_secs(2);

const ACCEPT: &str = "[[rule]]\nscope = \"r.io\"\nrequire = \"accept\"\n";
const REJECT: &str = "[[rule]]\nscope = \"r.io\"\nrequire = \"reject\"\n";

struct Setup {
    dir: tempfile::TempDir,
    policy: SharedPolicy,
    metrics: Arc<Metrics>,
    trigger: Trigger,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Setup {
    /// Loads the policy from `policy.d` under a temp dir holding `files`, and runs a reloader.
    async fn start(files: &[(&str, &str)], policy_json: Option<&str>) -> Setup {
        Setup::start_with(files, policy_json, |reloader| reloader).await
    }

    /// `start`, with the reloader changed by `adjust` before it runs.
    async fn start_with(
        files: &[(&str, &str)],
        policy_json: Option<&str>,
        adjust: impl FnOnce(Reloader) -> Reloader,
    ) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policy.d")).unwrap();
        for (name, content) in files {
            write(&dir.path().join(name), content);
        }
        let config = Config {
            policy_dir: dir.path().join("policy.d"),
            policy_json: policy_json.map(|name| dir.path().join(name)),
            ..Config::default()
        };
        let policy = SharedPolicy::new(Policy::load(&config.policy_dir, config.policy_json.as_deref()).unwrap());
        let (metrics, trigger) = (Metrics::new(), Trigger::default());
        let reloader = adjust(Reloader::new(&config, policy.clone(), metrics.clone(), trigger.clone()));
        // Armed before the test changes anything, so no change can come before the watches.
        let watcher = reloader.armed_watcher().await;
        let task = tokio::spawn(reloader.serve(watcher));
        Setup { dir, policy, metrics, trigger, task }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn require(&self) -> Option<Requirement> {
        self.policy.current().rules().first().map(|rule| rule.require)
    }

    fn reloads(&self, result: &str) -> u64 {
        let series = format!("pullgate_policy_reloads_total{{result=\"{result}\"}} ");
        let text = self.metrics.encode();
        text.lines().find_map(|line| line.strip_prefix(&series)).map_or(0, |n| n.parse().unwrap())
    }

    /// Polls `done` until it holds; panics after `LIMIT`.
    async fn within_limit(&self, what: &str, done: impl Fn(&Setup) -> bool) -> Duration {
        let started = std::time::Instant::now();
        while !done(self) {
            assert!(started.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Saves as editors do: a new file renamed over the old one.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp~");
    write(&tmp, content);
    std::fs::rename(&tmp, path).unwrap();
}

fn signed_by(key: &str) -> String {
    format!("[[rule]]\nscope = \"r.io\"\nrequire = \"signed\"\nkeys = [\"{key}\"]\n")
}

#[tokio::test]
async fn edits_apply_and_a_broken_edit_changes_nothing() {
    let setup = Setup::start(&[("policy.d/a.toml", ACCEPT)], None).await;
    let file = setup.path("policy.d/a.toml");
    replace(&file, REJECT);
    setup.within_limit("rename-replace", |s| s.require() == Some(Requirement::Reject)).await;
    std::fs::write(&file, ACCEPT).unwrap();
    setup.within_limit("write in place", |s| s.require() == Some(Requirement::Accept)).await;

    std::fs::write(&file, "[[rule]\nscope = ").unwrap();
    setup.within_limit("failed reload counted", |s| s.reloads("failure") == 1).await;
    assert_eq!(setup.require(), Some(Requirement::Accept), "the last good policy stays in force");
    assert!(setup.metrics.encode().contains("pullgate_policy_last_reload_success 0"));

    std::fs::remove_file(&file).unwrap();
    write(&setup.path("policy.d/b.toml"), REJECT);
    setup.within_limit("file removed, another added", |s| s.require() == Some(Requirement::Reject)).await;
}

#[tokio::test]
async fn a_key_file_outside_the_policy_dir_is_watched() {
    let policy = signed_by("../keys/k.pub");
    let setup = Setup::start(&[("keys/k.pub", KEY_A), ("policy.d/a.toml", &policy)], None).await;
    let fingerprint = |s: &Setup| s.policy.current().rules()[0].keys[0].key.fingerprint().to_string();
    let before = fingerprint(&setup);
    replace(&setup.path("keys/k.pub"), KEY_B);
    setup.within_limit("key replaced", |s| fingerprint(s) != before).await;
    // A key file that no longer parses: the rule keeps the key it had.
    let after = fingerprint(&setup);
    replace(&setup.path("keys/k.pub"), "not a key");
    setup.within_limit("broken key counted", |s| s.reloads("failure") == 1).await;
    assert_eq!(fingerprint(&setup), after);
}

#[tokio::test]
async fn a_trusted_root_outside_the_policy_dir_is_watched() {
    use sigstore_verify::trust_root::{SIGSTORE_PRODUCTION_TRUSTED_ROOT, SIGSTORE_STAGING_TRUSTED_ROOT};
    let policy = "[[rule]]\nscope = \"r.io\"\nrequire = \"signed\"\n\
                  identities = [{ issuer = \"i\", subject = \"s\" }]\ntrusted_root = \"../roots/r.json\"\n";
    let files = [("roots/r.json", SIGSTORE_STAGING_TRUSTED_ROOT), ("policy.d/a.toml", policy)];
    let setup = Setup::start(&files, None).await;
    let root = |s: &Setup| Arc::as_ptr(&s.policy.current().rules()[0].identities[0].trust.root);
    let before = root(&setup);
    // A root that no longer loads: the reload fails, and the rule keeps the root it had.
    replace(&setup.path("roots/r.json"), "{ not a trusted root");
    setup.within_limit("broken root counted", |s| s.reloads("failure") == 1).await;
    assert_eq!(root(&setup), before);
    replace(&setup.path("roots/r.json"), SIGSTORE_PRODUCTION_TRUSTED_ROOT);
    setup.within_limit("root replaced", |s| root(s) != before).await;
}

#[tokio::test]
async fn policy_json_is_watched() {
    let json = |kind: &str| format!(r#"{{"default": [{{"type": "{kind}"}}]}}"#);
    let setup = Setup::start(&[("etc/policy.json", &json("reject"))], Some("etc/policy.json")).await;
    assert_eq!(setup.require(), Some(Requirement::Reject));
    replace(&setup.path("etc/policy.json"), &json("insecureAcceptAnything"));
    setup.within_limit("policy.json replaced", |s| s.require() == Some(Requirement::Accept)).await;
}

/// How the kubelet updates a ConfigMap volume: files are symlinks through `..data`, which is
/// re-pointed at a new timestamped directory in one rename.
#[tokio::test]
async fn configmap_symlink_swap_is_seen() {
    let setup = Setup::start(&[("policy.d/..v1/a.toml", ACCEPT)], None).await;
    let dir = setup.path("policy.d");
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/a.toml", dir.join("a.toml")).unwrap();
    setup.within_limit("symlinked file appears", |s| s.require() == Some(Requirement::Accept)).await;

    write(&dir.join("..v2/a.toml"), REJECT);
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    setup.within_limit("..data swapped", |s| s.require() == Some(Requirement::Reject)).await;
}

#[tokio::test]
async fn a_request_reloads_and_unrelated_files_do_not() {
    let setup = Setup::start(&[("policy.d/a.toml", ACCEPT)], None).await;
    write(&setup.path("policy.d/notes.txt"), "not policy");
    write(&setup.path("policy.d/.a.toml.swp"), "editor state");
    write(&setup.path("unrelated.conf"), "x");
    tokio::time::sleep(DEBOUNCE * 3).await;
    assert_eq!(setup.reloads("success") + setup.reloads("failure"), 0);

    setup.trigger.request();
    setup.within_limit("requested reload", |s| s.reloads("success") == 1).await;
}

/// A load that hangs (as on a mount that stopped answering) is reported once its deadline
/// passes, the previous policy stays, no second load piles up behind it, and once it ends the
/// files are loaded again by themselves; what the hung load returned is never put in force.
#[tokio::test]
async fn a_load_past_its_deadline_is_reported_and_the_previous_policy_stays() {
    const DEADLINE: Duration = Duration::from_millis(300);
    let (release, hang) = std::sync::mpsc::channel::<()>();
    let hang = std::sync::Mutex::new(Some(hang));
    let setup = Setup::start_with(&[("policy.d/a.toml", ACCEPT)], None, move |reloader| {
        let real = reloader.load.clone();
        let load: Load = Arc::new(move |sources, current| {
            let first = hang.lock().unwrap().take();
            let Some(hang) = first else { return real(sources, current) };
            // Bounded, so a failing test cannot leave a thread blocked for good.
            let _ = hang.recv_timeout(Duration::from_secs(30));
            // A policy no file holds: seeing it in force would mean the stale result was used.
            (Ok(Policy::default()), real(sources, current).1)
        });
        Reloader { load, deadline: DEADLINE, ..reloader }
    })
    .await;
    replace(&setup.path("policy.d/a.toml"), REJECT);
    setup.within_limit("stuck load reported", |s| s.reloads("failure") == 1).await;
    assert!(setup.metrics.encode().contains("pullgate_policy_last_reload_success 0"));
    // Read while the load still hangs: the policy lock is never held across a load.
    assert_eq!(setup.require(), Some(Requirement::Accept), "the previous policy stays in force");

    setup.trigger.request();
    setup.within_limit("refused while the stuck load runs", |s| s.reloads("failure") == 2).await;
    assert_eq!(setup.require(), Some(Requirement::Accept));

    // Once the hung load ends, the files are loaded again without another request.
    release.send(()).unwrap();
    setup.within_limit("reloaded after the stuck load ended", |s| s.reloads("success") == 1).await;
    assert_eq!(setup.require(), Some(Requirement::Reject));
    assert!(setup.metrics.encode().contains("pullgate_policy_last_reload_success 1"));
    tokio::time::sleep(DEADLINE).await;
    assert_eq!(setup.reloads("success"), 1, "the hung load's result was put in force as well");
}
