#!/usr/bin/env bash
# Builds the C# binding with Mono's compiler into OUT_DIR (default: a new temp folder,
# printed on stdout): Kiln.dll from Runtime/ (the Unity-only files compile to nothing
# outside Unity), Kiln.dll.config mapping DllImport("kiln") to the native library, and
# the example, the tests, the ABI-manifest tool and the Unity sample's runner.
#   build.sh [OUT_DIR]
# The native library: $KILN_LIBRARY if set, else target/release/libkiln.so.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$(mktemp -d "${TMPDIR:-/tmp}/kiln-csharp.XXXXXX")}"
mkdir -p "$out"
lib="${KILN_LIBRARY:-$root/target/release/libkiln.so}"
if [ ! -f "$lib" ]; then
    echo "build.sh: native library not found at $lib (build with cargo build --release, or set KILN_LIBRARY)" >&2
    exit 1
fi
lib="$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")"
command -v mcs >/dev/null || { echo "build.sh: mcs not found (apt-get install mono-mcs mono-runtime)" >&2; exit 1; }

# C# 7 is what Mono's mcs and every supported Unity accept; warnings are errors.
mcs_flags=(-langversion:7 -warnaserror+ -nologo)
mcs "${mcs_flags[@]}" -target:library -nowarn:1591 -doc:"$out/Kiln.xml" -out:"$out/Kiln.dll" -recurse:"$here/Runtime/*.cs"
cat > "$out/Kiln.dll.config" <<XML
<configuration>
  <dllmap dll="kiln" target="$lib" />
</configuration>
XML
mcs "${mcs_flags[@]}" -r:"$out/Kiln.dll" -out:"$out/Txt2Img.exe" "$here/examples/Txt2Img.cs"
mcs "${mcs_flags[@]}" -r:"$out/Kiln.dll" -r:System.Core.dll -out:"$out/KilnTests.exe" "$here/tests/KilnTests.cs" "$here/tests/Goldens.cs"
mcs "${mcs_flags[@]}" -r:"$out/Kiln.dll" -r:System.Core.dll -out:"$out/AbiManifest.exe" "$here/tools/AbiManifest.cs"
# The Unity-only files (Runtime/Unity, Samples~), type-checked as Unity would compile
# them (UNITY_5_3_OR_NEWER) against a stub of the UnityEngine APIs they use.
mcs "${mcs_flags[@]}" -target:library -out:"$out/UnityEngineStub.dll" "$here/tests/unity-stubs/UnityEngine.cs"
mcs "${mcs_flags[@]}" -target:library -define:UNITY_5_3_OR_NEWER -define:UNITY_EDITOR -r:"$out/UnityEngineStub.dll" \
    -out:"$out/Kiln.UnityCheck.dll" -recurse:"$here/Runtime/*.cs" "$here/Samples~/FrameLoop/KilnFrameLoopSample.cs"
# ...and a runner that drives the sample as Unity would (tests/csharp.rs runs it).
cp "$out/Kiln.dll.config" "$out/Kiln.UnityCheck.dll.config"
mcs "${mcs_flags[@]}" -r:"$out/UnityEngineStub.dll" -r:"$out/Kiln.UnityCheck.dll" -out:"$out/UnitySampleRunner.exe" \
    "$here/tests/UnitySampleRunner.cs"
echo "$out"
