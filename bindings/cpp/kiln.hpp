/*
 * kiln.hpp: a header-only C++17 layer over Kiln's C API (include/kiln.h).
 *
 *   kiln::Runtime, kiln::Model, kiln::Image, kiln::Job   move-only owners: no deleters to write
 *   kiln::Upscaler                                       the same for a super-resolution graph (Runtime::load_upscaler)
 *   kiln::Result<T>                                      [[nodiscard]]; no exceptions needed
 *   kiln::control(name, image)                           a ControlNet entry for kiln_generate_options.controls
 *   result.value(), kiln::check(result)                  the optional throwing layer (kiln::Exception),
 *                                                        compiled only when exceptions are on
 *
 * Options structs are Kiln's own C structs, filled with defaults by kiln::defaults<T>(); strings and
 * arrays in them are borrowed for the call, as in C. Errors carry the status and the message Kiln gave
 * on the calling thread (or the job's own message).
 *
 * The tables below (KILN_HPP_FUNCTIONS, KILN_HPP_STRUCT_FIELDS, KILN_HPP_ENUM_*) are this binding's view
 * of the C API. static_asserts check them against kiln.h when this header is compiled, so a header that
 * changed underneath fails the build with the name of what changed; bindings/cpp/abi-manifest.sh prints
 * them for the drift guard in tests/bindings.rs.
 */
#ifndef KILN_HPP
#define KILN_HPP

#include "kiln.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include <cassert>
#if defined(__cpp_exceptions) && !defined(KILN_CPP_NO_EXCEPTIONS)
#define KILN_CPP_EXCEPTIONS 1
#include <stdexcept>
#endif

/* Every C function this binding calls: X(return type, name, (parameter types)). */
#define KILN_HPP_FUNCTIONS(X) \
    X(kiln_status, kiln_last_error_message, (char *, size_t, size_t *)) \
    X(uint32_t, kiln_image_width, (const struct kiln_image *)) \
    X(uint32_t, kiln_image_height, (const struct kiln_image *)) \
    X(const uint8_t *, kiln_image_pixels, (const struct kiln_image *)) \
    X(kiln_status, kiln_image_copy, (const struct kiln_image *, uint8_t *, size_t, size_t)) \
    X(kiln_status, kiln_image_write_png, (const struct kiln_image *, const char *)) \
    X(void, kiln_image_free, (struct kiln_image *)) \
    X(void, kiln_job_options_init, (struct kiln_job_options *)) \
    X(kiln_status, kiln_job_submit, (const struct kiln_model *, const struct kiln_generate_options *, const struct kiln_job_options *, uint64_t *)) \
    X(kiln_status, kiln_job_submit_extend_texture, (const struct kiln_model *, const struct kiln_generate_options *, uint32_t, uint32_t, uint32_t, uint32_t, const struct kiln_job_options *, uint64_t *)) \
    X(kiln_status, kiln_job_submit_make_tileable, (const struct kiln_model *, const struct kiln_generate_options *, uint32_t, const struct kiln_job_options *, uint64_t *)) \
    X(kiln_status, kiln_job_submit_upscale, (const struct kiln_upscaler *, const struct kiln_image *, const struct kiln_upscale_options *, const struct kiln_job_options *, uint64_t *)) \
    X(kiln_status, kiln_job_submit_upscaled, (const struct kiln_model *, const struct kiln_generate_options *, const struct kiln_upscaler *, const struct kiln_upscale_options *, const struct kiln_job_options *, uint64_t *)) \
    X(kiln_status, kiln_job_submit_model_load, (const struct kiln_runtime *, const char *, const struct kiln_model_load_options *, const struct kiln_job_options *, uint64_t *)) \
    X(kiln_status, kiln_job_submit_with_adapters, (const struct kiln_model *, const struct kiln_lora *, size_t, const struct kiln_embedding *, size_t, const struct kiln_job_options *, uint64_t *)) \
    X(kiln_status, kiln_job_submit_seamless, (const struct kiln_model *, uint32_t, const struct kiln_job_options *, uint64_t *)) \
    X(kiln_status, kiln_job_submit_upscaler_load, (const struct kiln_runtime *, const char *, const struct kiln_job_options *, uint64_t *)) \
    X(kiln_status, kiln_job_upscaler, (uint64_t, struct kiln_upscaler **)) \
    X(kiln_status, kiln_job_model, (uint64_t, struct kiln_model **)) \
    X(kiln_status, kiln_job_poll, (uint64_t, struct kiln_job_progress *)) \
    X(kiln_status, kiln_job_wait, (uint64_t, uint32_t, uint32_t *)) \
    X(kiln_status, kiln_job_cancel, (uint64_t)) \
    X(kiln_status, kiln_job_error_message, (uint64_t, char *, size_t, size_t *)) \
    X(kiln_status, kiln_job_image_size, (uint64_t, uint32_t *, uint32_t *)) \
    X(kiln_status, kiln_job_copy_image, (uint64_t, uint8_t *, size_t, size_t)) \
    X(kiln_status, kiln_job_copy_preview, (uint64_t, uint8_t *, size_t, size_t, uint32_t *)) \
    X(kiln_status, kiln_job_free, (uint64_t)) \
    X(uint32_t, kiln_providers_compiled, ()) \
    X(kiln_status, kiln_runtime_provider_available, (const struct kiln_runtime *, uint32_t, uint32_t *)) \
    X(kiln_status, kiln_model_graph_provider, (const struct kiln_model *, uint32_t, char *, size_t, size_t *)) \
    X(void, kiln_generate_options_init, (struct kiln_generate_options *)) \
    X(kiln_status, kiln_model_load, (const struct kiln_runtime *, const char *, struct kiln_model **)) \
    X(void, kiln_model_load_options_init, (struct kiln_model_load_options *)) \
    X(kiln_status, kiln_model_load_with, (const struct kiln_runtime *, const char *, const struct kiln_model_load_options *, struct kiln_model **)) \
    X(void, kiln_model_free, (struct kiln_model *)) \
    X(kiln_status, kiln_model_get_info, (const struct kiln_model *, struct kiln_model_info *)) \
    X(kiln_status, kiln_model_generate, (const struct kiln_model *, const struct kiln_generate_options *, struct kiln_image **)) \
    X(kiln_status, kiln_model_generate_into, (const struct kiln_model *, const struct kiln_generate_options *, uint8_t *, size_t, size_t)) \
    X(kiln_status, kiln_image_create, (uint32_t, uint32_t, const uint8_t *, size_t, size_t, struct kiln_image **)) \
    X(void, kiln_sprite_options_init, (struct kiln_sprite_options *)) \
    X(kiln_status, kiln_image_make_sprite, (const struct kiln_image *, const struct kiln_sprite_options *, struct kiln_image **, struct kiln_rect *)) \
    X(kiln_status, kiln_model_make_sprite, (const struct kiln_model *, const struct kiln_image *, const struct kiln_sprite_options *, struct kiln_image **, struct kiln_rect *)) \
    X(void, kiln_pixel_art_options_init, (struct kiln_pixel_art_options *)) \
    X(kiln_status, kiln_image_pixel_art, (const struct kiln_image *, const struct kiln_pixel_art_options *, struct kiln_image **)) \
    X(void, kiln_material_options_init, (struct kiln_material_options *)) \
    X(kiln_status, kiln_image_material_maps, (const struct kiln_image *, const struct kiln_material_options *, struct kiln_image **, struct kiln_image **)) \
    X(kiln_status, kiln_image_seam_score, (const struct kiln_image *, uint32_t, float *)) \
    X(void, kiln_runtime_options_init, (struct kiln_runtime_options *)) \
    X(kiln_status, kiln_runtime_create, (const struct kiln_runtime_options *, struct kiln_runtime **)) \
    X(void, kiln_runtime_destroy, (struct kiln_runtime *)) \
    X(kiln_status, kiln_runtime_onnxruntime_version, (const struct kiln_runtime *, char *, size_t, size_t *)) \
    X(kiln_status, kiln_runtime_onnxruntime_path, (const struct kiln_runtime *, char *, size_t, size_t *)) \
    X(kiln_status, kiln_model_seamless, (const struct kiln_model *, uint32_t, struct kiln_model **)) \
    X(const char *, kiln_status_name, (uint32_t)) \
    X(kiln_status, kiln_model_extend_texture, (const struct kiln_model *, const struct kiln_generate_options *, uint32_t, uint32_t, uint32_t, uint32_t, struct kiln_image **)) \
    X(kiln_status, kiln_model_make_tileable, (const struct kiln_model *, const struct kiln_generate_options *, uint32_t, struct kiln_image **)) \
    X(void, kiln_lora_init, (struct kiln_lora *)) \
    X(kiln_status, kiln_model_with_loras, (const struct kiln_model *, const struct kiln_lora *, size_t, struct kiln_model **)) \
    X(void, kiln_embedding_init, (struct kiln_embedding *)) \
    X(kiln_status, kiln_model_with_adapters, (const struct kiln_model *, const struct kiln_lora *, size_t, const struct kiln_embedding *, size_t, struct kiln_model **)) \
    X(kiln_status, kiln_model_lora_count, (const struct kiln_model *, size_t *)) \
    X(kiln_status, kiln_model_lora_get, (const struct kiln_model *, size_t, float *, char *, size_t, size_t *)) \
    X(kiln_status, kiln_model_lora_text_encoder_scale, (const struct kiln_model *, size_t, float *)) \
    /* ControlNet (issue 17) */ \
    X(void, kiln_control_init, (struct kiln_control *)) \
    X(kiln_status, kiln_image_canny, (const struct kiln_image *, float, float, struct kiln_image **)) \
    X(kiln_status, kiln_image_height_to_depth, (const struct kiln_image *, struct kiln_image **)) \
    /* Super-resolution */ \
    X(void, kiln_upscale_options_init, (struct kiln_upscale_options *)) \
    X(kiln_status, kiln_upscaler_load, (const struct kiln_runtime *, const char *, struct kiln_upscaler **)) \
    X(void, kiln_upscaler_free, (struct kiln_upscaler *)) \
    X(kiln_status, kiln_upscaler_scale, (const struct kiln_upscaler *, uint32_t *)) \
    X(kiln_status, kiln_upscaler_upscale, (const struct kiln_upscaler *, const struct kiln_image *, const struct kiln_upscale_options *, struct kiln_image **)) \
    X(kiln_status, kiln_upscaler_cancel, (const struct kiln_upscaler *)) \
    X(uint32_t, kiln_version, ()) \
    X(const char *, kiln_version_string, ())
