"""Prints this binding's view of the C API in the drift guard's manifest format (see
bindings/python/abi-manifest.sh and tests/bindings.rs). Loads no library."""

from __future__ import annotations

import ctypes

from kiln import _abi
from kiln.enums import C_PREFIXES


def lines() -> list[str]:
    """The manifest: functions, struct sizes, field offsets and types, enum constants."""
    out = []
    for name, (ret, params) in _abi.FUNCTIONS.items():
        out.append(f"fn {name}({','.join(p.vocab for p in params)}) -> {ret.vocab}")
    for struct in _abi.STRUCTS:
        c_name = getattr(struct, "_kiln_c_name_")
        out.append(f"struct {c_name} size {ctypes.sizeof(struct)}")
        for field, vocab in getattr(struct, "_kiln_vocab_"):
            out.append(f"field {c_name}.{field} {getattr(struct, field).offset} {vocab}")
    for enum, prefix in C_PREFIXES.items():
        for member in enum:
            out.append(f"enum {prefix}{member.name} {int(member)}")
    return out


if __name__ == "__main__":
    print("\n".join(lines()))
