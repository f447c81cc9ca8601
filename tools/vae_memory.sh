#!/usr/bin/env bash
# VAE decode memory and speed (docs/benchmarks.md): one process per configuration, each printing its
# own peak RSS (VmHWM) and decode seconds as a JSON line (examples/vae_bench.rs).
#   tools/vae_memory.sh BENCH_BINARY MODEL_DIR [ORT_LIBRARY]
# MODEL_DIR is tools/make_vae_bench_model.py's output. A missing model.onnx_data is made as zeros of
# the size given below (cost and memory do not depend on the weight values), so the script can run
# where the 198 MB file was not copied.
set -euo pipefail
bench="$1"; model="$2"
[ -n "${3:-}" ] && export ORT_DYLIB_PATH="$3"
[ -f "$model/vae_decoder/model.onnx_data" ] || truncate -s 197875200 "$model/vae_decoder/model.onnx_data"
[ -f "$model/preview_decoder/model.onnx_data" ] || truncate -s 4882176 "$model/preview_decoder/model.onnx_data"
run() { nice "$bench" "$model" "$@" --threads "${THREADS:-0}" || echo "{\"args\": \"$*\", \"failed\": $?}"; }
echo "# cores: $(nproc); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
run 512 --runs 2
run 512 --fast --runs 3
run 1024
run 1024 --tile 512
run 1024 --fast
run 2048 --tile 512
# A whole 2048² decode: the mid-block attention alone is 65536² floats (16 GiB).
if [ "$(free -g | awk '/Mem:/ {print $2}')" -ge 64 ]; then run 2048; else echo '{"size": 2048, "tile": 0, "skipped": "needs more than this machine'"'"'s memory"}'; fi
