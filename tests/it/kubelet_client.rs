//! pullgate as the kubelet meets it: through `k8s.io/cri-client`, the remote image service the
//! kubelet links (tests/kubeletclient, pinned to the newest Kubernetes release), in front of
//! containerd 2.x pulling through its transfer service.
//!
//! What the kubelet makes of an answer depends on that library as much as on pullgate: it turns
//! an UNKNOWN status into a bare error holding only the message, and the kubelet's image
//! manager (k8s.io/kubernetes pkg/kubelet/images/image_manager.go, `evalCRIPullErr`) then gives
//! the pull the reason `SignatureValidationFailed` or `RegistryUnavailable` only when that text
//! *starts with* the name (k8s.io/cri-api/pkg/errors); anything else is a plain
//! `ErrImagePull`. So these tests check the reason the kubelet would record, not just the code.

use crate::common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use common::cosign::CosignKey;
use common::lab::Lab;
use pullgate::config::Config;
use serde_json::Value;

/// The kubelet's --runtime-request-timeout for these tests (its default is 2m): the client's
/// connection timeout and the deadline of its ImageStatus calls. Short, so that a call that
/// should fail fast but waits instead shows up as a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pull may take on a loaded machine: cri-client sets no deadline on PullImage (the
/// kubelet waits as long as the runtime works), so the test bounds it instead.
const PULL_BOUND: Duration = Duration::from_secs(120);

// === the kubelet's client, built from tests/kubeletclient ===

fn go() -> PathBuf {
    let local = Path::new("/usr/local/go/bin/go");
    if local.exists() { local.to_owned() } else { PathBuf::from("go") }
}

/// Builds the client into the target dir once per run: Go's build cache makes that quick, and
/// a stale client could never be run by mistake. Once, so that no test replaces the binary
/// while another runs it.
fn client() -> &'static Path {
    static CLIENT: OnceLock<PathBuf> = OnceLock::new();
    CLIENT.get_or_init(build)
}

fn build() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubeletclient");
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubeletclient").join("kubeletclient");
    let out = Command::new(go())
        .args(["build", "-trimpath", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go build (Go must be installed, see tests/lab/lab.sh)");
    assert!(out.status.success(), "go build of tests/kubeletclient failed:\n{}", String::from_utf8_lossy(&out.stderr));
    binary
}

/// One kubelet: one connection to pullgate's socket, kept for every call, as the kubelet keeps
/// its image service client from startup on.
struct Kubelet {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<Value>,
}

impl Kubelet {
    /// Starts the client and waits for its connection (cri-client checks it with ImageFsInfo).
    fn connect(socket: &Path) -> Kubelet {
        let endpoint = format!("unix://{}", socket.display());
        let timeout = format!("{}s", REQUEST_TIMEOUT.as_secs());
        let mut child = Command::new(client())
            .args([&endpoint, &timeout])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // klog's lines: the kubelet's own log of each failed call, shown with the test's output.
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kubeletclient");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (send, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let answer = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if send.send(answer).is_err() {
                    break;
                }
            }
        });
        let mut kubelet = Kubelet { child, stdin, answers };
        let connected = kubelet.answer(REQUEST_TIMEOUT * 2);
        assert_eq!(connected["ok"], true, "the kubelet's client could not connect: {connected}");
        kubelet
    }

    fn pull(&mut self, image: &str) -> Value {
        self.ask(&format!("pull {image}"), PULL_BOUND)
    }

    fn status(&mut self, image: &str) -> Value {
        self.ask(&format!("status {image}"), REQUEST_TIMEOUT * 2)
    }

    fn ask(&mut self, request: &str, bound: Duration) -> Value {
        writeln!(self.stdin, "{request}").expect("write to kubeletclient");
        self.answer(bound)
    }

    fn answer(&mut self, bound: Duration) -> Value {
        self.answers
            .recv_timeout(bound)
            .unwrap_or_else(|e| panic!("no answer from kubeletclient within {bound:?}: {e}"))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === the lab ===

/// pullgate trusting `key` for `REGISTRY/team` and for `down/team`.
async fn pullgate_trusting(lab: &Lab, key: &CosignKey, down: &str) -> common::pullgate::Running {
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone(), down.to_owned()];
    let rule = |registry: &str| {
        format!("[[rule]]\nscope = \"{registry}/team\"\nrequire = \"signed\"\nkeys = [\"cosign.pub\"]\n")
    };
    let policy = format!("{}{}", rule(&lab.registry), rule(down));
    let pem = key.public_pem();
    common::pullgate::start_with(config, &[("cosign.pub", &pem), ("policy.toml", &policy)]).await
}

/// A registry address nothing listens on: a port the kernel just handed out, closed again.
fn registry_that_is_down() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    addr.to_string()
}

