#!/usr/bin/env bash
# Prints the C++ binding's view of the C API for the drift guard (tests/bindings.rs).
# Needs a C++17 compiler ($CXX, default c++).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"${CXX:-c++}" -std=c++17 -Wall -Wextra -Werror -I"$root/include" -I"$here" "$here/tools/abi_manifest.cpp" -o "$out/abi_manifest"
"$out/abi_manifest"
