#!/usr/bin/env bash
# Runs Kiln's cargo-fuzz targets (fuzz/, issue 14), each for SECONDS (default 60).
#   tools/fuzz_ci.sh [SECONDS] [TARGET...]
# Installs the nightly toolchain and cargo-fuzz when missing (idempotent),
# builds every target once, then fuzzes each from its committed seeds
# (fuzz/seeds/T) into a scratch corpus (fuzz/corpus/T, not committed). Any
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
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzz target $t, ${seconds} s"
    log="corpus/$t.log"
    status=0
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^#[0-9]+.*(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss_mb' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t/"
        exit 1
    fi
done
