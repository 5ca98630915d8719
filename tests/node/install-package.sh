#!/usr/bin/env bash
# Installs the packed package (wasm-client/pkg/gridsocket-*.tgz, made by
# `scripts/build-wasm.sh --pack`) into the node_modules of each folder given, as `npm install
# <tarball>` would (the package has no dependencies), without touching their lockfiles.
set -euo pipefail
cd "$(dirname "$0")/../.."
tarball=$(ls wasm-client/pkg/gridsocket-*.tgz)
for dir in "$@"; do
  rm -rf "$dir/node_modules/gridsocket"
  mkdir -p "$dir/node_modules/gridsocket"
  tar -xzf "$tarball" -C "$dir/node_modules/gridsocket" --strip-components=1
done
