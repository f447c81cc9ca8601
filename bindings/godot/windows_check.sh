#!/usr/bin/env bash
# The Godot extension on Windows, without Godot: cross-builds it for
# x86_64-pc-windows-gnu with MinGW, checks that kiln_godot.dll exports the entry
# symbol kiln.gdextension names, and runs the crate's unit, addon-file and
# fixture-model tests (tests/session.rs: options → preparation thread → Kiln job
# → frame-by-frame events, on the real ONNX Runtime for Windows) under Wine.
#   bindings/godot/windows_check.sh
# Not run by CI yet: from clean it takes about 6 min to build on 2 cores and 4 min
# to test. Needs MinGW, Wine and the Wine prefix that tools/windows_ci.sh makes
# (run that once first).
set -euo pipefail
cd "$(dirname "$0")"
TARGET=x86_64-pc-windows-gnu
WORK=${KILN_WINE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-wine}
export WINEPREFIX="$WORK/prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
if [ ! -f "$WINEPREFIX/.kiln-ready" ]; then
    echo "windows_check: no Wine prefix at $WINEPREFIX; run tools/windows_ci.sh once first" >&2
    exit 1
fi
WINE=$(command -v wine64 || command -v wine)
[ -x /usr/lib/wine/wine64 ] && WINE=/usr/lib/wine/wine64

cargo build --release --target "$TARGET"
# (Read whole first: grep -q closing the pipe early would fail it under pipefail.)
exports=$(x86_64-w64-mingw32-objdump -p "target/$TARGET/release/kiln_godot.dll")
grep -q '\] kiln_godot_init$' <<<"$exports" \
    || { echo "windows_check: kiln_godot.dll does not export kiln_godot_init" >&2; exit 1; }
echo "kiln_godot.dll: $(stat -c %s "target/$TARGET/release/kiln_godot.dll") bytes, exports kiln_godot_init"
tests=$(cargo test --release --target "$TARGET" --no-run 2>&1 | sed -n 's/.*Executable .* (\(.*\.exe\))$/\1/p')
# Kiln is linked into the test programs, so it is told where Windows' ONNX Runtime is.
ORT=$(ls "$PWD"/target/"$TARGET"/release/build/kiln-*/out/onnxruntime/onnxruntime/onnxruntime.dll | head -n 1)
failed=0
for exe in $tests; do
    log="$WORK/godot-$(basename "$exe" .exe).log"
    # To a file, not a pipe: see tools/windows_ci.sh.
    ORT_DYLIB_PATH="$ORT" timeout 1800 "$WINE" "$exe" --test-threads 2 >"$log" 2>&1 || failed=1
    echo "-- $(basename "$exe"): $(grep -E 'test result' "$log" || echo 'no result')"
    grep -E "panicked|FAILED" "$log" || true
    grep -q "test result: ok" "$log" || failed=1
done
[ "$failed" -eq 0 ] || { echo "windows_check: a test program failed under Wine" >&2; exit 1; }
echo "windows_check: OK"