/* Every C struct this binding uses, with its last field: X(struct, last field). */
#define KILN_HPP_STRUCTS(X) \
    X(kiln_job_event, pixels) \
    X(kiln_job_options, user_data) \
    X(kiln_generate_options, reserved5) \
    X(kiln_job_progress, preview_height) \
    X(kiln_model_load_options, lora_slots) \
    X(kiln_model_info, lora_slots) \
    X(kiln_sprite_options, matte) \
    X(kiln_rect, height) \
    X(kiln_pixel_art_options, palette_len) \
    X(kiln_material_options, invert_height) \
    X(kiln_runtime_options, device_latents) \
    X(kiln_lora, text_encoder_scale) \
    X(kiln_embedding, token) \
    X(kiln_control, reserved) \
    X(kiln_upscale_options, alpha)
/* Every field of those structs: X(struct, field, type). */
#define KILN_HPP_STRUCT_FIELDS(X) \
    X(kiln_job_event, struct_size, uint32_t) \
    X(kiln_job_event, kind, uint32_t) \
    X(kiln_job_event, job, uint64_t) \
    X(kiln_job_event, step, uint32_t) \
    X(kiln_job_event, total_steps, uint32_t) \
    X(kiln_job_event, state, uint32_t) \
    X(kiln_job_event, width, uint32_t) \
    X(kiln_job_event, height, uint32_t) \
    X(kiln_job_event, row_pitch, size_t) \
    X(kiln_job_event, pixels, const uint8_t *) \
    X(kiln_job_options, struct_size, uint32_t) \
    X(kiln_job_options, priority, int32_t) \
    X(kiln_job_options, preview_interval, uint32_t) \
    X(kiln_job_options, callback, kiln_job_callback) \
    X(kiln_job_options, user_data, void *) \
    X(kiln_generate_options, struct_size, uint32_t) \
    X(kiln_generate_options, width, uint32_t) \
    X(kiln_generate_options, height, uint32_t) \
    X(kiln_generate_options, steps, uint32_t) \
    X(kiln_generate_options, guidance_scale, float) \
    X(kiln_generate_options, scheduler, uint32_t) \
    X(kiln_generate_options, seed, uint64_t) \
    X(kiln_generate_options, prompt, const char *) \
    X(kiln_generate_options, negative_prompt, const char *) \
    X(kiln_generate_options, initial_noise, const float *) \
    X(kiln_generate_options, initial_noise_len, size_t) \
    X(kiln_generate_options, guidance_rescale, float) \
    X(kiln_generate_options, prompt_weighting, uint32_t) \
    X(kiln_generate_options, reserved, uint32_t) \
    X(kiln_generate_options, init_image, const uint8_t *) \
    X(kiln_generate_options, init_image_len, size_t) \
    X(kiln_generate_options, init_image_width, uint32_t) \
    X(kiln_generate_options, init_image_height, uint32_t) \
    X(kiln_generate_options, init_image_row_pitch, size_t) \
    X(kiln_generate_options, init_image_channels, uint32_t) \
    X(kiln_generate_options, strength, float) \
    X(kiln_generate_options, posterior_mean, uint32_t) \
    X(kiln_generate_options, noise_generator, uint32_t) \
    X(kiln_generate_options, clip_skip, uint32_t) \
    X(kiln_generate_options, reserved3, uint32_t) \
    X(kiln_generate_options, mask, const uint8_t *) \
    X(kiln_generate_options, mask_len, size_t) \
    X(kiln_generate_options, mask_width, uint32_t) \
    X(kiln_generate_options, mask_height, uint32_t) \
    X(kiln_generate_options, scheduler_overrides, const char *) \
    X(kiln_generate_options, vae_tile_size, uint32_t) \
    X(kiln_generate_options, vae_tile_overlap, uint32_t) \
    X(kiln_generate_options, vae_memory_budget_mib, uint32_t) \
    X(kiln_generate_options, final_decoder, uint32_t) \
    X(kiln_generate_options, controls, const struct kiln_control *) \
    X(kiln_generate_options, control_count, size_t) \
    X(kiln_generate_options, guess_mode, uint32_t) \
    X(kiln_generate_options, reserved4, uint32_t) \
    X(kiln_generate_options, prompt_2, const char *) \
    X(kiln_generate_options, negative_prompt_2, const char *) \
    X(kiln_generate_options, original_width, uint32_t) \
    X(kiln_generate_options, original_height, uint32_t) \
    X(kiln_generate_options, crop_top, uint32_t) \
    X(kiln_generate_options, crop_left, uint32_t) \
    X(kiln_generate_options, target_width, uint32_t) \
    X(kiln_generate_options, target_height, uint32_t) \
    X(kiln_generate_options, negative_original_width, uint32_t) \
    X(kiln_generate_options, negative_original_height, uint32_t) \
    X(kiln_generate_options, negative_crop_top, uint32_t) \
    X(kiln_generate_options, negative_crop_left, uint32_t) \
    X(kiln_generate_options, negative_target_width, uint32_t) \
    X(kiln_generate_options, negative_target_height, uint32_t) \
    X(kiln_generate_options, aesthetic_score, float) \
    X(kiln_generate_options, negative_aesthetic_score, float) \
    X(kiln_generate_options, refiner, const struct kiln_model *) \
    X(kiln_generate_options, refiner_start, float) \
    X(kiln_generate_options, variation_seed, uint64_t) \
    X(kiln_generate_options, variation_strength, float) \
    X(kiln_generate_options, reserved5, uint32_t) \
    X(kiln_job_progress, struct_size, uint32_t) \
    X(kiln_job_progress, state, uint32_t) \
    X(kiln_job_progress, step, uint32_t) \
    X(kiln_job_progress, total_steps, uint32_t) \
    X(kiln_job_progress, preview_step, uint32_t) \
    X(kiln_job_progress, preview_width, uint32_t) \
    X(kiln_job_progress, preview_height, uint32_t) \
    X(kiln_model_load_options, struct_size, uint32_t) \
    X(kiln_model_load_options, seamless, uint32_t) \
    X(kiln_model_load_options, matting_path, const char *) \
    X(kiln_model_load_options, quantization, uint32_t) \
    X(kiln_model_load_options, attention, uint32_t) \
    X(kiln_model_load_options, lora_slots, uint32_t) \
    X(kiln_model_info, struct_size, uint32_t) \
    X(kiln_model_info, default_size, uint32_t) \
    X(kiln_model_info, size_multiple, uint32_t) \
    X(kiln_model_info, latent_channels, uint32_t) \
    X(kiln_model_info, vae_downsampling, uint32_t) \
    X(kiln_model_info, embedding_dim, uint32_t) \
    X(kiln_model_info, has_vae_encoder, uint32_t) \
    X(kiln_model_info, has_matting, uint32_t) \
    X(kiln_model_info, quantization, uint32_t) \
    X(kiln_model_info, fused_attention, uint32_t) \
    X(kiln_model_info, lora_slots, uint32_t) \
    X(kiln_sprite_options, struct_size, uint32_t) \
    X(kiln_sprite_options, auto_key, uint32_t) \
    X(kiln_sprite_options, key_rgb, uint32_t) \
    X(kiln_sprite_options, inner_tolerance, float) \
    X(kiln_sprite_options, outer_tolerance, float) \
    X(kiln_sprite_options, despill, uint32_t) \
    X(kiln_sprite_options, feather_radius, uint32_t) \
    X(kiln_sprite_options, premultiplied, uint32_t) \
    X(kiln_sprite_options, bbox_threshold, uint32_t) \
    X(kiln_sprite_options, matte, uint32_t) \
    X(kiln_rect, x, uint32_t) \
    X(kiln_rect, y, uint32_t) \
    X(kiln_rect, width, uint32_t) \
    X(kiln_rect, height, uint32_t) \
    X(kiln_pixel_art_options, struct_size, uint32_t) \
    X(kiln_pixel_art_options, cell, uint32_t) \
    X(kiln_pixel_art_options, scale, uint32_t) \
    X(kiln_pixel_art_options, colors, uint32_t) \
    X(kiln_pixel_art_options, cell_color, uint32_t) \
    X(kiln_pixel_art_options, alpha_threshold, uint32_t) \
    X(kiln_pixel_art_options, palette_rgb, const uint8_t *) \
    X(kiln_pixel_art_options, palette_len, size_t) \
    X(kiln_material_options, struct_size, uint32_t) \
    X(kiln_material_options, blur_radius, uint32_t) \
    X(kiln_material_options, strength, float) \
    X(kiln_material_options, convention, uint32_t) \
    X(kiln_material_options, wrap, uint32_t) \
    X(kiln_material_options, invert_height, uint32_t) \
    X(kiln_runtime_options, struct_size, uint32_t) \
    X(kiln_runtime_options, intra_op_threads, uint32_t) \
    X(kiln_runtime_options, inter_op_threads, uint32_t) \
    X(kiln_runtime_options, allow_spinning, uint32_t) \
    X(kiln_runtime_options, onnxruntime_path, const char *) \
    X(kiln_runtime_options, log_callback, kiln_log_fn) \
    X(kiln_runtime_options, log_user_data, void *) \
    X(kiln_runtime_options, log_level, uint32_t) \
    X(kiln_runtime_options, job_workers, uint32_t) \
    X(kiln_runtime_options, providers, const uint32_t *) \
    X(kiln_runtime_options, providers_len, size_t) \
    X(kiln_runtime_options, device_id, int32_t) \
    X(kiln_runtime_options, require_provider, uint32_t) \
    X(kiln_runtime_options, residency, uint32_t) \
    X(kiln_runtime_options, embedding_cache_entries, uint32_t) \
    X(kiln_runtime_options, graph_cache_dir, const char *) \
    X(kiln_runtime_options, sequential_load, uint32_t) \
    X(kiln_runtime_options, gpu_memory_limit, uint64_t) \
    X(kiln_runtime_options, gpu_math, uint32_t) \
    X(kiln_runtime_options, padding_after_gpu_math, uint32_t) \
    X(kiln_runtime_options, static_unet, uint32_t) \
    X(kiln_runtime_options, cuda_graph, uint32_t) \
    X(kiln_runtime_options, device_latents, uint32_t) \
    X(kiln_lora, struct_size, uint32_t) \
    X(kiln_lora, scale, float) \
    X(kiln_lora, path, const char *) \
    X(kiln_lora, has_text_encoder_scale, uint32_t) \
    X(kiln_lora, text_encoder_scale, float) \
    X(kiln_embedding, struct_size, uint32_t) \
    X(kiln_embedding, path, const char *) \
    X(kiln_embedding, token, const char *) \
    X(kiln_control, struct_size, uint32_t) \
    X(kiln_control, preprocess, uint32_t) \
    X(kiln_control, controlnet, const char *) \
    X(kiln_control, image, const struct kiln_image *) \
    X(kiln_control, scale, float) \
    X(kiln_control, start, float) \
    X(kiln_control, end, float) \
    X(kiln_control, canny_low, float) \
    X(kiln_control, canny_high, float) \
    X(kiln_control, reserved, uint32_t) \
    X(kiln_upscale_options, struct_size, uint32_t) \
    X(kiln_upscale_options, tile, uint32_t) \
    X(kiln_upscale_options, context, uint32_t) \
    X(kiln_upscale_options, seamless, uint32_t) \
    X(kiln_upscale_options, alpha, uint32_t)
