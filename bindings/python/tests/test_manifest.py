"""The ABI tables the drift guard reads are the ones the binding uses."""

from __future__ import annotations

import ctypes
import re

from kiln import _abi, _library
from kiln._abi_manifest import lines

LINE = re.compile(
    r"fn kiln_\w+\(((u8|i8|u16|i16|u32|i32|u64|i64|usize|f32|f64|ptr|fnptr)(,(u8|i8|u16|i16|u32|i32|u64|i64|usize|f32|f64|ptr|fnptr))*)?\) -> \w+"
    r"|struct kiln_\w+ size \d+|field kiln_\w+\.\w+ \d+ (u8|i8|u16|i16|u32|i32|u64|i64|usize|f32|f64|ptr|fnptr)"
    r"|enum KILN_[A-Z0-9_]+ \d+"
)


def test_manifest_lines_are_well_formed() -> None:
    bad = [line for line in lines() if not LINE.fullmatch(line)]
    assert not bad


def test_every_prototype_is_set_on_the_loaded_library() -> None:
    lib = _library.lib()
    for name, (ret, params) in _abi.FUNCTIONS.items():
        fn = getattr(lib, name)
        assert fn.restype is ret.ctype and fn.argtypes == [p.ctype for p in params], name


def test_struct_sizes_are_the_ones_kiln_checks() -> None:
    # kiln_*_init writes struct_size = sizeof on Kiln's side: it must equal ctypes' size.
    for struct, init in ((_abi.GenerateOptions, "kiln_generate_options_init"), (_abi.RuntimeOptions, "kiln_runtime_options_init"),
                         (_abi.JobOptions, "kiln_job_options_init"), (_abi.SpriteOptions, "kiln_sprite_options_init"),
                         (_abi.PixelArtOptions, "kiln_pixel_art_options_init"),
                         (_abi.MaterialOptions, "kiln_material_options_init"),
                         (_abi.ModelLoadOptions, "kiln_model_load_options_init"), (_abi.Lora, "kiln_lora_init"),
                         (_abi.UpscaleOptions, "kiln_upscale_options_init")):
        s = struct()
        getattr(_library.lib(), init)(ctypes.byref(s))
        assert s.struct_size == ctypes.sizeof(struct), getattr(struct, "_kiln_c_name_")
