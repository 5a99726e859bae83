#!/usr/bin/env bash
# pullgate in one minute: a private registry and containerd 2.x on 127.0.0.1, two images (one
# signed by `cosign` with a freshly generated key, one not), a one-rule policy, and pullgate in
# front of containerd. Both images are pulled THROUGH pullgate with `crictl`, as an operator
# (or the kubelet) would: the signed one is pulled (pinned to the digest pullgate verified),
# the unsigned one is refused.
#
#   bash tests/demo.sh        (as root, on Debian 12; needs Rust and Go toolchains for the builds)
#
# cosign, crictl and containerd 2.x are the real tools, at the versions `tests/lab/lab.sh
# install` pins and builds with Go (kept in /var/cache/pullgate-lab/bin: only a machine's first
# run spends the minutes building them).
#
# Everything lives under one temp dir and is torn down on exit, whatever happens. The host's
# containerd is never touched. Exit status 0 only if the outcome is exactly: signed image
# pulled, unsigned image refused with "SignatureValidationFailed...".
#
# Knobs: DEMO_KEEP=1 leaves the temp dir (logs, keys, policy) behind after stopping the daemons;
# LAB_CONTAINERD=1.6 runs Debian's containerd 1.6 instead of 2.x (see tests/lab/lab.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB="$ROOT/tests/lab"
cd "$ROOT"
# pullgate reads PULLGATE_* variables as configuration: one left in the caller's shell (say
# PULLGATE_UPSTREAM) must not point the demo at the host's containerd. crictl's endpoints and
# config file are given on its command line (below) for the same reason.
for v in $(compgen -e); do if [[ "$v" == PULLGATE_* ]]; then unset "$v"; fi; done
unset CONTAINER_RUNTIME_ENDPOINT IMAGE_SERVICE_ENDPOINT
export LAB_CONTAINERD="${LAB_CONTAINERD:-2}"

bold=""; dim=""; red=""; green=""; off=""
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
    bold=$'\e[1m'; dim=$'\e[2m'; red=$'\e[31m'; green=$'\e[32m'; off=$'\e[0m'
fi
STEP=0
section() { STEP=$((STEP + 1)); echo; echo "${bold}[$STEP/6] $*${off}"; }
say() { echo "      $*"; }
fail() {
    echo >&2
    echo "${red}${bold}DEMO FAILED:${off} $*" >&2
    exit 1
}
show_log() {  # show_log FILE [LINES]: the tail of a log, for failures
    [[ -f "$1" ]] || return 0
    echo "----- last lines of $1 -----" >&2
    tail -n "${2:-25}" "$1" | sed 's/\x1b\[[0-9;]*m//g' >&2
    echo "-----" >&2
}

[[ "$(id -u)" == 0 ]] || fail "run as root: containerd needs it (everything stays under a temp dir)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pullgate-demo.XXXXXX")"
PULLGATE_PID=""

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    echo
    echo "${bold}Cleaning up${off}"
    if [[ -n "$PULLGATE_PID" ]] && kill -0 "$PULLGATE_PID" 2>/dev/null; then
        kill -TERM "$PULLGATE_PID" 2>/dev/null
        for ((i = 0; i < 100; i++)); do kill -0 "$PULLGATE_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$PULLGATE_PID" 2>/dev/null; then kill -KILL "$PULLGATE_PID" 2>/dev/null; fi
        wait "$PULLGATE_PID" 2>/dev/null
        say "pullgate stopped"
    fi
    local stopped=1
    if [[ -f "$WORK/lab/lab.env" ]]; then
        if bash "$LAB/lab.sh" stop "$WORK/lab" >>"$WORK/lab.log" 2>&1; then
            say "registry and containerd stopped"
        else
            stopped=0
            show_log "$WORK/lab.log" 10
            say "could not stop the lab cleanly; left $WORK in place"
        fi
    fi
    if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
        say "kept $WORK"
    elif ((stopped)); then
        rm -rf "$WORK"
        say "removed $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "${bold}pullgate demo${off}: one signed image is pulled, one unsigned image is refused."
say "${dim}working directory: $WORK${off}"

# ------------------------------------------------------------------ install --
section "Installing what the demo needs"
say "${dim}Debian's containerd, docker-registry and skopeo; containerd 2.x, crictl and cosign built with Go${off}"
say "${dim}(a few minutes on a machine's first run; the log is $WORK/install.log)${off}"
PEER_BIN="$(bash "$LAB/lab.sh" install 2>"$WORK/install.log" | sed -n 's/^PEER_BIN=//p')" || true
[[ -n "$PEER_BIN" && -x "$PEER_BIN/crictl" && -x "$PEER_BIN/cosign" ]] ||
    { show_log "$WORK/install.log"; fail "installing the lab and its peers failed"; }
