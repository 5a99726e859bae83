#!/usr/bin/env bash
# Hermetic test lab for pullgate: a private containerd (CRI plugin on) and one
# or two docker-registry instances, all under one directory and on 127.0.0.1.
#
#   lab.sh install   (Debian packages, then the peers built with Go; prints PEER_BIN=DIR)
#   lab.sh start DIR [--auth USER:PASS]
#   lab.sh start-auth-registry DIR USER PASS
#   lab.sh start-tls-registry DIR   (HTTPS with a lab CA: DIR/tls-registry/tls/ca.pem)
#   lab.sh start-mtls-registry DIR  (the same, requiring a client certificate from a second lab
#          CA: DIR/mtls-registry/tls/client.pem, client-key.pem; serves the lab registry's storage)
#   lab.sh stop DIR
#   lab.sh containerd-stop DIR
#   lab.sh containerd-start DIR
#   lab.sh push-image DIR REGISTRY_HOSTPORT NAME:TAG SEED [--creds USER:PASS] [--layer-bytes N]
#          [--index | --docker]   (an OCI image index / Docker schema2 media types; see mkimage.py)
#
# Nothing here touches the host's containerd (/run/containerd, /var/lib/containerd,
# /etc/containerd) and nothing reaches past loopback. State lives in DIR/lab.env
# (KEY=value lines); `stop` only signals the pids recorded there, after checking
# that each one's command line still names DIR (guards against pid reuse).
#
# Environment knobs:
#   LAB_TIMEOUT     seconds to wait for each daemon to become ready (default 20)
#   LAB_SNAPSHOTTER force "overlayfs" or "native" instead of probing
#   LAB_OWNER_PID   if set, a watchdog tears the lab down once that pid exits
#                   (tests/it/common/lab.rs passes the test process, so a crashed or
#                   killed test binary still leaves no daemons behind)
#   LAB_IMAGE_ARCH  architecture written into pushed images (default: the host's,
#                   i.e. amd64 on x86_64), so containerd's CRI can actually pull them
#   LAB_CONTAINERD  which containerd `start` runs: "1.6" (Debian's, the default) or
#                   "2" (the 2.x release `install` built, see CONTAINERD2_VERSION)
#   LAB_LOCAL_PULL  with LAB_CONTAINERD=2: "1" sets use_local_image_pull = true (the
#                   client-side pull of 1.x); otherwise 2.x pulls CRI images through
#                   its transfer service, its default since 2.1
#   LAB_CACHE       where `install` keeps the peers it builds (default
#                   /var/cache/pullgate-lab); bin/NAME beside bin/NAME.version
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
TIMEOUT="${LAB_TIMEOUT:-20}"

# Use Debian's python3 when present: its 3.11 still ships `crypt` (needed for
# bcrypt htpasswd lines); a pyenv/other python3 earlier on PATH may not.
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=python3; fi

die() { echo "lab.sh: $*" >&2; exit 1; }
log() { echo "lab.sh: $*" >&2; }
usage() { sed -n '2,14p' "$SELF" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ---------------------------------------------------------------- processes --

# True while PID exists and is not a zombie. `kill -0` alone is not enough: a
# daemon that died while still our child stays a zombie until reaped.
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"        # drop "pid (comm) ", comm may contain spaces
    [[ -n "$stat" && "${stat%% *}" != Z ]]
}

# True when PID's command line contains NEEDLE (a path under DIR), i.e. the pid
# still belongs to this lab and was not recycled for something else.
ours() {
    local pid="$1" needle="$2" cmdline
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    [[ "$cmdline" == *"$needle"* ]]
}

# TERM, wait up to $3 seconds, then KILL. Only if the pid is still ours.
# With GROUP=1 the whole process group is signalled (the watchdog is a setsid
# session leader and may have a `sleep` child).
terminate() {
    local pid="$1" needle="$2" grace="${3:-5}" target i
    ours "$pid" "$needle" || return 0
    target="$pid"
    if [[ "${GROUP:-0}" == 1 && "$(ps_pgid "$pid")" == "$pid" ]]; then target="-$pid"; fi
    kill -TERM -- "$target" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "pid $pid did not exit after SIGTERM within ${grace}s; sending SIGKILL"
    kill -KILL -- "$target" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "pid $pid survived SIGKILL"
    return 1
}

# Pids whose command line contains NEEDLE (a /proc scan: procps may be absent).
# One grep over all cmdlines for the path part (cheap), then an exact check.
pids_matching() {
    local f pid
    for f in $(grep -lsaF -- "${2:-$1}" /proc/[0-9]*/cmdline 2>/dev/null || true); do
        pid="${f#/proc/}"; pid="${pid%/cmdline}"
        if ours "$pid" "$1"; then echo "$pid"; fi
    done
}

ps_pgid() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"
    echo "$stat" | cut -d' ' -f3
}

# Start a daemon detached: own session (no terminal signals from the caller),
# stdin from /dev/null and stdout/stderr to LOG. The redirections matter: the
# Rust helper reads lab.sh's stdout to EOF, so a daemon that inherited that pipe
# would make it hang forever. `exec setsid` inside the subshell keeps $! equal
# to the daemon's own pid (setsid only forks when already a group leader).
spawn() {
    local logfile="$1"; shift
    (exec setsid "$@" </dev/null >>"$logfile" 2>&1) &
    SPAWNED_PID=$!
}

