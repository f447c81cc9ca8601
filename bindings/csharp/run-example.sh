#!/usr/bin/env bash
# Runs the C# txt2img example (the same steps as examples/c/txt2img.c):
#   run-example.sh MODEL_DIR PROMPT OUT.png
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: run-example.sh MODEL_DIR PROMPT OUT.png" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d "${TMPDIR:-/tmp}/kiln-csharp-example.XXXXXX")"
trap 'rm -rf "$out"' EXIT
"$here/build.sh" "$out" >/dev/null
mono "$out/Txt2Img.exe" "$1" "$2" "$3"