# On PATH, so that the commands shown below are the ones an operator would type.
export PATH="$PEER_BIN:$PATH"
say "$(sed -n 's/.*install: peers in [^:]*: //p' "$WORK/install.log" | tail -n 1)"
command -v cargo >/dev/null ||
    fail "cargo not found: pullgate needs a recent stable Rust (Debian's rustc is too old); see https://rustup.rs"

# -------------------------------------------------------------------- build --
section "Building pullgate (cargo build --release)"
build_t0=$SECONDS
cargo build --quiet --release --locked --bins || fail "cargo build failed"
PULLGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/pullgate"
[[ -x "$PULLGATE" ]] || fail "no pullgate binary at $PULLGATE after the build"
say "$PULLGATE ($((SECONDS - build_t0))s)"
T0=$SECONDS

# ---------------------------------------------------------------------- lab --
section "Starting a private registry and containerd on 127.0.0.1"
# LAB_OWNER_PID: should this script be killed outright, the lab's watchdog still stops it.
LAB_OWNER_PID=$$ bash "$LAB/lab.sh" start "$WORK/lab" >"$WORK/lab.log" 2>&1 ||
    { show_log "$WORK/lab.log"; fail "the lab did not start"; }
lab_get() { sed -n "s/^$1=//p" "$WORK/lab/lab.env" | tail -n 1; }
REGISTRY="$(lab_get REGISTRY)"
CONTAINERD_SOCK="$(lab_get CONTAINERD_SOCK)"
say "registry    http://$REGISTRY"
say "containerd  $CONTAINERD_SOCK ($(lab_get CONTAINERD_VERSION))"

# ------------------------------------------------------------------- images --
section "Building two images; signing one with a freshly generated key"
push() {  # push NAME:TAG SEED -> digest
    bash "$LAB/lab.sh" push-image "$WORK/lab" "$REGISTRY" "$1" "$2" 2>>"$WORK/lab.log" ||
        { show_log "$WORK/lab.log"; fail "pushing $1 failed"; }
}
SIGNED="$REGISTRY/demo:signed"
UNSIGNED="$REGISTRY/demo:unsigned"
SIGNED_DIGEST="$(push demo:signed pullgate-demo-signed)"
UNSIGNED_DIGEST="$(push demo:unsigned pullgate-demo-unsigned)"
say "$SIGNED    $SIGNED_DIGEST"
say "$UNSIGNED  $UNSIGNED_DIGEST"
# cosign in a home of its own: no docker credentials, sigstore cache or config of the host's.
# Offline: no transparency log, no Fulcio; and the signature format pullgate reads (a
# simple-signing payload under the sha256-….sig tag), which cosign v3 writes only with its
# bundle format and signing config turned off. The key's password comes from COSIGN_PASSWORD.
mkdir -p "$WORK/keys"
cosign() {
    (cd "$WORK/keys" && env -i PATH="$PATH" HOME="$WORK/keys" DOCKER_CONFIG="$WORK/keys/docker" \
        TUF_ROOT="$WORK/keys/tuf" COSIGN_PASSWORD=pullgate-demo cosign "$@")
}
sign_args=(--key cosign.key --yes --tlog-upload=false --new-bundle-format=false --use-signing-config=false
    --allow-http-registry "$REGISTRY/demo@$SIGNED_DIGEST")
echo
echo "  \$ cosign generate-key-pair"
cosign generate-key-pair >>"$WORK/sign.log" 2>&1 || { show_log "$WORK/sign.log"; fail "cosign generate-key-pair failed"; }
echo "  \$ cosign sign ${sign_args[*]}"
cosign sign "${sign_args[@]}" >>"$WORK/sign.log" 2>&1 || { show_log "$WORK/sign.log"; fail "cosign sign failed"; }
sig_hex="${SIGNED_DIGEST#sha256:}"
say "signed with keys/cosign.key -> $REGISTRY/demo:sha256-${sig_hex:0:12}….sig; $UNSIGNED has no signature"

# ------------------------------------------------------------------- policy --
section "Writing a policy and starting pullgate in front of containerd"
mkdir -p "$WORK/policy.d"
# The policy holds only the public key; the private one stays in keys/.
cp "$WORK/keys/cosign.pub" "$WORK/policy.d/demo.pub"
cat >"$WORK/policy.d/demo.toml" <<EOF
# Everything in $REGISTRY/demo must carry a cosign signature by demo.pub (keys/cosign.pub).
[[rule]]
scope = "$REGISTRY/demo"
require = "signed"
keys = ["demo.pub"]          # relative to this file
EOF
cat >"$WORK/pullgate.toml" <<EOF
listen = "$WORK/pullgate.sock"
upstream = "$CONTAINERD_SOCK"
policy_dir = "$WORK/policy.d"
shutdown_grace = "2s"

