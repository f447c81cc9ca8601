#!/usr/bin/env bash
# Windows, checked on every change: cross-builds Kiln for x86_64-pc-windows-gnu
# with Debian's MinGW and runs it under Wine on the bundled model and the test
# fixtures:
#   - every C example (built with x86_64-w64-mingw32-gcc against kiln.dll's
#     import library), the PNG-writing ones with pixels equal to the Linux build's;
#   - the README's first command, pixels equal to the Linux build's;
#   - kiln-bake on the example manifest (DDS through the MSVC ISPC kernels that
#     build.rs links for MinGW): every file equal to the Linux bake's, byte for
#     byte, and a rerun that skips every asset;
#   - the parity, FFI-error, runtime-loading and C-example test binaries;
#   - the Windows release package (tools/package.py), unpacked: its txt2img
#     links the packaged import library, and it and its kiln-bake.exe run on
#     the packaged model and runtime;
#   - an MSVC-ABI program (clang for x86_64-pc-windows-msvc, linked by lld-link
#     against the package's MSVC import library lib/kiln.lib) gets the MinGW
#     txt2img's pixels, and kiln.h compiles as C++ for that target;
#   - `--features directml` compiles for Windows (it cannot run here).
#
#   tools/windows_ci.sh          # from the repository root; CI runs it from .ci/run
#
# Installs what it lacks (MinGW, Wine, clang, lld, llvm-dlltool, CMake, the rustup target). The Wine prefix lives
# outside the source tree (KILN_WINE_DIR, default ~/.cache/kiln-wine): its `z:`
# link back to / makes cargo's fingerprinting fail when it sits inside the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=x86_64-pc-windows-gnu
WORK=${KILN_WINE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-wine}
export WINEPREFIX="$WORK/prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
started=$(date +%s)
step() { echo "== [$(( $(date +%s) - started )) s] $*"; }

step "tools"
if ! command -v x86_64-w64-mingw32-gcc >/dev/null || ! command -v wine >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        gcc-mingw-w64-x86-64 wine wine64 >/dev/null
fi
# The MSVC-ABI check: clang, lld-link, llvm-dlltool (package.py writes kiln.lib with
# it) and CMake (which import library the package's CMake config picks).
if ! command -v clang >/dev/null || ! command -v lld-link >/dev/null || ! command -v llvm-dlltool >/dev/null \
    || ! command -v cmake >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang lld llvm cmake >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
WINE=$(command -v wine64 || command -v wine)
[ -x /usr/lib/wine/wine64 ] && WINE=/usr/lib/wine/wine64

step "cross-build: library, examples, test binaries ($TARGET)"
TESTS=(parity ffi_errors runtime_load c_examples)
cargo build --release --target "$TARGET" --lib --examples --bin kiln-bake
test_list=$(cargo test --release --target "$TARGET" --no-run $(printf -- '--test %s ' "${TESTS[@]}") 2>&1 \
    | sed -n 's/.*Executable .* (\(.*\.exe\))$/\1/p')
OUT="$ROOT/target/$TARGET/release"
ORT_DLL=$(ls "$OUT"/build/kiln-*/out/onnxruntime/onnxruntime/onnxruntime.dll | head -n 1)
step "directml feature compiles for Windows"
cargo check --release --target "$TARGET" --lib --features directml

step "C examples with MinGW, and on Linux for the reference pixels"
# The same target set as tools/package.py: with an example in it, features unify
# as in `cargo test`, so after the suite this builds nothing. `--bin kiln-bake`
# alone would rebuild the library with other features (minutes, and then again
# for the package).
cargo build --release --lib --example generate --bin kiln-bake
CDIR="$WORK/c"
rm -rf "$CDIR" && mkdir -p "$CDIR/win" "$CDIR/linux"
for ex in txt2img async_poll cancel sprite controlnet sdxl upscale_job; do
    x86_64-w64-mingw32-gcc -std=c99 -Wall -Wextra -Wpedantic -Werror -O1 -Iinclude "examples/c/$ex.c" \
        -o "$CDIR/win/$ex.exe" -L "$OUT" -lkiln
    cc -std=c99 -Wall -Wextra -Wpedantic -Werror -O1 -Iinclude "examples/c/$ex.c" \
        -o "$CDIR/linux/$ex" -L target/release -Wl,-rpath,"$CDIR/linux" -lkiln