# Poll CHECK (a command) every 0.1s until it succeeds (return 0), PID dies
# (return 1) or TIMEOUT seconds pass (return 2).
wait_ready() {
    local pid="$1"; shift
    local deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        alive "$pid" || return 1
        sleep 0.1
    done
    "$@" >/dev/null 2>&1 && return 0
    return 2
}

# Seconds since T0 (an $EPOCHREALTIME value), with 2 decimals.
elapsed() {
    local now=$EPOCHREALTIME
    awk -v a="${1/,/.}" -v b="${now/,/.}" 'BEGIN { printf "%.2f", b - a }'
}

tail_log() {
    # A daemon's fatal line may come before pages of plugin loading: show those first.
    echo "----- errors in $1 -----" >&2
    grep -E 'level=(fatal|error|panic)|^panic:' "$1" 2>/dev/null | tail -n 10 >&2 || true
    echo "----- last lines of $1 -----" >&2
    tail -n "${2:-40}" "$1" >&2 2>/dev/null || echo "(no log)" >&2
    echo "-----" >&2
}

# ------------------------------------------------------------------ lab.env --

env_get() {  # env_get KEY -> value or empty
    [[ -f "$DIR/lab.env" ]] || return 0
    sed -n "s/^$1=//p" "$DIR/lab.env" | tail -n 1
}

env_set() {  # env_set KEY VALUE (atomic rewrite, keeps key order)
    local tmp="$DIR/lab.env.tmp.$$"
    if [[ -f "$DIR/lab.env" ]] && grep -q "^$1=" "$DIR/lab.env"; then
        sed "s|^$1=.*|$1=$2|" "$DIR/lab.env" >"$tmp"
    else
        { [[ -f "$DIR/lab.env" ]] && cat "$DIR/lab.env"; echo "$1=$2"; } >"$tmp"
    fi
    mv -f "$tmp" "$DIR/lab.env"
}

set_dir() {
    [[ -n "${1:-}" ]] || usage
    mkdir -p "$1"
    DIR="$(cd "$1" && pwd -P)"
    # labutil.py finds a TLS registry's CA under DIR/certs.d.
    export LAB_DIR="$DIR"
    SOCK="$DIR/containerd.sock"
    CTR_CFG="$DIR/containerd/config.toml"
    CTR_LOG="$DIR/containerd/containerd.log"
}

# ----------------------------------------------------------------- install --

cmd_install() {
    # python3-cryptography: labutil.py's tls-cert (the TLS registry's lab CA).
    local pkgs=(containerd docker-registry skopeo python3 python3-cryptography) missing=() p
    for p in "${pkgs[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "install: all present (${pkgs[*]})"
    else
        [[ "$(id -u)" == 0 ]] || die "install: need root to apt-get install ${missing[*]}"
        log "install: installing ${missing[*]}"
        # Serialise concurrent installs (several test binaries may call this).
        exec 9>/var/lock/pullgate-lab-install.lock
        flock 9
        export DEBIAN_FRONTEND=noninteractive
        # apt's chatter goes to stderr: callers parse our stdout.
        apt-get update >&2
        apt-get install -y "${pkgs[@]}" >&2
        exec 9>&-
    fi
    # Debian's package may start a system containerd via systemd; that is fine,
    # the lab never uses /run/containerd. Sanity-check what the lab relies on.
    local c
    for c in containerd ctr docker-registry skopeo setsid flock; do
        command -v "$c" >/dev/null || die "install: '$c' not found after install"
    done
    # grpcio for the test that drives pullgate as grpc C-core clients do, for the python3
    # on PATH: PyPI's, since Debian's (1.51) does not yet send C-core's percent-encoded
    # :authority. Not fatal here: only that test needs it, and it fails loudly without.
    if ! python3 -c 'import grpc' 2>/dev/null; then
        log "install: installing grpcio for $(command -v python3)"
        python3 -m pip install --quiet grpcio >&2 ||
            python3 -m pip install --quiet --break-system-packages grpcio >&2 ||
            log "install: could not install grpcio; tests/it/hostile_clients.rs's grpcio test will fail"
    fi
    # bcrypt for htpasswd: Debian 12's python3.11 `crypt` does it. A python
    # without `crypt` (3.13+) falls back to apache2-utils' htpasswd binary.
    if ! "$PY" "$HERE/labutil.py" htpasswd probe probe >/dev/null 2>&1; then
        log "install: $PY cannot make bcrypt hashes; installing apache2-utils (htpasswd)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y apache2-utils >&2 ||
            { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y apache2-utils >&2; }
        "$PY" "$HERE/labutil.py" htpasswd probe probe >/dev/null ||
            die "install: still cannot make bcrypt htpasswd lines"
    fi
    install_peers
}

# ------------------------------------------------------------------- peers --

# The real tools of the field, pinned: tests drive pullgate with them instead of with code
# of our own. Each is the newest release the Go module proxy served when pinned; moving a
# pin is a one-line change here (the cache notices the new version and rebuilds).
CONTAINERD2_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
COSIGN_VERSION=v3.1.3
PEER_CACHE="${LAB_CACHE:-/var/cache/pullgate-lab}"
PEER_BIN="$PEER_CACHE/bin"