[registry]
# The lab registry speaks plain HTTP on loopback.
insecure = ["$REGISTRY"]
EOF
say "policy.d/demo.toml:"
grep -v '^#' "$WORK/policy.d/demo.toml" | sed 's/^/        /'

# setpriv --pdeathsig: pullgate gets SIGTERM if this script dies without running its trap.
DEATHSIG=()
if command -v setpriv >/dev/null && setpriv --pdeathsig TERM true 2>/dev/null; then DEATHSIG=(setpriv --pdeathsig TERM); fi
NO_COLOR=1 "${DEATHSIG[@]}" "$PULLGATE" serve --config "$WORK/pullgate.toml" </dev/null >"$WORK/pullgate.log" 2>&1 &
PULLGATE_PID=$!
# No crictl.yaml of the host's: an empty one of the demo's (crictl reads $CRI_CONFIG_FILE).
: >"$WORK/crictl.yaml"
export CRI_CONFIG_FILE="$WORK/crictl.yaml"
crictl_at() {  # crictl_at SOCKET ARGS...: crictl against that socket's image service
    local socket="$1"; shift
    crictl --image-endpoint "unix://$socket" "$@"
}
ready=0
for ((i = 0; i < 100; i++)); do
    kill -0 "$PULLGATE_PID" 2>/dev/null || break
    if [[ -S "$WORK/pullgate.sock" ]] && crictl_at "$WORK/pullgate.sock" --timeout 2s images >/dev/null 2>&1; then
        ready=1; break
    fi
    sleep 0.1
done
if ((!ready)); then
    show_log "$WORK/pullgate.log"
    kill -0 "$PULLGATE_PID" 2>/dev/null || fail "pullgate exited at startup (see its log above)"
    fail "pullgate did not answer on $WORK/pullgate.sock within 10s"
fi
say "pullgate (pid $PULLGATE_PID) serving on $WORK/pullgate.sock"

# -------------------------------------------------------------------- pulls --
section "Pulling both images through pullgate with crictl"
problems=()

echo "  \$ crictl --image-endpoint unix://$WORK/pullgate.sock pull $SIGNED"
if out="$(crictl_at "$WORK/pullgate.sock" pull "$SIGNED" 2>&1)"; then
    echo "    ${green}PULLED${off}  ${out//$'\n'/$'\n'            }"
else
    echo "    ${red}REFUSED${off} ${out//$'\n'/$'\n'      }"
    problems+=("the signed image was refused")
fi

echo
echo "  \$ crictl --image-endpoint unix://$WORK/pullgate.sock pull $UNSIGNED"
if out="$(crictl_at "$WORK/pullgate.sock" pull "$UNSIGNED" 2>&1)"; then
    echo "    ${red}PULLED${off}  $out"
    problems+=("the unsigned image was pulled")
else
    echo "    ${green}REFUSED${off} (crictl pulls with k8s.io/cri-client, as the kubelet does: this is what it sees):"
    echo "      ${out//$'\n'/$'\n'      }"
    # The kubelet records the reason SignatureValidationFailed only for an UNKNOWN status whose
    # message starts with that word (see tests/it/kubelet_client.rs).
    if [[ "$out" != *"code = Unknown desc = SignatureValidationFailed: "* ]]; then
        problems+=("the refusal is not gRPC UNKNOWN with a message starting SignatureValidationFailed")
    fi
fi

# Ask containerd itself (not through pullgate) what it holds: the signed image by the digest
# pullgate verified, and nothing of the unsigned one.
echo
if held="$(crictl_at "$CONTAINERD_SOCK" images --output json 2>&1)"; then
    if [[ "$held" == *"\"$REGISTRY/demo@$SIGNED_DIGEST\""* ]]; then
        say "containerd holds $REGISTRY/demo@${SIGNED_DIGEST:0:19}…, the digest pullgate verified"
    else
        problems+=("containerd does not list $REGISTRY/demo@$SIGNED_DIGEST for the signed pull")
    fi
    if [[ "$held" == *"$UNSIGNED_DIGEST"* ]]; then
        problems+=("containerd has the unsigned image anyway")
    fi
else
    problems+=("crictl could not list containerd's images: $held")
fi
echo
if ((${#problems[@]})); then
    show_log "$WORK/pullgate.log"
    for p in "${problems[@]}"; do echo "  - $p" >&2; done
    fail "unexpected outcome"
fi
echo "${green}${bold}OK${off}: signed image pulled, unsigned image refused ($((SECONDS - T0))s after the build)."
