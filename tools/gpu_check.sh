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
#    --bin-dir names prebuilt binaries, copied there after
#      cargo build --release --features cuda --test parity --test static_unet --test providers --test device_latents --test controlnet --test attention --example generate --example bench
#    as `parity`, `static_unet`, `providers`, `device_latents`, `controlnet` and `attention` (the newest
#    target/release/deps/parity-* etc. without .d) and `generate` and `bench` (target/release/examples/).
#    Strip them for transfer (release builds carry debug info, ~60 MB each;
#    stripped ~7 MB):
#      mkdir -p gpu-bin
#      strip -o gpu-bin/parity "$(ls -t target/release/deps/parity-* | grep -v '\.d$' | head -1)"
#      strip -o gpu-bin/static_unet "$(ls -t target/release/deps/static_unet-* | grep -v '\.d$' | head -1)"
#      strip -o gpu-bin/device_latents "$(ls -t target/release/deps/device_latents-* | grep -v '\.d$' | head -1)"
#      strip -o gpu-bin/controlnet "$(ls -t target/release/deps/controlnet-* | grep -v '\.d$' | head -1)"
#      strip -o gpu-bin/generate target/release/examples/generate
#      strip -o gpu-bin/bench target/release/examples/bench
# 4. Runs: the parity cases on CUDA with exact math (TF32 off; they must pass
#    Kiln's usual bounds) and with fast math (TF32 on; margins recorded),
#    generate timings fast vs exact, and a GPU memory cap too small for the
#    U-Net (the job must fail with a status, and the process must live on),
#    and an out-of-memory job followed by a smaller one in the same runtime
#    (tests/providers.rs, ignored on CPU machines).
# 5. The levers of issue 21, each on its own (one failing does not stop the
#    others; each logs `== LEVER name: ok|FAILED (rc)`):
#    - static U-Net: tests/static_unet.rs on CUDA (no Shape nodes; images vs
#      the dynamic U-Net on CUDA), then the parity cases with the static U-Net
#      (KILN_TEST_STATIC_UNET=1) and with CUDA graph replay
#      (KILN_TEST_CUDA_GRAPH=1), exact math: Kiln's usual bounds;
#    - timings: `generate` at 512x512, 20 steps with CFG and 1 step without,
#      levers off / --static-unet / --cuda-graph, one process each making 3
#      images (--batch): the first pays model load and specialising, the next
#      two are warm;
#    - with --sd15 DIR (an export from tools/make_sd15_random.py), the same
#      timings on it.
#    - device-resident latents: tests/device_latents.rs on CUDA with exact
#      math (device loop vs host loop per scheduler, bound 1e-5; previews,
#      fallbacks, cancel), alone, with the static U-Net, and with CUDA graph
#      replay (KILN_TEST_CUDA_GRAPH=1: the device loop binds every U-Net input
#      and the output once at fixed addresses and replays its own captured
#      graph; its log says "(CUDA graph replay)"); the parity cases
#      with KILN_TEST_DEVICE_LATENTS=1 (the schedulers the device loop runs go
#      through it); timings with --scheduler euler: levers off,
#      --device-latents, --static-unet --device-latents,
#      --cuda-graph --device-latents.
#    - ControlNet (one U-Net in a ControlNet folder): the diffusers ControlNet
#      cases on CUDA, exact math, on the host loop, with the static U-Net
#      (every job runs the graph specialised from unet_controlnet), with
#      device-resident latents (the nets run on the device and write the
#      residuals into unet_controlnet's bound inputs; the test checks every
#      call ran there) and with CUDA graph replay plus device latents; then
#      `generate` timings with one ControlNet at 512x512, host loop against
#      --device-latents (the residuals no longer cross to the host), and a
#      plain job's in the ControlNet folder against the plain folder (the
#      host loop copies zero residuals to the device at every call).
#    - fused attention (stage `attention`): tests/attention.rs on CUDA with
#      exact math (the fused MultiHeadAttention node against diffusers and
#      against the exported graph; auto keeps the export on a GPU provider
#      until this has passed), then `bench` at 512x512, 20 CFG steps, with
#      --attention exported and fused on --sd15's export (else the tiny one).
# 6. Per-stage GPU memory (issue 21 item 4): the `bench` example at 512x512,
#    20 CFG steps, with --residency all and --residency per-stage, on the tiny
#    fixture (and on --sd15): peak GPU memory used (nvidia-smi) and RSS while
#    the text encoder, the U-Net and the VAE decoder ran. Run it alone on the
#    GPU: nvidia-smi reports the whole device.
# 7. Seeds (stage `seed`): tools/check_cuda_seed.py compares torch.randn on
#    the GPU with the stream Kiln's NoiseGenerator::TorchCuda computes on the
#    host, draw by draw, and where a draw is larger than the GPU runs threads
#    at once, with a model of torch's launch (needs torch with CUDA).
# 8. Stages: --only takes a comma-separated list of parity, generate, oom,
#    static, device, controlnet, attention, timings, memory, seed, sd15 (the timings and memory
#    on --sd15's export; --sd15-wait SECONDS waits that long for it to
#    appear), bench (tools/gpu_bench.py: Kiln against raw ONNX Runtime with
#    I/O binding on the tiny fixture and --sd15, levers off and on; needs
#    torch and the onnxruntime-gpu Python package), run in the order given
#    (default: all, in that order). --budget SECONDS starts no stage once that
#    many seconds have passed since the script began (a stage already running
#    finishes; each of its runs has its own `timeout 300`): a lent machine's
#    time is short, so put the stages that matter most first
#    (tools/gpu_lease.sh does).
# Logs and margin lines go to --out (default ./gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
ORT_DIR="" BIN_DIR="" OUT="gpu-check" SD15="" SD15_WAIT=0 BUDGET=0
STAGES="parity,generate,oom,static,device,controlnet,attention,timings,memory,seed,sd15,bench"
# A rehearsal on a machine without a GPU (does everything unpack, does every
# test find its fixtures): KILN_GPU_CHECK_PROVIDER=cpu. Its figures mean nothing.
PROVIDER="${KILN_GPU_CHECK_PROVIDER:-cuda}"
# The image side of the timing runs; a CPU rehearsal makes it small.
SIZE="${KILN_GPU_CHECK_SIZE:-512}"
while [ $# -gt 0 ]; do
    case "$1" in
        --only) STAGES="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        --ort-dir) ORT_DIR="$2"; shift 2 ;;
        --bin-dir) BIN_DIR="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --sd15) SD15="$2"; shift 2 ;;
        --sd15-wait) SD15_WAIT="$2"; shift 2 ;;
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
    cargo build --release --features cuda --test parity --test static_unet --test providers --test device_latents --test controlnet --test attention --example generate --example bench || exit 1
    PARITY=$(ls -t target/release/deps/parity-* | grep -v '\.d$' | head -1)
    STATIC=$(ls -t target/release/deps/static_unet-* | grep -v '\.d$' | head -1)
    PROVIDERS_TEST=$(ls -t target/release/deps/providers-* | grep -v '\.d$' | head -1)
    DEVICE_LATENTS=$(ls -t target/release/deps/device_latents-* | grep -v '\.d$' | head -1)
    CONTROLNET=$(ls -t target/release/deps/controlnet-* | grep -v '\.d$' | head -1)
    ATTENTION=$(ls -t target/release/deps/attention-* | grep -v '\.d$' | head -1)
    GENERATE=target/release/examples/generate BENCH=target/release/examples/bench
