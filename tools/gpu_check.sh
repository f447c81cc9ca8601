#!/usr/bin/env bash
# GPU checks for Kiln's CUDA path, on a Linux machine with an NVIDIA GPU.
#
#   tools/gpu_check.sh [--ort-dir DIR] [--bin-dir DIR] [--out DIR]
#
# 1. ONNX Runtime: --ort-dir names a folder holding the GPU build's libraries
#    (libonnxruntime.so.*, libonnxruntime_providers_shared.so,
#    libonnxruntime_providers_cuda.so, all in one folder); without it the
#    script fetches `onnxruntime-gpu` with tools/fetch_onnxruntime.py (needs
#    PyPI; onnxruntime-gpu 1.31.1 is built for CUDA 13).
# 2. CUDA and cuDNN: the libraries of the nvidia-* pip packages
#    (site-packages/nvidia/*/lib) go on LD_LIBRARY_PATH.
# 3. Kiln: built here with `--features cuda` when cargo exists; else
#    --bin-dir names prebuilt `parity` and `providers` (test binaries) and
#    `generate`.
# 4. Runs: the parity cases on CUDA with exact math (TF32 off; they must pass
#    Kiln's usual bounds) and with fast math (TF32 on; margins recorded),
#    generate timings fast vs exact, and a GPU memory cap too small for the
#    U-Net (the job must fail with a status, and the process must live on),
#    and an out-of-memory job followed by a smaller one in the same runtime
#    (tests/providers.rs, ignored on CPU machines).
# Logs and margin lines go to --out (default ./gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
ORT_DIR="" BIN_DIR="" OUT="gpu-check"
while [ $# -gt 0 ]; do
    case "$1" in
        --ort-dir) ORT_DIR="$2"; shift 2 ;;
        --bin-dir) BIN_DIR="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
if [ -z "$ORT_DIR" ]; then
    ORT_DIR="$OUT/onnxruntime-gpu"
    python3 tools/fetch_onnxruntime.py --package onnxruntime-gpu --dest "$ORT_DIR" || exit 1
fi
ORT_LIB=$(ls "$ORT_DIR"/libonnxruntime.so.* | head -1)
NV=$(python3 -c 'import site,glob,os; print(":".join(sorted(p for s in site.getsitepackages() for p in glob.glob(os.path.join(s,"nvidia","*","lib")))))')
export LD_LIBRARY_PATH="$ORT_DIR:$NV:${LD_LIBRARY_PATH:-}" ORT_DYLIB_PATH="$ORT_LIB"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
if [ -z "$BIN_DIR" ]; then
    cargo build --release --features cuda --test parity --example generate || exit 1
    cargo build --release --features cuda --test providers || exit 1
    PARITY=$(ls -t target/release/deps/parity-* | grep -v '\.d$' | head -1)
    PROVIDERS_TEST=$(ls -t target/release/deps/providers-* | grep -v '\.d$' | head -1)
    GENERATE=target/release/examples/generate
else
    PARITY="$BIN_DIR/parity" GENERATE="$BIN_DIR/generate" PROVIDERS_TEST="$BIN_DIR/providers"
fi
status=0
for math in exact fast; do
    echo "== parity on CUDA, gpu math $math"
    KILN_TEST_PROVIDERS=cuda KILN_TEST_GPU_MATH=$math RUST_TEST_THREADS=1 "$PARITY" --nocapture >"$OUT/parity-$math.log" 2>&1
    rc=$?
    grep -E "^margin|test result" "$OUT/parity-$math.log" | sed "s/^/[$math] /"
    [ "$math" = exact ] && [ $rc -ne 0 ] && status=1
done
echo "== generate timings (tiny fixture, 512x512, 20 steps, CFG)"
for math in fast exact; do
    for run in 1 2; do
        "$GENERATE" --model tests/fixtures/tiny-sd --prompt "mossy stone brick wall" --width 512 --height 512 \
            --steps 20 --provider cuda --require-provider --gpu-math $math --out "$OUT/gen-$math.png" 2>&1 | tail -1 | sed "s/^/[$math run $run] /"
    done
done
echo "== out of memory under a GPU memory cap, then a smaller job in the same runtime"
if [ -n "${PROVIDERS_TEST:-}" ]; then
    RUST_TEST_THREADS=1 "$PROVIDERS_TEST" --ignored --nocapture gpu_out_of_memory >"$OUT/oom-recovery.log" 2>&1
    rc=$?
    grep -E "under a|runs on|test result" "$OUT/oom-recovery.log"
    [ $rc -ne 0 ] && status=1
else
    echo "skipped: no providers test binary"
fi
echo "== GPU memory cap of 1 MiB (must fail cleanly)"
"$GENERATE" --model tests/fixtures/tiny-sd --prompt x --width 512 --height 512 --steps 2 --provider cuda \
    --require-provider --gpu-mem-limit 1 --out "$OUT/oom.png" >"$OUT/oom.log" 2>&1
echo "exit status $? (0 would mean the cap was not applied)"; tail -3 "$OUT/oom.log"
exit $status
