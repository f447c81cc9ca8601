#!/usr/bin/env bash
# Prints the C# binding's view of the C API (fn/struct/field/enum lines) for the drift
# guard in tests/bindings.rs; see bindings/csharp/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d "${TMPDIR:-/tmp}/kiln-csharp-abi.XXXXXX")"
trap 'rm -rf "$out"' EXIT
"$here/build.sh" "$out" >/dev/null
mono "$out/AbiManifest.exe"