else
    PARITY="$BIN_DIR/parity" STATIC="$BIN_DIR/static_unet" GENERATE="$BIN_DIR/generate" PROVIDERS_TEST="$BIN_DIR/providers"
    DEVICE_LATENTS="$BIN_DIR/device_latents" BENCH="$BIN_DIR/bench" CONTROLNET="$BIN_DIR/controlnet" ATTENTION="$BIN_DIR/attention"
fi
for stage in ${STAGES//,/ }; do
    case "$stage" in parity|generate|oom|static|device|controlnet|attention|timings|memory|seed|sd15|bench) ;;
        *) echo "unknown stage $stage (parity, generate, oom, static, device, controlnet, attention, timings, memory, seed, sd15, bench)" >&2; exit 2 ;;
    esac
done
status=0
lever() {  # lever NAME RC
    if [ "$2" -eq 0 ]; then echo "== LEVER $1: ok"; else echo "== LEVER $1: FAILED (rc $2)"; fi
}

three_images() {  # three_images NAME: $OUT/NAME-batch.tsv, a `generate --batch` file of 3 images (seeds 1-3)
    local k
    for k in 1 2 3; do printf '%s\t%s\tmossy stone brick wall\n' "$OUT/gen-$1-$k.png" "$k"; done >"$OUT/$1-batch.tsv"
}

