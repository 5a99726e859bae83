//! The pullgate binary as a separate process: the one way the suite spawns it.
//!
//! [`Serve`] writes a config and a policy directory and starts `pullgate serve` as systemd
//! would (`NOTIFY_SOCKET` set); [`Serve::spawn`] returns once pullgate has said READY=1, which
//! it says after its sockets are bound and its signal handlers installed, so a test may
//! connect or signal at once. Its log (stderr) is collected line by line for the test to read
//! or wait on. [`run`] runs any other subcommand to completion.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pullgate");

/// How long pullgate may take to start, or to log a line a test waits for, on a loaded
/// 2-core machine; it takes milliseconds when idle.
const STARTUP: Duration = Duration::from_secs(20);

/// A `pullgate serve` to start: its config, policy files and how it is run.
pub struct Serve {
    dir: Dir,
    upstream: PathBuf,
    files: Vec<(String, String)>,
    top: String,
    registry: String,
    insecure: Vec<String>,
    metrics: bool,
    wrapper: Vec<String>,
    listen: Option<PathBuf>,
    text_log: bool,
    watch_memory: bool,
}

enum Dir {
    Owned(tempfile::TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Owned(dir) => dir.path(),
            Dir::Given(path) => path,
        }
    }
}

impl Serve {
    /// pullgate in front of `upstream`, in a temp dir of its own.
    pub fn new(upstream: &Path) -> Serve {
        Serve::with_dir(Dir::Owned(tempfile::tempdir().expect("temp dir")), upstream)
    }

    /// pullgate with its files in `dir` (which the test keeps): `dir/pullgate.toml`,
    /// `dir/pullgate.sock` and the policy directory `dir/policy.d`, which may already hold files.
    pub fn in_dir(dir: &Path, upstream: &Path) -> Serve {
        Serve::with_dir(Dir::Given(dir.to_owned()), upstream)
    }

    fn with_dir(dir: Dir, upstream: &Path) -> Serve {
        Serve {
            dir,
            upstream: upstream.to_owned(),
            files: Vec::new(),
            top: String::new(),
            registry: String::new(),
            insecure: Vec::new(),
            metrics: false,
            wrapper: Vec::new(),
            listen: None,
            text_log: false,
            watch_memory: false,
        }
    }

    /// Files (name, content) for the policy directory: policy files and the keys they name.
    pub fn files(mut self, files: &[(&str, &str)]) -> Serve {
        self.files.extend(files.iter().map(|(name, content)| (name.to_string(), content.to_string())));
        self
    }

    /// More of the config's top level, as TOML lines (keys, then tables such as `[log]`).
    pub fn config(mut self, toml: &str) -> Serve {
        self.top.push_str(toml);
        self.top.push('\n');
        self
    }

    /// More of the config's `[registry]` table, as TOML lines.
    pub fn registry(mut self, toml: &str) -> Serve {
        self.registry.push_str(toml);
        self.registry.push('\n');
        self
    }

    /// Registries pullgate may reach over plain HTTP.
    pub fn insecure(mut self, hosts: &[&str]) -> Serve {
        self.insecure.extend(hosts.iter().map(|host| host.to_string()));
        self
    }

    /// Serves `/metrics` on a free port; [`Daemon::metrics`] tells which.
    pub fn metrics(mut self) -> Serve {
        self.metrics = true;
        self
    }

    /// Listens on `socket` instead of `pullgate.sock` in its directory.
    pub fn listen(mut self, socket: &Path) -> Serve {
        self.listen = Some(socket.to_owned());
        self
    }

    /// Logs as on a terminal-less console (pullgate's default) instead of in JSON.
    pub fn text_log(mut self) -> Serve {
        self.text_log = true;
        self
    }

    /// Samples pullgate's memory while it runs, for [`Daemon::assert_memory_below`].
    pub fn watch_memory(mut self) -> Serve {
        self.watch_memory = true;
        self
    }

    /// Runs pullgate under `wrapper` (a program and its arguments, e.g. `prlimit … --`).
    pub fn wrapper(mut self, wrapper: &[&str]) -> Serve {
        self.wrapper = wrapper.iter().map(|arg| arg.to_string()).collect();
        self
    }

