#!/usr/bin/env bash
# Runs tools/gpu_check.sh on a GPU machine that is reached only by copying
# files to it in calls of limited size, with no package registry, no cargo
# and little time (the lent machines of the `device` tool: 64 MiB per call,
# 15 minutes of device time per session, the machine given back after 30 s
# idle). Everything is built and packed here; the machine only unpacks and runs.
#
#   tools/gpu_lease.sh prepare [--part-mib N]   build and pack (here; ~10 min)
#   tools/gpu_lease.sh calls                    print the device calls, in order
#   tools/gpu_lease.sh trim                     make only the packed parts travel
#   tools/gpu_lease.sh restore                  undo `trim`
#   tools/gpu_lease.sh remote                   (on the GPU machine; run by the last call)
#
# prepare (needs cargo, python3 with pip, xz):
#   - builds the test binaries and examples gpu_check.sh runs, with
#     `--features cuda`, into target-gpu/, and strips them;
#   - downloads the `onnxruntime-gpu` wheel and keeps its libraries in one
#     folder (the CUDA provider library is 284 MB; xz -9 brings it under
#     190 MB);
#   - packs the fixtures the checks read (FIXTURES below), gpu_check.sh,
#     gpu_bench.py with the onnxruntime-gpu Python package for the machine's
#     Python (KILN_LEASE_PYTHON_VERSION, default 3.12), and
#     make_sd15_random.py with the diffusers wheel;
#   - cuts the whole into parts of at most --part-mib MiB (default 62: a call
#     carries 64 MiB, and a trimmed checkout adds nothing) under .gpu/p1,
#     .gpu/p2, ...: one part per call (4 in December 2026, 240 MiB).
# Rehearsal on a machine without a GPU (docs/benchmarks.md): prepare with
# this machine's Python version, then run each call's command in a bare
# folder, the remote one with KILN_GPU_CHECK_PROVIDER=cpu,
# KILN_GPU_CHECK_SIZE=64, KILN_LEASE_PYTHON (a Python with torch) and
# KILN_LEASE_SD15_FLAGS=--small.
# The test binaries find their fixtures under the checkout path they were
# built in (CARGO_MANIFEST_DIR, recorded as .gpu/lease/root); `remote` puts
# the fixtures there on the GPU machine, whatever path its copy has.
#
# trim: the checkout is larger than a call may carry, and every tracked file
# travels. `trim` empties git's index (files stay on disk) and ignores every
# top-level path in .git/info/exclude, so a call carries only the paths it
# names. Run `restore` afterwards (it resets the index to HEAD: `trim`
# refuses a checkout with changes). `git status` shows every file deleted
# while trimmed: that is the index, not the files.
#
# remote (the last call): joins the parts, unpacks ONNX Runtime, the binaries
# and the fixtures, runs gpu_check.sh with the stages in STAGES (what issue 21
# still lacks first) and a time budget, and leaves a summary and the logs in
# $OUT (summary.txt, logs.tar.xz).
set -euo pipefail
cd "$(dirname "$0")/.."

LEASE=.gpu
# What the checks read: tests/parity.rs, static_unet.rs, providers.rs,
# device_latents.rs, controlnet.rs, attention.rs and tests/common, and the examples' runs.
FIXTURES="tests/fixtures/tiny-sd tests/fixtures/tiny-sdxl tests/fixtures/controlnet tests/fixtures/controlnet-inpaint9
  tests/fixtures/golden tests/fixtures/variants/inpaint9 tests/fixtures/sdxl-controlnet tests/fixtures/sdxl-refiner
  tests/fixtures/sdxl-embedding tests/fixtures/controlnet-unscaled"
TESTS="parity static_unet providers device_latents controlnet attention"
EXAMPLES="generate bench"
# Issue 21's missing figures first: the device loop has never run on a GPU.
# KILN_LEASE_STAGES and KILN_LEASE_BUDGET override them, at prepare or remote.
STAGES="${KILN_LEASE_STAGES:-device,seed,controlnet,attention,memory,bench,sd15,timings,static,parity,oom,generate}"
# The SD 1.5-size export for the sd15 stage is made there (torch and
# transformers are there; the diffusers wheel is carried), on 4 cores, beside
# the first stages.
DIFFUSERS="diffusers==0.39.0"
# The bench stage's raw side needs the onnxruntime-gpu Python package for the
# GPU machine's Python (3.12 on the lent ones); its CUDA provider library is
# not packed twice: `remote` links the one in ort/.
PYVER="${KILN_LEASE_PYTHON_VERSION:-3.12}"
ORT_WHEEL="onnxruntime-gpu==1.31.1"
BUDGET="${KILN_LEASE_BUDGET:-360}"
MARK="# tools/gpu_lease.sh trim (restore removes this block)"