done
# The Linux programs ask for the SONAME, libkiln.so.<major>.
ln -sf "$ROOT/target/release/libkiln.so" "$CDIR/linux/libkiln.so.$(sed -n 's/^version = "\([0-9]*\)\..*/\1/p' Cargo.toml | head -n 1)"
# What a game ships: the executable, kiln.dll and the runtime side by side.
cp "$OUT/kiln.dll" "$ORT_DLL" "$CDIR/win/"

step "Wine prefix (bcryptprimitives.dll forwarder)"
if [ ! -f "$WINEPREFIX/.kiln-ready" ]; then
    rm -rf "$WINEPREFIX" && mkdir -p "$WORK"
    "$WINE" wineboot --init >/dev/null 2>&1 || true
    # Rust's std imports ProcessPrng from bcryptprimitives.dll, which Wine 8 lacks:
    # a one-function DLL forwards it to advapi32's RtlGenRandom.
    cat > "$WORK/bcryptprimitives.c" <<'C'
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
C
    x86_64-w64-mingw32-gcc -shared -O1 -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
        "$WORK/bcryptprimitives.c" -ladvapi32
    touch "$WINEPREFIX/.kiln-ready"
fi

# Equal pixels in two PNGs (tools/png_diff.py: 8-bit RGBA, what Kiln writes).
same_pixels() { python3 tools/png_diff.py "$1" "$2"; }
win() { (cd "$1" && shift && "$WINE" "$@"); }

step "C examples under Wine"
MODEL=tests/fixtures/tiny-sd
win "$CDIR/win" txt2img.exe "$ROOT/$MODEL" "mossy stone brick wall" txt2img.png
"$CDIR/linux/txt2img" "$MODEL" "mossy stone brick wall" "$CDIR/linux/txt2img.png"
same_pixels "$CDIR/linux/txt2img.png" "$CDIR/win/txt2img.png"
win "$CDIR/win" sprite.exe "$ROOT/$MODEL" "$ROOT/tests/fixtures/matting/fixed" gem sprite.png
"$CDIR/linux/sprite" "$MODEL" tests/fixtures/matting/fixed gem "$CDIR/linux/sprite.png"
same_pixels "$CDIR/linux/sprite.png" "$CDIR/win/sprite.png"
# Output goes to files, never through a pipe: Wine may start explorer.exe
# /desktop from a program, which inherits and holds its stdout, so a pipe
# reader would wait for an end of file that never comes.
win "$CDIR/win" async_poll.exe "$ROOT/$MODEL" >"$CDIR/async_poll.txt" 2>&1; cat "$CDIR/async_poll.txt"
grep -q "texture 64x64 ready" "$CDIR/async_poll.txt"
win "$CDIR/win" cancel.exe "$ROOT/$MODEL" >"$CDIR/cancel.txt" 2>&1; cat "$CDIR/cancel.txt"
grep -q "cancelled at step" "$CDIR/cancel.txt"
win "$CDIR/win" upscale_job.exe "$ROOT/$MODEL" "$ROOT/tests/fixtures/upscaler/x4" upscale_job.png >"$CDIR/upscale_job.txt" 2>&1
cat "$CDIR/upscale_job.txt"
"$CDIR/linux/upscale_job" "$MODEL" tests/fixtures/upscaler/x4 "$CDIR/linux/upscale_job.png" >/dev/null
same_pixels "$CDIR/linux/upscale_job.png" "$CDIR/win/upscale_job.png"

step "the README's first command under Wine"
FIRST=(--prompt "mossy stone brick wall" --seamless xy --scheduler euler_a --guidance 5 --seed 7)
cp "$OUT/examples/generate.exe" "$ORT_DLL" "$CDIR/win/"
win "$CDIR/win" generate.exe "${FIRST[@]}" --out brick.png
target/release/examples/generate "${FIRST[@]}" --out "$CDIR/linux/brick.png"
same_pixels "$CDIR/linux/brick.png" "$CDIR/win/brick.png"

