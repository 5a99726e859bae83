//! The complete CRI schema against a real containerd (the lab's): RuntimeService calls made with
//! the typed client get the same answer through pullgate as from containerd directly — the same
//! message when containerd implements the method, the same status code and message when it does
//! not. The calls that change state (running a pod, creating, starting, stopping and removing its
//! container) are made through pullgate, and everything read back about them is compared. And
//! every ImageService call (with the newer ImageSpec fields set) works through pullgate as
//! directly, including one containerd 1.6 does not implement.

use crate::common;
use common::policy;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cosign::{self, Artifact};
use common::cri::{self, spec};
use common::lab::{Containerd, Lab};
use pullgate::cri::proto::runtime_service_client::RuntimeServiceClient;
use pullgate::cri::proto::*;
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Response, Status, Streaming};

/// How long any one call (or the opening of a stream) may take before the test fails.
const CALL: Duration = Duration::from_secs(20);

/// One call's outcome as a test can compare it: the message, or the status code and message.
type Outcome<T> = Result<T, (Code, String)>;

async fn outcome<T>(call: impl Future<Output = Result<Response<T>, Status>>) -> Outcome<T> {
    match tokio::time::timeout(CALL, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err((status.code(), status.message().to_owned())),
        Err(_) => panic!("call took longer than {CALL:?}"),
    }
}

/// Asserts that `direct` and `via` are the same answer and returns it.
fn same<T: PartialEq + Debug>(what: &str, direct: Outcome<T>, via: Outcome<T>) -> Outcome<T> {
    assert_eq!(via, direct, "{what}: through pullgate (left) differs from containerd directly (right)");
    eprintln!("{what}: {}", describe(&via));
    via
}

fn describe<T: Debug>(outcome: &Outcome<T>) -> String {
    match outcome {
        Ok(message) => {
            let text = format!("{message:?}");
            let short: String = text.chars().take(160).collect();
            if short.len() < text.len() { format!("ok {short}…") } else { format!("ok {text}") }
        }
        Err((code, message)) => format!("{code:?}: {message}"),
    }
}

/// The same call on both clients, containerd's first; yields (direct, via).
macro_rules! both {
    ($direct:expr, $via:expr, $method:ident, $request:expr) => {{
        let request = $request;
        let direct = outcome($direct.$method(request.clone())).await;
        let via = outcome($via.$method(request)).await;
        (direct, via)
    }};
}

/// A unary call made both ways, asserted equal after `normalize` (for values that change between
/// two calls, such as sampling timestamps); returns the answer through pullgate.
macro_rules! compare {
    ($direct:expr, $via:expr, $method:ident, $request:expr) => {
        compare!($direct, $via, $method, $request, |_| {})
    };
    ($direct:expr, $via:expr, $method:ident, $request:expr, $normalize:expr) => {{
        let (mut direct, mut via) = both!($direct, $via, $method, $request);
        for answer in [&mut direct, &mut via] {
            if let Ok(message) = answer {
                ($normalize)(message);
            }
        }
        same(stringify!($method), direct, via)
    }};
}

/// A stream that opened, or the status it was refused with.
type Opened<T> = Result<Streaming<T>, (Code, String)>;