# The Go toolchain: on PATH, else where the official tarball installs it.
go_tool() {
    if command -v go >/dev/null; then command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go
    else return 1
    fi
}

# go_build NAME PACKAGE@VERSION [go build flags...]
# Builds PACKAGE@VERSION into $PEER_BIN/NAME unless NAME.version already records exactly
# that package, version and flags. The binary is built aside and renamed into place, so an
# interrupted build never leaves a half-written NAME behind a matching stamp.
go_build() {
    local name="$1" pkg="$2" stamp; shift 2
    stamp="$pkg $*"
    if [[ -x "$PEER_BIN/$name" && "$(cat "$PEER_BIN/$name.version" 2>/dev/null)" == "$stamp" ]]; then
        return 0
    fi
    local go t0=$EPOCHREALTIME gobin
    go="$(go_tool)" || die "install: Go is needed to build $name (https://go.dev/dl/; or /usr/local/go)"
    gobin="$(mktemp -d "$PEER_CACHE/build.XXXXXX")"
    log "install: building $name from $pkg (a few minutes on a fresh machine)"
    # No cgo: a static binary that needs no C headers (btrfs, devmapper), and none of the
    # snapshotters that need them is of use to the lab. -trimpath and -s -w: smaller, and
    # no paths of the build machine inside. Module and build caches are Go's own
    # ($GOMODCACHE, $GOCACHE) and survive between runs like this one.
    if ! (cd "$gobin" && GOBIN="$gobin" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
        nice -n 10 "$go" install -trimpath "$@" "$pkg" >&2); then
        rm -rf "$gobin"
        die "install: building $name from $pkg failed"
    fi
    mv -f "$gobin/$(basename "${pkg%@*}")" "$PEER_BIN/$name"
    rm -rf "$gobin"
    echo "$stamp" >"$PEER_BIN/$name.version"
    log "install: built $name in $(elapsed "$t0")s"
}

install_peers() {
    mkdir -p "$PEER_BIN"
    # Several test binaries run `install` at once: one builds, the others wait for it.
    exec 8>"$PEER_CACHE/.lock"
    flock 8
    local ctrd=github.com/containerd/containerd/v2
    local ctrd_flags=(-tags "no_btrfs no_devmapper no_zfs"
        -ldflags "-s -w -X $ctrd/version.Version=$CONTAINERD2_VERSION")
    # Named containerd2/ctr2: never mistaken for Debian's containerd/ctr 1.6 on PATH.
    go_build containerd2 "$ctrd/cmd/containerd@$CONTAINERD2_VERSION" "${ctrd_flags[@]}"
    go_build ctr2 "$ctrd/cmd/ctr@$CONTAINERD2_VERSION" "${ctrd_flags[@]}"
    go_build crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" \
        -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
    # (cosign reads its version from the module's build info; no -X needed.)
    go_build cosign "github.com/sigstore/cosign/v3/cmd/cosign@$COSIGN_VERSION" -ldflags "-s -w"
    exec 8>&-
    log "install: peers in $PEER_BIN: containerd $CONTAINERD2_VERSION, crictl $CRICTL_VERSION, cosign $COSIGN_VERSION"
    # The one line on stdout: where the tests find the peers.
    echo "PEER_BIN=$PEER_BIN"
}

# -------------------------------------------------------------- registries --

