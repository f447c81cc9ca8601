#!/usr/bin/env bash
# ThreadSanitizer over Kiln's concurrent paths: the job pool (submit, poll,
# wait, cancel, free from other threads, callbacks on workers), model loads on
# three threads and their cancellation, LoRA switches and slots, the device
# latent loop, upscaling jobs, the soak run and the C API's misuse tests, each
# built with -Zsanitizer=thread over a sanitized std (nightly, -Zbuild-std).
#
# First a canary: a test that races on purpose (tests/jobs.rs
# `tsan_canary_...`) must be reported, so the suppressions for ONNX Runtime's
# uninstrumented library (tools/tsan.supp) are known not to hide Kiln's races.
# Then the suites must pass with no report (TSan's exit code 66 fails them).
#
#   tools/tsan.sh                 # everything (about 25 min here: 10 to build)
#   tools/tsan.sh --ci            # CI's share: unit tests, job pool, hardening, C API errors
#   tools/tsan.sh --test jobs     # one suite (any cargo test selection)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
rustup +nightly component add rust-src >/dev/null
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target-tsan}"
export TSAN_OPTIONS="suppressions=$PWD/tools/tsan.supp halt_on_error=0 exitcode=66 second_deadlock_stack=1"
cargo_test() { cargo +nightly test -Zbuild-std --target "$host" --release "$@"; }

echo "== tsan: canary (a deliberate race must be reported)"
set +e
canary=$(cargo_test --test jobs -- --ignored --exact tsan_canary_an_unsynchronised_callback_counter_is_reported 2>&1)
code=$?
set -e
if [ $code -eq 0 ] || ! grep -q "WARNING: ThreadSanitizer: data race" <<<"$canary" || ! grep -q "tsan_canary" <<<"$canary"; then
    printf '%s\n' "$canary" | tail -40
    echo "tsan: the canary's race was not reported (exit $code): a clean run would prove nothing" >&2
    exit 1
fi
echo "tsan: canary reported, as it must be"

suites=(jobs job_pool job_kinds soak hardening faults ffi_errors memory lora_slots device_latents upscaler)
if [ "${1:-}" = "--ci" ]; then
    # The suites whose threads are Kiln's own (about 4 minutes under TSan).
    suites=(jobs job_pool job_kinds soak hardening ffi_errors)
    shift
fi
if [ $# -gt 0 ]; then
    selection=("$@")
else
    selection=(--lib)
    for t in "${suites[@]}"; do
        selection+=(--test "$t")
    done
fi
echo "== tsan: ${selection[*]}"
# One test at a time: ONNX Runtime's spinning pools on two cores, slowed
# 5-15x by TSan, would push the tests' own timeouts.
cargo_test "${selection[@]}" -- --test-threads 1
echo "tsan: no data race reported"
