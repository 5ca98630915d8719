#!/usr/bin/env bash
# Runs every gridsocket check and test. Installs what it needs first (idempotent), so it works
# on a fresh machine with only the package registries reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "core builds for the browser (sans-IO, no clock)"
cargo build -p gridsocket-core -p gridsocket-wasm --target wasm32-unknown-unknown

step "build (the end-to-end tests run the gridsocket binary)"
cargo build --workspace --bins

step "tests"
log=$(mktemp)
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")
rm -f "$log"
echo
echo "gridsocket: ${passed} passed, ${failed} failed"
exit "$status"
