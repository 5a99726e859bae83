#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian packages for the lab), then runs
# every unit, integration and end-to-end test. Tests that need containerd and a registry start
# their own on loopback under a temp dir; nothing is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/lab/lab.sh install
command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; }

# --lib --bins --tests: everything but the benchmarks, which are programs that print figures.
cargo test --locked --lib --bins --tests
