#!/usr/bin/env bash
# Builds the `gridsocket` JavaScript package into wasm-client/pkg (and its tarball with --pack).
# Installs what it needs: the wasm target, wasm-bindgen-cli at the crate's exact version, and
# binaryen's wasm-opt from npm (wasm-client/build; Debian's binaryen breaks this Rust's output).
#
# The package: index.js (the host: sockets, timers, promises), index.d.ts (its typings),
# gridsocket.js (wasm-bindgen's glue), wasm.js (the protocol engine, gzipped in base64) and
# README.md. Prints the sizes that BENCHMARKS.md reports.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
WBG=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WBG" ]; then
  # Not --locked: its lockfile pins a crate version the registry mirror lacks.
  cargo install wasm-bindgen-cli --version "$WBG"
fi
[ -x wasm-client/build/node_modules/.bin/wasm-opt ] ||
  (cd wasm-client/build && npm ci --silent --no-audit --no-fund)

cargo build --profile wasm-release -p gridsocket-wasm --target wasm32-unknown-unknown
out=wasm-client/pkg
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# No name section (a third of the file) and no producers section.
wasm-bindgen --target web --out-dir "$work" --out-name gridsocket --weak-refs \
  --remove-name-section --remove-producers-section \
  "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/wasm-release/gridsocket_wasm.wasm"
wasm-client/build/node_modules/.bin/wasm-opt -Oz --strip-debug --strip-producers \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$work/gridsocket_bg.wasm" -o "$work/opt.wasm"
rm -rf "$out"
mkdir -p "$out"
node wasm-client/build/embed.mjs "$work/gridsocket.js" "$work/opt.wasm" "$out"
cp wasm-client/js/package.json wasm-client/js/index.js wasm-client/js/index.d.ts \
  wasm-client/js/README.md "$out/"

gz() { gzip -9 -n -c "$@" | wc -c; }
echo "package size, gzipped: wasm $(gz "$work/opt.wasm") B as a file, $(gz "$out/wasm.js") B as wasm.js;" \
  "JavaScript $(cat "$out/index.js" "$out/gridsocket.js" | gz) B;" \
  "all that loads: $(cat "$out/index.js" "$out/gridsocket.js" "$out/wasm.js" | gz) B"
if [ "${1:-}" = "--pack" ]; then
  (cd "$out" && npm pack --silent)
fi
