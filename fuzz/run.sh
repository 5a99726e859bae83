#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a short while each, on the stable toolchain.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     default: 30 s each, every target in fuzz/Cargo.toml
#
# cargo-fuzz is installed, pinned, into a cache directory of its own the first time:
#   FUZZ_CACHE   where (default /var/cache/pullgate-fuzz): cargo-fuzz-VERSION/bin/cargo-fuzz
# The corpus of each target grows in fuzz/corpus/<target>/, a failure is written to
# fuzz/artifacts/<target>/ and makes this script fail (see docs/fuzzing.md).
set -euo pipefail

# Pinned: a new cargo-fuzz may change its flags or the libFuzzer it builds.
CARGO_FUZZ_VERSION=0.13.2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${FUZZ_CACHE:-/var/cache/pullgate-fuzz}/cargo-fuzz-$CARGO_FUZZ_VERSION"

seconds="${1:-30}"
shift || true
if (($# == 0)); then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' "$HERE/Cargo.toml" | grep -vx pullgate-fuzz)
else
    targets=("$@")
fi

if [[ ! -x "$CACHE/bin/cargo-fuzz" ]]; then
    echo "fuzz/run.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $CACHE" >&2
    cargo install cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --locked --root "$CACHE"
fi
export PATH="$CACHE/bin:$PATH"

cd "$HERE"
# No sanitizer (`-s none`): pullgate forbids `unsafe`, and so it builds on stable. Each run
# builds its target first; the dependencies are built once for all.
for target in "${targets[@]}"; do
    echo "fuzz/run.sh: $target for ${seconds}s" >&2
    cargo fuzz run -s none "$target" -- -max_total_time="$seconds" -max_len=4096
done
