#!/usr/bin/env bash
# Runs Kiln's cargo-fuzz targets (fuzz/, issue 14), each for SECONDS (default 60).
#   tools/fuzz_ci.sh [SECONDS] [TARGET...]
# Installs the nightly toolchain and cargo-fuzz when missing (idempotent),
# builds every target once, then fuzzes each from its committed seeds
# (fuzz/seeds/T) into a scratch corpus (fuzz/corpus/T, not committed), as many
# targets at once as the machine has cores. Any
# crash, leak, timeout (30 s per input) or out-of-memory (2 GB) fails the run;
# libFuzzer leaves the input in fuzz/artifacts/T/ and prints how to replay it.
# The run's last status lines (executions, coverage) go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(prompt configs onnx png_inputs c_options adapters)

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cd fuzz
# The fuzz targets never touch ONNX Runtime: skip build.rs's download.
export KILN_FETCH_ORT=0
cargo +nightly fuzz build 2>&1 | tail -n 3

# One target per core at a time (KILN_FUZZ_JOBS overrides): each target still
# gets its SECONDS of a core to itself, and the stage takes 6 x 60 s / cores.
jobs=${KILN_FUZZ_JOBS:-$(nproc)}
fuzz_one() {
    local t=$1
    mkdir -p "corpus/$t"
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 >"corpus/$t.log" 2>&1
}
declare -A pid_of
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    echo "== fuzz target $t, ${seconds} s"
    fuzz_one "$t" &
    pid_of[$t]=$!
done

failed=()
for t in "${targets[@]}"; do
    status=0
    wait "${pid_of[$t]}" || status=$?
    echo "== fuzz target $t: exit $status"
    grep -E '^#[0-9]+.*(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss_mb' "corpus/$t.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "corpus/$t.log"
        echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t/"
        failed+=("$t")
    fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz targets failed: ${failed[*]}"; exit 1; }
