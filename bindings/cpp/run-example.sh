#!/usr/bin/env bash
# The example contract: builds examples/txt2img.cpp and runs it.
#   bindings/cpp/run-example.sh MODEL_DIR PROMPT OUT.png
# The library: $KILN_LIBRARY (a path to libkiln.so) if set, else target/release/libkiln.so.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lib="${KILN_LIBRARY:-$root/target/release/libkiln.so}"
[ -f "$lib" ] || { echo "run-example.sh: no Kiln library at $lib (cargo build --release, or set KILN_LIBRARY)" >&2; exit 1; }
lib="$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# Link against that exact file (not -lkiln, which could find another) and load it from its folder.
# The program asks the loader for the library's SONAME (libkiln.so.<major>), which a cargo
# build does not create: a link beside the program stands in for it.
soname="$(readelf -d "$lib" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
[ -z "$soname" ] || ln -s "$lib" "$out/$soname"
"${CXX:-c++}" -std=c++17 -Wall -Wextra -Werror -O1 -I"$root/include" -I"$here" "$here/examples/txt2img.cpp" \
    -o "$out/txt2img" "$lib" -Wl,-rpath,"$out:$(dirname "$lib")"
env -u LD_LIBRARY_PATH "$out/txt2img" "$@"