    /// Starts pullgate; returns once it has said READY=1. Panics with its log if it exits or
    /// stays silent instead.
    pub fn spawn(self) -> Daemon {
        let (metrics, watch_memory) = (self.metrics, self.watch_memory);
        let (mut daemon, notify) = self.launch();
        if watch_memory {
            daemon.memory = Some(MemoryWatch::start(daemon.child.id()));
        }
        daemon.wait_ready(&notify);
        if metrics {
            let line = daemon.wait_for_log(&["serving metrics"]);
            let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
            daemon.metrics = event["address"].as_str().and_then(|address| address.parse().ok());
            assert!(daemon.metrics.is_some(), "no metrics address in {line}");
        }
        daemon
    }

    /// Starts pullgate where it must fail to start; returns how it exited (within `limit`) and
    /// its log.
    pub fn spawn_to_exit(self, limit: Duration) -> (ExitStatus, String) {
        let (mut daemon, _notify) = self.launch();
        let status = daemon.wait_exit(limit);
        (status, daemon.log_text())
    }

    fn launch(self) -> (Daemon, UnixDatagram) {
        let dir = self.dir.path().to_owned();
        let socket = self.listen.clone().unwrap_or_else(|| dir.join("pullgate.sock"));
        let (policy_dir, config) = (dir.join("policy.d"), dir.join("pullgate.toml"));
        std::fs::create_dir_all(&policy_dir).expect("policy dir");
        for (name, content) in &self.files {
            std::fs::write(policy_dir.join(name), content).expect("write policy file");
        }
        std::fs::write(&config, self.config_text(&socket, &policy_dir)).expect("write config");
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        command.args(["serve", "--log-format", if self.text_log { "text" } else { "json" }, "--config"]).arg(&config);
        without_pullgate_env(&mut command);
        command.env("NOTIFY_SOCKET", &notify_path).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn pullgate");
        let log = Log::collect(child.stderr.take().expect("piped stderr"));
        (Daemon { child, socket, config, log, metrics: None, memory: None, _dir: self.dir }, notify)
    }

    fn config_text(&self, socket: &Path, policy_dir: &Path) -> String {
        let metrics = if self.metrics { "[metrics]\nlisten = \"127.0.0.1:0\"\n" } else { "" };
        format!(
            "listen = {socket:?}\nupstream = {:?}\npolicy_dir = {policy_dir:?}\n{}\n\
             [registry]\ninsecure = {:?}\n{}\n{metrics}",
            self.upstream, self.top, self.insecure, self.registry
        )
    }
}

/// The configuration must come from the test alone, not from the environment it runs in.
fn without_pullgate_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PULLGATE_") {
            command.env_remove(name);
        }
    }
}

// === impl Daemon ===

/// A running `pullgate serve`; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    /// Its config file, for a test that edits it or starts another process on it.
    pub config: PathBuf,
    /// Where `/metrics` is served, when [`Serve::metrics`] asked for it.
    pub metrics: Option<SocketAddr>,
    log: Log,
    memory: Option<MemoryWatch>,
    _dir: Dir,
}

