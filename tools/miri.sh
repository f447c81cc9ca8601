#!/usr/bin/env bash
# Runs the C boundary's raw-pointer unit tests (src/ffi/pointer_checks.rs, the
# tests named miri_*) under Miri, which reports any out-of-bounds, misaligned,
# use-after-free or uninitialized access in them. Installs the nightly
# toolchain's miri and rust-src components when missing (idempotent).
# About 6 minutes here, nearly all of it compiling the dependencies for Miri.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
rustup +nightly component add miri rust-src
cargo +nightly miri setup
# The tests never touch ONNX Runtime: skip build.rs's download.
KILN_FETCH_ORT=0 cargo +nightly miri test --lib miri_