# start_registry NAME [USER PASS [tls]] -> sets REG_ADDR, REG_PID
# Picks a free port, writes DIR/NAME/config.yml and starts docker-registry.
# The port can be stolen between probing and binding, so retry a few times.
# With "tls" it serves HTTPS with a certificate for 127.0.0.1 from a lab CA; with "mtls" it
# also requires a client certificate, and serves the storage of the registry named "registry"
# (read-only use: images are pushed there, over plain HTTP).
start_registry() {
    local name="$1" user="${2:-}" pass="${3:-}" tls="${4:-}" rdir="$DIR/$1" port attempt rc
    local data="$rdir/data"
    mkdir -p "$data"
    local tls_yaml=""
    if [[ "$tls" == tls || "$tls" == mtls ]]; then
        "$PY" "$HERE/labutil.py" tls-cert "$rdir/tls" || return 1
        tls_yaml="  tls:
    certificate: $rdir/tls/cert.pem
    key: $rdir/tls/key.pem"
    fi
    if [[ "$tls" == mtls ]]; then
        data="$DIR/registry/data"
        tls_yaml="$tls_yaml
    clientcas:
      - $rdir/tls/client-ca.pem"
    fi
    local auth_yaml=""
    if [[ -n "$user" ]]; then
        "$PY" "$HERE/labutil.py" htpasswd "$user" "$pass" >"$rdir/htpasswd" || return 1
        auth_yaml="auth:
  htpasswd:
    realm: pullgate-lab
    path: $rdir/htpasswd"
    fi
    for attempt in 1 2 3 4 5; do
        port="$("$PY" "$HERE/labutil.py" free-port)"
        cat >"$rdir/config.yml" <<EOF
# Generated by tests/lab/lab.sh -- docker-registry (distribution 2.x) for tests.
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $data
  delete:
    enabled: true
  maintenance:
    # No background upload purging: a test lab lives for seconds.
    uploadpurging:
      enabled: false
http:
  # Loopback only, plain HTTP (containerd is told so via certs.d/hosts.toml).
  addr: 127.0.0.1:$port
  # Fixed secret: avoids the "no secret set, generating random" warning.
  secret: pullgate-lab-not-a-secret
$tls_yaml
$auth_yaml
EOF
        spawn "$rdir/registry.log" docker-registry serve "$rdir/config.yml"
        REG_PID="$SPAWNED_PID"
        REG_ADDR="127.0.0.1:$port"
        if [[ "$tls" == tls || "$tls" == mtls ]]; then
            # Before the readiness probe: labutil.py speaks HTTPS to hosts with a CA here,
            # and presents the client certificate found beside it.
            mkdir -p "$DIR/certs.d/$REG_ADDR"
            cp "$rdir/tls/ca.pem" "$DIR/certs.d/$REG_ADDR/ca.pem"
        fi
        if [[ "$tls" == mtls ]]; then
            cp "$rdir/tls/client.pem" "$rdir/tls/client-key.pem" "$DIR/certs.d/$REG_ADDR/"
        fi
        rc=0
        wait_ready "$REG_PID" "$PY" "$HERE/labutil.py" registry-ready "$REG_ADDR" || rc=$?
        if ((rc == 0)); then
            write_hosts_toml "$REG_ADDR" "$tls"
            return 0
        fi
        if ((rc == 1)) && grep -q "address already in use" "$rdir/registry.log"; then
            log "$name: port $port was taken, retrying ($attempt/5)"
            continue
        fi
        terminate "$REG_PID" "$rdir/config.yml" 2 || true
        if ((rc == 1)); then
            log "$name (docker-registry) exited during startup"
        else
            log "$name (docker-registry) did not answer GET http://$REG_ADDR/v2/ within ${TIMEOUT}s"
        fi
        tail_log "$rdir/registry.log"
        return 1
    done
    log "$name: no free port after 5 attempts"
    tail_log "$rdir/registry.log"
    return 1
}

# containerd's CRI resolves registries through DIR/certs.d/<host>/hosts.toml
# (config_path below). Declaring the server as http:// is what makes it talk
# plain HTTP to the lab registry instead of trying HTTPS first.
write_hosts_toml() {
    local host="$1"
    mkdir -p "$DIR/certs.d/$host"
    if [[ "${2:-}" == mtls ]]; then
        cat >"$DIR/certs.d/$host/hosts.toml" <<EOF
# Generated by tests/lab/lab.sh: lab registry, HTTPS on loopback requiring a client certificate.
server = "https://$host"

[host."https://$host"]
  capabilities = ["pull", "resolve"]
  ca = "$DIR/certs.d/$host/ca.pem"
  client = [["$DIR/certs.d/$host/client.pem", "$DIR/certs.d/$host/client-key.pem"]]
EOF
        return
    fi
    if [[ "${2:-}" == tls ]]; then
        cat >"$DIR/certs.d/$host/hosts.toml" <<EOF
# Generated by tests/lab/lab.sh: lab registry, HTTPS on loopback with the lab CA.
server = "https://$host"

[host."https://$host"]
  capabilities = ["pull", "resolve", "push"]
  ca = "$DIR/certs.d/$host/ca.pem"
EOF
        return
    fi
    cat >"$DIR/certs.d/$host/hosts.toml" <<EOF
# Generated by tests/lab/lab.sh: lab registry, plain HTTP on loopback.
server = "http://$host"

[host."http://$host"]
  capabilities = ["pull", "resolve", "push"]
EOF
}

# --------------------------------------------------------------- containerd --

# Pick a snapshotter that works here. overlayfs is what production uses, but
# it cannot work when DIR sits on a filesystem that can't be an overlay upper
# dir (overlayfs itself, as in docker-in-docker CI, some FUSE/9p mounts) or
# when mounting is not permitted. So try a real overlay mount inside DIR and
# fall back to `native` (plain directory copies, no mounts at all) if it fails.
# On this project's Debian 12 VM (ext4 /tmp, full root) overlayfs works.
pick_snapshotter() {
    if [[ -n "${LAB_SNAPSHOTTER:-}" ]]; then echo "$LAB_SNAPSHOTTER"; return; fi
    local p="$DIR/containerd/overlay-probe" ok=native
    mkdir -p "$p/lower" "$p/upper" "$p/work" "$p/merged"
    echo probe >"$p/lower/f"
    if mount -t overlay overlay \
        -o "lowerdir=$p/lower,upperdir=$p/upper,workdir=$p/work" "$p/merged" 2>/dev/null; then
        [[ "$(cat "$p/merged/f" 2>/dev/null)" == probe ]] && ok=overlayfs
        umount "$p/merged" 2>/dev/null || umount -l "$p/merged" 2>/dev/null || true
    fi
    rm -rf "$p"
    echo "$ok"
}

# The directories and the loopback CNI network both containerd versions use.
write_containerd_dirs() {
    local c="$DIR/containerd"
    mkdir -p "$c/root" "$c/state" "$c/opt" "$c/tmp" "$c/cni" "$DIR/certs.d"
    # A loopback-only CNI network so the CRI runtime status reports
    # NetworkReady=true (otherwise it logs "no network config found" and
    # reports NetworkReady=false). Image service calls don't need it; it just
    # keeps Status() honest and the log clean. No bridges, no host networking.
    cat >"$c/cni/10-lab-loopback.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "pullgate-lab-lo",
  "plugins": [ { "type": "loopback" } ]
}
EOF
}

