#!/usr/bin/env bash
# The example contract: runs examples/txt2img.py from this source tree.
#   bindings/python/run-example.sh MODEL_DIR PROMPT OUT.png
# The library: $KILN_LIBRARY (a path to libkiln.so) if set, else target/release/libkiln.so.
# Needs numpy and Pillow for $KILN_PYTHON (default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lib="${KILN_LIBRARY:-$root/target/release/libkiln.so}"
[ -f "$lib" ] || { echo "run-example.sh: no Kiln library at $lib (cargo build --release, or set KILN_LIBRARY)" >&2; exit 1; }
KILN_LIBRARY="$lib" PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "${KILN_PYTHON:-python3}" "$here/examples/txt2img.py" "$@"
