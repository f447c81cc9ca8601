#!/usr/bin/env bash
# The ONNX Runtime range Kiln supports, tested: the parity tests against the
# oldest supported and the newest available Linux releases (besides the pinned
# 1.31.1 that `cargo test` uses), each named by ORT_DYLIB_PATH; and 1.22, which
# aborts the process inside CreateSession, must be refused with an error that
# names its version, the process still alive.
#
#   tools/ort_range.sh            # from the repository root; CI runs it from .ci/run
#
# Wheels come from PyPI through tools/fetch_onnxruntime.py into target/ort-range/.
set -euo pipefail
cd "$(dirname "$0")/.."

OLDEST=1.23.2   # oldest supported (src/runtime/loader.rs: ONNXRUNTIME_OLDEST_SUPPORTED)
NEWEST=1.32.0   # newest on PyPI when last checked (ONNXRUNTIME_NEWEST_TESTED)
REFUSED=1.22.1  # the last release before the range
TESTS=(--test parity --test img2img --test variants --test lora_slots)

fetch() {
    python3 tools/fetch_onnxruntime.py --dest "target/ort-range/$1" --version "$1" | tail -n 1
}

cargo build --release --example generate
for v in "$OLDEST" "$NEWEST"; do
    lib=$(fetch "$v")
    echo "== parity tests on ONNX Runtime $v ($lib)"
    # ORT_DYLIB_PATH is that library or an error, never another copy
    # (tests/runtime_range.rs); the CLI names the version it loaded.
    ORT_DYLIB_PATH="$lib" target/release/examples/generate --model tests/fixtures/tiny-sd --prompt brick \
        --steps 2 --out "target/ort-range/$v.png" 2>&1 | tee "target/ort-range/$v.log" | tail -n 1
    grep -q "ONNX Runtime $v)" "target/ort-range/$v.log" || { echo "ort_range: $v was not the runtime loaded" >&2; exit 1; }
    ORT_DYLIB_PATH="$lib" cargo test --release "${TESTS[@]}"
done

lib=$(fetch "$REFUSED")
echo "== ONNX Runtime $REFUSED must be refused, not abort the process"
set +e
msg=$(ORT_DYLIB_PATH="$lib" target/release/examples/generate --model tests/fixtures/tiny-sd \
      --prompt brick --steps 2 --out target/ort-range/refused.png 2>&1)
rc=$?
set -e
echo "exit status $rc: $msg"
if [ "$rc" -ne 1 ] || [[ "$msg" != *"ONNX Runtime $REFUSED"* ]]; then
    echo "ort_range: expected exit status 1 and a message naming $REFUSED" >&2
    exit 1
fi
echo "ort_range: OK ($OLDEST and $NEWEST pass the parity tests; $REFUSED is refused)"
