#!/usr/bin/env bash
# Builds the `gridsocket` JavaScript package into wasm-client/pkg (and a tarball with --pack).
# Installs what it needs: the wasm target and wasm-bindgen-cli at the crate's exact version.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
WBG=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WBG" ]; then
  # Not --locked: its lockfile pins a crate version the registry mirror lacks.
  cargo install wasm-bindgen-cli --version "$WBG"
fi

cargo build --profile wasm-release -p gridsocket-wasm --target wasm32-unknown-unknown
out=wasm-client/pkg
rm -rf "$out"
mkdir -p "$out"
wasm-bindgen --target web --out-dir "$out/web" --out-name gridsocket --weak-refs \
  target/wasm32-unknown-unknown/wasm-release/gridsocket_wasm.wasm
cp wasm-client/js/package.json wasm-client/js/index.js wasm-client/js/index.d.ts wasm-client/js/README.md "$out/"

wasm="$out/web/gridsocket_bg.wasm"
echo "wasm: $(wc -c < "$wasm") bytes, $(gzip -9 -c "$wasm" | wc -c) bytes gzipped"
if [ "${1:-}" = "--pack" ]; then
  (cd "$out" && npm pack --silent)
fi