prepare() {
    local part_mib=62
    while [ $# -gt 0 ]; do
        case "$1" in
            --part-mib) part_mib="$2"; shift 2 ;;
            *) echo "unknown argument $1" >&2; exit 2 ;;
        esac
    done
    local target="${CARGO_TARGET_DIR:-target-gpu}"
    local build=(cargo build --release --features cuda)
    for t in $TESTS; do build+=(--test "$t"); done
    for e in $EXAMPLES; do build+=(--example "$e"); done
    CARGO_TARGET_DIR="$target" "${build[@]}"

    rm -rf "$LEASE" && mkdir -p "$LEASE/lease/bin" "$LEASE/work"
    for t in $TESTS; do
        strip -o "$LEASE/lease/bin/$t" "$(ls -t "$target"/release/deps/"$t"-* | grep -v '\.d$' | head -1)"
    done
    for e in $EXAMPLES; do strip -o "$LEASE/lease/bin/$e" "$target/release/examples/$e"; done
    pwd >"$LEASE/lease/root"
    git rev-parse HEAD >"$LEASE/lease/commit"
    echo "$STAGES" >"$LEASE/lease/stages"
    echo "$BUDGET" >"$LEASE/lease/budget"
    cp tools/gpu_lease.sh tools/gpu_check.sh tools/gpu_bench.py tools/make_sd15_random.py tools/check_cuda_seed.py \
        tools/make_torch_cuda_seed_golden.py "$LEASE/lease/"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d "$LEASE/lease/wheels" "$DIFFUSERS"
    # One wheel gives both: the runtime libraries for Kiln (ort/, all in one
    # folder) and the Python package without them (ortpy/; `remote` links
    # them into its capi/). TensorRT's provider is not used by the checks.
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 -d "$LEASE/work/wheel" "$ORT_WHEEL"
    python3 - "$LEASE/work/wheel" "$LEASE/work" <<'PY'
import glob, os, shutil, sys, zipfile
wheel, = glob.glob(sys.argv[1] + "/*.whl")
libs = ("libonnxruntime.so.", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so")
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        name = os.path.basename(m)
        if name.startswith(libs):
            os.makedirs(os.path.join(sys.argv[2], "ort"), exist_ok=True)
            with z.open(m) as src, open(os.path.join(sys.argv[2], "ort", name), "wb") as dst:
                shutil.copyfileobj(src, dst)
        elif "libonnxruntime_providers_tensorrt" not in name:
            z.extract(m, os.path.join(sys.argv[2], "ortpy"))
PY
    tar -C "$LEASE/work/ortpy" -cf - . | xz -9 -T0 >"$LEASE/lease/ortpy.tar.xz"
    tar -C "$LEASE/work/ort" -cf - . | xz -9 -T0 >"$LEASE/lease/ort.tar.xz"
    tar -cf - $FIXTURES | xz -6 -T0 >"$LEASE/lease/fixtures.tar.xz"
    tar -C "$LEASE/lease" -cf - bin | xz -9 -T0 >"$LEASE/lease/bin.tar.xz"
    rm -rf "$LEASE/lease/bin" "$LEASE/work"

    # One stream, cut into parts; `remote` concatenates them in order.
    tar -C "$LEASE" -cf - lease | split -b "${part_mib}M" -d -a 2 - "$LEASE/part-"
    rm -rf "$LEASE/lease"
    local k=0
    for f in "$LEASE"/part-*; do
        k=$((k + 1))
        mkdir -p "$LEASE/p$k" && mv "$f" "$LEASE/p$k/"
    done
    du -sh "$LEASE"/p*
    echo "$k parts; next: tools/gpu_lease.sh calls"
}

calls() {
    local n
    n=$(ls -d "$LEASE"/p* 2>/dev/null | wc -l)
    [ "$n" -gt 0 ] || { echo "nothing packed: run tools/gpu_lease.sh prepare" >&2; exit 1; }
    echo "# After tools/gpu_lease.sh trim, make these device calls back to back (the machine goes"
    echo "# back after 30 s idle, and a fresh one has lost the earlier parts); then restore."
    for k in $(seq 1 "$n"); do
        local cmd="mkdir -p /tmp/kiln-lease && mv .gpu/p$k/* /tmp/kiln-lease/ && ls -l /tmp/kiln-lease"
        if [ "$k" -eq "$n" ]; then
            cmd="mkdir -p /tmp/kiln-lease && mv .gpu/p$k/* /tmp/kiln-lease/ && cd /tmp/kiln-lease && cat part-* | tar -x && bash lease/gpu_lease.sh remote"
        fi
        echo "call $k: carry [\"$LEASE/p$k\"], timeout_s $([ "$k" -eq "$n" ] && echo 580 || echo 120)"
        echo "  $cmd"
    done
}