stage_parity() {  # the parity cases on CUDA, exact math (must pass) and fast math (margins recorded)
    for math in exact fast; do
        echo "== parity on $PROVIDER, gpu math $math"
        KILN_TEST_PROVIDERS=$PROVIDER KILN_TEST_GPU_MATH=$math RUST_TEST_THREADS=1 timeout 300 "$PARITY" --nocapture >"$OUT/parity-$math.log" 2>&1
        rc=$?
        grep -E "^margin|test result" "$OUT/parity-$math.log" | sed "s/^/[$math] /"
        [ "$math" = exact ] && [ $rc -ne 0 ] && status=1
    done
}

stage_generate() {
    echo "== generate timings (tiny fixture, ${SIZE}x${SIZE}, 20 steps, CFG)"
    for math in fast exact; do
        for run in 1 2; do
            timeout 300 "$GENERATE" --model tests/fixtures/tiny-sd --prompt "mossy stone brick wall" --width $SIZE --height $SIZE \
                --steps 20 --provider $PROVIDER --require-provider --gpu-math $math --out "$OUT/gen-$math.png" 2>&1 | tail -1 | sed "s/^/[$math run $run] /"
        done
    done
}

stage_oom() {
    echo "== out of memory under a GPU memory cap, then a smaller job in the same runtime"
    RUST_TEST_THREADS=1 timeout 300 "$PROVIDERS_TEST" --ignored --nocapture gpu_out_of_memory >"$OUT/oom-recovery.log" 2>&1
    rc=$?
    grep -E "under a|runs on|test result" "$OUT/oom-recovery.log"
    [ $rc -ne 0 ] && status=1
    echo "== GPU memory cap of 1 MiB (must fail cleanly)"
    timeout 300 "$GENERATE" --model tests/fixtures/tiny-sd --prompt x --width $SIZE --height $SIZE --steps 2 --provider $PROVIDER \
        --require-provider --gpu-mem-limit 1 --out "$OUT/oom.png" >"$OUT/oom.log" 2>&1
    echo "exit status $? (0 would mean the cap was not applied)"; tail -3 "$OUT/oom.log"
}

# ---- issue 21 levers: each independent ----
stage_static() {
    echo "== static U-Net on $PROVIDER (exact math): no Shape nodes, images vs the dynamic U-Net"
    KILN_TEST_PROVIDERS=$PROVIDER KILN_TEST_GPU_MATH=exact RUST_TEST_THREADS=1 timeout 300 "$STATIC" --nocapture >"$OUT/static-unet.log" 2>&1
    rc=$?; grep -E "^margin|U-Net|^unet:|test result|panicked" "$OUT/static-unet.log" | sed "s/^/[static] /"; lever static_unet_test $rc
    echo "== static U-Net + CUDA graph replay (exact math), same test"
    KILN_TEST_PROVIDERS=$PROVIDER KILN_TEST_GPU_MATH=exact KILN_TEST_CUDA_GRAPH=1 RUST_TEST_THREADS=1 timeout 300 "$STATIC" --nocapture >"$OUT/static-unet-graph.log" 2>&1
    rc=$?; grep -E "^margin|^unet:|test result|panicked" "$OUT/static-unet-graph.log" | sed "s/^/[static+graph] /"; lever static_unet_cuda_graph_test $rc
    for lv in static graph; do
        if [ $lv = static ]; then envs="KILN_TEST_STATIC_UNET=1"; else envs="KILN_TEST_CUDA_GRAPH=1"; fi
        echo "== parity on $PROVIDER, exact math, $envs (Kiln's usual bounds vs diffusers)"
        env KILN_TEST_PROVIDERS=$PROVIDER KILN_TEST_GPU_MATH=exact $envs RUST_TEST_THREADS=1 timeout 300 "$PARITY" --nocapture >"$OUT/parity-exact-$lv.log" 2>&1
        rc=$?; grep -E "^margin.*image_abs|test result|panicked" "$OUT/parity-exact-$lv.log" | sed "s/^/[parity $lv] /"; lever "parity_$lv" $rc
    done
}