fn status_of<T>(opened: &Opened<T>) -> Result<(), (Code, String)> {
    opened.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Reads a server stream to its end (the Stream* list calls end after their last batch).
async fn drain<T>(stream: &mut Streaming<T>) -> Outcome<Vec<T>> {
    let mut items = Vec::new();
    loop {
        match tokio::time::timeout(CALL, stream.message()).await.expect("stream message in time") {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return Ok(items),
            Err(status) => return Err((status.code(), status.message().to_owned())),
        }
    }
}

/// A server-streaming list call made both ways: both refused alike, or both deliver the same
/// batches (compared as one sorted list by `key`).
macro_rules! compare_stream {
    ($direct:expr, $via:expr, $method:ident, $request:expr, $items:ident, $key:expr) => {{
        let (direct, via) = both!($direct, $via, $method, $request);
        same(concat!(stringify!($method), " (open)"), status_of(&direct), status_of(&via)).ok();
        if let (Ok(mut direct), Ok(mut via)) = (direct, via) {
            let key = $key;
            let mut answers = Vec::new();
            for stream in [&mut direct, &mut via] {
                answers.push(drain(stream).await.map(|batches| {
                    let mut all = Vec::new();
                    for batch in batches {
                        all.extend(batch.$items);
                    }
                    all.sort_by_key(&key);
                    all
                }));
            }
            let (via, direct) = (answers.pop().unwrap(), answers.pop().unwrap());
            let _ = same(stringify!($method), direct, via);
        }
    }};
}

fn clients(
    lab: &Lab,
    pullgate: &common::pullgate::Running,
) -> (RuntimeServiceClient<Channel>, RuntimeServiceClient<Channel>) {
    (cri::runtime(&lab.containerd_sock), cri::runtime(&pullgate.socket))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runtime_method_answers_as_containerd_does() {
    // containerd 1.6 for now: 2.x serves GetContainerEvents but sends no response headers until
    // the first event, and tonic's client waits for them, so opening the stream hangs on either
    // side (the kubelet's grpc-go client does not wait). Moving this test to 2.x needs the
    // stream opened without waiting for headers.
    let lab = Lab::start_1_6();
    let pullgate = common::pullgate::start(&lab.containerd_sock).await;
    let (mut direct, mut via) = clients(&lab, &pullgate);

    let version = compare!(direct, via, version, VersionRequest { version: "v1".into() }).expect("Version");
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");

    let status = compare!(direct, via, status, StatusRequest { verbose: false }).expect("Status");
    let conditions: HashMap<&str, bool> = status
        .status
        .as_ref()
        .expect("runtime status")
        .conditions
        .iter()
        .map(|c| (c.r#type.as_str(), c.status))
        .collect();
    assert_eq!(conditions.get("RuntimeReady"), Some(&true), "{status:?}");
    assert!(status.info.is_empty(), "verbose=false, yet info came back: {status:?}");

    // Nothing runs in a fresh lab: the lists are empty, and equal.
    let sandboxes = compare!(direct, via, list_pod_sandbox, ListPodSandboxRequest::default()).expect("ListPodSandbox");
    assert!(sandboxes.items.is_empty(), "{sandboxes:?}");
    let containers = compare!(direct, via, list_containers, ListContainersRequest::default()).expect("ListContainers");
    assert!(containers.containers.is_empty(), "{containers:?}");
    compare!(direct, via, list_container_stats, ListContainerStatsRequest::default()).expect("ListContainerStats");
    compare!(direct, via, list_pod_sandbox_stats, ListPodSandboxStatsRequest::default()).expect("ListPodSandboxStats");

    // Calls about things that do not exist fail the same way both ways.
    let missing = "0123456789abcdef";
    let request = PodSandboxStatusRequest { pod_sandbox_id: missing.into(), verbose: true };
    assert_eq!(compare!(direct, via, pod_sandbox_status, request).unwrap_err().0, Code::NotFound);
    let request = ContainerStatusRequest { container_id: missing.into(), verbose: true };
    assert_eq!(compare!(direct, via, container_status, request).unwrap_err().0, Code::NotFound);
    // For these, whatever containerd answers (an error, or success for the idempotent ones),
    // pullgate must answer the same.
    let request = ContainerStatsRequest { container_id: missing.into() };
    compare!(direct, via, container_stats, request).ok();
    let request = PodSandboxStatsRequest { pod_sandbox_id: missing.into() };
    compare!(direct, via, pod_sandbox_stats, request).ok();
    let request = StopPodSandboxRequest { pod_sandbox_id: missing.into() };
    compare!(direct, via, stop_pod_sandbox, request).ok();
    let request = RemovePodSandboxRequest { pod_sandbox_id: missing.into() };
    compare!(direct, via, remove_pod_sandbox, request).ok();
    let request = StopContainerRequest { container_id: missing.into(), timeout: 0 };
    compare!(direct, via, stop_container, request).ok();
    let request = ExecSyncRequest { container_id: missing.into(), cmd: vec!["true".into()], timeout: 1 };
    compare!(direct, via, exec_sync, request).ok();
    let request = AttachRequest { container_id: missing.into(), stdout: true, ..Default::default() };
    compare!(direct, via, attach, request).ok();
    let request = ReopenContainerLogRequest { container_id: missing.into() };
    compare!(direct, via, reopen_container_log, request).ok();
    let request = UpdateContainerResourcesRequest { container_id: missing.into(), ..Default::default() };
    compare!(direct, via, update_container_resources, request).ok();
    let request = UpdatePodSandboxResourcesRequest { pod_sandbox_id: missing.into(), ..Default::default() };
    compare!(direct, via, update_pod_sandbox_resources, request).ok();
    let request =
        CheckpointContainerRequest { container_id: missing.into(), location: "/nonexistent".into(), timeout: 1 };
    compare!(direct, via, checkpoint_container, request).ok();
    // Pod checkpoint and restore (1.37; containerd 1.6 answers Unimplemented).
    let request = CheckpointPodRequest {
        pod_sandbox_id: missing.into(),
        output_path: "/nonexistent".into(),
        container_ids: vec![missing.into()],
        ..Default::default()
    };
    compare!(direct, via, checkpoint_pod, request).ok();
    let request = RestorePodRequest { checkpoint_path: "/nonexistent".into(), ..Default::default() };
    compare!(direct, via, restore_pod, request).ok();

    // Pushing configuration: containerd takes an empty pod CIDR as "nothing to change".
    let request = UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig { network_config: Some(NetworkConfig { pod_cidr: String::new() }) }),
    };
    compare!(direct, via, update_runtime_config, request).expect("UpdateRuntimeConfig");

    // Methods newer than containerd 1.6 (it answers Unimplemented) or that it implements: either
    // way the answers must match. None of them may fail in transport through pullgate.
    for answer in [
        compare!(direct, via, runtime_config, RuntimeConfigRequest {}).map(|_| ()),
        // containerd 2.x lists the descriptors in map order: a different order each call.
        compare!(
            direct,
            via,
            list_metric_descriptors,
            ListMetricDescriptorsRequest {},
            |m: &mut ListMetricDescriptorsResponse| { m.descriptors.sort_by(|a, b| a.name.cmp(&b.name)) }
        )
        .map(|_| ()),
        compare!(direct, via, list_pod_sandbox_metrics, ListPodSandboxMetricsRequest {}).map(|_| ()),
    ] {
        if let Err((code, message)) = answer {
            assert_eq!(code, Code::Unimplemented, "{message}");
        }
    }

    // The server-streaming list calls: refused alike, or the same items.
    compare_stream!(
        direct,
        via,
        stream_pod_sandboxes,
        StreamPodSandboxesRequest::default(),
        pod_sandboxes,
        |s: &PodSandbox| s.id.clone()
    );
    compare_stream!(direct, via, stream_containers, StreamContainersRequest::default(), containers, |c: &Container| c
        .id
        .clone());
    compare_stream!(
        direct,
        via,
        stream_container_stats,
        StreamContainerStatsRequest::default(),
        container_stats,
        |s: &ContainerStats| s.attributes.clone().unwrap_or_default().id
    );
    compare_stream!(
        direct,
        via,
        stream_pod_sandbox_stats,
        StreamPodSandboxStatsRequest::default(),
        pod_sandbox_stats,
        |s: &PodSandboxStats| s.attributes.clone().unwrap_or_default().id
    );
    compare_stream!(
        direct,
        via,
        stream_pod_sandbox_metrics,
        StreamPodSandboxMetricsRequest {},
        pod_sandbox_metrics,
        |m: &PodSandboxMetrics| m.pod_sandbox_id.clone()
    );

    // The one long-lived stream: it opens (or is refused) alike both ways, and with nothing
    // happening in the lab, neither side sends an event.
    let (events_direct, events_via) = both!(direct, via, get_container_events, GetEventsRequest {});
    same("GetContainerEvents (open)", status_of(&events_direct), status_of(&events_via)).ok();
    if let (Ok(mut events_direct), Ok(mut events_via)) = (events_direct, events_via) {
        for events in [&mut events_direct, &mut events_via] {
            let quiet = tokio::time::timeout(Duration::from_millis(500), events.message()).await;
            assert!(quiet.is_err(), "an event with nothing running: {quiet:?}");
        }
    }
    pullgate.stop().await;
}

// === A running pod ===

/// A static Linux executable that blocks in a syscall until it is killed: the pod's pause
/// process and its one container. Hand-assembled (an ELF header, one program header, a few
/// instructions), so the lab needs no image from the internet.
fn sleeper_elf() -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    let (machine, code): (u16, Vec<u8>) = (
        62,
        // loop: mov eax, 34 (pause); syscall; jmp loop
        vec![0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7],
    );
    #[cfg(target_arch = "aarch64")]
    let (machine, code): (u16, Vec<u8>) = (
        183,
        // loop: x0..x3 = 0; x8 = 73 (ppoll, no fds, no timeout); svc 0; b loop
        [0xd2800000u32, 0xd2800001, 0xd2800002, 0xd2800003, 0xd2800928, 0xd4000001, 0x17fffffa]
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect(),
    );
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let (machine, code): (u16, Vec<u8>) = panic!("no sleeper executable for this architecture");

    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let size = HEADERS + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // version
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R + X
    for word in [0, BASE, BASE, size, size, 0x1_0000u64] {
        elf.extend_from_slice(&word.to_le_bytes()); // offset, vaddr, paddr, filesz, memsz, align
    }
    elf.extend_from_slice(&code);
    assert_eq!(elf.len() as u64, size);
    elf
}

/// A ustar archive holding one executable file.
fn tar_one(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    let mut put = |offset: usize, value: &[u8]| header[offset..offset + value.len()].copy_from_slice(value);
    put(0, name.as_bytes());
    put(100, b"0000755\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", content.len()).as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().next_multiple_of(512) + 1024, 0);
    tar
}