impl Daemon {
    fn wait_ready(&mut self, notify: &UnixDatagram) {
        let started = Instant::now();
        notify.set_read_timeout(Some(Duration::from_millis(200))).expect("notify socket timeout");
        let mut buf = [0u8; 512];
        loop {
            if let Ok(n) = notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).lines().any(|line| line == "READY=1")
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pullgate exited at startup ({status}):\n{}", self.log_text());
            }
            assert!(started.elapsed() < STARTUP, "pullgate not ready after {STARTUP:?}:\n{}", self.log_text());
        }
    }

    /// Everything pullgate has logged so far, one JSON object a line.
    pub fn log_text(&self) -> String {
        self.log.lines().join("\n")
    }

    /// Whether a log line holds all of `words`.
    pub fn logged(&self, words: &[&str]) -> bool {
        self.log.lines().iter().any(|line| words.iter().all(|word| line.contains(word)))
    }

    /// Waits for a log line holding all of `words` and returns it; panics after `STARTUP`.
    pub fn wait_for_log(&self, words: &[&str]) -> String {
        let found = self
            .log
            .wait(STARTUP, |lines, _| lines.iter().find(|line| words.iter().all(|w| line.contains(w))).cloned());
        found.unwrap_or_else(|| panic!("no log line with {words:?} within {STARTUP:?}:\n{}", self.log_text()))
    }

    /// Sends `signal` ("HUP", "TERM", …) to pullgate.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(status.expect("run kill").success(), "kill -{signal} pullgate");
    }

    /// Waits for pullgate to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for pullgate") {
                // Its stderr is closed: the log is complete once the collector has read it.
                self.log.wait(limit, |_, finished| finished.then_some(()));
                return status;
            }
            assert!(Instant::now() < deadline, "pullgate did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Both the largest VmRSS sampled so far and the kernel's high-water mark (VmHWM) are
    /// below `limit_kib`; needs [`Serve::watch_memory`].
    pub fn assert_memory_below(&self, limit_kib: u64) {
        let peak = self.memory.as_ref().expect("Serve::watch_memory was not asked for").peak_kib();
        let hwm = self.status_kib("VmHWM:");
        eprintln!("pullgate memory: largest VmRSS sample {peak} KiB, VmHWM {hwm} KiB");
        assert!(peak > 0, "no VmRSS sample was taken");
        assert!(hwm < limit_kib, "pullgate's VmHWM reached {hwm} KiB (limit {limit_kib})\n{}", self.log_text());
        assert!(peak < limit_kib, "pullgate's VmRSS reached {peak} KiB (limit {limit_kib})\n{}", self.log_text());
    }

    /// User plus system CPU time pullgate has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("proc stat");
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }

    /// A `/proc/<pid>/status` field in KiB, e.g. "VmRSS:" or "VmHWM:".
    pub fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.child.id(), field).unwrap_or_else(|| panic!("no {field} for pullgate:\n{}", self.log_text()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A "Name:   1234 kB" line of /proc/<pid>/status, in KiB; None once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

// === impl Log ===

/// pullgate's stderr, read on a thread of its own (so pullgate never blocks on a full pipe),
/// with a condition variable that wakes waiters at each new line.
#[derive(Clone)]
struct Log(Arc<(Mutex<(Vec<String>, bool)>, Condvar)>);

impl Log {
    fn collect(stderr: impl std::io::Read + Send + 'static) -> Log {
        let log = Log(Arc::default());
        let writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                writer.lock().0.push(line);
                writer.0.1.notify_all();
            }
            writer.lock().1 = true;
            writer.0.1.notify_all();
        });
        log
    }

    fn lock(&self) -> MutexGuard<'_, (Vec<String>, bool)> {
        self.0.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lines(&self) -> Vec<String> {
        self.lock().0.clone()
    }

    /// Waits until `found` (given the lines so far and whether the log has ended) returns
    /// Some, at most `limit`.
    fn wait<T>(&self, limit: Duration, found: impl Fn(&[String], bool) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + limit;
        let mut guard = self.lock();
        loop {
            if let Some(value) = found(&guard.0, guard.1) {
                return Some(value);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = self.0.1.wait_timeout(guard, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }
}

// === one-shot runs ===

/// How a one-shot pullgate run ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The value of a `label  value` line of the text output.
    pub fn field(&self, label: &str) -> &str {
        self.stdout
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix(label))
            .find(|rest| rest.starts_with(' '))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", self.stdout))
    }

    /// The output as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `pullgate ARGS` to completion with `stdin` as its input.
pub fn run(args: &[&str], stdin: &str) -> Run {
    let mut child = one_shot(args).stdin(Stdio::piped()).spawn().expect("run pullgate");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    ran(child.wait_with_output().expect("wait for pullgate"))
}

/// Runs `pullgate ARGS`, killing it if it has not exited within `limit`: for cases where a
/// hang is the failure being tested.
pub fn run_within(args: &[&str], limit: Duration) -> Run {
    let mut child = one_shot(args).stdin(Stdio::null()).spawn().expect("run pullgate");
    let started = Instant::now();
    while child.try_wait().expect("wait for pullgate").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pullgate {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ran(child.wait_with_output().expect("pullgate output"))
}

fn one_shot(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    without_pullgate_env(&mut command);
    command
}

fn ran(out: std::process::Output) -> Run {
    Run {
        code: out.status.code().expect("pullgate exited by a signal"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

// === memory ===

/// Samples a process's VmRSS every few milliseconds on a thread of its own, until stopped.
pub struct MemoryWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    peak_kib: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemoryWatch {
    pub fn start(pid: u32) -> MemoryWatch {
        use std::sync::atomic::Ordering;
        let (stop, peak_kib) = (Arc::default(), Arc::default());
        let (stop_flag, peak): (Arc<std::sync::atomic::AtomicBool>, Arc<std::sync::atomic::AtomicU64>) =
            (Arc::clone(&stop), Arc::clone(&peak_kib));
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS:") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        MemoryWatch { stop, peak_kib, thread: Some(thread) }
    }

    /// The largest VmRSS sampled so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends sampling; returns the largest VmRSS seen, in KiB.
    pub fn stop(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak_kib()
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop();
    }
}