stage_device() {
    echo "== device-resident latents on $PROVIDER (exact math): device loop vs host loop per scheduler"
    for envs in "" "KILN_TEST_STATIC_UNET=1" "KILN_TEST_CUDA_GRAPH=1"; do
        case "$envs" in *CUDA_GRAPH*) tag=graph ;; ?*) tag=static ;; *) tag="" ;; esac
        env KILN_TEST_PROVIDERS=$PROVIDER KILN_TEST_GPU_MATH=exact $envs RUST_TEST_THREADS=1 timeout 300 "$DEVICE_LATENTS" --nocapture >"$OUT/device-latents$tag.log" 2>&1
        rc=$?; grep -E "^margin|test result|panicked" "$OUT/device-latents$tag.log" | sed "s/^/[device-latents $tag] /"; lever "device_latents_test${tag:+_$tag}" $rc
    done
    echo "== parity on $PROVIDER, exact math, KILN_TEST_DEVICE_LATENTS=1 (Kiln's usual bounds vs diffusers)"
    env KILN_TEST_PROVIDERS=$PROVIDER KILN_TEST_GPU_MATH=exact KILN_TEST_DEVICE_LATENTS=1 RUST_TEST_THREADS=1 timeout 300 "$PARITY" --nocapture >"$OUT/parity-exact-device.log" 2>&1
    rc=$?; grep -E "^margin.*image_abs|test result|panicked" "$OUT/parity-exact-device.log" | sed "s/^/[parity device] /"; lever parity_device_latents $rc
}

stage_controlnet() {
    echo "== ControlNet parity on $PROVIDER, exact math: host loop, static U-Net, device latents, CUDA graphs + device latents"
    for envs in "" "KILN_TEST_STATIC_UNET=1" "KILN_TEST_DEVICE_LATENTS=1" "KILN_TEST_CUDA_GRAPH=1 KILN_TEST_DEVICE_LATENTS=1"; do
        tag=$(echo "${envs:-host}" | sed 's/KILN_TEST_//g; s/=1//g' | tr 'A-Z ' 'a-z+')
        env KILN_TEST_PROVIDERS=$PROVIDER KILN_TEST_GPU_MATH=exact $envs RUST_TEST_THREADS=1 timeout 300 "$CONTROLNET" matches_diffusers match_diffusers --nocapture >"$OUT/controlnet-$tag.log" 2>&1
        rc=$?; grep -E "^margin|test result|panicked" "$OUT/controlnet-$tag.log" | sed "s/^/[controlnet $tag] /"; lever "controlnet_parity_$tag" $rc
    done
    echo "== ControlNet timings (tiny fixture with its ControlNet, ${SIZE}x${SIZE}, 20 CFG steps): host loop vs device latents"
    CN_MODEL="$OUT/tiny-controlnet"
    rm -rf "$CN_MODEL" && mkdir -p "$CN_MODEL" && cp -r tests/fixtures/tiny-sd/. tests/fixtures/controlnet/. "$CN_MODEL"/
    for flags in "" "--device-latents" "--static-unet --device-latents"; do
        for run in 1 2; do
            timeout 300 "$GENERATE" --model "$CN_MODEL" --prompt "mossy stone brick wall" --width $SIZE --height $SIZE --steps 20 \
                --scheduler euler --controlnet tiny --control-image tests/fixtures/golden/controlnet/control_b.png \
                --provider $PROVIDER --require-provider --gpu-math fast $flags --out "$OUT/gen-controlnet.png" >"$OUT/controlnet-timing.log" 2>&1
            rc=$?
            grep -E "^wrote|rror|latents:" "$OUT/controlnet-timing.log" | sed "s/^/[controlnet ${flags:-host-loop} run $run] /"
        done
        lever "controlnet_timing_$(echo ${flags:-host} | tr -d ' -')" $rc
    done
    # What the host loop's zero residuals cost: in a ControlNet folder a plain
    # job runs unet_controlnet with zeros copied to the device at every call.
    echo "== plain jobs on the host loop (fast math, ${SIZE}x${SIZE}, 20 CFG steps, 3 images): ControlNet folder vs plain folder"
    three_images plain
    for model in "$CN_MODEL" tests/fixtures/tiny-sd; do
        timeout 300 "$GENERATE" --model "$model" --width $SIZE --height $SIZE --steps 20 --guidance 7.5 --scheduler euler \
            --provider $PROVIDER --require-provider --gpu-math fast --batch "$OUT/plain-batch.tsv" >"$OUT/plain.log" 2>&1
        rc=$?
        grep -E "^wrote|rror" "$OUT/plain.log" | sed "s/^/[plain $(basename "$model")] /"
        lever "plain_timing_$(basename "$model")" $rc
    done
}