/// An OCI image whose entrypoint is the sleeper, for this machine's platform.
fn sleeper_image() -> Artifact {
    let layer = tar_one("sleeper", &sleeper_elf());
    let architecture = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
    let config = serde_json::to_vec(&json!({
        "architecture": architecture,
        "os": "linux",
        "config": {"Entrypoint": ["/sleeper"]},
        "rootfs": {"type": "layers", "diff_ids": [cosign::sha256_digest(&layer)]},
    }))
    .expect("image config");
    let descriptor = |media_type: &str, bytes: &[u8]| {
        json!({
            "mediaType": media_type,
            "size": bytes.len(),
            "digest": cosign::sha256_digest(bytes),
        })
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": cosign::OCI_MANIFEST_MEDIA_TYPE,
        "config": descriptor(cosign::OCI_CONFIG_MEDIA_TYPE, &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    });
    Artifact {
        manifest: serde_json::to_vec(&manifest).expect("manifest"),
        media_type: cosign::OCI_MANIFEST_MEDIA_TYPE.into(),
        blobs: vec![config, layer],
    }
}

fn host_network() -> Option<NamespaceOption> {
    // Host network: the lab has no pod network to give the sandbox an address.
    Some(NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() })
}

fn sandbox_config(log_directory: &str, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "sleeper".into(),
            uid: "7f0c5a52-runtime-service".into(),
            namespace: "runtime-service".into(),
            attempt: 0,
        }),
        log_directory: log_directory.into(),
        labels: [("app".to_owned(), "sleeper".to_owned())].into(),
        annotations: [("pullgate.test/annotation".to_owned(), "kept".to_owned())].into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: host_network(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's parent cgroup, as the kubelet gives every pod one (containerd reads sandbox stats
/// from it). runc removes the pod's own cgroups with the pod; this removes the parent after, and
/// after a failed test (when the lab's shims are gone but the pod's processes are not) first
/// kills what is left in it: only this test's processes are in there.
struct CgroupParent(String);

impl CgroupParent {
    fn new() -> CgroupParent {
        CgroupParent(format!("/pullgate-test-{}", std::process::id()))
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries.map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let name = self.0.trim_start_matches('/');
        let root = Path::new("/sys/fs/cgroup");
        // cgroup v1 has one hierarchy per directory under /sys/fs/cgroup, v2 just the one.
        let mut parents: Vec<PathBuf> = subdirs(root).iter().map(|h| h.join(name)).collect();
        parents.push(root.join(name));
        parents.retain(|p| p.is_dir());
        let leftovers: BTreeSet<String> = parents
            .iter()
            .flat_map(|p| subdirs(p))
            .flat_map(|leaf| {
                std::fs::read_to_string(leaf.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        if !leftovers.is_empty() {
            eprintln!("killing the pod's leftover processes {leftovers:?}");
            let _ = std::process::Command::new("kill").arg("-KILL").args(&leftovers).status();
        }
        for _ in 0..50 {
            for parent in &parents {
                subdirs(parent).iter().for_each(|leaf| drop(std::fs::remove_dir(leaf)));
                let _ = std::fs::remove_dir(parent);
            }
            if parents.iter().all(|p| !p.exists()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove the test's cgroups {parents:?}");
    }
}

/// Zeroes what is sampled anew on every call (timestamps and usage figures), keeping which
/// figures are present: two stats calls a few milliseconds apart may differ in those alone.
fn sampled_container(stats: &mut ContainerStats) {
    if let Some(cpu) = &mut stats.cpu {
        *cpu = CpuUsage {
            usage_core_nano_seconds: cpu.usage_core_nano_seconds.as_ref().map(|_| UInt64Value::default()),
            usage_nano_cores: cpu.usage_nano_cores.as_ref().map(|_| UInt64Value::default()),
            psi: cpu.psi.as_ref().map(|_| PsiStats::default()),
            ..Default::default()
        };
    }
    if let Some(memory) = &mut stats.memory {
        *memory = MemoryUsage {
            working_set_bytes: memory.working_set_bytes.as_ref().map(|_| UInt64Value::default()),
            available_bytes: memory.available_bytes.as_ref().map(|_| UInt64Value::default()),
            usage_bytes: memory.usage_bytes.as_ref().map(|_| UInt64Value::default()),
            rss_bytes: memory.rss_bytes.as_ref().map(|_| UInt64Value::default()),
            page_faults: memory.page_faults.as_ref().map(|_| UInt64Value::default()),
            major_page_faults: memory.major_page_faults.as_ref().map(|_| UInt64Value::default()),
            psi: memory.psi.as_ref().map(|_| PsiStats::default()),
            ..Default::default()
        };
    }
    if let Some(layer) = &mut stats.writable_layer {
        layer.timestamp = 0;
        layer.used_bytes = layer.used_bytes.as_ref().map(|_| UInt64Value::default());
        layer.inodes_used = layer.inodes_used.as_ref().map(|_| UInt64Value::default());
    }
    stats.swap = stats.swap.as_ref().map(|_| SwapUsage::default());
    stats.io = stats.io.as_ref().map(|_| IoUsage::default());
}

fn sampled_sandbox(stats: &mut PodSandboxStats) {
    if let Some(linux) = &mut stats.linux {
        let containers = std::mem::take(&mut linux.containers);
        *linux = LinuxPodSandboxStats {
            cpu: linux.cpu.as_ref().map(|_| CpuUsage::default()),
            memory: linux.memory.as_ref().map(|_| MemoryUsage::default()),
            network: linux.network.as_ref().map(|_| NetworkUsage::default()),
            process: linux.process.as_ref().map(|_| ProcessUsage::default()),
            io: linux.io.as_ref().map(|_| IoUsage::default()),
            containers,
        };
        linux.containers.iter_mut().for_each(sampled_container);
        linux
            .containers
            .sort_by(|a, b| a.attributes.as_ref().map(|a| &a.id).cmp(&b.attributes.as_ref().map(|b| &b.id)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_pod_looks_the_same_both_ways() {
    let cgroup_parent = CgroupParent::new();
    // The lab's containerd restricts sandboxes' oom_score_adj, so this runs without
    // CAP_SYS_RESOURCE (see tests/lab/lab.sh). containerd 1.6 for now, for the event stream's
    // sake (see every_runtime_method_answers_as_containerd_does).
    let lab = Lab::start_1_6();
    // The lab's containerd takes its sandbox (pause) image from here.
    let image = format!("{}/pullgate-lab/pause:lab", lab.registry);
    cosign::push_artifact_http(&lab.registry, "pullgate-lab/pause", "lab", &sleeper_image(), None);
    let pullgate = common::pullgate::start(&lab.containerd_sock).await;
    let (mut direct, mut via) = clients(&lab, &pullgate);

    // Watch events from before anything happens: through pullgate only, as the kubelet would (a
    // runtime may hand each event to one subscriber). The first test compares the opening with
    // containerd's own.
    let events = outcome(via.get_container_events(GetEventsRequest {})).await;

    // The kubelet's sequence, through pullgate: pull, run the sandbox, create and start a container.
    let pulled = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, Some("runtime-service"))).await;
    let image_ref = pulled.expect("PullImage through pullgate").into_inner().image_ref;
    let log_directory = lab.dir.path().join("pods/sleeper");
    std::fs::create_dir_all(&log_directory).expect("log directory");
    let config = sandbox_config(log_directory.to_str().expect("utf-8 path"), &cgroup_parent.0);
    let run = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    let sandbox_id = match outcome(via.run_pod_sandbox(run)).await {
        Ok(response) => response.pod_sandbox_id,
        Err(error) => panic!("RunPodSandbox: {error:?}\n{}", lab.logs()),
    };
    let container_config = ContainerConfig {
        metadata: Some(ContainerMetadata { name: "sleeper".into(), attempt: 0 }),
        image: spec(&image_ref),
        log_path: "sleeper/0.log".into(),
        labels: [("role".to_owned(), "sleeper".to_owned())].into(),
        annotations: [("pullgate.test/container".to_owned(), "kept".to_owned())].into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: host_network(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let create = CreateContainerRequest {
        pod_sandbox_id: sandbox_id.clone(),
        config: Some(container_config),
        sandbox_config: Some(config),
    };
    let container_id = match outcome(via.create_container(create)).await {
        Ok(response) => response.container_id,
        Err(error) => panic!("CreateContainer: {error:?}\n{}", lab.logs()),
    };
    if let Err(error) = outcome(via.start_container(StartContainerRequest { container_id: container_id.clone() })).await
    {
        panic!("StartContainer: {error:?}\n{}", lab.logs());
    }

    // Lists, statuses and stats of what runs now: the same both ways, and really about it.
    let sandboxes = compare!(direct, via, list_pod_sandbox, ListPodSandboxRequest::default()).expect("ListPodSandbox");
    let [sandbox] = &sandboxes.items[..] else { panic!("one sandbox: {sandboxes:?}") };
    assert_eq!((sandbox.id.as_str(), sandbox.state()), (sandbox_id.as_str(), PodSandboxState::SandboxReady));
    assert_eq!(sandbox.labels.get("app").map(String::as_str), Some("sleeper"));
    let filter = ContainerFilter {
        pod_sandbox_id: sandbox_id.clone(),
        state: Some(ContainerStateValue { state: ContainerState::ContainerRunning as i32 }),
        label_selector: [("role".to_owned(), "sleeper".to_owned())].into(),
        ..Default::default()
    };
    let request = ListContainersRequest { filter: Some(filter) };
    let containers = compare!(direct, via, list_containers, request).expect("ListContainers");
    let [container] = &containers.containers[..] else { panic!("one running container: {containers:?}") };
    assert_eq!(container.id, container_id);
    assert_eq!(container.image_ref, image_ref);

    let request = PodSandboxStatusRequest { pod_sandbox_id: sandbox_id.clone(), verbose: true };
    let status = compare!(direct, via, pod_sandbox_status, request).expect("PodSandboxStatus");
    let sandbox_status = status.status.as_ref().expect("sandbox status");
    assert_eq!(sandbox_status.metadata.as_ref().map(|m| m.namespace.as_str()), Some("runtime-service"));
    let namespaces = sandbox_status.linux.as_ref().and_then(|l| l.namespaces.as_ref()).and_then(|n| n.options.as_ref());
    assert_eq!(namespaces.map(|o| o.network()), Some(NamespaceMode::Node), "{sandbox_status:?}");
    assert!(status.info.contains_key("info"), "verbose sandbox status has info: {:?}", status.info.keys());

    let request = ContainerStatusRequest { container_id: container_id.clone(), verbose: false };
    let status = compare!(direct, via, container_status, request).expect("ContainerStatus");
    let container_status = status.status.as_ref().expect("container status");
    assert_eq!(container_status.state(), ContainerState::ContainerRunning);
    assert!(container_status.started_at > 0, "{container_status:?}");
    assert_eq!(container_status.annotations.get("pullgate.test/container").map(String::as_str), Some("kept"));

    let request = ContainerStatsRequest { container_id: container_id.clone() };
    let stats = compare!(direct, via, container_stats, request, |r: &mut ContainerStatsResponse| r
        .stats
        .iter_mut()
        .for_each(sampled_container))
    .expect("ContainerStats");
    assert_eq!(stats.stats.and_then(|s| s.attributes).map(|a| a.id), Some(container_id.clone()));
    let stats = compare!(
        direct,
        via,
        list_container_stats,
        ListContainerStatsRequest::default(),
        |r: &mut ListContainerStatsResponse| r.stats.iter_mut().for_each(sampled_container)
    )
    .expect("ListContainerStats");
    assert_eq!(stats.stats.len(), 1, "{stats:?}");

    let request = PodSandboxStatsRequest { pod_sandbox_id: sandbox_id.clone() };
    let normalize = |r: &mut PodSandboxStatsResponse| r.stats.iter_mut().for_each(sampled_sandbox);
    let stats = compare!(direct, via, pod_sandbox_stats, request, normalize).expect("PodSandboxStats");
    let stats = stats.stats.expect("sandbox stats");
    assert_eq!(stats.attributes.as_ref().map(|a| a.id.as_str()), Some(sandbox_id.as_str()));
    let linux = stats.linux.as_ref().expect("linux sandbox stats");
    assert!(linux.cpu.is_some() && linux.memory.is_some(), "{stats:?}");
    assert_eq!(linux.containers.len(), 1, "{stats:?}");
    let normalize = |r: &mut ListPodSandboxStatsResponse| r.stats.iter_mut().for_each(sampled_sandbox);
    let request = ListPodSandboxStatsRequest::default();
    let stats = compare!(direct, via, list_pod_sandbox_stats, request, normalize).expect("ListPodSandboxStats");
    assert_eq!(stats.stats.len(), 1, "{stats:?}");

    // Streaming endpoints come back as URLs of containerd's streaming server; each call mints a
    // fresh token, so compare everything but the token.
    let request = ExecRequest {
        container_id: container_id.clone(),
        cmd: vec!["/sleeper".into()],
        stdout: true,
        ..Default::default()
    };
    let url_base = |url: &str| url.rsplit_once('/').map(|(base, _)| base.to_owned()).unwrap_or_default();
    let (exec_direct, exec_via) = both!(direct, via, exec, request);
    same("Exec", exec_direct.map(|r| url_base(&r.url)), exec_via.map(|r| url_base(&r.url))).expect("Exec");
    let request = PortForwardRequest { pod_sandbox_id: sandbox_id.clone(), port: vec![80] };
    let (forward_direct, forward_via) = both!(direct, via, port_forward, request);
    same("PortForward", forward_direct.map(|r| url_base(&r.url)), forward_via.map(|r| url_base(&r.url)))
        .expect("PortForward");

    // Stop and remove, through pullgate.
    let stop = StopContainerRequest { container_id: container_id.clone(), timeout: 0 };
    outcome(via.stop_container(stop)).await.expect("StopContainer");
    let request = ContainerStatusRequest { container_id: container_id.clone(), verbose: false };
    let status = compare!(direct, via, container_status, request).expect("ContainerStatus after stop");
    assert_eq!(status.status.map(|s| s.state()), Some(ContainerState::ContainerExited));
    outcome(via.remove_container(RemoveContainerRequest { container_id: container_id.clone() }))
        .await
        .expect("RemoveContainer");
    outcome(via.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: sandbox_id.clone() }))
        .await
        .expect("StopPodSandbox");
    outcome(via.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sandbox_id.clone() }))
        .await
        .expect("RemovePodSandbox");
    let sandboxes = compare!(direct, via, list_pod_sandbox, ListPodSandboxRequest::default()).expect("ListPodSandbox");
    assert!(sandboxes.items.is_empty(), "{sandboxes:?}");

    // containerd 1.6 has no event stream; a runtime that has one sent the container's life.
    match events {
        Ok(mut events) => {
            let mut kinds = Vec::new();
            while let Ok(Ok(Some(event))) = tokio::time::timeout(Duration::from_secs(2), events.message()).await {
                // Sandbox events may come too; the container's four must, in order.
                if event.container_id == container_id {
                    kinds.push(event.container_event_type());
                }
            }
            let expected = [
                ContainerEventType::ContainerCreatedEvent,
                ContainerEventType::ContainerStartedEvent,
                ContainerEventType::ContainerStoppedEvent,
                ContainerEventType::ContainerDeletedEvent,
            ];
            assert_eq!(kinds, expected);
        }
        Err((code, message)) => assert_eq!(code, Code::Unimplemented, "GetContainerEvents: {message}"),
    }
    pullgate.stop().await;
}

// === ImageService with the newer ImageSpec fields ===

#[tokio::test(flavor = "multi_thread")]
async fn image_calls_with_newer_image_spec_fields_pass_through() {
    let lab = Lab::start();
    lab.push_image("runtime-service/newer:v1", "runtime-service-newer");
    let image = format!("{}/runtime-service/newer:v1", lab.registry);
    let pullgate = common::pullgate::start(&lab.containerd_sock).await;
    let mut direct = cri::images(&lab.containerd_sock);
    let mut via = cri::images(&pullgate.socket);

    // Every ImageSpec field set, including ones newer than containerd 1.6 (it skips what it does
    // not know): the answers must be containerd's own, and the pull must survive pullgate's
    // rewrite of the image name to the digest it resolved.
    let full_spec = |image: &str, image_ref: &str| ImageSpec {
        image: image.to_owned(),
        annotations: [("io.kubernetes.cri.pullgate-test".to_owned(), "annotated".to_owned())].into(),
        user_specified_image: image.to_owned(),
        runtime_handler: "runc".into(),
        image_ref: image_ref.to_owned(),
    };
    let pull = PullImageRequest {
        image: Some(full_spec(&image, "")),
        auth: Some(AuthConfig::default()),
        sandbox_config: Some(sandbox_config("/var/log/pods/unused", "")),
    };
    let pulled_via = outcome(via.pull_image(pull.clone())).await.expect("PullImage through pullgate");
    let pulled_direct = outcome(direct.pull_image(pull)).await.expect("PullImage directly");
    assert_eq!(pulled_via, pulled_direct);
    assert!(pulled_via.image_ref.starts_with("sha256:"), "{pulled_via:?}");

    for name in [image.clone(), pulled_via.image_ref.clone(), format!("{}/runtime-service/absent:v1", lab.registry)] {
        let request = ImageStatusRequest { image: Some(full_spec(&name, &pulled_via.image_ref)), verbose: true };
        let status = compare!(direct, via, image_status, request).expect("ImageStatus");
        assert_eq!(status.image.is_some(), !name.contains("absent"), "ImageStatus of {name}: {status:?}");
    }
    let status = compare!(direct, via, image_status, ImageStatusRequest { image: spec(&image), verbose: false })
        .expect("ImageStatus");
    assert_eq!(status.image.as_ref().map(|i| i.id.as_str()), Some(pulled_via.image_ref.as_str()));

    let request =
        ListImagesRequest { filter: Some(ImageFilter { image: Some(full_spec(&image, &pulled_via.image_ref)) }) };
    let listed = compare!(direct, via, list_images, request).expect("ListImages with a filter");
    assert_eq!(listed.images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), [pulled_via.image_ref.as_str()]);

    let request = StreamImagesRequest { filter: Some(ImageFilter { image: Some(full_spec(&image, "")) }) };
    compare_stream!(direct, via, stream_images, request, images, |i: &Image| i.id.clone());
    // StreamImages is Unimplemented on containerd 1.6 and served by 2.x; a method no CRI has is
    // Unimplemented on both. The relay passes containerd's own answer back, code and message, as
    // it would for any method pullgate does not know, even for an empty request body.
    for (path, unimplemented) in [
        ("/runtime.v1.ImageService/StreamImages", lab.containerd == Containerd::V1_6),
        ("/runtime.v1.ImageService/NoSuchMethod", true),
    ] {
        let raw_via = common::raw::call(&pullgate.socket, path, common::raw::frame(b""), &[]).await;
        let raw_direct = common::raw::call(&lab.containerd_sock, path, common::raw::frame(b""), &[]).await;
        assert_eq!(raw_via.grpc_status() == Some("12"), unimplemented, "{path}: {raw_via:?}");
        assert_eq!(
            (raw_via.grpc_status(), raw_via.grpc_message()),
            (raw_direct.grpc_status(), raw_direct.grpc_message()),
            "{path}"
        );
    }

    let listed = compare!(direct, via, list_images, ListImagesRequest::default()).expect("ListImages");
    assert_eq!(listed.images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), [pulled_via.image_ref.as_str()]);
    // The timestamps say when containerd sampled usage; everything else must agree.
    let unstamped = |info: &mut ImageFsInfoResponse| {
        info.image_filesystems.iter_mut().chain(&mut info.container_filesystems).for_each(|usage| usage.timestamp = 0)
    };
    let usage = compare!(direct, via, image_fs_info, ImageFsInfoRequest {}, unstamped).expect("ImageFsInfo");
    assert!(!usage.image_filesystems.is_empty(), "{usage:?}");

    let remove = RemoveImageRequest { image: Some(full_spec(&image, &pulled_via.image_ref)) };
    compare!(direct, via, remove_image, remove).expect("RemoveImage (idempotent)");
    let listed = compare!(direct, via, list_images, ListImagesRequest::default()).expect("ListImages");
    assert!(listed.images.is_empty(), "{listed:?}");
    pullgate.stop().await;
}

/// The same full request under a `signed` rule, so pullgate rewrites it: containerd pulls the
/// verified digest, never resolves the tag itself (counted at a front it pulls through), accepts
/// the rewritten request with every other field, and stores the tag pointed at that digest.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_pull_request_under_a_signed_rule_is_stored_pinned() {
    let lab = Lab::start();
    let front = common::front::Front::start(&lab.registry);
    front.trust_in(&lab);
    let key = cosign::CosignKey::generate();
    let digest = cosign::push_signed(&lab, &key, &front.addr(), "runtime-service/signed:v1", "runtime-service-signed");
    let mut config = pullgate::config::Config { upstream: lab.containerd_sock.clone(), ..Default::default() };
    config.registry.insecure = vec![front.addr()];
    let policy = policy::signed(&format!("{}/runtime-service", front.addr()), &["a.pub"]);
    let pem = key.public_pem();
    let pullgate = common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", &policy)]).await;

    let image = format!("{}/runtime-service/signed:v1", front.addr());
    let pull = PullImageRequest {
        image: Some(ImageSpec {
            image: image.clone(),
            annotations: [("io.kubernetes.cri.pullgate-test".to_owned(), "annotated".to_owned())].into(),
            user_specified_image: image.clone(),
            runtime_handler: "runc".into(),
            image_ref: String::new(),
        }),
        auth: Some(AuthConfig::default()),
        sandbox_config: Some(sandbox_config("/var/log/pods/unused", "")),
    };
    let pulled = outcome(cri::images(&pullgate.socket).pull_image(pull)).await.expect("PullImage through pullgate");

    let (verified_digest, verified_config) =
        common::store::verified(&lab.registry, "runtime-service/signed", "v1").await;
    assert_eq!(verified_digest, digest);
    assert_eq!(pulled.image_ref, verified_config, "PullImage answered another image");
    let resolved = front.count(|s| s.is_containerd() && s.path == "/v2/runtime-service/signed/manifests/v1");
    assert_eq!(resolved, 0, "containerd resolved the tag itself: the request was not rewritten");
    common::store::assert_pinned(&lab, &image, &verified_digest, &verified_config).await;
    pullgate.stop().await;
}