step "kiln-bake under Wine: the example manifest, files equal to the Linux bake's"
BAKE="$WORK/bake"
rm -rf "$BAKE" && mkdir -p "$BAKE/win"
cp "$OUT/kiln-bake.exe" "$ORT_DLL" "$BAKE/win/"
# From the manifest's folder with relative paths, as a build machine runs it:
# the PNGs' model path and the content keys are then the same on both.
(cd examples/bake && "$WINE" "$BAKE/win/kiln-bake.exe" textures.toml --out "$BAKE/win/baked" >"$BAKE/win.txt" 2>&1) \
    || { cat "$BAKE/win.txt"; exit 1; }
grep "baked, " "$BAKE/win.txt"
(cd examples/bake && "$ROOT/target/release/kiln-bake" textures.toml --out "$BAKE/linux" >/dev/null 2>&1)
diff <(ls "$BAKE/linux") <(ls "$BAKE/win/baked")
ls "$BAKE/linux" | grep -q '\.dds$'
for f in "$BAKE/linux"/*; do
    cmp "$f" "$BAKE/win/baked/$(basename "$f")"
done
echo "kiln-bake: $(ls "$BAKE/linux" | wc -l) files equal to Linux's"
(cd examples/bake && "$WINE" "$BAKE/win/kiln-bake.exe" textures.toml --out "$BAKE/win/baked" >"$BAKE/rerun.txt" 2>&1)
grep "baked, " "$BAKE/rerun.txt"
grep -Eq '^kiln-bake: 0 baked, [1-9][0-9]* skipped, 0 failed' "$BAKE/rerun.txt"

step "test binaries under Wine"
failed=0
for exe in $test_list; do
    name=$(basename "$exe")
    echo "-- $name"
    # The C-example tests run the examples built above with MinGW (no compiler
    # runs inside Wine); the tests find kiln.dll beside them.
    # To a file, not a pipe (see the C examples above), and time-limited.
    if ! (cd "$ROOT" && KILN_TEST_C_PREBUILT="$CDIR/win" timeout 1800 "$WINE" "$exe" --test-threads 2 >"$WORK/$name.log" 2>&1); then
        failed=1
    fi
    grep -E "^test |test result|panicked|left:|right:|measured" "$WORK/$name.log" || true
    grep -q "test result: ok" "$WORK/$name.log" || failed=1
done
[ "$failed" -eq 0 ] || { echo "windows_ci: a test binary failed under Wine" >&2; exit 1; }

step "the Windows release package, unpacked"
PKG="$WORK/package"
rm -rf "$PKG" && mkdir -p "$PKG/unpacked"
python3 tools/package.py --target "$TARGET" --out "$PKG/dist" >"$PKG/package.log" 2>&1 || { cat "$PKG/package.log"; exit 1; }
grep -E '^(package|archive):' "$PKG/package.log"
python3 -m zipfile -e "$PKG"/dist/kiln-*.zip "$PKG/unpacked"
PREFIX=$(echo "$PKG"/unpacked/kiln-*)
x86_64-w64-mingw32-gcc -std=c99 -Wall -Werror -O1 -I"$PREFIX/include" examples/c/txt2img.c \
    -o "$PREFIX/bin/txt2img.exe" -L"$PREFIX/lib" -lkiln
PMODEL="$PREFIX/share/kiln/models/kiln-tiny-textures"
win "$PREFIX/bin" txt2img.exe "$PMODEL" "mossy stone brick wall" "$PKG/txt2img.png" >"$PKG/txt2img.txt" 2>&1 \
    || { cat "$PKG/txt2img.txt"; exit 1; }
cat > "$PKG/bake.toml" <<TOML
[defaults]
model = "$PMODEL"
steps = 4
seamless = "xy"

[[asset]]
name = "ground"
prompt = "mossy stone brick wall"
format = "dds"
TOML
# --version: this MinGW build writes DDS, and finds the packaged runtime.
win "$PKG" "$PREFIX/bin/kiln-bake.exe" --version >"$PKG/version.txt" 2>&1 || { cat "$PKG/version.txt"; exit 1; }
grep -E '^kiln-bake|^ONNX' "$PKG/version.txt"
grep -q '^kiln-bake .*: writes DDS' "$PKG/version.txt"
grep -q "^ONNX Runtime .*$(basename "$PREFIX").bin.onnxruntime.dll" "$PKG/version.txt"
win "$PKG" "$PREFIX/bin/kiln-bake.exe" bake.toml --out baked >"$PKG/bake.txt" 2>&1 || { cat "$PKG/bake.txt"; exit 1; }
grep "baked, " "$PKG/bake.txt"
[ "$(head -c 4 "$PKG/baked/ground.dds")" = "DDS " ] || { echo "the packaged kiln-bake.exe wrote no DDS" >&2; exit 1; }
echo "package: txt2img.exe wrote $(stat -c %s "$PKG/txt2img.png") bytes, kiln-bake.exe ground.dds $(stat -c %s "$PKG/baked/ground.dds") bytes"

step "the package's kiln.lib from an MSVC-ABI program (clang --target=x86_64-pc-windows-msvc, lld-link)"
# What a Visual Studio or Unreal project does with the package: link lib/kiln.lib
# by link.exe's rules. No MSVC runtime or SDK exists here, so the program needs
# none (tests/c/msvc_txt2img.c) and kernel32.lib is made from a .def.
MSVC="$PKG/msvc"
mkdir -p "$MSVC"
clang --target=x86_64-pc-windows-msvc -std=c11 -Wall -Wextra -Wpedantic -Werror -O1 -ffreestanding -fno-builtin \
    -I"$PREFIX/include" -c tests/c/msvc_txt2img.c -o "$MSVC/msvc_txt2img.obj"
clang++ --target=x86_64-pc-windows-msvc -std=c++17 -Wall -Wextra -Wpedantic -Werror -ffreestanding -fsyntax-only \
    -x c++ "$PREFIX/include/kiln.h"
printf 'LIBRARY kernel32.dll\nEXPORTS\n    ExitProcess\n    GetEnvironmentVariableA\n    GetStdHandle\n    WriteFile\n' >"$MSVC/kernel32.def"
llvm-dlltool -m i386:x86-64 -d "$MSVC/kernel32.def" -l "$MSVC/kernel32.lib"
lld-link /nologo /entry:start /subsystem:console /nodefaultlib "$MSVC/msvc_txt2img.obj" "$PREFIX/lib/kiln.lib" \
    "$MSVC/kernel32.lib" /out:"$PREFIX/bin/msvc_txt2img.exe"
(cd "$PREFIX/bin" && KILN_MODEL_DIR="$PMODEL" KILN_PROMPT="mossy stone brick wall" KILN_OUT="$PKG/msvc.png" \
    "$WINE" msvc_txt2img.exe >"$PKG/msvc.txt" 2>&1) || { cat "$PKG/msvc.txt"; exit 1; }
grep -E '^(ONNX Runtime|generated)' "$PKG/msvc.txt"
same_pixels "$PKG/txt2img.png" "$PKG/msvc.png"
# The CMake package hands an MSVC-ABI compiler kiln.lib and MinGW libkiln.dll.a
# (configure only: without MSVC's runtime CMake cannot link a test program).
printf 'cmake_minimum_required(VERSION 3.16)\nproject(consumer C)\nfind_package(Kiln CONFIG REQUIRED)\nget_target_property(implib Kiln::kiln IMPORTED_IMPLIB)\nmessage(STATUS "Kiln implib: ${implib}")\n' \
    >"$MSVC/CMakeLists.txt"
implib() { cmake -S "$MSVC" -B "$MSVC/build-$1" -DCMAKE_SYSTEM_NAME=Windows -DCMAKE_PREFIX_PATH="$PREFIX" "${@:2}" | sed -n 's/^-- Kiln implib: //p'; }
msvc_implib=$(implib clang -DCMAKE_C_COMPILER=clang -DCMAKE_C_COMPILER_TARGET=x86_64-pc-windows-msvc -DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY)
mingw_implib=$(implib mingw -DCMAKE_C_COMPILER=x86_64-w64-mingw32-gcc)
echo "CMake: clang for MSVC links $msvc_implib; MinGW links $mingw_implib"
[ "$msvc_implib" = "$PREFIX/lib/kiln.lib" ] && [ "$mingw_implib" = "$PREFIX/lib/libkiln.dll.a" ]
step "windows_ci: OK"