timings() {  # timings MODEL LABEL: one process per setting, 3 images (the first pays loading and specialising)
    three_images lever
    for shape in "--steps 20 --guidance 7.5" "--steps 1 --guidance 1"; do
        for flags in "" "--static-unet" "--cuda-graph" "--scheduler euler" "--scheduler euler --device-latents" \
            "--scheduler euler --static-unet --device-latents" "--scheduler euler --cuda-graph --device-latents"; do
            timeout 300 "$GENERATE" --model "$1" --width $SIZE --height $SIZE $shape --provider $PROVIDER --require-provider \
                --gpu-math fast $flags --batch "$OUT/lever-batch.tsv" >"$OUT/lever.log" 2>&1
            rc=$?
            grep -E "^wrote|rror" "$OUT/lever.log" | sed "s/^/[$2 $shape ${flags:-levers-off}] /"
            lever "timing_$2_$(echo ${flags:-off} | tr -d ' -')_$(echo $shape | tr -d ' -')" $rc
        done
    done
}

stage_attention() {  # the fused attention node on CUDA: parity with exact math (must pass), then its speed and memory
    echo "== fused attention on $PROVIDER (tests/attention.rs, gpu math exact)"
    KILN_TEST_PROVIDERS=$PROVIDER KILN_TEST_GPU_MATH=exact RUST_TEST_THREADS=1 timeout 300 "$ATTENTION" --nocapture >"$OUT/attention.log" 2>&1
    local rc=$?
    grep -E "^margin|test result|SKIPPED" "$OUT/attention.log"
    lever attention_parity $rc
    [ $rc -eq 0 ] || status=1
    local model=tests/fixtures/tiny-sd label=tiny
    sd15_ready && model="$SD15" label=sd15
    for mode in exported fused; do
        timeout 300 "$BENCH" --model "$model" --size $SIZE --steps 20 --guidance 7.5 --runs 2 --warmup 1 \
            --provider $PROVIDER --gpu-math fast --attention $mode >"$OUT/attention-$label-$mode.log" 2>&1
        rc=$?
        grep -E "image \(warm|inside ONNX|peak RSS|^\| unet " "$OUT/attention-$label-$mode.log" | sed "s/^/[$label $mode] /"
        lever "attention_bench_${label}_$mode" $rc
    done
}

stage_timings() {
    echo "== generate timings per lever (fast math, ${SIZE}x${SIZE})"
    timings tests/fixtures/tiny-sd tiny
}

