#!/usr/bin/env bash
# Release package, checked as an engine team would use it: tools/package.py for
# this machine, the archive unpacked outside the source tree, then
#   - a tiny CMake project: find_package(Kiln CONFIG REQUIRED), links Kiln::kiln,
#     builds examples/c/txt2img.c and runs it on the packaged default model;
#   - the same program built with `pkg-config --cflags --libs kiln`;
#   - the packaged kiln-bake on a small manifest (a DDS texture and a PNG);
# all must load the packaged ONNX Runtime (the one beside libkiln), and the
# packaged library must be stripped, with its debug info split off, SONAME
# libkiln.so.<major> and only kiln_* exports.
#
#   tools/package_ci.sh          # from the repository root; CI runs it from .ci/run
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if ! command -v cmake >/dev/null || ! command -v pkg-config >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake pkg-config >/dev/null
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-package-ci.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

python3 tools/package.py --out "$WORK/dist" | tee "$WORK/package.log"
archive=$(sed -n 's/^archive: \(.*\) (.*/\1/p' "$WORK/package.log")
mkdir "$WORK/unpacked" && tar -xzf "$archive" -C "$WORK/unpacked"
PREFIX=$(echo "$WORK"/unpacked/kiln-*)
MODEL="$PREFIX/share/kiln/models/kiln-tiny-textures"
lib=$(readlink -f "$PREFIX/lib/libkiln.so")

echo "== the packaged library"
readelf -d "$lib" | grep -q "SONAME.*\[libkiln\.so\.[0-9]*\]" || { echo "no libkiln.so.<major> SONAME" >&2; exit 1; }
foreign=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^kiln_' || true)
[ -z "$foreign" ] || { echo "exports outside kiln_*: $foreign" >&2; exit 1; }
if readelf -S "$lib" | grep -q '\.debug_info'; then echo "library is not stripped" >&2; exit 1; fi
readelf -S "$PREFIX"/debug/*.debug | grep -q '\.debug_info' || { echo "no split debug info" >&2; exit 1; }
for f in licenses/kiln/LICENSE* licenses/onnxruntime/LICENSE licenses/onnxruntime/ThirdPartyNotices.txt \
         licenses/rust/dependencies.json lib/pkgconfig/kiln.pc lib/cmake/Kiln/KilnConfig.cmake \
         lib/cmake/Kiln/KilnConfigVersion.cmake include/kiln.h "share/kiln/models/kiln-tiny-textures/model_index.json"; do
    ls "$PREFIX"/$f >/dev/null
done
echo "stripped $(du -k "$lib" | cut -f1) KiB, SONAME ok, $(nm -D --defined-only "$lib" | wc -l) exports, all kiln_*"

# A run must load the packaged runtime: the loader's trace names the file it initializes.
runs_on_packaged_runtime() {
    LD_DEBUG=libs "$@" 2> "$WORK/ld.log" >/dev/null || { cat "$WORK/ld.log" | grep -v "^ *[0-9]*:" >&2; return 1; }
    local ort
    ort=$(sed -n 's/.*calling init: \(.*libonnxruntime\.so[^ ]*\)$/\1/p' "$WORK/ld.log" | head -n 1)
    echo "ONNX Runtime loaded from $ort"
    [ -n "$ort" ] && [ "$(readlink -f "$ort")" = "$(readlink -f "$PREFIX"/lib/libonnxruntime.so.*)" ] \
        || { echo "did not load the packaged ONNX Runtime" >&2; return 1; }
}

echo "== CMake consumer"
mkdir -p "$WORK/cmake-app"
cp examples/c/txt2img.c "$WORK/cmake-app/"
cat > "$WORK/cmake-app/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(kiln_consumer C)
find_package(Kiln 0.1 CONFIG REQUIRED)
add_executable(txt2img txt2img.c)
target_link_libraries(txt2img PRIVATE Kiln::kiln)
CMAKE
cmake -S "$WORK/cmake-app" -B "$WORK/cmake-build" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$WORK/cmake-build" >/dev/null
runs_on_packaged_runtime "$WORK/cmake-build/txt2img" "$MODEL" "mossy stone brick wall" "$WORK/cmake.png"
echo "txt2img (CMake) wrote $(stat -c %s "$WORK/cmake.png") bytes"

echo "== pkg-config consumer"
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
flags=$(pkg-config --cflags --libs kiln)
echo "pkg-config --cflags --libs kiln: $flags"
cc -std=c99 -Wall -Wextra -Werror examples/c/txt2img.c $flags \
    -Wl,-rpath,"$(pkg-config --variable=libdir kiln)" -o "$WORK/txt2img-pc"
runs_on_packaged_runtime "$WORK/txt2img-pc" "$MODEL" "mossy stone brick wall" "$WORK/pc.png"
cmp "$WORK/cmake.png" "$WORK/pc.png"

echo "== kiln-bake from the package"
if readelf -S "$PREFIX/bin/kiln-bake" | grep -q '\.debug_info'; then echo "kiln-bake is not stripped" >&2; exit 1; fi
cat > "$WORK/bake.toml" <<TOML
[defaults]
model = "$MODEL"
steps = 4
seamless = "xy"

[[asset]]
name = "ground"
prompt = "mossy stone brick wall"
format = "dds"

[[asset]]
name = "ground_preview"
prompt = "mossy stone brick wall"
TOML
"$PREFIX/bin/kiln-bake" --version | tee "$WORK/version.txt"
grep -q "^ONNX Runtime .* from $PREFIX/bin/libonnxruntime" "$WORK/version.txt"
runs_on_packaged_runtime "$PREFIX/bin/kiln-bake" "$WORK/bake.toml" --out "$WORK/baked"
[ "$(head -c 4 "$WORK/baked/ground.dds")" = "DDS " ] || { echo "kiln-bake wrote no DDS file" >&2; exit 1; }
echo "kiln-bake wrote ground.dds ($(stat -c %s "$WORK/baked/ground.dds") bytes) and ground_preview.png"
echo "package_ci: OK ($(du -h "$archive" | cut -f1) archive; CMake and pkg-config builds wrote identical PNGs; kiln-bake baked)"
