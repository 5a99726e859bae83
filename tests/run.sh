#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian packages for the lab), then runs
# every unit, integration and end-to-end test. Tests that need containerd and a registry start
# their own on loopback under a temp dir; nothing is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# pullgate reads PULLGATE_* variables as configuration, and its config tests load the process
# environment: one left in the caller's shell must not change what they see.
for v in $(compgen -e); do if [[ "$v" == PULLGATE_* ]]; then unset "$v"; fi; done

bash tests/lab/lab.sh install
command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; }
# tests/it/install.rs runs `make install` into a temp dir.
command -v make >/dev/null || { apt-get update -qq && apt-get install -y -qq make; }

# Formatting is part of the build's contract (rustfmt.toml): rustfmt is installed if missing, and
# a machine where it cannot be fails here rather than skipping the check.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo fmt --check

# The README's demo runs start to finish first, so cargo's summary is the suite's last word: on
# containerd 2.x as the README shows it, then on Debian's 1.6 as a smoke test of the older line.
bash tests/demo.sh
LAB_CONTAINERD=1.6 bash tests/demo.sh

# --lib --bins --tests: everything but the benchmarks, which are programs that print figures.
cargo test --locked --lib --bins --tests
