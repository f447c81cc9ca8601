#!/usr/bin/env bash
# Prints the Python binding's view of the C API (kiln/_abi.py, kiln/enums.py) for the drift guard
# in tests/bindings.rs. Loads no library. Needs $KILN_PYTHON (default python3) with numpy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "${KILN_PYTHON:-python3}" -m kiln._abi_manifest