/* Enum constants: X(C++ enumerator, C constant), one table per enum. */
#define KILN_HPP_ENUM_STATUS(X) \
    X(ok, KILN_STATUS_OK) \
    X(null_argument, KILN_STATUS_NULL_ARGUMENT) \
    X(invalid_argument, KILN_STATUS_INVALID_ARGUMENT) \
    X(invalid_utf8, KILN_STATUS_INVALID_UTF8) \
    X(buffer_too_small, KILN_STATUS_BUFFER_TOO_SMALL) \
    X(invalid_size, KILN_STATUS_INVALID_SIZE) \
    X(struct_size_mismatch, KILN_STATUS_STRUCT_SIZE_MISMATCH) \
    X(invalid_handle, KILN_STATUS_INVALID_HANDLE) \
    X(model_not_found, KILN_STATUS_MODEL_NOT_FOUND) \
    X(model_invalid, KILN_STATUS_MODEL_INVALID) \
    X(io, KILN_STATUS_IO) \
    X(unsupported, KILN_STATUS_UNSUPPORTED) \
    X(runtime_load_failed, KILN_STATUS_RUNTIME_LOAD_FAILED) \
    X(provider_unavailable, KILN_STATUS_PROVIDER_UNAVAILABLE) \
    X(inference_failed, KILN_STATUS_INFERENCE_FAILED) \
    X(cancelled, KILN_STATUS_CANCELLED) \
    X(busy, KILN_STATUS_BUSY) \
    X(adapter_mismatch, KILN_STATUS_ADAPTER_MISMATCH) \
    X(out_of_memory, KILN_STATUS_OUT_OF_MEMORY) \
    X(internal, KILN_STATUS_INTERNAL)

#define KILN_HPP_ENUM_LOGLEVEL(X) \
    X(debug, KILN_LOG_LEVEL_DEBUG) \
    X(info, KILN_LOG_LEVEL_INFO) \
    X(warning, KILN_LOG_LEVEL_WARNING) \
    X(error, KILN_LOG_LEVEL_ERROR)

#define KILN_HPP_ENUM_SCHEDULER(X) \
    X(model_default, KILN_SCHEDULER_DEFAULT) \
    X(ddim, KILN_SCHEDULER_DDIM) \
    X(euler, KILN_SCHEDULER_EULER) \
    X(pndm, KILN_SCHEDULER_PNDM) \
    X(dpm_pp2m, KILN_SCHEDULER_DPM_PP2M) \
    X(dpm_pp2m_karras, KILN_SCHEDULER_DPM_PP2M_KARRAS) \
    X(lms, KILN_SCHEDULER_LMS) \
    X(heun, KILN_SCHEDULER_HEUN) \
    X(euler_a, KILN_SCHEDULER_EULER_A) \
    X(dpm_pp2m_sde, KILN_SCHEDULER_DPM_PP2M_SDE) \
    X(uni_pc, KILN_SCHEDULER_UNI_PC) \
    X(lcm, KILN_SCHEDULER_LCM)

#define KILN_HPP_ENUM_JOBSTATE(X) \
    X(queued, KILN_JOB_STATE_QUEUED) \
    X(running, KILN_JOB_STATE_RUNNING) \
    X(succeeded, KILN_JOB_STATE_SUCCEEDED) \
    X(failed, KILN_JOB_STATE_FAILED) \
    X(cancelled, KILN_JOB_STATE_CANCELLED)

#define KILN_HPP_ENUM_JOBEVENTKIND(X) \
    X(progress, KILN_JOB_EVENT_KIND_PROGRESS) \
    X(preview, KILN_JOB_EVENT_KIND_PREVIEW) \
    X(finished, KILN_JOB_EVENT_KIND_FINISHED)

#define KILN_HPP_ENUM_PROVIDER(X) \
    X(cpu, KILN_PROVIDER_CPU) \
    X(cuda, KILN_PROVIDER_CUDA) \
    X(tensorrt, KILN_PROVIDER_TENSORRT) \
    X(directml, KILN_PROVIDER_DIRECTML) \
    X(coreml, KILN_PROVIDER_COREML)

#define KILN_HPP_ENUM_GRAPH(X) \
    X(text_encoder, KILN_GRAPH_TEXT_ENCODER) \
    X(unet, KILN_GRAPH_UNET) \
    X(vae_decoder, KILN_GRAPH_VAE_DECODER)

#define KILN_HPP_ENUM_RESIDENCY(X) \
    X(all_resident, KILN_RESIDENCY_ALL_RESIDENT) \
    X(per_stage, KILN_RESIDENCY_PER_STAGE)

#define KILN_HPP_ENUM_NOISEGENERATOR(X) \
    X(kiln, KILN_NOISE_GENERATOR_KILN) \
    X(torch_cpu, KILN_NOISE_GENERATOR_TORCH_CPU) \
    X(torch_cuda, KILN_NOISE_GENERATOR_TORCH_CUDA)

#define KILN_HPP_ENUM_GPUMATH(X) \
    X(fast, KILN_GPU_MATH_FAST) \
    X(exact, KILN_GPU_MATH_EXACT)

#define KILN_HPP_ENUM_SEAMLESS(X) \
    X(none, KILN_SEAMLESS_NONE) \
    X(x, KILN_SEAMLESS_X) \
    X(y, KILN_SEAMLESS_Y) \
    X(xy, KILN_SEAMLESS_XY)

#define KILN_HPP_ENUM_QUANTIZATION(X) \
    X(none, KILN_QUANTIZATION_NONE) \
    X(int8, KILN_QUANTIZATION_INT8)

#define KILN_HPP_ENUM_ATTENTION(X) \
    X(automatic, KILN_ATTENTION_AUTO) \
    X(exported, KILN_ATTENTION_EXPORTED) \
    X(fused, KILN_ATTENTION_FUSED)

#define KILN_HPP_ENUM_NORMALCONVENTION(X) \
    X(opengl, KILN_NORMAL_CONVENTION_OPENGL) \
    X(directx, KILN_NORMAL_CONVENTION_DIRECTX)

#define KILN_HPP_ENUM_CELLCOLOR(X) \
    X(mean, KILN_CELL_COLOR_MEAN) \
    X(mode, KILN_CELL_COLOR_MODE)

#define KILN_HPP_ENUM_MATTE(X) \
    X(automatic, KILN_MATTE_AUTO) \
    X(key, KILN_MATTE_KEY) \
    X(graph, KILN_MATTE_GRAPH)

#define KILN_HPP_ENUM_CONTROLPREPROCESS(X) \
    X(none, KILN_CONTROL_PREPROCESS_NONE) \
    X(canny, KILN_CONTROL_PREPROCESS_CANNY) \
    X(height, KILN_CONTROL_PREPROCESS_HEIGHT) \
    X(tile, KILN_CONTROL_PREPROCESS_TILE)

#define KILN_HPP_ENUM_UPSCALEALPHA(X) \
    X(graph, KILN_UPSCALE_ALPHA_GRAPH) \
    X(bilinear, KILN_UPSCALE_ALPHA_BILINEAR)

