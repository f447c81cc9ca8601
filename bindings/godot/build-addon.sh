#!/usr/bin/env bash
# Builds the Kiln GDExtension (release) and assembles the Godot addon:
#
#   OUT_DIR/addons/kiln/kiln.gdextension
#   OUT_DIR/addons/kiln/bin/libkiln_godot.so        (the extension, Kiln inside)
#   OUT_DIR/addons/kiln/bin/libonnxruntime.so.1.31.1 (the ONNX Runtime it loads)
#
# OUT_DIR is a Godot project folder (or any folder to copy from). Usage:
#   bindings/godot/build-addon.sh OUT_DIR
# Set KILN_GODOT_SKIP_BUILD=1 to package an existing build. Linux only so far.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)/addons/kiln"

if [ "${KILN_GODOT_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$here" && cargo build --release)
fi
lib="$here/target/release/libkiln_godot.so"
[ -f "$lib" ] || { echo "build-addon: $lib is missing (build failed?)" >&2; exit 1; }
# Godot looks the library up by the entry symbol kiln.gdextension names.
if command -v nm >/dev/null && ! nm -D --defined-only "$lib" | grep -qw kiln_godot_init; then
    echo "build-addon: $lib does not export kiln_godot_init" >&2
    exit 1
fi

# The ONNX Runtime that kiln's build script fetched for this build.
ort=""
for f in "$here"/target/release/build/kiln-*/out/onnxruntime/onnxruntime/libonnxruntime.so.*; do
    [ -f "$f" ] && ort="$f"
done
if [ -z "$ort" ]; then
    echo "build-addon: no ONNX Runtime under $here/target/release/build/kiln-*/out/onnxruntime/;" \
         "the build could not fetch it (see tools/fetch_onnxruntime.py)" >&2
    exit 1
fi
want="libonnxruntime.so.1.31.1"
if [ "$(basename "$ort")" != "$want" ]; then
    echo "build-addon: found $(basename "$ort") but kiln.gdextension names $want" >&2
    exit 1
fi

rm -rf "$out"
mkdir -p "$out/bin"
cp "$here/addon/kiln.gdextension" "$out/"
# Debug info stays in the cargo build; the shipped copy is stripped of it.
if command -v strip >/dev/null; then
    strip --strip-debug -o "$out/bin/libkiln_godot.so" "$lib"
else
    cp "$lib" "$out/bin/"
fi
cp "$ort" "$out/bin/$want"
echo "$out"
