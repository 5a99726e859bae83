//! Hot reload: when a policy file, policy.json or a key file the policy uses changes (seen
//! through inotify), or on request (SIGHUP), the policy is loaded again and applies from the
//! next pull. A policy that does not load changes nothing: the last good one stays in force,
//! and so does it when a load outlives `LOAD_DEADLINE` (a file on a hung mount, say).
//!
//! containerd's host directory (`registry.config_path`) is read by the same load, on the same
//! watches and debounce: one reload, one deadline, one metric. The two are put in force each
//! on its own, so that a broken `hosts.toml` never holds back a policy change (a revocation)
//! and a broken policy file never holds back a mirror change. Unlike the policy, the host
//! directory has no "last good" version: what cannot be used is kept as an error that refuses
//! the pulls it would route (see `registry::hosts`), and the reload counts as failed.

mod watch;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError, SharedPolicy};
use crate::registry::hosts::{self, HostsTable, SharedHosts};

pub use watch::Sources;
use watch::{Plan, Watcher};

/// Editors and ConfigMap updates touch several files in a burst; one reload after the burst
/// is enough, and the pause keeps a reload well inside the 2 s a change may take to apply.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A file rewritten without pause must still be picked up.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);
/// A load reads local files of bounded size and takes milliseconds; one still running after
/// this is stuck (a hung network mount). It is then reported as a failed reload, so the
/// metric and the log show it instead of the daemon silently keeping an old policy.
const LOAD_DEADLINE: Duration = Duration::from_secs(5);

/// Asks for a reload. Requests made while one is already pending count once.
#[derive(Clone, Debug, Default)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    pub fn request(&self) {
        self.0.notify_one();
    }

    async fn requested(&self) {
        self.0.notified().await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the policy load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(
        "loading the policy took longer than {0:?}; a policy or key file may be on a file system that does not answer"
    )]
    Deadline(Duration),
    #[error("the policy load that passed its deadline is still running; no other starts until it ends")]
    StillStuck,
}

/// What a reload computes off the async threads: the policy, the host directory, and the
/// watches they need.
struct Loaded {
    policy: Result<Policy, PolicyError>,
    hosts: HostsTable,
    plan: Plan,
}
/// Given the sources and the policy in force; tests put a load that hangs in its place.
type Load = Arc<dyn Fn(&Sources, &Policy) -> Loaded + Send + Sync>;

pub struct Reloader {
    sources: Sources,
    policy: SharedPolicy,
    hosts: SharedHosts,
    metrics: Arc<Metrics>,
    trigger: Trigger,
    load: Load,
    deadline: Duration,
    /// A load that passed its deadline. Its result is never used (the files may have changed
    /// since), and no second load starts while it runs, so a hung mount holds one thread only.
    stuck: Option<JoinHandle<Loaded>>,
}

// === impl Reloader ===

impl Reloader {
    /// `hosts` is the table the registry client routes by (`HttpRegistry::hosts`).
    pub fn new(
        config: &Config,
        policy: SharedPolicy,
        hosts: SharedHosts,
        metrics: Arc<Metrics>,
        trigger: Trigger,
    ) -> Reloader {
        let sources = Sources {
            policy_dir: config.policy_dir.clone(),
            policy_json: config.policy_json.clone(),
            host_roots: hosts::roots(config.registry.config_path.as_deref()),
        };
        let load: Load = Arc::new(|sources, current| {
            let policy = Policy::load(&sources.policy_dir, sources.policy_json.as_deref());
            let hosts = HostsTable::load(&sources.host_roots);
            let plan = Plan::new(sources, policy.as_ref().unwrap_or(current), &hosts);
            Loaded { policy, hosts, plan }
        });
        Reloader { sources, policy, hosts, metrics, trigger, load, deadline: LOAD_DEADLINE, stuck: None }
    }

    /// Watches and reloads until the task is dropped.
    pub async fn run(self) {
        let watcher = self.armed_watcher().await;
        self.serve(watcher).await;
    }

    /// The watches the policy in force needs, armed: a change made after this returns is seen.
    async fn armed_watcher(&self) -> Watcher {
        let mut watcher = Watcher::new();
        if let Some(plan) = self.plan_for_current().await {
            watcher.arm(plan);
        }
        watcher
    }

