#!/usr/bin/env bash
# aarch64 Linux: cross-builds the `generate` example for aarch64-unknown-linux-gnu
# with Debian's gcc-aarch64-linux-gnu (build.rs fetches the manylinux_2_28_aarch64
# ONNX Runtime wheel), runs the README's first command under qemu-aarch64 user
# mode, and compares its PNG with the x86-64 build's: pixels may differ in the
# last bits (NEON vs AVX kernels), so the check is a bound, printed with the
# measured values.
#
#   tools/aarch64_ci.sh          # from the repository root
#
# Needs qemu >= 8.2: older qemu-user hands the guest the *host's* /proc/cpuinfo,
# and ONNX Runtime's CPU detection (pytorch/cpuinfo) then crashes (SIGSEGV at
# address 0). Debian bookworm ships 7.2, so when the qemu-aarch64 on PATH is
# older, the script downloads Debian trixie's qemu-user .deb (static binaries)
# with a private apt configuration and extracts qemu-aarch64 into
# KILN_QEMU_DIR (default ~/.cache/kiln-qemu); the system's packages are not
# touched. Installs gcc-aarch64-linux-gnu and the rustup target when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=aarch64-unknown-linux-gnu
WORK=${KILN_QEMU_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-qemu}
# Largest allowed difference of one 8-bit channel between the aarch64 and the
# x86-64 PNG: rounding-level float differences move a pixel by a level or two;
# more means the two builds computed something different.
MAX_LEVELS=2
started=$(date +%s)
step() { echo "== [$(( $(date +%s) - started )) s] $*"; }

step "tools"
if ! command -v aarch64-linux-gnu-gcc >/dev/null || [ ! -e /usr/aarch64-linux-gnu/lib/libstdc++.so.6 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu libstdc++6-arm64-cross >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

# qemu-aarch64 >= 8.2 (it emulates /proc/cpuinfo for the guest).
qemu_ok() {
    local v
    v=$("$1" --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n 1)
    [ -n "$v" ] && set -- $v && { [ "$1" -gt 8 ] || { [ "$1" -eq 8 ] && [ "$2" -ge 2 ]; }; }
}
QEMU=$(command -v qemu-aarch64 || true)
if [ -z "$QEMU" ] || ! qemu_ok "$QEMU"; then
    QEMU="$WORK/qemu-aarch64"
    if ! qemu_ok "$QEMU"; then
        step "fetching qemu-aarch64 from Debian trixie's qemu-user (private apt lists in $WORK/apt)"
        mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial"
        echo "deb http://deb.debian.org/debian trixie main" > "$WORK/apt/sources.list"
        APT_OPTS=(-o Dir::Etc::SourceList="$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
                  -o Dir::State::Lists="$WORK/apt/lists" -o Dir::Cache="$WORK/apt/cache"
                  -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
        apt-get "${APT_OPTS[@]}" update -qq
        version=$(apt-cache "${APT_OPTS[@]}" show qemu-user | sed -n 's/^Version: //p' | sort -V | tail -n 1)
        rm -f "$WORK"/qemu-user_*.deb
        (cd "$WORK" && apt-get "${APT_OPTS[@]}" download "qemu-user=$version")
        rm -rf "$WORK/x" && mkdir -p "$WORK/x"
        dpkg-deb --fsys-tarfile "$WORK"/qemu-user_*.deb | tar -x -C "$WORK/x" ./usr/bin/qemu-aarch64
        mv "$WORK/x/usr/bin/qemu-aarch64" "$QEMU"
        rm -rf "$WORK/x" "$WORK"/qemu-user_*.deb
        qemu_ok "$QEMU" || { echo "aarch64_ci: $QEMU is not qemu >= 8.2" >&2; exit 1; }
    fi
fi
echo "  $("$QEMU" --version | head -n 1)"

step "cross-build: generate example ($TARGET)"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    cargo build --release --target "$TARGET" --example generate
OUT="$ROOT/target/$TARGET/release"
file "$OUT/examples/generate" | grep -q "ARM aarch64" \
    || { echo "aarch64_ci: $OUT/examples/generate is not an aarch64 executable" >&2; exit 1; }
ORT_SO=$(ls "$OUT"/build/kiln-*/out/onnxruntime/onnxruntime/libonnxruntime.so* | head -n 1)
file -L "$ORT_SO" | grep -q "ARM aarch64" \
    || { echo "aarch64_ci: $ORT_SO is not the aarch64 ONNX Runtime" >&2; exit 1; }

step "the README's first command under qemu-aarch64, and natively on x86-64"
FIRST=(--prompt "mossy stone brick wall" --seamless xy --scheduler euler_a --guidance 5 --seed 7)
rm -rf "$WORK/run" && mkdir -p "$WORK/run"
# -L: the guest's dynamic loader and libc/libstdc++ come from Debian's arm64 cross packages.
"$QEMU" -L /usr/aarch64-linux-gnu "$OUT/examples/generate" "${FIRST[@]}" --out "$WORK/run/brick-aarch64.png"
cargo build --release --example generate
target/release/examples/generate "${FIRST[@]}" --out "$WORK/run/brick-x86_64.png"

step "pixel difference (bound: $MAX_LEVELS of 255 per channel)"
python3 tools/png_diff.py "$WORK/run/brick-x86_64.png" "$WORK/run/brick-aarch64.png" --bound "$MAX_LEVELS" \
    || { echo "aarch64_ci: pixels differ by more than $MAX_LEVELS of 255"; exit 1; }
step "aarch64_ci: OK"