/// The config digest of `repo:v1`'s manifest: the image id containerd gives it.
fn image_id(lab: &Lab, repo: &str) -> String {
    let url = format!("http://{}/v2/{repo}/manifests/v1", lab.registry);
    let manifest = common::cosign::http_get(&url, common::front::ACCEPT_MANIFESTS, None);
    assert_eq!(manifest.status, 200, "GET {url}");
    let manifest: Value = serde_json::from_slice(&manifest.body).expect("manifest JSON");
    manifest["config"]["digest"].as_str().expect("config digest").to_owned()
}

/// A signed `team/signed:v1` and an unsigned `team/unsigned:v1` on a containerd 2.x lab.
struct Setup {
    lab: Lab,
    key: CosignKey,
    signed: String,
    unsigned: String,
    id: String,
}

fn setup() -> Setup {
    let lab = Lab::start_containerd2(false);
    let key = CosignKey::generate();
    let digest = lab.push_image("team/signed:v1", "kubelet-signed");
    key.sign(&lab.registry, "team/signed", &digest);
    lab.push_image("team/unsigned:v1", "kubelet-unsigned");
    let (signed, unsigned) = (format!("{}/team/signed:v1", lab.registry), format!("{}/team/unsigned:v1", lab.registry));
    let id = image_id(&lab, "team/signed");
    Setup { lab, key, signed, unsigned, id }
}

fn message(answer: &Value) -> &str {
    answer["message"].as_str().unwrap_or_default()
}

/// A pull the kubelet sees fail with `reason`: the bare message (UNKNOWN, code stripped by
/// cri-client) starts with the reason's name, which is what makes the kubelet classify it.
fn assert_refused_with(answer: &Value, reason: &str) {
    assert_eq!(answer["ok"], false, "pulled: {answer}");
    assert_eq!(answer["code"], "Unknown", "{answer}");
    assert!(message(answer).starts_with(&format!("{reason}: ")), "{answer}");
    assert_eq!(answer["reason"], reason, "{answer}");
}

// === tests ===

#[tokio::test(flavor = "multi_thread")]
async fn the_kubelet_pulls_signed_images_and_records_why_others_are_refused() {
    let setup = setup();
    let down = registry_that_is_down();
    let pullgate = pullgate_trusting(&setup.lab, &setup.key, &down).await;
    let mut kubelet = Kubelet::connect(&pullgate.socket);

    let pulled = kubelet.pull(&setup.signed);
    assert_eq!(pulled["ok"], true, "signed image refused: {pulled}");
    assert_eq!(pulled["image_ref"], setup.id.as_str(), "{pulled}");
    let status = kubelet.status(&setup.signed);
    assert_eq!(status["image_ref"], setup.id.as_str(), "ImageStatus after the pull: {status}");
    assert_eq!(status["repo_tags"], serde_json::json!([setup.signed]), "{status}");

    let refused = kubelet.pull(&setup.unsigned);
    assert_refused_with(&refused, "SignatureValidationFailed");
    assert!(message(&refused).contains(&setup.unsigned), "{refused}");
    let status = kubelet.status(&setup.unsigned);
    assert_eq!((&status["ok"], status.get("image_ref")), (&Value::Bool(true), None), "containerd has it: {status}");

    let unreachable = kubelet.pull(&format!("{down}/team/app:v1"));
    assert_refused_with(&unreachable, "RegistryUnavailable");
    drop(kubelet);
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn while_containerd_is_down_the_kubelet_gets_unavailable_then_the_first_call_after_works() {
    let setup = setup();
    let pullgate = pullgate_trusting(&setup.lab, &setup.key, &registry_that_is_down()).await;
    let mut kubelet = Kubelet::connect(&pullgate.socket);
    let containerd = setup.lab.containerd_sock.display().to_string();

    setup.lab.stop_containerd();
    for answer in [kubelet.pull(&setup.signed), kubelet.status(&setup.signed)] {
        assert_eq!((&answer["ok"], &answer["code"]), (&Value::Bool(false), &Value::from("Unavailable")), "{answer}");
        assert!(message(&answer).contains(&containerd), "does not name {containerd}: {answer}");
        let elapsed = Duration::from_millis(answer["elapsed_ms"].as_u64().expect("elapsed_ms"));
        assert!(
            elapsed < REQUEST_TIMEOUT,
            "took {elapsed:?}, the kubelet gives up after {REQUEST_TIMEOUT:?}: {answer}"
        );
    }

    setup.lab.start_containerd();
    let pulled = kubelet.pull(&setup.signed);
    assert_eq!(pulled["ok"], true, "first pull after containerd came back: {pulled}");
    assert_eq!(pulled["image_ref"], setup.id.as_str(), "{pulled}");
    drop(kubelet);
    pullgate.stop().await;
}