# Debian's containerd 1.6 (config version 2).
write_containerd_config() {
    local snapshotter="$1" sandbox_image="$2" c="$DIR/containerd"
    write_containerd_dirs
    cat >"$CTR_CFG" <<EOF
# Generated by tests/lab/lab.sh -- private containerd for pullgate tests.
version = 2
root = "$c/root"
state = "$c/state"
# Fail fast (containerd exits) instead of running without CRI if the CRI
# plugin cannot initialise: the tests are pointless without it.
required_plugins = ["io.containerd.grpc.v1.cri"]
# Snapshotters that cannot work here: btrfs/zfs need such a filesystem,
# devmapper needs a thin pool, aufs is not in modern kernels. They would only
# add "skip"/error noise to the log (and Debian's build lacks some anyway).
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

# No debug socket, no metrics listener: nothing besides the two sockets above.
[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  # Default is /opt/containerd (shared with the host); keep it private.
  [plugins."io.containerd.internal.v1.opt"]
    path = "$c/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    # Never pulled by the image-service tests, but point it at the lab
    # registry anyway so no code path can reach the internet for a pause image.
    sandbox_image = "$sandbox_image"
    # Sandboxes otherwise get an oom_score_adj of -998, which takes CAP_SYS_RESOURCE to set;
    # machines (and CI sandboxes) without it would fail every RunPodSandbox.
    restrict_oom_score_adj = true
    # The CRI streaming server (exec/attach/port-forward) listens on TCP:
    # pinned to loopback and a kernel-chosen port (1.6's defaults, spelled out
    # so two labs never collide and nothing listens beyond 127.0.0.1).
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    # Default too; no SELinux on Debian. The CRI plugin needed no other
    # sandbox tweaks (cgroups/apparmor/oom) to initialise: those only matter
    # once containers run, and these tests only use the image service.
    enable_selinux = false

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$snapshotter"
      default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$c/cni"

    [plugins."io.containerd.grpc.v1.cri".registry]
      # Per-registry hosts.toml files; see write_hosts_toml.
      config_path = "$DIR/certs.d"
EOF
}

# containerd 2.x (config version 3): the 1.6 settings above, in the plugins 2.x split the
# CRI into (cri.v1.images, cri.v1.runtime, grpc.v1.cri), plus how CRI pulls run. Version 3
# is what every 2.x reads; 2.4 migrates it in memory to its version 4 (one warning line).
write_containerd2_config() {
    local snapshotter="$1" sandbox_image="$2" local_pull="$3" c="$DIR/containerd"
    write_containerd_dirs
    cat >"$CTR_CFG" <<EOF
# Generated by tests/lab/lab.sh -- private containerd 2.x for pullgate tests.
version = 3
root = "$c/root"
state = "$c/state"
required_plugins = ["io.containerd.grpc.v1.cri"]
# As for 1.6 (the binary is built without btrfs/devmapper/zfs anyway); erofs needs its
# own filesystem support, and its differ would compete with the walking one for unpacks.
disabled_plugins = [
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.differ.v1.erofs",
]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

# debug: the CRI logs which way it pulled ("using transfer service" / "using client.Pull()")
# at debug level only, and the tests check that each mode really took its way.
[debug]
  address = ""
  level = "debug"

[metrics]
  address = ""

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = "$c/opt"

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "$snapshotter"
    # false: CRI pulls go through the transfer service (2.x's default since 2.1);
    # true: the client-side pull 1.x does. The lab tests pullgate in front of both.
    use_local_image_pull = $local_pull

    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "$sandbox_image"

    [plugins.'io.containerd.cri.v1.images'.registry]
      # Per-registry hosts.toml files (see write_hosts_toml); both pull paths read them.
      config_path = "$DIR/certs.d"

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    restrict_oom_score_adj = true

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "$c/cni"

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"

  # NRI listens on one socket for the whole host (/var/run/nri/nri.sock): two labs starting at
  # once collided on it and one containerd exited. The lab runs no NRI plugins.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true

  # Where transfer-service pulls unpack: the lab's snapshotter, with the default differ.
  # (The built-in default names overlayfs, which the lab may not be able to use.)
  [plugins.'io.containerd.transfer.v1.local']
    config_path = "$DIR/certs.d"

    [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
      platform = "linux/$(host_arch)"
      snapshotter = "$snapshotter"
      differ = "walking"
EOF
}

# run_containerd -> sets CONTAINERD_PID; waits until it serves gRPC and CRI.
run_containerd() {
    [[ -f "$CTR_CFG" ]] || die "no containerd config in $DIR (did 'lab.sh start' run?)"
    local offset rc=0
    # Remember where this run's log output starts (the log is appended across
    # containerd-stop/containerd-start) so readiness checks only see this run.
    offset=$(($(stat -c %s "$CTR_LOG" 2>/dev/null || echo 0) + 1))
    # containerd does temporary mounts (layer unpack) under $XDG_RUNTIME_DIR,
    # else $TMPDIR: keep those under DIR too.
    local containerd ctr
    containerd="$(env_get CONTAINERD_BIN)"; ctr="$(env_get CTR_BIN)"
    [[ -n "$containerd" && -n "$ctr" ]] || die "lab.env names no containerd binary"
    spawn "$CTR_LOG" env TMPDIR="$DIR/containerd/tmp" XDG_RUNTIME_DIR="$DIR/containerd/tmp" \
        "$containerd" --config "$CTR_CFG"
    CONTAINERD_PID="$SPAWNED_PID"
    # Ready = the gRPC socket answers AND the CRI service has finished its
    # startup (it answers "server is not initialized yet" until then; the
    # "Start streaming server" line is logged right before it flips to ready).
    containerd_ready() {
        # (Check the socket first: ctr would otherwise keep re-dialling a
        # missing socket until its connect timeout.)
        [[ -S "$SOCK" ]] &&
            timeout 5 "$ctr" --connect-timeout 1s --address "$SOCK" version &&
            tail -c +"$offset" "$CTR_LOG" | grep -q "Start streaming server"
    }
    wait_ready "$CONTAINERD_PID" containerd_ready || rc=$?
    if ((rc != 0)); then
        if ((rc == 1)); then
            log "containerd exited during startup"
        else
            log "containerd did not become ready on $SOCK within ${TIMEOUT}s"
        fi
        terminate "$CONTAINERD_PID" "$CTR_CFG" 5 || true
        tail_log "$CTR_LOG"
        return 1
    fi
    local cri
    cri="$(timeout 5 "$ctr" --connect-timeout 1s --address "$SOCK" plugins ls | awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" {print $NF}')"
    if [[ "$cri" != ok ]]; then
        log "containerd's CRI plugin status is '${cri:-missing}', expected 'ok'"
        terminate "$CONTAINERD_PID" "$CTR_CFG" 5 || true
        tail_log "$CTR_LOG"
        return 1
    fi
}

# ---------------------------------------------------------------- commands --

# write_config_for WHICH SNAPSHOTTER SANDBOX_IMAGE: the config of the containerd LAB_CONTAINERD
# names, and (in lab.env) the binaries that serve it, so containerd-start runs the same one.
write_config_for() {
    local which="$1" snapshotter="$2" sandbox_image="$3"
    case "$which" in
        1.6)
            write_containerd_config "$snapshotter" "$sandbox_image"
            env_set CONTAINERD_BIN "$(command -v containerd)"
            env_set CTR_BIN "$(command -v ctr)"
            env_set CONTAINERD_VERSION "containerd $(containerd --version | awk '{print $3}')"
            ;;
        2)
            [[ -x "$PEER_BIN/containerd2" && -x "$PEER_BIN/ctr2" ]] ||
                die "no containerd 2.x in $PEER_BIN (run lab.sh install)"
            local local_pull=false mode=transfer
            if [[ "${LAB_LOCAL_PULL:-0}" == 1 ]]; then local_pull=true; mode=local; fi
            write_containerd2_config "$snapshotter" "$sandbox_image" "$local_pull"
            env_set CONTAINERD_BIN "$PEER_BIN/containerd2"
            env_set CTR_BIN "$PEER_BIN/ctr2"
            env_set CONTAINERD_VERSION "containerd $CONTAINERD2_VERSION, $mode pulls"
            ;;
        *) die "LAB_CONTAINERD must be 1.6 or 2, not '$which'" ;;
    esac
}