    async fn serve(mut self, mut watcher: Watcher) {
        loop {
            tokio::select! {
                () = watcher.changed() => {}
                () = self.trigger.requested() => {}
                // What changed while it hung (a revocation, say) must not wait for the next edit.
                () = stuck_ended(&mut self.stuck) => {}
            }
            self.settle(&mut watcher).await;
            if let Some(plan) = self.reload().await {
                watcher.arm(plan);
            }
        }
    }

    /// Waits until nothing has changed for `DEBOUNCE`, or `MAX_DEBOUNCE` has passed.
    async fn settle(&self, watcher: &mut Watcher) {
        let deadline = Instant::now() + MAX_DEBOUNCE;
        loop {
            let quiet = tokio::time::sleep_until((Instant::now() + DEBOUNCE).min(deadline));
            tokio::select! {
                () = quiet => return,
                () = watcher.changed() => {}
                () = self.trigger.requested() => {}
            }
        }
    }

    /// Loads the policy off the async threads (it reads files) and puts it in force if it
    /// loads in time. Returns the watches the policy in force needs afterwards.
    async fn reload(&mut self) -> Option<Plan> {
        if let Some(stuck) = &self.stuck {
            if !stuck.is_finished() {
                self.failed(&ReloadError::StillStuck);
                return None;
            }
            self.stuck = None;
        }
        let (sources, current, load) = (self.sources.clone(), self.policy.current(), self.load.clone());
        // The policy lock is not held here: `current` is a snapshot, and the load only reads it.
        let mut task = tokio::task::spawn_blocking(move || load(&sources, &current));
        let Ok(loaded) = tokio::time::timeout(self.deadline, &mut task).await else {
            self.stuck = Some(task);
            self.failed(&ReloadError::Deadline(self.deadline));
            return None;
        };
        match loaded {
            Ok(Loaded { policy, hosts, plan }) => {
                // Hosts first: the policy's new generation makes checks under way start over,
                // and they should then see the new hosts too.
                let hosts_usable = self.put_hosts_in_force(hosts);
                match policy {
                    Ok(policy) => {
                        self.put_in_force(policy);
                        if hosts_usable {
                            self.metrics.reload_succeeded();
                        } else {
                            self.metrics.reload_failed();
                        }
                    }
                    Err(error) => self.failed(&error.into()),
                }
                Some(plan)
            }
            Err(error) => {
                self.failed(&error.into());
                None
            }
        }
    }

    /// Returns whether everything in the host directory could be used.
    fn put_hosts_in_force(&self, hosts: HostsTable) -> bool {
        let problems: Vec<String> = hosts.problems().iter().map(ToString::to_string).collect();
        self.hosts.replace(hosts);
        for problem in &problems {
            tracing::error!(%problem, "registry host directory unusable; pulls from the registries it serves are refused until it is fixed");
        }
        problems.is_empty()
    }

    fn put_in_force(&self, policy: Policy) {
        let rules = policy.rules().len();
        self.policy.replace(policy);
        tracing::info!(rules, "policy reloaded");
        if rules == 0 {
            tracing::warn!(policy_dir = %self.sources.policy_dir.display(), "policy has no rules: every pull will be rejected");
        }
    }

    fn failed(&self, error: &ReloadError) {
        self.metrics.reload_failed();
        tracing::error!(%error, "policy reload failed; the previous policy stays in force");
    }

    async fn plan_for_current(&self) -> Option<Plan> {
        let sources = self.sources.clone();
        let (current, hosts) = (self.policy.current(), self.hosts.current());
        let planned = tokio::task::spawn_blocking(move || Plan::new(&sources, &current, &hosts)).await;
        planned.inspect_err(|error| tracing::warn!(%error, "cannot plan policy file watches")).ok()
    }
}

/// Resolves when the load that passed its deadline ends (and forgets it); never if none did.
async fn stuck_ended(stuck: &mut Option<JoinHandle<Loaded>>) {
    match stuck {
        Some(task) => {
            // Its result is stale either way; only that it ended matters.
            let _ = task.await;
            *stuck = None;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