trim() {
    [ -z "$(git status --porcelain --untracked-files=no)" ] || { echo "trim: the checkout has changes; commit or stash them first" >&2; exit 1; }
    grep -qF "$MARK" .git/info/exclude 2>/dev/null || printf '%s\n/*\n%s end\n' "$MARK" "$MARK" >>.git/info/exclude
    git rm -r -q --cached .
    echo "trimmed: git ls-files lists $(git ls-files | wc -l) files; untracked, not ignored: $(git ls-files --others --exclude-standard | wc -l)"
}

restore() {
    git reset -q
    if [ -f .git/info/exclude ]; then
        awk -v m="$MARK" '$0 == m {skip = 1; next} $0 == m " end" {skip = 0; next} !skip' .git/info/exclude >.git/info/exclude.new
        mv .git/info/exclude.new .git/info/exclude
    fi
    git status --short | head -5
    echo "restored: git ls-files lists $(git ls-files | wc -l) files"
}

remote() {
    # Run from the folder the parts were joined in (it holds lease/).
    local here root out
    here=$(pwd)
    root=$(cat lease/root)
    out="${OUT:-$here/out}"
    mkdir -p "$root" "$here/ort" "$here/check" "$out"
    # KILN_LEASE_PYTHON and KILN_LEASE_SD15_FLAGS (e.g. --small) are for rehearsals.
    local py="${KILN_LEASE_PYTHON:-python3}"
    # Python's lzma, not the xz command, which the machine may lack.
    unxz() { "$py" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; }
    toxz() { "$py" -c 'import lzma,shutil,sys; shutil.copyfileobj(sys.stdin.buffer, lzma.open(sys.argv[1], "wb"))' "$1"; }
    unxz lease/ort.tar.xz | tar -x -C "$here/ort"
    unxz lease/bin.tar.xz | tar -x -C "$here"
    unxz lease/fixtures.tar.xz | tar -x -C "$root"
    mkdir -p "$here/ortpy" && unxz lease/ortpy.tar.xz | tar -x -C "$here/ortpy"
    ln -sf "$here"/ort/* "$here/ortpy/onnxruntime/capi/"
    export PYTHONPATH="$here/ortpy${PYTHONPATH:+:$PYTHONPATH}"
    mkdir -p "$root/tools" && cp lease/gpu_check.sh lease/gpu_bench.py lease/make_sd15_random.py lease/check_cuda_seed.py \
        lease/make_torch_cuda_seed_golden.py "$root/tools/"
    local stages budget sd15=()
    stages="${KILN_LEASE_STAGES:-$(cat lease/stages)}" budget="${KILN_LEASE_BUDGET:-$(cat lease/budget)}"
    echo "lease of $(cat lease/commit): fixtures under $root, stages $stages, budget $budget s"
    set +e
    if [[ ",$stages," == *,sd15,* ]]; then
        # Made in a scratch folder and moved into place when whole: the stage
        # waits for model_index.json.
        "$py" -m pip install -q --no-index --no-deps --no-compile --target "$here/site" lease/wheels/*.whl
        local pin=()
        if command -v taskset >/dev/null && [ "$(nproc)" -ge 8 ]; then pin=(taskset -c "$(($(nproc) - 4))-$(($(nproc) - 1))"); fi
        (PYTHONPATH="$here/site" OMP_NUM_THREADS=4 nice -n 10 "${pin[@]}" "$py" "$root/tools/make_sd15_random.py" "$here/sd15-tmp" \
            --exporter torch --no-check ${KILN_LEASE_SD15_FLAGS:-} >"$here/check/sd15-export.log" 2>&1 &&
            mv "$here/sd15-tmp" "$here/sd15" || touch "$here/sd15.failed") &
        sd15=(--sd15 "$here/sd15" --sd15-wait 300)
    fi
    KILN_GPU_CHECK_PYTHON="$py" bash "$root/tools/gpu_check.sh" --ort-dir "$here/ort" --bin-dir "$here/bin" --out "$here/check" \
        --only "$stages" --budget "$budget" "${sd15[@]}" 2>&1 | tee "$out/summary.txt"
    local rc=${PIPESTATUS[0]}
    tar -C "$here" --exclude='*.onnx' --exclude='*.onnx_data' --exclude='*.onnx.data' -cf - check | toxz "$out/logs.tar.xz"
    echo "gpu_check.sh exit $rc; logs in logs.tar.xz"
    return "$rc"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    calls) calls ;;
    trim) trim ;;
    restore) restore ;;
    remote) remote ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