cmd_start() {
    set_dir "${1:-}"; shift || true
    local auth=""
    while (($#)); do
        case "$1" in
            --auth) auth="${2:?--auth needs USER:PASS}"; shift 2 ;;
            *) usage ;;
        esac
    done
    [[ -z "$auth" || "$auth" == *:* ]] || die "--auth expects USER:PASS"
    [[ "$(id -u)" == 0 ]] || die "start: containerd needs root"
    if [[ -f "$DIR/lab.env" ]] && alive "$(env_get CONTAINERD_PID)" 2>/dev/null; then
        die "a lab is already running in $DIR (lab.sh stop $DIR first)"
    fi
    # Unix socket paths are limited to 107 bytes (sun_path).
    ((${#SOCK} + 6 < 108)) || die "DIR too long for a unix socket path: $SOCK.ttrpc"

    local t0=$EPOCHREALTIME
    rm -f "$DIR/lab.env"
    env_set LAB_DIR "$DIR"
    # Whatever fails from here on, tear down what was already started.
    trap 'rc=$?; if ((rc != 0)); then log "start failed; cleaning up"; do_stop >/dev/null 2>&1 || true; fi' EXIT

    start_registry registry
    env_set REGISTRY "$REG_ADDR"
    env_set REGISTRY_PID "$REG_PID"
    env_set REGISTRY_LOG "$DIR/registry/registry.log"

    if [[ -n "$auth" ]]; then
        start_auth_registry "${auth%%:*}" "${auth#*:}"
    fi

    local snapshotter
    snapshotter="$(pick_snapshotter)"
    write_config_for "${LAB_CONTAINERD:-1.6}" "$snapshotter" "$REG_ADDR/pullgate-lab/pause:lab"
    env_set CONTAINERD_SOCK "$SOCK"
    env_set CONTAINERD_LOG "$CTR_LOG"
    env_set SNAPSHOTTER "$snapshotter"
    run_containerd
    env_set CONTAINERD_PID "$CONTAINERD_PID"

    if [[ -n "${LAB_OWNER_PID:-}" ]]; then
        spawn "$DIR/watchdog.log" bash "$SELF" __watchdog "$DIR" "$LAB_OWNER_PID"
        env_set WATCHDOG_PID "$SPAWNED_PID"
    fi
    trap - EXIT
    log "lab up in $(elapsed "$t0")s ($(env_get CONTAINERD_VERSION), $snapshotter snapshotter)"
    cat "$DIR/lab.env"
}

start_auth_registry() {
    start_registry auth-registry "$1" "$2"
    env_set AUTH_REGISTRY "$REG_ADDR"
    env_set AUTH_REGISTRY_PID "$REG_PID"
    env_set AUTH_REGISTRY_LOG "$DIR/auth-registry/registry.log"
}

cmd_start_auth_registry() {
    set_dir "${1:-}"
    (($# == 3)) || usage
    [[ -f "$DIR/lab.env" ]] || die "no lab in $DIR (run lab.sh start first)"
    if ours "$(env_get AUTH_REGISTRY_PID)" "$DIR/auth-registry/config.yml"; then
        die "auth registry already running in $DIR"
    fi
    start_auth_registry "$2" "$3"
    # containerd re-reads certs.d on every pull: no restart needed.
    cat "$DIR/lab.env"
}

cmd_start_tls_registry() {
    set_dir "${1:-}"
    (($# == 1)) || usage
    [[ -f "$DIR/lab.env" ]] || die "no lab in $DIR (run lab.sh start first)"
    if ours "$(env_get TLS_REGISTRY_PID)" "$DIR/tls-registry/config.yml"; then
        die "TLS registry already running in $DIR"
    fi
    start_registry tls-registry "" "" tls || die "cannot start the TLS registry"
    env_set TLS_REGISTRY "$REG_ADDR"
    env_set TLS_REGISTRY_PID "$REG_PID"
    env_set TLS_REGISTRY_CA "$DIR/tls-registry/tls/ca.pem"
    env_set TLS_REGISTRY_LOG "$DIR/tls-registry/registry.log"
    cat "$DIR/lab.env"
}

cmd_start_mtls_registry() {
    set_dir "${1:-}"
    (($# == 1)) || usage
    [[ -f "$DIR/lab.env" ]] || die "no lab in $DIR (run lab.sh start first)"
    if ours "$(env_get MTLS_REGISTRY_PID)" "$DIR/mtls-registry/config.yml"; then
        die "mTLS registry already running in $DIR"
    fi
    start_registry mtls-registry "" "" mtls || die "cannot start the mTLS registry"
    env_set MTLS_REGISTRY "$REG_ADDR"
    env_set MTLS_REGISTRY_PID "$REG_PID"
    env_set MTLS_REGISTRY_DIR "$DIR/mtls-registry/tls"
    env_set MTLS_REGISTRY_LOG "$DIR/mtls-registry/registry.log"
}

# Stop everything recorded in lab.env, then unmount anything left under DIR.
do_stop() {
    local self_pid="${WATCHDOG_SELF:-}" pid
    pid="$(env_get WATCHDOG_PID)"
    if [[ -n "$pid" && "$pid" != "$self_pid" ]]; then
        GROUP=1 terminate "$pid" "__watchdog $DIR" 2 || true
    fi
    # containerd first, so it stops pulling from the registries.
    terminate "$(env_get CONTAINERD_PID)" "$CTR_CFG" 10 || true
    # Shims exist only if a test ran a pod/container; they are started by this
    # lab's containerd and name its socket in their command line.
    # (Leading space: must not match a client's "--address $SOCK".)
    for pid in $(pids_matching " -address $SOCK" "$SOCK"); do
        terminate "$pid" " -address $SOCK" 5 || true
    done
    terminate "$(env_get REGISTRY_PID)" "$DIR/registry/config.yml" 5 || true
    terminate "$(env_get AUTH_REGISTRY_PID)" "$DIR/auth-registry/config.yml" 5 || true
    terminate "$(env_get TLS_REGISTRY_PID)" "$DIR/tls-registry/config.yml" 5 || true
    terminate "$(env_get MTLS_REGISTRY_PID)" "$DIR/mtls-registry/config.yml" 5 || true
    unmount_under_dir
    if [[ -f "$DIR/lab.env" ]]; then mv -f "$DIR/lab.env" "$DIR/lab.env.stopped"; fi
}

# Snapshot/unpack mounts live under DIR (root, and TMPDIR for temp mounts).
# Unmount deepest first; fall back to a lazy unmount so that deleting DIR
# afterwards never descends into a still-mounted filesystem.
unmount_under_dir() {
    local m
    # Field 5 of mountinfo is the mount point (octal-escaped, e.g. \040).
    awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo |
        awk '{print length, $0}' | sort -rn | cut -d' ' -f2- |
        while read -r m; do
            m="$(printf '%b' "$m")"
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
        done
}

cmd_stop() {
    set_dir "${1:-}"
    do_stop
    local left
    left="$(awk -v d="$DIR/" 'index($5, d) == 1' /proc/self/mountinfo)"
    [[ -z "$left" ]] || die "mounts left under $DIR: $left"
    log "lab in $DIR stopped"
}

cmd_containerd_stop() {
    set_dir "${1:-}"
    [[ -f "$DIR/lab.env" ]] || die "no lab in $DIR"
    terminate "$(env_get CONTAINERD_PID)" "$CTR_CFG" 10 || die "could not stop containerd"
    env_set CONTAINERD_PID ""
    log "containerd stopped (socket $SOCK)"
}

cmd_containerd_start() {
    set_dir "${1:-}"
    [[ -f "$DIR/lab.env" ]] || die "no lab in $DIR"
    if ours "$(env_get CONTAINERD_PID)" "$CTR_CFG"; then die "containerd already running in $DIR"; fi
    local t0=$EPOCHREALTIME
    run_containerd
    env_set CONTAINERD_PID "$CONTAINERD_PID"
    log "containerd restarted in $(elapsed "$t0")s (pid $CONTAINERD_PID)"
}

host_arch() {
    case "$(uname -m)" in
        x86_64) echo amd64 ;;
        aarch64) echo arm64 ;;
        *) uname -m ;;
    esac
}

cmd_push_image() {
    set_dir "${1:-}"
    (($# >= 4)) || usage
    local registry="$2" ref="$3" seed="$4" creds="" layer_bytes=0 kind=() all=() src=oci
    shift 4
    while (($#)); do
        case "$1" in
            --creds) creds="${2:?--creds needs USER:PASS}"; shift 2 ;;
            --layer-bytes) layer_bytes="${2:?}"; shift 2 ;;
            # --all: copy the index and every manifest in it, not just the host's.
            --index) kind+=(--index); all=(--all); shift ;;
            --docker) kind+=(--docker); src=dir; shift ;;
            *) usage ;;
        esac
    done
    # NAME:TAG -- the tag is after the last ':' unless that ':' is in a path.
    local name="$ref" tag=latest
    if [[ "${ref##*/}" == *:* ]]; then name="${ref%:*}"; tag="${ref##*:}"; fi

    mkdir -p "$DIR/images" "$DIR/skopeo/tmp"
    # skopeo must not consult the host's policy/registries/auth files.
    [[ -f "$DIR/skopeo/policy.json" ]] ||
        echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$DIR/skopeo/policy.json"
    : >"$DIR/skopeo/registries.conf"
    mkdir -p "$DIR/skopeo/registries.d"

    local layout digest
    layout="$(mktemp -d "$DIR/images/layout.XXXXXX")"
    # The layout is only a staging area: drop it whether or not the push works.
    # shellcheck disable=SC2064 # expand $layout now
    trap "rm -rf '$layout'" EXIT
    digest="$("$PY" "$HERE/mkimage.py" --arch "${LAB_IMAGE_ARCH:-$(host_arch)}" \
        --layer-bytes "$layer_bytes" ${kind[@]+"${kind[@]}"} "$layout" "$tag" "$seed")"

    local args=(--policy "$DIR/skopeo/policy.json" --registries.d "$DIR/skopeo/registries.d"
        --tmpdir "$DIR/skopeo/tmp" copy --quiet --retry-times 2 ${all[@]+"${all[@]}"}
        # Push the manifest bytes as built so the digest printed below is the
        # digest the registry (and containerd) will report.
        --preserve-digests --dest-tls-verify=false
        --dest-authfile "$DIR/skopeo/auth.json")
    [[ -n "$creds" ]] && args+=(--dest-creds "$creds")
    # mkimage.py --docker writes skopeo's dir: format (oci: reads only OCI media types).
    local source="oci:$layout:$tag"
    [[ "$src" == dir ]] && source="dir:$layout"
    # skopeo's chatter goes to stderr: stdout carries only the digest.
    CONTAINERS_REGISTRIES_CONF="$DIR/skopeo/registries.conf" \
        skopeo "${args[@]}" "$source" "docker://$registry/$name:$tag" >&2 ||
        die "skopeo failed to push $registry/$name:$tag"

    "$PY" "$HERE/labutil.py" verify-manifest "$registry" "$name" "$tag" "$digest" ${creds:+"$creds"}
    echo "$digest"
}

# Internal: tear the lab down once the owner process (the test binary) is gone.
cmd_watchdog() {
    set_dir "$1"
    local owner="$2"
    while alive "$owner" && [[ -f "$DIR/lab.env" ]]; do sleep 1; done
    if [[ -f "$DIR/lab.env" ]]; then
        log "owner pid $owner is gone; stopping lab"
        WATCHDOG_SELF=$$ do_stop
    fi
}

# -------------------------------------------------------------------- main --

(($# >= 1)) || usage
cmd="$1"; shift
case "$cmd" in
    install) cmd_install ;;
    start) cmd_start "$@" ;;
    start-auth-registry) cmd_start_auth_registry "$@" ;;
    start-tls-registry) cmd_start_tls_registry "$@" ;;
    start-mtls-registry) cmd_start_mtls_registry "$@" ;;
    stop) cmd_stop "$@" ;;
    containerd-stop) cmd_containerd_stop "$@" ;;
    containerd-start) cmd_containerd_start "$@" ;;
    push-image) cmd_push_image "$@" ;;
    __watchdog) cmd_watchdog "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
