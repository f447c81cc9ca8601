"""This binding's view of Kiln's C API (include/kiln.h): types, structs and function prototypes.

Every type carries its name in the drift guard's vocabulary next to its ctypes type, because ctypes
itself cannot tell them apart (``c_size_t is c_uint64`` on 64-bit Linux). ``python -m
kiln._abi_manifest`` prints these tables for tests/bindings.rs, which compares them with the header.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

__all__ = ["CType", "STRUCTS", "FUNCTIONS", "LOG_FN", "JOB_CALLBACK"]


@dataclass(frozen=True)
class CType:
    """A C type: its manifest vocabulary name and the ctypes type that marshals it."""

    vocab: str
    ctype: Any


VOID = CType("void", None)
U8 = CType("u8", ctypes.c_uint8)
U32 = CType("u32", ctypes.c_uint32)
I32 = CType("i32", ctypes.c_int32)
U64 = CType("u64", ctypes.c_uint64)
USIZE = CType("usize", ctypes.c_size_t)
F32 = CType("f32", ctypes.c_float)
#: Any pointer, passed as an address (int), a ctypes buffer or None.
PTR = CType("ptr", ctypes.c_void_p)
#: A NUL-terminated UTF-8 string in (bytes or None).
STR = CType("ptr", ctypes.c_char_p)
#: kiln_status: a uint32_t.
STATUS = U32


def ptr_to(target: Any) -> CType:
    """A pointer to a ctypes type (struct or scalar), for out-parameters and struct arguments."""
    return CType("ptr", ctypes.POINTER(target))


#: kiln_log_fn: void (*)(void *user_data, uint32_t level, const char *message, size_t message_len)
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t)


class JobEvent(ctypes.Structure):
    """kiln_job_event (declared before its callback type, which points to it)."""


#: kiln_job_callback: void (*)(void *user_data, const kiln_job_event *event)
JOB_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(JobEvent))

STRUCTS: list[type[ctypes.Structure]] = []


def _layout(cls: type[ctypes.Structure], c_name: str, fields: list[tuple[str, CType]]) -> None:
    """Gives a ctypes struct its fields and records their vocabulary types for the manifest."""
    cls._fields_ = [(name, t.ctype) for name, t in fields]
    setattr(cls, "_kiln_c_name_", c_name)
    setattr(cls, "_kiln_vocab_", [(name, t.vocab) for name, t in fields])
    STRUCTS.append(cls)


def _struct(c_name: str, fields: list[tuple[str, CType]]) -> type[ctypes.Structure]:
    cls = type(c_name, (ctypes.Structure,), {})
    _layout(cls, c_name, fields)
    return cls


_layout(JobEvent, "kiln_job_event", [
    ("struct_size", U32), ("kind", U32), ("job", U64), ("step", U32), ("total_steps", U32),
    ("state", U32), ("width", U32), ("height", U32), ("row_pitch", USIZE), ("pixels", PTR),
])
JobOptions = _struct("kiln_job_options", [
    ("struct_size", U32), ("priority", I32), ("preview_interval", U32),
    ("callback", CType("fnptr", JOB_CALLBACK)), ("user_data", PTR),
])
GenerateOptions = _struct("kiln_generate_options", [
    ("struct_size", U32), ("width", U32), ("height", U32), ("steps", U32), ("guidance_scale", F32),
    ("scheduler", U32), ("seed", U64), ("prompt", STR), ("negative_prompt", STR), ("initial_noise", PTR),
    ("initial_noise_len", USIZE), ("guidance_rescale", F32), ("prompt_weighting", U32), ("reserved", U32),
    ("init_image", PTR), ("init_image_len", USIZE), ("init_image_width", U32), ("init_image_height", U32),
    ("init_image_row_pitch", USIZE), ("init_image_channels", U32), ("strength", F32), ("posterior_mean", U32),
    ("noise_generator", U32), ("clip_skip", U32), ("reserved3", U32), ("mask", PTR), ("mask_len", USIZE),
    ("mask_width", U32), ("mask_height", U32), ("scheduler_overrides", STR),
    ("vae_tile_size", U32), ("vae_tile_overlap", U32), ("vae_memory_budget_mib", U32), ("final_decoder", U32),
    ("controls", PTR), ("control_count", USIZE), ("guess_mode", U32), ("reserved4", U32),
    ("prompt_2", STR), ("negative_prompt_2", STR), ("original_width", U32), ("original_height", U32),
    ("crop_top", U32), ("crop_left", U32), ("target_width", U32), ("target_height", U32),
    ("negative_original_width", U32), ("negative_original_height", U32), ("negative_crop_top", U32),
    ("negative_crop_left", U32), ("negative_target_width", U32), ("negative_target_height", U32),
    ("aesthetic_score", F32), ("negative_aesthetic_score", F32),
    ("refiner", PTR), ("refiner_start", F32),
    ("variation_seed", U64), ("variation_strength", F32), ("reserved5", U32),
])
JobProgress = _struct("kiln_job_progress", [
    ("struct_size", U32), ("state", U32), ("step", U32), ("total_steps", U32), ("preview_step", U32),
    ("preview_width", U32), ("preview_height", U32),
])
ModelLoadOptions = _struct("kiln_model_load_options", [
    ("struct_size", U32), ("seamless", U32), ("matting_path", STR), ("quantization", U32), ("attention", U32),
    ("lora_slots", U32),
])
ModelInfo = _struct("kiln_model_info", [
    ("struct_size", U32), ("default_size", U32), ("size_multiple", U32), ("latent_channels", U32),
    ("vae_downsampling", U32), ("embedding_dim", U32), ("has_vae_encoder", U32), ("has_matting", U32),
    ("quantization", U32), ("fused_attention", U32), ("lora_slots", U32),
])
SpriteOptions = _struct("kiln_sprite_options", [
    ("struct_size", U32), ("auto_key", U32), ("key_rgb", U32), ("inner_tolerance", F32),
    ("outer_tolerance", F32), ("despill", U32), ("feather_radius", U32), ("premultiplied", U32),
    ("bbox_threshold", U32), ("matte", U32),
])
Rect = _struct("kiln_rect", [("x", U32), ("y", U32), ("width", U32), ("height", U32)])
PixelArtOptions = _struct("kiln_pixel_art_options", [
    ("struct_size", U32), ("cell", U32), ("scale", U32), ("colors", U32), ("cell_color", U32),
    ("alpha_threshold", U32), ("palette_rgb", PTR), ("palette_len", USIZE),
])
MaterialOptions = _struct("kiln_material_options", [
    ("struct_size", U32), ("blur_radius", U32), ("strength", F32), ("convention", U32), ("wrap", U32),
    ("invert_height", U32),
])
RuntimeOptions = _struct("kiln_runtime_options", [
    ("struct_size", U32), ("intra_op_threads", U32), ("inter_op_threads", U32), ("allow_spinning", U32),
    ("onnxruntime_path", STR), ("log_callback", CType("fnptr", LOG_FN)), ("log_user_data", PTR),
    ("log_level", U32), ("job_workers", U32), ("providers", PTR), ("providers_len", USIZE),
    ("device_id", I32), ("require_provider", U32), ("residency", U32), ("embedding_cache_entries", U32),
    ("graph_cache_dir", STR), ("sequential_load", U32), ("gpu_memory_limit", U64), ("gpu_math", U32),
    ("padding_after_gpu_math", U32), ("static_unet", U32), ("cuda_graph", U32), ("device_latents", U32),
])
Lora = _struct("kiln_lora", [
    ("struct_size", U32), ("scale", F32), ("path", STR), ("has_text_encoder_scale", U32), ("text_encoder_scale", F32),
])
Embedding = _struct("kiln_embedding", [("struct_size", U32), ("path", STR), ("token", STR)])
Control = _struct("kiln_control", [
    ("struct_size", U32), ("preprocess", U32), ("controlnet", STR), ("image", PTR), ("scale", F32), ("start", F32),
    ("end", F32), ("canny_low", F32), ("canny_high", F32), ("reserved", U32),
])
UpscaleOptions = _struct("kiln_upscale_options", [
    ("struct_size", U32), ("tile", U32), ("context", U32), ("seamless", U32), ("alpha", U32),
])

_P_USIZE = ptr_to(ctypes.c_size_t)
_P_U32 = ptr_to(ctypes.c_uint32)
_P_HANDLE = ptr_to(ctypes.c_void_p)

#: name -> (return type, parameter types), the prototypes this binding calls.
FUNCTIONS: dict[str, tuple[CType, list[CType]]] = {
    "kiln_version": (U32, []),
    "kiln_version_string": (STR, []),
    "kiln_status_name": (STR, [U32]),
    "kiln_last_error_message": (STATUS, [PTR, USIZE, _P_USIZE]),
    "kiln_providers_compiled": (U32, []),
    "kiln_runtime_options_init": (VOID, [ptr_to(RuntimeOptions)]),
    "kiln_runtime_create": (STATUS, [ptr_to(RuntimeOptions), _P_HANDLE]),
    "kiln_runtime_destroy": (VOID, [PTR]),
    "kiln_runtime_onnxruntime_version": (STATUS, [PTR, PTR, USIZE, _P_USIZE]),
    "kiln_runtime_onnxruntime_path": (STATUS, [PTR, PTR, USIZE, _P_USIZE]),
    "kiln_runtime_provider_available": (STATUS, [PTR, U32, _P_U32]),
    "kiln_model_load_options_init": (VOID, [ptr_to(ModelLoadOptions)]),
    "kiln_model_load": (STATUS, [PTR, STR, _P_HANDLE]),
    "kiln_model_load_with": (STATUS, [PTR, STR, ptr_to(ModelLoadOptions), _P_HANDLE]),
    "kiln_model_free": (VOID, [PTR]),
    "kiln_model_get_info": (STATUS, [PTR, ptr_to(ModelInfo)]),
    "kiln_model_graph_provider": (STATUS, [PTR, U32, PTR, USIZE, _P_USIZE]),
    "kiln_model_seamless": (STATUS, [PTR, U32, _P_HANDLE]),
    "kiln_lora_init": (VOID, [ptr_to(Lora)]),
    "kiln_embedding_init": (VOID, [ptr_to(Embedding)]),
    "kiln_model_with_loras": (STATUS, [PTR, ptr_to(Lora), USIZE, _P_HANDLE]),
    "kiln_model_with_adapters": (STATUS, [PTR, ptr_to(Lora), USIZE, ptr_to(Embedding), USIZE, _P_HANDLE]),
    "kiln_model_lora_count": (STATUS, [PTR, _P_USIZE]),
    "kiln_model_lora_text_encoder_scale": (STATUS, [PTR, USIZE, ptr_to(ctypes.c_float)]),
    "kiln_model_lora_get": (STATUS, [PTR, USIZE, ptr_to(ctypes.c_float), PTR, USIZE, _P_USIZE]),
    "kiln_generate_options_init": (VOID, [ptr_to(GenerateOptions)]),
    "kiln_model_generate": (STATUS, [PTR, ptr_to(GenerateOptions), _P_HANDLE]),
    "kiln_model_generate_into": (STATUS, [PTR, ptr_to(GenerateOptions), PTR, USIZE, USIZE]),
    "kiln_model_extend_texture": (STATUS, [PTR, ptr_to(GenerateOptions), U32, U32, U32, U32, _P_HANDLE]),
    "kiln_model_make_tileable": (STATUS, [PTR, ptr_to(GenerateOptions), U32, _P_HANDLE]),
    "kiln_model_make_sprite": (STATUS, [PTR, PTR, ptr_to(SpriteOptions), _P_HANDLE, ptr_to(Rect)]),
    "kiln_image_create": (STATUS, [U32, U32, PTR, USIZE, USIZE, _P_HANDLE]),
    "kiln_image_width": (U32, [PTR]),
    "kiln_image_height": (U32, [PTR]),
    "kiln_image_pixels": (PTR, [PTR]),
    "kiln_image_copy": (STATUS, [PTR, PTR, USIZE, USIZE]),
    "kiln_image_write_png": (STATUS, [PTR, STR]),
    "kiln_image_free": (VOID, [PTR]),
    "kiln_sprite_options_init": (VOID, [ptr_to(SpriteOptions)]),
    "kiln_image_make_sprite": (STATUS, [PTR, ptr_to(SpriteOptions), _P_HANDLE, ptr_to(Rect)]),
    "kiln_pixel_art_options_init": (VOID, [ptr_to(PixelArtOptions)]),
    "kiln_image_pixel_art": (STATUS, [PTR, ptr_to(PixelArtOptions), _P_HANDLE]),
    "kiln_material_options_init": (VOID, [ptr_to(MaterialOptions)]),
    "kiln_image_material_maps": (STATUS, [PTR, ptr_to(MaterialOptions), _P_HANDLE, _P_HANDLE]),
    "kiln_image_seam_score": (STATUS, [PTR, U32, ptr_to(ctypes.c_float)]),
    "kiln_job_options_init": (VOID, [ptr_to(JobOptions)]),
    "kiln_job_submit": (STATUS, [PTR, ptr_to(GenerateOptions), ptr_to(JobOptions), ptr_to(ctypes.c_uint64)]),
    "kiln_job_submit_extend_texture": (STATUS, [PTR, ptr_to(GenerateOptions), U32, U32, U32, U32, ptr_to(JobOptions),
                                                ptr_to(ctypes.c_uint64)]),
    "kiln_job_submit_make_tileable": (STATUS, [PTR, ptr_to(GenerateOptions), U32, ptr_to(JobOptions),
                                               ptr_to(ctypes.c_uint64)]),
    "kiln_job_submit_upscale": (STATUS, [PTR, PTR, ptr_to(UpscaleOptions), ptr_to(JobOptions),
                                         ptr_to(ctypes.c_uint64)]),
    "kiln_job_submit_upscaled": (STATUS, [PTR, ptr_to(GenerateOptions), PTR, ptr_to(UpscaleOptions),
                                          ptr_to(JobOptions), ptr_to(ctypes.c_uint64)]),
    "kiln_job_submit_model_load": (STATUS, [PTR, STR, ptr_to(ModelLoadOptions), ptr_to(JobOptions),
                                            ptr_to(ctypes.c_uint64)]),
    "kiln_job_submit_with_adapters": (STATUS, [PTR, ptr_to(Lora), USIZE, ptr_to(Embedding), USIZE, ptr_to(JobOptions),
                                               ptr_to(ctypes.c_uint64)]),
    "kiln_job_submit_seamless": (STATUS, [PTR, U32, ptr_to(JobOptions), ptr_to(ctypes.c_uint64)]),
    "kiln_job_submit_upscaler_load": (STATUS, [PTR, STR, ptr_to(JobOptions), ptr_to(ctypes.c_uint64)]),
    "kiln_job_upscaler": (STATUS, [U64, _P_HANDLE]),
    "kiln_job_model": (STATUS, [U64, _P_HANDLE]),
    "kiln_job_poll": (STATUS, [U64, ptr_to(JobProgress)]),
    "kiln_job_wait": (STATUS, [U64, U32, _P_U32]),
    "kiln_job_cancel": (STATUS, [U64]),
    "kiln_job_error_message": (STATUS, [U64, PTR, USIZE, _P_USIZE]),
    "kiln_job_image_size": (STATUS, [U64, _P_U32, _P_U32]),
    "kiln_job_copy_image": (STATUS, [U64, PTR, USIZE, USIZE]),
    "kiln_job_copy_preview": (STATUS, [U64, PTR, USIZE, USIZE, _P_U32]),
    "kiln_job_free": (STATUS, [U64]),
    # ControlNet (issue 17)
    "kiln_control_init": (VOID, [ptr_to(Control)]),
    "kiln_image_canny": (STATUS, [PTR, F32, F32, _P_HANDLE]),
    "kiln_image_height_to_depth": (STATUS, [PTR, _P_HANDLE]),
    # Upscalers (super-resolution graphs)
    "kiln_upscale_options_init": (VOID, [ptr_to(UpscaleOptions)]),
    "kiln_upscaler_load": (STATUS, [PTR, STR, _P_HANDLE]),
    "kiln_upscaler_free": (VOID, [PTR]),
    "kiln_upscaler_scale": (STATUS, [PTR, _P_U32]),
    "kiln_upscaler_upscale": (STATUS, [PTR, PTR, ptr_to(UpscaleOptions), _P_HANDLE]),
    "kiln_upscaler_cancel": (STATUS, [PTR]),
}