namespace kiln {

namespace abi {
#define KILN_HPP_CHECK_FUNCTION(ret, name, args) \
    static_assert(std::is_same<decltype(&::name), ret(*) args>::value, \
                  "kiln.h changed the signature of " #name ": update kiln.hpp");
KILN_HPP_FUNCTIONS(KILN_HPP_CHECK_FUNCTION)
#undef KILN_HPP_CHECK_FUNCTION

#define KILN_HPP_CHECK_FIELD(st, field, type) \
    static_assert(std::is_same<decltype(st::field), type>::value, \
                  "kiln.h changed the type of " #st "." #field ": update kiln.hpp");
KILN_HPP_STRUCT_FIELDS(KILN_HPP_CHECK_FIELD)
#undef KILN_HPP_CHECK_FIELD

/* A field appended to a C struct makes it end later than the last field this binding knows. */
constexpr std::size_t round_up(std::size_t n, std::size_t align) { return (n + align - 1) / align * align; }
#define KILN_HPP_CHECK_LAST(st, last) \
    static_assert(sizeof(st) == round_up(offsetof(st, last) + sizeof(st::last), alignof(st)), \
                  "kiln.h has fields in " #st " after " #last ": update kiln.hpp");
KILN_HPP_STRUCTS(KILN_HPP_CHECK_LAST)
#undef KILN_HPP_CHECK_LAST
} // namespace abi

#define KILN_HPP_ENUMERATOR(cpp, c) cpp = c,
/** Result of a Kiln call (`kiln_status`). */
enum class Status : std::uint32_t { KILN_HPP_ENUM_STATUS(KILN_HPP_ENUMERATOR) };
/** Severity of a log line (`kiln_log_level`). */
enum class LogLevel : std::uint32_t { KILN_HPP_ENUM_LOGLEVEL(KILN_HPP_ENUMERATOR) };
/** A scheduler (`kiln_scheduler`); `model_default` is the model's own. */
enum class Scheduler : std::uint32_t { KILN_HPP_ENUM_SCHEDULER(KILN_HPP_ENUMERATOR) };
/** Which generator a seed drives (`kiln_noise_generator`): Kiln's portable noise, PyTorch's CPU generator (diffusers' image for the seed), or PyTorch's CUDA generator computed on the host (AUTOMATIC1111's default seeds). */
enum class NoiseGenerator : std::uint32_t { KILN_HPP_ENUM_NOISEGENERATOR(KILN_HPP_ENUMERATOR) };
/** Where a job is in its life (`kiln_job_state`). */
enum class JobState : std::uint32_t { KILN_HPP_ENUM_JOBSTATE(KILN_HPP_ENUMERATOR) };
/** What a job event reports (`kiln_job_event_kind`). */
enum class JobEventKind : std::uint32_t { KILN_HPP_ENUM_JOBEVENTKIND(KILN_HPP_ENUMERATOR) };
/** An execution provider (`kiln_provider`). */
enum class Provider : std::uint32_t { KILN_HPP_ENUM_PROVIDER(KILN_HPP_ENUMERATOR) };
/** A graph of a model (`kiln_graph`). */
enum class Graph : std::uint32_t { KILN_HPP_ENUM_GRAPH(KILN_HPP_ENUMERATOR) };
/** Which graphs stay loaded (`kiln_residency`). */
enum class Residency : std::uint32_t { KILN_HPP_ENUM_RESIDENCY(KILN_HPP_ENUMERATOR) };
/** Whether CUDA may use TF32 tensor cores (`kiln_gpu_math`). */
enum class GpuMath : std::uint32_t { KILN_HPP_ENUM_GPUMATH(KILN_HPP_ENUMERATOR) };
/** Which axes tile (`kiln_seamless`). */
enum class Seamless : std::uint32_t { KILN_HPP_ENUM_SEAMLESS(KILN_HPP_ENUMERATOR) };
/** How a model's weights are stored once loaded (`kiln_model_load_options.quantization`, `kiln_model_info.quantization`): as exported, or the text encoders' and U-Net's matrix-product weights as int8 (ONNX Runtime's quantize_dynamic; less memory, pictures close to but not equal to the float model's). */
enum class Quantization : std::uint32_t { KILN_HPP_ENUM_QUANTIZATION(KILN_HPP_ENUMERATOR) };
/** How the U-Net's (and ControlNets') attention layers run (`kiln_model_load_options.attention`; `kiln_model_info.fused_attention` counts the fused ones): `automatic` (the default) fuses each into one ONNX Runtime MultiHeadAttention node at load when the graphs run on the CPU provider, `exported` runs the graphs as exported, `fused` fuses whatever the providers. Fused pictures differ from exported ones by float rounding only, and need far less memory at large sizes. */
enum class Attention : std::uint32_t { KILN_HPP_ENUM_ATTENTION(KILN_HPP_ENUMERATOR) };
/** Normal-map green channel convention (`kiln_normal_convention`). */
enum class NormalConvention : std::uint32_t { KILN_HPP_ENUM_NORMALCONVENTION(KILN_HPP_ENUMERATOR) };
/** How a pixel-art cell becomes one colour (`kiln_cell_color`). */
enum class CellColor : std::uint32_t { KILN_HPP_ENUM_CELLCOLOR(KILN_HPP_ENUMERATOR) };
/** Where a sprite's alpha comes from (`kiln_matte`). */
enum class Matte : std::uint32_t { KILN_HPP_ENUM_MATTE(KILN_HPP_ENUMERATOR) };
/** How a ControlNet's image becomes its control image (`kiln_control.preprocess`). */
enum class ControlPreprocess : std::uint32_t { KILN_HPP_ENUM_CONTROLPREPROCESS(KILN_HPP_ENUMERATOR) };
/** How an image with transparency has its alpha upscaled (`kiln_upscale_alpha`). */
enum class UpscaleAlpha : std::uint32_t { KILN_HPP_ENUM_UPSCALEALPHA(KILN_HPP_ENUMERATOR) };
#undef KILN_HPP_ENUMERATOR

/** The C value of a binding enum, for the `uint32_t` fields of the options structs. */
template <class E> constexpr std::uint32_t to_c(E e) noexcept { return static_cast<std::uint32_t>(e); }

/** The constant's name, e.g. "KILN_STATUS_MODEL_NOT_FOUND". */
inline const char *status_name(Status s) noexcept { return ::kiln_status_name(to_c(s)); }

/** A failed call: Kiln's status and its message. */
class Error {
public:
    Error() = default;
    Error(Status status, std::string message) : status_(status), message_(std::move(message)) {}
    Status status() const noexcept { return status_; }
    const std::string &message() const noexcept { return message_; }
    /** "KILN_STATUS_X: message", as the C examples print it. */
    std::string describe() const { return std::string(status_name(status_)) + ": " + message_; }

private:
    Status status_ = Status::ok;
    std::string message_;
};

#ifdef KILN_CPP_EXCEPTIONS
/** Thrown by the throwing layer; carries the Error. */
class Exception : public std::runtime_error {
public:
    explicit Exception(Error e) : std::runtime_error(e.describe()), error_(std::move(e)) {}
    const Error &error() const noexcept { return error_; }

private:
    Error error_;
};
#endif

/** A value or an Error. Check ok() before *result; value() throws instead when exceptions are on. */
template <class T> class [[nodiscard]] Result {
public:
    Result(T value) : value_(std::move(value)) {}
    Result(Error error) : error_(std::move(error)) {}
    bool ok() const noexcept { return value_.has_value(); }
    explicit operator bool() const noexcept { return ok(); }
    Status status() const noexcept { return ok() ? Status::ok : error_.status(); }
    /** The error; Status::ok with an empty message on success. */
    const Error &error() const noexcept { return error_; }
    T &operator*() & { assert(ok()); return *value_; }
    const T &operator*() const & { assert(ok()); return *value_; }
    T &&operator*() && { assert(ok()); return std::move(*value_); }
    T *operator->() { assert(ok()); return &*value_; }
    const T *operator->() const { assert(ok()); return &*value_; }
    /** The value, or `fallback` after an error. */
    T value_or(T fallback) && { return ok() ? std::move(*value_) : std::move(fallback); }
#ifdef KILN_CPP_EXCEPTIONS
    /** The value; throws kiln::Exception after an error. */
    T &value() & { if (!ok()) throw Exception(error_); return *value_; }
    T &&value() && { if (!ok()) throw Exception(error_); return std::move(*value_); }
#endif

private:
    std::optional<T> value_;
    Error error_;
};

/** Success or an Error. */
template <> class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), ok_(false) {}
    bool ok() const noexcept { return ok_; }
    explicit operator bool() const noexcept { return ok_; }
    Status status() const noexcept { return ok_ ? Status::ok : error_.status(); }
    const Error &error() const noexcept { return error_; }
#ifdef KILN_CPP_EXCEPTIONS
    /** Throws kiln::Exception after an error. */
    void value() const { if (!ok_) throw Exception(error_); }
#endif

private:
    Error error_;
    bool ok_ = true;
};

#ifdef KILN_CPP_EXCEPTIONS
/** The throwing layer in one call: the value, or kiln::Exception. */
template <class T> T check(Result<T> r) { return std::move(r).value(); }
inline void check(const Result<void> &r) { r.value(); }
#endif

namespace detail {
/* Reads a string through Kiln's convention: query the length with a NULL buffer, then copy. */
template <class F> ::kiln_status read_string(F &&f, std::string &out) {
    std::size_t len = 0;
    ::kiln_status s = f(nullptr, 0, &len);
    if (s != KILN_STATUS_OK && s != KILN_STATUS_BUFFER_TOO_SMALL) return s;
    std::vector<char> buf(len + 1);
    s = f(buf.data(), buf.size(), &len);
    if (s == KILN_STATUS_OK) out.assign(buf.data(), len);
    return s;
}

/* The calling thread's last error message. */
inline std::string last_error_message() {
    std::string m;
    read_string([](char *b, std::size_t n, std::size_t *l) { return ::kiln_last_error_message(b, n, l); }, m);
    return m;
}

/* The Error for a failed synchronous call; read before any other Kiln call on this thread. */
inline Error last_error(::kiln_status s) { return Error(static_cast<Status>(s), last_error_message()); }

inline Result<std::string> string_result(::kiln_status s, std::string value) {
    if (s != KILN_STATUS_OK) return last_error(s);
    return value;
}
} // namespace detail

/** An options struct filled with Kiln's defaults (its `kiln_*_init`), `struct_size` included. */
template <class T> T defaults() noexcept;
#define KILN_HPP_DEFAULTS(type, init) \
    template <> inline type defaults<type>() noexcept { type o{}; init(&o); return o; }
KILN_HPP_DEFAULTS(kiln_runtime_options, ::kiln_runtime_options_init)
KILN_HPP_DEFAULTS(kiln_model_load_options, ::kiln_model_load_options_init)
KILN_HPP_DEFAULTS(kiln_generate_options, ::kiln_generate_options_init)
KILN_HPP_DEFAULTS(kiln_job_options, ::kiln_job_options_init)
KILN_HPP_DEFAULTS(kiln_sprite_options, ::kiln_sprite_options_init)
KILN_HPP_DEFAULTS(kiln_pixel_art_options, ::kiln_pixel_art_options_init)
KILN_HPP_DEFAULTS(kiln_material_options, ::kiln_material_options_init)
KILN_HPP_DEFAULTS(kiln_lora, ::kiln_lora_init)
KILN_HPP_DEFAULTS(kiln_embedding, ::kiln_embedding_init)
KILN_HPP_DEFAULTS(kiln_control, ::kiln_control_init)
KILN_HPP_DEFAULTS(kiln_upscale_options, ::kiln_upscale_options_init)
#undef KILN_HPP_DEFAULTS

/** The library's version, `(major << 16) | (minor << 8) | patch`. */
inline std::uint32_t version() noexcept { return ::kiln_version(); }
/** The library's version string, e.g. "0.1.0". */
inline const char *version_string() noexcept { return ::kiln_version_string(); }
/** True when the loaded library is the version this header was written for. */
inline bool header_matches_library() noexcept { return ::kiln_version() == KILN_VERSION; }
/** Bit `1 << p` for every Provider compiled into the library. */
inline std::uint32_t providers_compiled() noexcept { return ::kiln_providers_compiled(); }

class Image;
/** Declared here for Job::model, defined after Job. */
class Model;
/** Declared here for Model::submit_upscaled, defined after Model. */
class Upscaler;

/** A sprite cut out of an image and the bounding box of its visible pixels. */
struct Sprite;
/** Height and normal maps of a texture. */
struct MaterialMaps;

/** An RGBA8 image owned by Kiln (sRGB, straight alpha, rows `width * 4` bytes). Move-only. */
class Image {
public:
    Image() noexcept = default;
    /** Takes ownership of `image`. */
    explicit Image(::kiln_image *image) noexcept : p_(image) {}
    Image(Image &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Image &operator=(Image &&o) noexcept { if (this != &o) { reset(); p_ = std::exchange(o.p_, nullptr); } return *this; }
    Image(const Image &) = delete;
    Image &operator=(const Image &) = delete;
    ~Image() { reset(); }

    /** Copies caller pixels (RGBA8) into a new image; `row_pitch` 0 = `width * 4`. */
    static Result<Image> create(std::uint32_t width, std::uint32_t height, const std::uint8_t *pixels,
                                std::size_t pixels_len, std::size_t row_pitch = 0) {
        ::kiln_image *out = nullptr;
        ::kiln_status s = ::kiln_image_create(width, height, pixels, pixels_len, row_pitch, &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Image(out);
    }

    std::uint32_t width() const noexcept { return ::kiln_image_width(p_); }
    std::uint32_t height() const noexcept { return ::kiln_image_height(p_); }
    /** `width * height * 4` bytes, valid while this Image lives; nullptr when empty. */
    const std::uint8_t *pixels() const noexcept { return ::kiln_image_pixels(p_); }
    std::size_t size_bytes() const noexcept { return std::size_t(width()) * height() * 4; }
    /** A copy of the pixels. */
    std::vector<std::uint8_t> to_vector() const {
        const std::uint8_t *px = pixels();
        return px ? std::vector<std::uint8_t>(px, px + size_bytes()) : std::vector<std::uint8_t>();
    }
    /** Copies the pixels into an engine buffer with a row pitch (0 = `width * 4`). */
    Result<void> copy_to(std::uint8_t *dst, std::size_t dst_len, std::size_t row_pitch = 0) const {
        ::kiln_status s = ::kiln_image_copy(p_, dst, dst_len, row_pitch);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return {};
    }
    /** Writes a PNG at the UTF-8 `path`. */
    Result<void> write_png(const std::string &path) const {
        ::kiln_status s = ::kiln_image_write_png(p_, path.c_str());
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return {};
    }
    inline Result<Sprite> make_sprite(const ::kiln_sprite_options *options = nullptr) const;
    /** Pixel art of this image (`kiln_image_pixel_art`); `options` nullptr = defaults. */
    Result<Image> pixel_art(const ::kiln_pixel_art_options *options = nullptr) const {
        ::kiln_image *out = nullptr;
        ::kiln_status s = ::kiln_image_pixel_art(p_, options, &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Image(out);
    }
    inline Result<MaterialMaps> material_maps(const ::kiln_material_options *options = nullptr) const;
    /** Canny edges as OpenCV's `cv2.Canny(gray, low, high)` finds them (a ControlNet control image). */
    Result<Image> canny(float low = 100.0f, float high = 200.0f) const {
        ::kiln_image *out = nullptr;
        ::kiln_status s = ::kiln_image_canny(p_, low, high, &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Image(out);
    }
    /** This height map (bright = high) as a depth-ControlNet image: gray, stretched to 0..255. */
    Result<Image> height_to_depth() const {
        ::kiln_image *out = nullptr;
        ::kiln_status s = ::kiln_image_height_to_depth(p_, &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Image(out);
    }
    /** How visible the wrap seam is along Seamless::x or Seamless::y (about 1 or below tiles cleanly). */
    Result<float> seam_score(Seamless axis) const {
        float score = 0;
        ::kiln_status s = ::kiln_image_seam_score(p_, to_c(axis), &score);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return score;
    }

    ::kiln_image *get() const noexcept { return p_; }
    /** Gives up ownership; the caller frees with kiln_image_free. */
    ::kiln_image *release() noexcept { return std::exchange(p_, nullptr); }
    explicit operator bool() const noexcept { return p_ != nullptr; }

private:
    void reset() noexcept { ::kiln_image_free(std::exchange(p_, nullptr)); }
    ::kiln_image *p_ = nullptr;
};

struct Sprite {
    Image image;
    ::kiln_rect bbox;
};

struct MaterialMaps {
    Image height;
    Image normal;
};

inline Result<Sprite> Image::make_sprite(const ::kiln_sprite_options *options) const {
    ::kiln_image *out = nullptr;
    ::kiln_rect bbox{};
    ::kiln_status s = ::kiln_image_make_sprite(p_, options, &out, &bbox);
    if (s != KILN_STATUS_OK) return detail::last_error(s);
    return Sprite{Image(out), bbox};
}

inline Result<MaterialMaps> Image::material_maps(const ::kiln_material_options *options) const {
    ::kiln_image *height = nullptr, *normal = nullptr;
    ::kiln_status s = ::kiln_image_material_maps(p_, options, &height, &normal);
    if (s != KILN_STATUS_OK) return detail::last_error(s);
    return MaterialMaps{Image(height), Image(normal)};
}

/** A job's state and progress, from Job::poll. */
struct Progress {
    JobState state = JobState::queued;
    std::uint32_t step = 0;
    std::uint32_t total_steps = 0;
    std::uint32_t preview_step = 0;
    std::uint32_t preview_width = 0;
    std::uint32_t preview_height = 0;
    /** Succeeded, failed or cancelled. */
    bool finished() const noexcept { return to_c(state) >= to_c(JobState::succeeded); }
};

/** A job's newest preview (RGBA8, rows `width * 4` bytes). */
struct Preview {
    std::vector<std::uint8_t> pixels;
    std::uint32_t width = 0;
    std::uint32_t height = 0;
    std::uint32_t step = 0;
};

/** Width and height in pixels. */
struct Size {
    std::uint32_t width = 0;
    std::uint32_t height = 0;
};

/**
 * A queued generation, texture helper (Model::submit_extend_texture, submit_make_tileable), upscale
 * (Upscaler::submit), generation and its upscale in one (Model::submit_upscaled), model load
 * (Runtime::submit_load_model, Model::submit_with_loras, submit_with_adapters, submit_seamless), or
 * upscaler load (Runtime::submit_load_upscaler). Poll it once a frame; the destructor frees it (and
 * cancels it if it still runs).
 */
class Job {
public:
    Job() noexcept = default;
    /** Takes ownership of job id `id`. */
    explicit Job(std::uint64_t id) noexcept : id_(id) {}
    Job(Job &&o) noexcept : id_(std::exchange(o.id_, 0)) {}
    Job &operator=(Job &&o) noexcept { if (this != &o) { reset(); id_ = std::exchange(o.id_, 0); } return *this; }
    Job(const Job &) = delete;
    Job &operator=(const Job &) = delete;
    ~Job() { reset(); }

    std::uint64_t id() const noexcept { return id_; }

    /** State and progress, without blocking (cheap enough for every frame). */
    Result<Progress> poll() const {
        ::kiln_job_progress p{};
        p.struct_size = sizeof p;
        ::kiln_status s = ::kiln_job_poll(id_, &p);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Progress{static_cast<JobState>(p.state), p.step, p.total_steps, p.preview_step, p.preview_width,
                        p.preview_height};
    }
    /** Blocks until the job ends or `timeout_ms` passes (tools; a game polls); the state then. */
    Result<JobState> wait(std::uint32_t timeout_ms) const {
        std::uint32_t state = 0;
        ::kiln_status s = ::kiln_job_wait(id_, timeout_ms, &state);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return static_cast<JobState>(state);
    }
    /** Asks the job to stop; it ends as JobState::cancelled within one graph call. */
    Result<void> cancel() const {
        ::kiln_status s = ::kiln_job_cancel(id_);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return {};
    }
    /** The job's own error message: empty unless it failed or was cancelled. */
    Result<std::string> error_message() const {
        std::string m;
        std::uint64_t id = id_;
        ::kiln_status s = detail::read_string(
            [id](char *b, std::size_t n, std::size_t *l) { return ::kiln_job_error_message(id, b, n, l); }, m);
        return detail::string_result(s, std::move(m));
    }
    /** Size of a succeeded job's image; Status::busy while it runs, Status::invalid_argument for a model job. */
    Result<Size> image_size() const {
        Size size;
        ::kiln_status s = ::kiln_job_image_size(id_, &size.width, &size.height);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return size;
    }
    /** Copies a succeeded job's image into an engine buffer with a row pitch (0 = `width * 4`). */
    Result<void> copy_image(std::uint8_t *dst, std::size_t dst_len, std::size_t row_pitch = 0) const {
        ::kiln_status s = ::kiln_job_copy_image(id_, dst, dst_len, row_pitch);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return {};
    }
    /** A succeeded job's image as tightly packed RGBA8 bytes. */
    Result<std::vector<std::uint8_t>> image() const {
        Result<Size> size = image_size();
        if (!size) return size.error();
        std::vector<std::uint8_t> px(std::size_t(size->width) * size->height * 4);
        Result<void> r = copy_image(px.data(), px.size());
        if (!r) return r.error();
        return px;
    }
    /**
     * A new Model handle of its own (each call gives another) to the model a succeeded model job made
     * (Runtime::submit_load_model, Model::submit_with_loras, submit_with_adapters, submit_seamless); it
     * outlives the Job. Status::busy while the job is queued or running, Status::invalid_argument when it
     * failed, was cancelled or made an image or an upscaler. Defined after Model.
     */
    inline Result<Model> model() const;
    /**
     * A new Upscaler handle of its own (each call gives another) to the upscaler a succeeded
     * Runtime::submit_load_upscaler job loaded; it outlives the Job. Status::busy while the job is queued or
     * running, Status::invalid_argument when it failed, was cancelled or made an image or a model. Defined
     * after Upscaler.
     */
    inline Result<Upscaler> upscaler() const;
    /** The newest preview; Status::busy while there is none. */
    Result<Preview> preview() const {
        for (int attempt = 0;; ++attempt) {
            Result<Progress> p = poll();
            if (!p) return p.error();
            Preview out;
            out.width = p->preview_width;
            out.height = p->preview_height;
            // At least one byte, so that without a preview Kiln answers BUSY rather than NULL_ARGUMENT.
            out.pixels.resize(std::size_t(out.width) * out.height * 4 + (out.width == 0 ? 1 : 0));
            ::kiln_status s = ::kiln_job_copy_preview(id_, out.pixels.data(), out.pixels.size(), 0, &out.step);
            // The first preview may land between the poll and the copy: poll again once for its size.
            if (s == KILN_STATUS_BUFFER_TOO_SMALL && attempt == 0) continue;
            if (s != KILN_STATUS_OK) return detail::last_error(s);
            return out;
        }
    }
    /** Frees the job now and reports how that went; the destructor does the same silently. */
    Result<void> free() {
        ::kiln_status s = ::kiln_job_free(std::exchange(id_, 0));
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return {};
    }
    /** Gives up ownership; the caller frees with kiln_job_free. */
    std::uint64_t release() noexcept { return std::exchange(id_, 0); }

private:
    void reset() noexcept { if (id_ != 0) (void)::kiln_job_free(std::exchange(id_, 0)); }
    std::uint64_t id_ = 0;
};

/**
 * One LoRA for Model::with_loras: its `.safetensors` path and strength (1 = as trained), and optionally a
 * strength of its own for its text-encoder modules (ComfyUI's strength_clip; `scale` is then strength_model).
 * Unset, `scale` applies to every module.
 */
struct LoraSpec {
    std::string path;
    float scale = 1.0f;
    std::optional<float> text_encoder_scale = std::nullopt;
};

namespace detail {
/* LoraSpecs as kiln_lora C structs; their paths point into `loras`, which must outlive the result. */
inline std::vector<::kiln_lora> c_loras(const std::vector<LoraSpec> &loras) {
    std::vector<::kiln_lora> c(loras.size(), defaults<::kiln_lora>());
    for (std::size_t i = 0; i < loras.size(); ++i) {
        c[i].path = loras[i].path.c_str();
        c[i].scale = loras[i].scale;
        c[i].has_text_encoder_scale = loras[i].text_encoder_scale ? 1u : 0u;
        c[i].text_encoder_scale = loras[i].text_encoder_scale.value_or(1.0f);
    }
    return c;
}
} // namespace detail

/**
 * One ControlNet for a generation, as a `kiln_control` from kiln::control(): the name of a folder under the
 * model's `controlnet/` and the control image, both borrowed for the call (keep them alive until it returns
 * or, for Model::submit, until submit returns: Kiln copies them before queueing). Put an array of them in
 * `kiln_generate_options.controls` / `control_count`; set `preprocess`, `scale`, `start`, `end`, `canny_*`
 * on the struct as needed.
 */
inline ::kiln_control control(const char *controlnet, const Image &image, float scale = 1.0f,
                              ControlPreprocess preprocess = ControlPreprocess::none) noexcept {
    ::kiln_control c = defaults<::kiln_control>();
    c.controlnet = controlnet;
    c.image = image.get();
    c.scale = scale;
    c.preprocess = to_c(preprocess);
    return c;
}

/** A loaded model. Move-only; internally synchronized, so several threads may generate from one. */
class Model {
public:
    Model() noexcept = default;
    /** Takes ownership of `model`. */
    explicit Model(::kiln_model *model) noexcept : p_(model) {}
    Model(Model &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Model &operator=(Model &&o) noexcept { if (this != &o) { reset(); p_ = std::exchange(o.p_, nullptr); } return *this; }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;
    ~Model() { reset(); }

    /** Native size, size multiple, latent layout, what the export has, the Quantization it was loaded with, how many U-Net attention layers run fused (`fused_attention`) and how many U-Net layers have a LoRA slot (`lora_slots`; 0 when loaded without). */
    Result<::kiln_model_info> info() const {
        ::kiln_model_info info{};
        info.struct_size = sizeof info;
        ::kiln_status s = ::kiln_model_get_info(p_, &info);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return info;
    }
    /** Generates an image, blocking the calling thread. */
    Result<Image> generate(const ::kiln_generate_options &options) const {
        ::kiln_image *out = nullptr;
        ::kiln_status s = ::kiln_model_generate(p_, &options, &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Image(out);
    }
    /** Generates straight into an engine buffer with a row pitch (0 = `width * 4`). */
    Result<void> generate_into(const ::kiln_generate_options &options, std::uint8_t *dst, std::size_t dst_len,
                               std::size_t row_pitch = 0) const {
        ::kiln_status s = ::kiln_model_generate_into(p_, &options, dst, dst_len, row_pitch);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return {};
    }
    /** Queues a generation and returns at once; `job_options` nullptr = defaults. */
    Result<Job> submit(const ::kiln_generate_options &options, const ::kiln_job_options *job_options = nullptr) const {
        std::uint64_t id = 0;
        ::kiln_status s = ::kiln_job_submit(p_, &options, job_options, &id);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Job(id);
    }
    /**
     * Queues a generation and its upscale by `upscaler` as one Job and returns at once, so a game asks
     * once for a 2K or 4K texture; `upscale_options` and `job_options` nullptr = defaults. The upscale
     * wraps on this handle's seamless axes (a seamless() view's, or those it was loaded with), so
     * `upscale_options->seamless` is ignored. Progress counts the U-Net calls and then the upscale's graph
     * runs (tiles) in one count, its total known from submission on (raised at the first step by PNDM's
     * warm-up and Heun); previews come from the generation; Job::cancel() stops either part. The job holds
     * the model and the graph: this Model and the Upscaler may be destroyed once it returns. Arguments are
     * checked here (submit()'s and Upscaler::submit()'s errors, and Status::invalid_size for a size the
     * model cannot generate), with no job queued. Defined after Upscaler.
     */
    Result<Job> submit_upscaled(const ::kiln_generate_options &options, const Upscaler &upscaler,
                                const ::kiln_upscale_options *upscale_options = nullptr,
                                const ::kiln_job_options *job_options = nullptr) const;
    /** A handle whose images tile along `axes`; independent of this one. */
    Result<Model> seamless(Seamless axes) const {
        ::kiln_model *out = nullptr;
        ::kiln_status s = ::kiln_model_seamless(p_, to_c(axes), &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Model(out);
    }
    /**
     * A handle with these LoRAs merged into the original weights (a switch, not a stack: an empty list gives
     * the plain model back); independent of this one, which is unchanged. Each entry is a `kiln::LoraSpec`:
     * a path (borrowed for the call), a scale and optionally a text-encoder scale, each finite (else
     * Status::invalid_argument). On a model loaded with `lora_slots` 1, plain low-rank LoRAs are fed to its
     * slots instead of merged (no new session or weight copy; the same pictures to float rounding).
     */
    Result<Model> with_loras(const std::vector<LoraSpec> &loras) const {
        const std::vector<::kiln_lora> c = detail::c_loras(loras);
        ::kiln_model *out = nullptr;
        ::kiln_status s = ::kiln_model_with_loras(p_, c.empty() ? nullptr : c.data(), c.size(), &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Model(out);
    }
    /** As with_loras, with textual-inversion embeddings too (C structs filled from kiln::defaults). */
    Result<Model> with_adapters(const std::vector<::kiln_lora> &loras, const std::vector<::kiln_embedding> &embeddings) const {
        ::kiln_model *out = nullptr;
        ::kiln_status s = ::kiln_model_with_adapters(p_, loras.empty() ? nullptr : loras.data(), loras.size(),
                                                     embeddings.empty() ? nullptr : embeddings.data(), embeddings.size(), &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Model(out);
    }
    /**
     * Queues with_loras() as a Job and returns at once, so a game switches LoRAs without blocking; the
     * job ends with the new model, taken with Job::model(). `job_options` nullptr = defaults. The list
     * (paths included) is checked and copied here (with_loras()'s errors for its arguments and submit()'s,
     * no job queued); the files are read by the job, whose errors are with_loras()'. This model stays
     * usable meanwhile and may be destroyed once submit returns. Progress counts KiB of the graphs it
     * remakes (see kiln_job_progress); no previews. A queued switch cancelled never starts; a running one stops inside the session ONNX Runtime
     * is creating for the merged weights and ends cancelled without a model.
     */
    Result<Job> submit_with_loras(const std::vector<LoraSpec> &loras, const ::kiln_job_options *job_options = nullptr) const {
        const std::vector<::kiln_lora> c = detail::c_loras(loras);
        std::uint64_t id = 0;
        ::kiln_status s = ::kiln_job_submit_with_adapters(p_, c.empty() ? nullptr : c.data(), c.size(), nullptr, 0,
                                                          job_options, &id);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Job(id);
    }
    /** Queues with_adapters() as a Job, as submit_with_loras(); the C structs are copied before it returns. */
    Result<Job> submit_with_adapters(const std::vector<::kiln_lora> &loras, const std::vector<::kiln_embedding> &embeddings,
                                     const ::kiln_job_options *job_options = nullptr) const {
        std::uint64_t id = 0;
        ::kiln_status s = ::kiln_job_submit_with_adapters(p_, loras.empty() ? nullptr : loras.data(), loras.size(),
                                                          embeddings.empty() ? nullptr : embeddings.data(),
                                                          embeddings.size(), job_options, &id);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Job(id);
    }
    /**
     * Queues seamless() as a Job and returns at once: the job ends with the view whose images tile along
     * `axes`, taken with Job::model(). Making a view rewrites the U-Net's and VAE decoder's convolutions and
     * creates their sessions (seconds for an SD 1.5 model), so a game switching between tileable textures and
     * ordinary images asks for one without blocking a frame; a view this model already has (or its own axes)
     * is ready at once. `job_options` nullptr = defaults. Progress and cancel as submit_with_loras()': KiB
     * of the graphs it remakes, no previews; a cancel stops the rewrite or the session being created. `axes` is checked
     * here (Status::invalid_argument for a value that is no Seamless, and submit()'s errors, no job
     * queued); the job's own errors are seamless()'. This model stays usable meanwhile and may be destroyed
     * once submit returns.
     */
    Result<Job> submit_seamless(Seamless axes, const ::kiln_job_options *job_options = nullptr) const {
        std::uint64_t id = 0;
        ::kiln_status s = ::kiln_job_submit_seamless(p_, to_c(axes), job_options, &id);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Job(id);
    }
    /**
     * The LoRAs merged into this handle, in order (empty for a plain model). `text_encoder_scale` is set where
     * it differs from `scale`: Kiln reports the strength in effect, not whether one was given, and either way
     * with_loras of the list merges the same weights.
     */
    Result<std::vector<LoraSpec>> loras() const {
        std::size_t count = 0;
        ::kiln_status s = ::kiln_model_lora_count(p_, &count);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        std::vector<LoraSpec> out(count);
        for (std::size_t i = 0; i < count; ++i) {
            const ::kiln_model *p = p_;
            float scale = 0.0f;
            s = detail::read_string(
                [p, i, &scale](char *b, std::size_t n, std::size_t *l) { return ::kiln_model_lora_get(p, i, &scale, b, n, l); },
                out[i].path);
            if (s != KILN_STATUS_OK) return detail::last_error(s);
            out[i].scale = scale;
            Result<float> te = lora_text_encoder_scale(i);
            if (!te) return te.error();
            if (*te != scale) out[i].text_encoder_scale = *te;
        }
        return out;
    }
    /** The strength LoRA `index` (below loras().size()) merges its text-encoder modules with: its own, else `scale`. */
    Result<float> lora_text_encoder_scale(std::size_t index) const {
        float scale = 0.0f;
        ::kiln_status s = ::kiln_model_lora_text_encoder_scale(p_, index, &scale);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return scale;
    }
    /** Which execution provider runs `graph`, and why any requested one was skipped. */
    Result<std::string> graph_provider(Graph graph) const {
        std::string m;
        const ::kiln_model *p = p_;
        ::kiln_status s = detail::read_string(
            [p, graph](char *b, std::size_t n, std::size_t *l) { return ::kiln_model_graph_provider(p, to_c(graph), b, n, l); }, m);
        return detail::string_result(s, std::move(m));
    }
    /** A sprite cut out with the model's matting graph when it has one (else the key). */
    Result<Sprite> make_sprite(const Image &image, const ::kiln_sprite_options *options = nullptr) const {
        ::kiln_image *out = nullptr;
        ::kiln_rect bbox{};
        ::kiln_status s = ::kiln_model_make_sprite(p_, image.get(), options, &out, &bbox);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Sprite{Image(out), bbox};
    }
    /** Outpaints `options.init_image` by the given pixels on each side. */
    Result<Image> extend_texture(const ::kiln_generate_options &options, std::uint32_t left, std::uint32_t right,
                                 std::uint32_t top, std::uint32_t bottom) const {
        ::kiln_image *out = nullptr;
        ::kiln_status s = ::kiln_model_extend_texture(p_, &options, left, right, top, bottom, &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Image(out);
    }
    /** Makes `options.init_image` tile by inpainting a `band`-pixel cross over its offset seams. */
    Result<Image> make_tileable(const ::kiln_generate_options &options, std::uint32_t band) const {
        ::kiln_image *out = nullptr;
        ::kiln_status s = ::kiln_model_make_tileable(p_, &options, band, &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Image(out);
    }
    /**
     * Queues extend_texture() as a Job and returns at once; `job_options` nullptr = defaults. Arguments are
     * checked here (extend_texture's and submit's errors, no job queued); the picture and options are copied.
     */
    Result<Job> submit_extend_texture(const ::kiln_generate_options &options, std::uint32_t left, std::uint32_t right,
                                      std::uint32_t top, std::uint32_t bottom,
                                      const ::kiln_job_options *job_options = nullptr) const {
        std::uint64_t id = 0;
        ::kiln_status s = ::kiln_job_submit_extend_texture(p_, &options, left, right, top, bottom, job_options, &id);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Job(id);
    }
    /**
     * Queues make_tileable() as a Job and returns at once; `job_options` nullptr = defaults. Arguments are
     * checked here (make_tileable's and submit's errors, no job queued); the picture and options are copied.
     */
    Result<Job> submit_make_tileable(const ::kiln_generate_options &options, std::uint32_t band,
                                     const ::kiln_job_options *job_options = nullptr) const {
        std::uint64_t id = 0;
        ::kiln_status s = ::kiln_job_submit_make_tileable(p_, &options, band, job_options, &id);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Job(id);
    }

    ::kiln_model *get() const noexcept { return p_; }
    /** Gives up ownership; the caller frees with kiln_model_free. */
    ::kiln_model *release() noexcept { return std::exchange(p_, nullptr); }
    explicit operator bool() const noexcept { return p_ != nullptr; }

private:
    void reset() noexcept { ::kiln_model_free(std::exchange(p_, nullptr)); }
    ::kiln_model *p_ = nullptr;
};

inline Result<Model> Job::model() const {
    ::kiln_model *out = nullptr;
    ::kiln_status s = ::kiln_job_model(id_, &out);
    if (s != KILN_STATUS_OK) return detail::last_error(s);
    return Model(out);
}

/**
 * A loaded super-resolution graph (ESRGAN, Real-ESRGAN, SwinIR, ... exported to ONNX), from
 * Runtime::load_upscaler (or a Runtime::submit_load_upscaler job). Move-only; internally synchronized, so several
 * threads may upscale with one.
 */
class Upscaler {
public:
    Upscaler() noexcept = default;
    /** Takes ownership of `upscaler`. */
    explicit Upscaler(::kiln_upscaler *upscaler) noexcept : p_(upscaler) {}
    Upscaler(Upscaler &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Upscaler &operator=(Upscaler &&o) noexcept { if (this != &o) { reset(); p_ = std::exchange(o.p_, nullptr); } return *this; }
    Upscaler(const Upscaler &) = delete;
    Upscaler &operator=(const Upscaler &) = delete;
    ~Upscaler() { reset(); }

    /** Output pixels per input pixel along each axis (2, 4, ...). */
    Result<std::uint32_t> scale() const {
        std::uint32_t scale = 0;
        ::kiln_status s = ::kiln_upscaler_scale(p_, &scale);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return scale;
    }
    /**
     * `image` upscaled by scale() into a new Image (`image` is left as it is), tile by tile; `options`
     * (from kiln::defaults<kiln_upscale_options>(): `tile`, `context`, `seamless`, `alpha`) nullptr =
     * defaults. Blocking and heavy: submit() it as a Job, or call it from a thread of your own.
     * Status::cancelled after cancel(); the upscaler stays usable after any error.
     */
    Result<Image> upscale(const Image &image, const ::kiln_upscale_options *options = nullptr) const {
        ::kiln_image *out = nullptr;
        ::kiln_status s = ::kiln_upscaler_upscale(p_, image.get(), options, &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Image(out);
    }
    /**
     * Queues upscale() as a Job on Kiln's job workers and returns at once; `options` and `job_options`
     * nullptr = defaults. The job copies `image` and holds the graph, so both the Image and this Upscaler
     * may be destroyed right after. Its progress counts graph runs (tiles; twice as many when alpha goes
     * through the graph) instead of U-Net calls, known from submission on; it makes no previews
     * (`preview_interval` is ignored). Arguments are checked here (upscale()'s errors, no job queued).
     */
    Result<Job> submit(const Image &image, const ::kiln_upscale_options *options = nullptr,
                       const ::kiln_job_options *job_options = nullptr) const {
        std::uint64_t id = 0;
        ::kiln_status s = ::kiln_job_submit_upscale(p_, image.get(), options, job_options, &id);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Job(id);
    }
    /**
     * Stops every upscale() on this upscaler in progress on other threads (each returns Status::cancelled
     * within one graph run) and every running upscale Job submitted on it (each ends JobState::cancelled;
     * queued ones still run); calls that start afterwards run normally, and with none in flight it does
     * nothing. Safe from any thread while this Upscaler lives (do not move or destroy it meanwhile).
     */
    Result<void> cancel() const {
        ::kiln_status s = ::kiln_upscaler_cancel(p_);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return {};
    }

    ::kiln_upscaler *get() const noexcept { return p_; }
    /** Gives up ownership; the caller frees with kiln_upscaler_free. */
    ::kiln_upscaler *release() noexcept { return std::exchange(p_, nullptr); }
    explicit operator bool() const noexcept { return p_ != nullptr; }

private:
    void reset() noexcept { ::kiln_upscaler_free(std::exchange(p_, nullptr)); }
    ::kiln_upscaler *p_ = nullptr;
};

inline Result<Upscaler> Job::upscaler() const {
    ::kiln_upscaler *out = nullptr;
    ::kiln_status s = ::kiln_job_upscaler(id_, &out);
    if (s != KILN_STATUS_OK) return detail::last_error(s);
    return Upscaler(out);
}

inline Result<Job> Model::submit_upscaled(const ::kiln_generate_options &options, const Upscaler &upscaler,
                                          const ::kiln_upscale_options *upscale_options,
                                          const ::kiln_job_options *job_options) const {
    std::uint64_t id = 0;
    ::kiln_status s = ::kiln_job_submit_upscaled(p_, &options, upscaler.get(), upscale_options, job_options, &id);
    if (s != KILN_STATUS_OK) return detail::last_error(s);
    return Job(id);
}

/** ONNX Runtime loaded with Kiln's settings. Move-only; models and upscalers loaded from it may outlive it. */
class Runtime {
public:
    Runtime() noexcept = default;
    /** Takes ownership of `runtime`. */
    explicit Runtime(::kiln_runtime *runtime) noexcept : p_(runtime) {}
    Runtime(Runtime &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Runtime &operator=(Runtime &&o) noexcept { if (this != &o) { reset(); p_ = std::exchange(o.p_, nullptr); } return *this; }
    Runtime(const Runtime &) = delete;
    Runtime &operator=(const Runtime &) = delete;
    ~Runtime() { reset(); }

    /** Loads ONNX Runtime (once per process); `options` nullptr = defaults. */
    static Result<Runtime> create(const ::kiln_runtime_options *options = nullptr) {
        ::kiln_runtime *out = nullptr;
        ::kiln_status s = ::kiln_runtime_create(options, &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Runtime(out);
    }
    /**
     * Loads a diffusers/optimum ONNX model folder; `options` nullptr = defaults (kiln::defaults<kiln_model_load_options>():
     * `seamless`, `matting_path`, `quantization`, e.g. `kiln::to_c(kiln::Quantization::int8)`, `attention`,
     * e.g. `kiln::to_c(kiln::Attention::exported)`, and `lora_slots`, 1 (true) for LoRA slots: with_loras() and
     * with_adapters() of such a model feed plain low-rank LoRAs at run time instead of merging them).
     */
    Result<Model> load_model(const std::string &model_dir, const ::kiln_model_load_options *options = nullptr) const {
        ::kiln_model *out = nullptr;
        ::kiln_status s = options ? ::kiln_model_load_with(p_, model_dir.c_str(), options, &out)
                                  : ::kiln_model_load(p_, model_dir.c_str(), &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Model(out);
    }
    /**
     * Queues load_model() as a Job and returns at once, so a game loads a model without a thread of its
     * own; the job ends with the model, taken with Job::model(). `options` and `job_options` nullptr =
     * defaults. The folder and options are checked and copied here (Status::model_not_found when the
     * folder does not exist, invalid_argument, struct_size_mismatch, invalid_utf8; no job queued); the
     * files are read by the job, whose errors are load_model()'s. Progress counts KiB of the graphs
     * whose sessions are made (step / total_steps is a loading bar; see kiln_job_progress); no previews. A queued load cancelled never starts; a running one stops inside the graph session ONNX
     * Runtime is creating (at its next check), starts no other and ends cancelled without a model.
     */
    Result<Job> submit_load_model(const std::string &model_dir, const ::kiln_model_load_options *options = nullptr,
                                  const ::kiln_job_options *job_options = nullptr) const {
        std::uint64_t id = 0;
        ::kiln_status s = ::kiln_job_submit_model_load(p_, model_dir.c_str(), options, job_options, &id);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Job(id);
    }
    /**
     * Loads a super-resolution graph: a folder holding `model.onnx` (and optionally `config.json`), or an
     * ONNX file with its settings, if any, in the `.json` of the same name beside it. Status::model_not_found
     * when there is no such file, Status::model_invalid when it is not an upscaler.
     */
    Result<Upscaler> load_upscaler(const std::string &path) const {
        ::kiln_upscaler *out = nullptr;
        ::kiln_status s = ::kiln_upscaler_load(p_, path.c_str(), &out);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Upscaler(out);
    }
    /**
     * Queues load_upscaler() as a Job and returns at once, so a game loads a super-resolution graph without a
     * thread of its own; the job ends with the upscaler, taken with Job::upscaler(). `job_options` nullptr =
     * defaults. `path` is checked and copied here (Status::model_not_found when no graph file is there,
     * invalid_utf8, and submit()'s errors; no job queued); the graph is read by the job, whose errors are
     * load_upscaler()'s. Progress counts KiB of its graph; no previews. A queued load cancelled never starts;
     * a running one stops inside the graph session ONNX Runtime is creating and ends cancelled without an
     * upscaler. The job keeps what it needs of this Runtime, which may be destroyed once submit returns.
     */
    Result<Job> submit_load_upscaler(const std::string &path, const ::kiln_job_options *job_options = nullptr) const {
        std::uint64_t id = 0;
        ::kiln_status s = ::kiln_job_submit_upscaler_load(p_, path.c_str(), job_options, &id);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return Job(id);
    }
    /** The loaded ONNX Runtime's version, e.g. "1.31.1". */
    Result<std::string> onnxruntime_version() const {
        std::string v;
        const ::kiln_runtime *p = p_;
        ::kiln_status s = detail::read_string(
            [p](char *b, std::size_t n, std::size_t *l) { return ::kiln_runtime_onnxruntime_version(p, b, n, l); }, v);
        return detail::string_result(s, std::move(v));
    }
    /** The path ONNX Runtime was loaded from. */
    Result<std::string> onnxruntime_path() const {
        std::string v;
        const ::kiln_runtime *p = p_;
        ::kiln_status s = detail::read_string(
            [p](char *b, std::size_t n, std::size_t *l) { return ::kiln_runtime_onnxruntime_path(p, b, n, l); }, v);
        return detail::string_result(s, std::move(v));
    }
    /** Whether the loaded ONNX Runtime includes `provider`. */
    Result<bool> provider_available(Provider provider) const {
        std::uint32_t available = 0;
        ::kiln_status s = ::kiln_runtime_provider_available(p_, to_c(provider), &available);
        if (s != KILN_STATUS_OK) return detail::last_error(s);
        return available != 0;
    }

    ::kiln_runtime *get() const noexcept { return p_; }
    /** Gives up ownership; the caller destroys with kiln_runtime_destroy. */
    ::kiln_runtime *release() noexcept { return std::exchange(p_, nullptr); }
    explicit operator bool() const noexcept { return p_ != nullptr; }

private:
    void reset() noexcept { ::kiln_runtime_destroy(std::exchange(p_, nullptr)); }
    ::kiln_runtime *p_ = nullptr;
};

} // namespace kiln

#endif /* KILN_HPP */
