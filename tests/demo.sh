#!/usr/bin/env bash
# pullgate in one minute: a private registry and containerd on 127.0.0.1, two images (one
# signed with a freshly generated key, one not), a one-rule policy, and pullgate in front of
# containerd. Both images are pulled THROUGH pullgate, as the kubelet would: the signed one is
# pulled (pinned to the digest pullgate verified), the unsigned one is refused.
#
#   bash tests/demo.sh        (as root, on Debian 12; needs a Rust toolchain for the build)
#
# Everything lives under one temp dir and is torn down on exit, whatever happens. The host's
# containerd is never touched. Exit status 0 only if the outcome is exactly: signed image
# pulled, unsigned image refused with "SignatureValidationFailed...".
#
# Knob: DEMO_KEEP=1 leaves the temp dir (logs, keys, policy) behind after stopping the daemons.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB="$ROOT/tests/lab"
cd "$ROOT"
# Debian's python3 (it has python3-cryptography); a pyenv python3 earlier on PATH may not.
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=python3; fi
# pullgate reads PULLGATE_* variables as configuration: one left in the caller's shell (say
# PULLGATE_UPSTREAM) must not point the demo at the host's containerd.
for v in $(compgen -e); do if [[ "$v" == PULLGATE_* ]]; then unset "$v"; fi; done

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
bash "$LAB/lab.sh" install >"$WORK/install.log" 2>&1 || { show_log "$WORK/install.log"; fail "installing the lab packages failed"; }
if ! "$PY" -c 'import cryptography' 2>/dev/null; then
    { DEBIAN_FRONTEND=noninteractive apt-get install -y python3-cryptography ||
        { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-cryptography; }
    } >>"$WORK/install.log" 2>&1 || { show_log "$WORK/install.log"; fail "installing python3-cryptography failed"; }
fi
say "containerd $(containerd --version | awk '{print $3}'), docker-registry, skopeo, python3-cryptography: ok"
command -v cargo >/dev/null ||
    fail "cargo not found: pullgate needs a recent stable Rust (Debian's rustc is too old); see https://rustup.rs"

# -------------------------------------------------------------------- build --
section "Building pullgate and the demo CRI client (cargo build --release)"
build_t0=$SECONDS
cargo build --quiet --release --locked --bins --examples || fail "cargo build failed"
PULLGATE="$ROOT/target/release/pullgate"
CRI="$ROOT/target/release/examples/cri"
say "target/release/pullgate, target/release/examples/cri ($((SECONDS - build_t0))s)"
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
say "containerd  $CONTAINERD_SOCK"

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
"$PY" "$LAB/cosign_sign.py" keygen "$WORK/keys"
"$PY" "$LAB/cosign_sign.py" sign --key "$WORK/keys/demo.key" --registry "$REGISTRY" --repo demo \
    --digest "$SIGNED_DIGEST" >/dev/null 2>>"$WORK/sign.log" || { show_log "$WORK/sign.log"; fail "signing failed"; }
# An independent check of what was pushed, so a refusal below can't be blamed on the signer.
"$PY" "$LAB/cosign_sign.py" verify --key "$WORK/keys/demo.pub" --registry "$REGISTRY" --repo demo \
    --digest "$SIGNED_DIGEST" >/dev/null 2>>"$WORK/sign.log" || { show_log "$WORK/sign.log"; fail "the pushed signature does not verify"; }
say "$SIGNED    $SIGNED_DIGEST"
sig_hex="${SIGNED_DIGEST#sha256:}"
say "  signed with keys/demo.key -> $REGISTRY/demo:sha256-${sig_hex:0:12}….sig"
say "$UNSIGNED  $UNSIGNED_DIGEST"
say "  no signature"

# ------------------------------------------------------------------- policy --
section "Writing a policy and starting pullgate in front of containerd"
mkdir -p "$WORK/policy.d"
# The policy holds only the public key; the private one stays in keys/.
cp "$WORK/keys/demo.pub" "$WORK/policy.d/demo.pub"
cat >"$WORK/policy.d/demo.toml" <<EOF
# Everything in $REGISTRY/demo must carry a cosign signature by demo.pub.
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
ready=0
for ((i = 0; i < 100; i++)); do
    kill -0 "$PULLGATE_PID" 2>/dev/null || break
    if [[ -S "$WORK/pullgate.sock" ]] && "$CRI" list --socket "$WORK/pullgate.sock" --timeout 2 >/dev/null 2>&1; then
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
section "Pulling both images through pullgate"
problems=()

echo "  \$ cri pull --socket pullgate.sock $SIGNED"
if ref="$("$CRI" pull --socket "$WORK/pullgate.sock" "$SIGNED" 2>"$WORK/pull-signed.err")"; then
    echo "    ${green}PULLED${off}  $ref"
    # Ask containerd itself (not through pullgate) which manifest it fetched.
    if "$CRI" status --socket "$CONTAINERD_SOCK" "$ref" 2>/dev/null | grep -qxF "  digest  $REGISTRY/demo@$SIGNED_DIGEST"; then
        say "containerd holds $REGISTRY/demo@${SIGNED_DIGEST:0:19}…, the digest pullgate verified"
    else
        problems+=("containerd does not list $REGISTRY/demo@$SIGNED_DIGEST for the signed pull")
    fi
else
    echo "    ${red}REFUSED${off} $(cat "$WORK/pull-signed.err")"
    problems+=("the signed image was refused")
fi

echo
echo "  \$ cri pull --socket pullgate.sock $UNSIGNED"
if ref="$("$CRI" pull --socket "$WORK/pullgate.sock" "$UNSIGNED" 2>"$WORK/pull-unsigned.err")"; then
    echo "    ${red}PULLED${off}  $ref"
    problems+=("the unsigned image was pulled")
else
    err="$(cat "$WORK/pull-unsigned.err")"
    echo "    ${green}REFUSED${off} (this is what the kubelet sees):"
    echo "      ${err//$'\n'/$'\n'      }"
    if [[ "$err" != "UNKNOWN: SignatureValidationFailed"* ]]; then
        problems+=("the refusal is not gRPC UNKNOWN with a message starting SignatureValidationFailed")
    fi
fi
if "$CRI" status --socket "$CONTAINERD_SOCK" "$REGISTRY/demo@$UNSIGNED_DIGEST" >/dev/null 2>&1; then
    problems+=("containerd has the unsigned image anyway")
fi

echo
if ((${#problems[@]})); then
    show_log "$WORK/pullgate.log"
    for p in "${problems[@]}"; do echo "  - $p" >&2; done
    fail "unexpected outcome"
fi
echo "${green}${bold}OK${off}: signed image pulled, unsigned image refused ($((SECONDS - T0))s after the build)."