stage_memory_of() {  # stage_memory_of MODEL LABEL
    for residency in all per-stage; do
        timeout 300 "$BENCH" --model "$1" --size $SIZE --steps 20 --guidance 7.5 --runs 2 --warmup 1 \
            --provider $PROVIDER --gpu-math fast --residency $residency --json "$OUT/stage-memory-$2-$residency.json" \
            >"$OUT/stage-memory-$2-$residency.log" 2>&1
        rc=$?
        grep -E "^Peak memory|^\| (text_encoder|unet|vae_decoder) " "$OUT/stage-memory-$2-$residency.log" | sed "s/^/[$2 $residency] /"
        lever "stage_memory_$2_$residency" $rc
    done
}

stage_memory() {
    echo "== peak GPU memory per stage, residency all vs per-stage (${SIZE}x${SIZE}, 20 CFG steps)"
    stage_memory_of tests/fixtures/tiny-sd tiny
}

sd15_ready() {  # whether --sd15's export is there, waiting up to --sd15-wait for it
    [ -n "$SD15" ] || { echo "== sd15: skipped (no --sd15)"; return 1; }
    # It may still be being made (tools/gpu_lease.sh exports it beside the
    # earlier stages, moves it into place when done, and leaves DIR.failed
    # if the export failed: no use waiting then).
    local waited=0
    while [ ! -f "$SD15/model_index.json" ] && [ ! -e "$SD15.failed" ] && [ $waited -lt "$SD15_WAIT" ]; do
        sleep 5; waited=$((waited + 5))
    done
    [ -f "$SD15/model_index.json" ] || { echo "== sd15: skipped ($SD15 is not there after ${waited} s)"; return 1; }
}

stage_seed() {  # torch.randn on the GPU against NoiseGenerator::TorchCuda's stream
    echo "== torch.randn(device=\"cuda\") against Kiln's torch_cuda noise"
    timeout 300 "${KILN_GPU_CHECK_PYTHON:-python3}" tools/check_cuda_seed.py --launch-model 2>&1 | tee "$OUT/seed.log"
    local rc=${PIPESTATUS[0]}
    lever cuda_seed $rc
    [ $rc -eq 0 ] || status=1
}

stage_bench() {  # Kiln against raw ONNX Runtime with I/O binding, levers on and off (issue 21 item 5)
    local models="tiny=tests/fixtures/tiny-sd"
    sd15_ready && models="$models,sd15=$SD15"
    echo "== Kiln against raw ONNX Runtime ($models; ${SIZE}x${SIZE}, 20 CFG steps and 1 step; tools/gpu_bench.py)"
    timeout 600 "${KILN_GPU_CHECK_PYTHON:-python3}" tools/gpu_bench.py --bench "$BENCH" --models "$models" --runs 3 --out "$OUT/bench" \
        --provider "$PROVIDER" --size "$SIZE" \
        --kiln-variant "device=--gpu-math fast --device-latents" \
        --kiln-variant "static+device=--gpu-math fast --static-unet --device-latents" \
        --kiln-variant "graph+device=--gpu-math fast --cuda-graph --device-latents" \
        --kiln-variant "graph=--gpu-math fast --cuda-graph" >"$OUT/bench.log" 2>&1
    local rc=$?
    grep -E "^\|" "$OUT/bench.log"
    lever bench $rc
}

stage_sd15() {  # the lever timings and per-stage memory on --sd15's export
    sd15_ready || return 0
    echo "== generate timings per lever on $SD15"
    timings "$SD15" sd15
    echo "== peak GPU memory per stage on $SD15, residency all vs per-stage"
    stage_memory_of "$SD15" sd15
}

started=$SECONDS
for stage in ${STAGES//,/ }; do
    if [ "$BUDGET" -gt 0 ] && [ $((SECONDS - started)) -ge "$BUDGET" ]; then
        echo "== STAGE $stage: SKIPPED (the --budget of ${BUDGET} s is spent)"
        continue
    fi
    t0=$SECONDS
    "stage_$stage"
    echo "== STAGE $stage: $((SECONDS - t0)) s"
done
exit $status
