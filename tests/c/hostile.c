/* hostile: a caller that tries everything a careless or hostile engine could
 * pass through the C API, built with AddressSanitizer and UBSan by
 * tests/c_examples.rs. Each call must return the status listed (never
 * KILN_STATUS_INTERNAL, never a crash), and the same runtime and model must
 * then still generate a normal image. Prints one line per failed check and a
 * summary "checks N, failed F".
 *
 *   hostile MODEL_DIR */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

static int checks, failed;

static void check_status(kiln_status got, kiln_status want, const char *what, int line) {
    checks++;
    if (got != want) {
        char msg[512];
        kiln_last_error_message(msg, sizeof msg, NULL);
        printf("FAIL line %d: %s: got %s, want %s (%s)\n", line, what, kiln_status_name(got), kiln_status_name(want), msg);
        failed++;
    }
}
#define CHECK(call, want) check_status((call), (want), #call, __LINE__)
#define EXPECT(cond) do { checks++; if (!(cond)) { printf("FAIL line %d: %s\n", __LINE__, #cond); failed++; } } while (0)

static kiln_runtime *rt;
static kiln_model *model;
static const char *model_dir;

static void base_options(kiln_generate_options *o) {
    kiln_generate_options_init(o);
    o->prompt = "stone";
    o->steps = 2;
    o->scheduler = KILN_SCHEDULER_DDIM;
}

/* Generates with `o` and expects `want`; frees any image. */
static kiln_status gen(const kiln_generate_options *o) {
    kiln_image *img = (kiln_image *)(uintptr_t)1; /* must come back NULL on failure */
    kiln_status s = kiln_model_generate(model, o, &img);
    if (s != KILN_STATUS_OK && img != NULL) { printf("FAIL: image_out not NULL after %s\n", kiln_status_name(s)); failed++; }
    kiln_image_free(s == KILN_STATUS_OK ? img : NULL);
    return s;
}

static void hostile_arguments(void) {
    kiln_generate_options o;
    kiln_image *img = NULL;
    unsigned char buf[64 * 64 * 4];
    /* NULL everywhere. */
    CHECK(kiln_runtime_create(NULL, NULL), KILN_STATUS_NULL_ARGUMENT);
    kiln_model *scratch = (kiln_model *)(uintptr_t)1;
    CHECK(kiln_model_load(rt, NULL, &scratch), KILN_STATUS_NULL_ARGUMENT);
    EXPECT(scratch == NULL); /* out-parameters are cleared on failure */
    CHECK(kiln_model_load(NULL, "x", NULL), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_model_generate(model, NULL, &img), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_model_generate(NULL, NULL, NULL), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_model_generate_into(model, NULL, buf, sizeof buf, 0), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_image_copy(NULL, buf, sizeof buf, 0), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_image_write_png(NULL, NULL), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_model_get_info(model, NULL), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_job_poll(1, NULL), KILN_STATUS_NULL_ARGUMENT);
    EXPECT(kiln_image_width(NULL) == 0 && kiln_image_height(NULL) == 0 && kiln_image_pixels(NULL) == NULL);
    kiln_image_free(NULL);
    kiln_model_free(NULL);
    kiln_runtime_destroy(NULL);
    kiln_generate_options_init(NULL);
    EXPECT(strcmp(kiln_status_name(123456u), "KILN_STATUS_UNKNOWN") == 0);
    EXPECT(strcmp(kiln_status_name(KILN_STATUS_OUT_OF_MEMORY), "KILN_STATUS_OUT_OF_MEMORY") == 0);

    /* struct_size: zero, tiny, cutting a pointer in half, huge. */
    base_options(&o); o.struct_size = 0; CHECK(gen(&o), KILN_STATUS_STRUCT_SIZE_MISMATCH);
    base_options(&o); o.struct_size = 3; CHECK(gen(&o), KILN_STATUS_STRUCT_SIZE_MISMATCH);
    base_options(&o); o.struct_size = (uint32_t)(offsetof(kiln_generate_options, scheduler_overrides) + 2);
    CHECK(gen(&o), KILN_STATUS_STRUCT_SIZE_MISMATCH);
    base_options(&o); o.struct_size = (uint32_t)(offsetof(kiln_generate_options, negative_prompt) + 4);
    CHECK(gen(&o), KILN_STATUS_STRUCT_SIZE_MISMATCH);
    base_options(&o); o.struct_size = 0xFFFFFFFFu; CHECK(gen(&o), KILN_STATUS_STRUCT_SIZE_MISMATCH);
    {
        kiln_runtime_options ro;
        kiln_runtime *other = (kiln_runtime *)(uintptr_t)1;
        kiln_runtime_options_init(&ro);
        ro.struct_size = (uint32_t)(offsetof(kiln_runtime_options, graph_cache_dir) + 2);
        CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_STRUCT_SIZE_MISMATCH);
        EXPECT(other == NULL);
        kiln_runtime_options_init(&ro); ro.log_level = 77; CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_INVALID_ARGUMENT);
        kiln_runtime_options_init(&ro); ro.residency = 9; CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_INVALID_ARGUMENT);
        kiln_runtime_options_init(&ro); ro.job_workers = 100000; CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_INVALID_ARGUMENT);
        kiln_runtime_options_init(&ro); ro.intra_op_threads = 0xFFFFFFFFu; CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_INVALID_ARGUMENT);
        kiln_runtime_options_init(&ro); ro.providers_len = 3; CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_NULL_ARGUMENT);
        {
            uint32_t bogus[2] = {0, 99};
            kiln_runtime_options_init(&ro); ro.providers = bogus; ro.providers_len = 2;
            CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_INVALID_ARGUMENT);
            ro.providers_len = (size_t)-1;
            CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_INVALID_ARGUMENT);
        }
        kiln_runtime_options_init(&ro); ro.graph_cache_dir = ""; CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_INVALID_ARGUMENT);
        kiln_runtime_options_init(&ro); ro.onnxruntime_path = "/nonexistent/libonnxruntime.so";
        CHECK(kiln_runtime_create(&ro, &other), KILN_STATUS_RUNTIME_LOAD_FAILED);
        EXPECT(other == NULL);
    }

    /* Enum values out of range. */
    base_options(&o); o.scheduler = 99; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.prompt_weighting = 7; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.noise_generator = 9; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.noise_generator = KILN_NOISE_GENERATOR_TORCH_CPU; CHECK(gen(&o), KILN_STATUS_OK);
    base_options(&o); o.noise_generator = KILN_NOISE_GENERATOR_TORCH_CUDA; CHECK(gen(&o), KILN_STATUS_OK);
    {
        /* An unknown quantization is refused; int8 loads, reports itself and generates. */
        kiln_model_load_options lo;
        kiln_model_load_options_init(&lo);
        lo.quantization = 9;
        kiln_model *q = (kiln_model *)(uintptr_t)1;
        CHECK(kiln_model_load_with(rt, model_dir, &lo, &q), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(q == NULL);
        lo.quantization = KILN_QUANTIZATION_INT8;
        CHECK(kiln_model_load_with(rt, model_dir, &lo, &q), KILN_STATUS_OK);
        kiln_model_info info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        CHECK(kiln_model_get_info(q, &info), KILN_STATUS_OK);
        EXPECT(info.quantization == KILN_QUANTIZATION_INT8);
        kiln_image *qi = NULL;
        base_options(&o);
        CHECK(kiln_model_generate(q, &o, &qi), KILN_STATUS_OK);
        kiln_image_free(qi);
        kiln_model_free(q);
        /* An unknown attention mode is refused; exported and fused load and say which. */
        kiln_model_load_options_init(&lo);
        lo.attention = 7;
        q = (kiln_model *)(uintptr_t)1;
        CHECK(kiln_model_load_with(rt, model_dir, &lo, &q), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(q == NULL);
        lo.attention = KILN_ATTENTION_EXPORTED;
        CHECK(kiln_model_load_with(rt, model_dir, &lo, &q), KILN_STATUS_OK);
        CHECK(kiln_model_get_info(q, &info), KILN_STATUS_OK);
        EXPECT(info.fused_attention == 0);
        kiln_model_free(q);
        lo.attention = KILN_ATTENTION_FUSED;
        CHECK(kiln_model_load_with(rt, model_dir, &lo, &q), KILN_STATUS_OK);
        CHECK(kiln_model_get_info(q, &info), KILN_STATUS_OK);
        EXPECT(info.fused_attention > 0);
        qi = NULL;
        CHECK(kiln_model_generate(q, &o, &qi), KILN_STATUS_OK);
        kiln_image_free(qi);
        kiln_model_free(q);
        /* LoRA slots: only 0 and 1; a slotted model says how many layers have one. */
        kiln_model_load_options_init(&lo);
        lo.lora_slots = 3;
        q = (kiln_model *)(uintptr_t)1;
        CHECK(kiln_model_load_with(rt, model_dir, &lo, &q), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(q == NULL);
        lo.lora_slots = 1;
        CHECK(kiln_model_load_with(rt, model_dir, &lo, &q), KILN_STATUS_OK);
        CHECK(kiln_model_get_info(q, &info), KILN_STATUS_OK);
        EXPECT(info.lora_slots > 0);
        qi = NULL;
        CHECK(kiln_model_generate(q, &o, &qi), KILN_STATUS_OK);
        kiln_image_free(qi);
        kiln_model_free(q);
    }
    {
        kiln_model *view = NULL;
        CHECK(kiln_model_seamless(model, 42, &view), KILN_STATUS_INVALID_ARGUMENT);
        uint32_t avail = 7;
        CHECK(kiln_runtime_provider_available(rt, 1000, &avail), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(avail == 0);
        char text[8];
        size_t len = 99;
        CHECK(kiln_model_graph_provider(model, 17, text, sizeof text, &len), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(len == 0);
    }

    /* Sizes. */
    base_options(&o); o.width = 7; CHECK(gen(&o), KILN_STATUS_INVALID_SIZE);
    base_options(&o); o.width = 0x7FFFFFF8u; CHECK(gen(&o), KILN_STATUS_INVALID_SIZE);
    base_options(&o); o.height = 1u << 20; CHECK(gen(&o), KILN_STATUS_INVALID_SIZE);
    base_options(&o); o.steps = 1000000; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); CHECK(kiln_model_generate_into(model, &o, buf, sizeof buf, (size_t)-1), KILN_STATUS_BUFFER_TOO_SMALL);
    base_options(&o); CHECK(kiln_model_generate_into(model, &o, buf, sizeof buf, ((size_t)-1) / 2 + 1), KILN_STATUS_BUFFER_TOO_SMALL);
    base_options(&o); CHECK(kiln_model_generate_into(model, &o, buf, 10, 0), KILN_STATUS_BUFFER_TOO_SMALL);
    base_options(&o); CHECK(kiln_model_generate_into(model, &o, buf, sizeof buf, 3), KILN_STATUS_INVALID_ARGUMENT);

    /* Numbers that are not numbers. */
    base_options(&o); o.guidance_scale = NAN; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.guidance_scale = INFINITY; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.guidance_rescale = NAN; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.guidance_rescale = 5.0f; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.variation_strength = NAN; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.variation_strength = -0.5f; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.variation_seed = UINT64_MAX; o.variation_strength = 0.5f; CHECK(gen(&o), KILN_STATUS_OK);
    {
        static float noise[4 * 8 * 8];
        for (size_t i = 0; i < sizeof noise / sizeof noise[0]; ++i) noise[i] = 0.25f;
        noise[17] = NAN;
        base_options(&o); o.initial_noise = noise; o.initial_noise_len = sizeof noise / sizeof noise[0];
        CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
        noise[17] = -INFINITY;
        CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
        noise[17] = 0.0f;
        /* A variation blends seeded noise: not with the caller's own. */
        o.variation_strength = 0.5f; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
        o.variation_strength = 0.0f;
        o.initial_noise_len = 5; CHECK(gen(&o), KILN_STATUS_INVALID_SIZE);
        o.initial_noise = NULL; o.initial_noise_len = 5; CHECK(gen(&o), KILN_STATUS_NULL_ARGUMENT);
        base_options(&o); o.initial_noise = noise; o.initial_noise_len = (size_t)-1; CHECK(gen(&o), KILN_STATUS_INVALID_SIZE);
    }

    /* Strings. */
    base_options(&o); o.prompt = "\xff\xfe broken"; CHECK(gen(&o), KILN_STATUS_INVALID_UTF8);
    base_options(&o); o.negative_prompt = "\xc3"; CHECK(gen(&o), KILN_STATUS_INVALID_UTF8);
    base_options(&o); o.prompt = NULL; CHECK(gen(&o), KILN_STATUS_NULL_ARGUMENT);
    base_options(&o); o.prompt_weighting = 1; o.prompt = "((((unclosed"; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.prompt_weighting = 1; o.prompt = "(a:1e999)"; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.scheduler_overrides = "not json"; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.scheduler_overrides = "[1, 2]"; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.scheduler_overrides = "{\"steps_offset\": 1e30}"; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.scheduler = KILN_SCHEDULER_PNDM; o.scheduler_overrides = "{\"num_train_timesteps\": 1}";
    CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.scheduler_overrides = "{\"beta_schedule\": 12}"; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.scheduler_overrides = "{\"steps_offset\": 999}"; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.scheduler = KILN_SCHEDULER_EULER; o.scheduler_overrides = "{\"clip_sample\": true, \"clip_sample_range\": -1}";
    CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);

    /* img2img and inpainting buffers. */
    {
        static unsigned char pic[64 * 64 * 4], mask[64 * 64];
        base_options(&o); o.init_image = pic; o.init_image_len = sizeof pic; o.init_image_width = 64; o.init_image_height = 64;
        o.init_image_channels = 5; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
        o.init_image_channels = 4; o.init_image_row_pitch = 3; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
        o.init_image_row_pitch = (size_t)-1; CHECK(gen(&o), KILN_STATUS_BUFFER_TOO_SMALL);
        o.init_image_row_pitch = 0; o.init_image_len = 100; CHECK(gen(&o), KILN_STATUS_BUFFER_TOO_SMALL);
        o.init_image_len = sizeof pic; o.init_image_width = 0x80000000u; CHECK(gen(&o), KILN_STATUS_INVALID_SIZE);
        o.init_image_width = 64; o.strength = NAN; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
        o.strength = 2.0f; CHECK(gen(&o), KILN_STATUS_INVALID_ARGUMENT);
        o.strength = 0.8f; o.mask = mask; o.mask_width = 64; o.mask_height = 64; o.mask_len = 12;
        CHECK(gen(&o), KILN_STATUS_INVALID_SIZE);
        o.mask_width = 0x40000000u; o.mask_height = 4; o.mask_len = 0; CHECK(gen(&o), KILN_STATUS_INVALID_SIZE);
        o.mask_width = 32; o.mask_height = 32; o.mask_len = 32 * 32; CHECK(gen(&o), KILN_STATUS_INVALID_SIZE);
        /* Texture helpers with absurd extents. */
        kiln_image *tex = (kiln_image *)(uintptr_t)1;
        base_options(&o); o.init_image = pic; o.init_image_len = sizeof pic; o.init_image_width = 64; o.init_image_height = 64;
        CHECK(kiln_model_extend_texture(model, &o, 0x80000000u, 0x80000000u, 0, 0, &tex), KILN_STATUS_INVALID_SIZE);
        EXPECT(tex == NULL);
        CHECK(kiln_model_extend_texture(model, &o, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, &tex), KILN_STATUS_INVALID_SIZE);
        CHECK(kiln_model_make_tileable(model, &o, 0xFFFFFFFFu, &tex), KILN_STATUS_INVALID_ARGUMENT);
        CHECK(kiln_model_make_tileable(model, &o, 0, &tex), KILN_STATUS_INVALID_ARGUMENT);
        /* Their job forms check the same at submit, and queue nothing. */
        uint64_t tjob = 7;
        CHECK(kiln_job_submit_extend_texture(model, &o, 0x80000000u, 0x80000000u, 0, 0, NULL, &tjob), KILN_STATUS_INVALID_SIZE);
        EXPECT(tjob == 0);
        CHECK(kiln_job_submit_extend_texture(model, &o, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, NULL, &tjob), KILN_STATUS_INVALID_SIZE);
        CHECK(kiln_job_submit_make_tileable(model, &o, 0xFFFFFFFFu, NULL, &tjob), KILN_STATUS_INVALID_ARGUMENT);
        CHECK(kiln_job_submit_make_tileable(model, &o, 16, NULL, NULL), KILN_STATUS_NULL_ARGUMENT);
        CHECK(kiln_job_submit_make_tileable(NULL, &o, 16, NULL, &tjob), KILN_STATUS_NULL_ARGUMENT);
        EXPECT(tjob == 0);
        base_options(&o);
        CHECK(kiln_model_extend_texture(model, &o, 8, 8, 8, 8, &tex), KILN_STATUS_INVALID_ARGUMENT); /* no picture */
        CHECK(kiln_job_submit_extend_texture(model, &o, 8, 8, 8, 8, NULL, &tjob), KILN_STATUS_INVALID_ARGUMENT);
        CHECK(kiln_job_submit_make_tileable(model, &o, 16, NULL, &tjob), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(tjob == 0);
    }

    /* Images and post-processing. */
    {
        static unsigned char px[16 * 16 * 4];
        kiln_image *src = NULL, *out = (kiln_image *)(uintptr_t)1;
        CHECK(kiln_image_create(0x7FFFFFFFu, 0x7FFFFFFFu, px, sizeof px, 0, &out), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(out == NULL);
        CHECK(kiln_image_create(16, 16, px, sizeof px, (size_t)-1, &out), KILN_STATUS_INVALID_ARGUMENT);
        CHECK(kiln_image_create(16, 16, px, 10, 0, &out), KILN_STATUS_BUFFER_TOO_SMALL);
        CHECK(kiln_image_create(16, 16, px, sizeof px, 0, &src), KILN_STATUS_OK);
        uint64_t ujob = 7;
        CHECK(kiln_job_submit_upscale(NULL, src, NULL, NULL, &ujob), KILN_STATUS_NULL_ARGUMENT);
        EXPECT(ujob == 0);
        CHECK(kiln_job_submit_upscale(NULL, NULL, NULL, NULL, NULL), KILN_STATUS_NULL_ARGUMENT);
        base_options(&o);
        CHECK(kiln_job_submit_upscaled(model, &o, NULL, NULL, NULL, &ujob), KILN_STATUS_NULL_ARGUMENT);
        CHECK(kiln_job_submit_upscaled(NULL, &o, NULL, NULL, NULL, &ujob), KILN_STATUS_NULL_ARGUMENT);
        EXPECT(ujob == 0);
        CHECK(kiln_image_copy(src, buf, sizeof buf, (size_t)-1), KILN_STATUS_BUFFER_TOO_SMALL);
        CHECK(kiln_image_copy(src, buf, 3, 0), KILN_STATUS_BUFFER_TOO_SMALL);
        CHECK(kiln_image_write_png(src, "/nonexistent/dir/x.png"), KILN_STATUS_IO);
        CHECK(kiln_image_write_png(src, "\xff.png"), KILN_STATUS_INVALID_UTF8);
        kiln_pixel_art_options pa;
        kiln_pixel_art_options_init(&pa); pa.scale = 100000; CHECK(kiln_image_pixel_art(src, &pa, &out), KILN_STATUS_INVALID_SIZE);
        EXPECT(out == NULL);
        kiln_pixel_art_options_init(&pa); pa.scale = 0xFFFFFFFFu; pa.cell = 1; CHECK(kiln_image_pixel_art(src, &pa, &out), KILN_STATUS_INVALID_SIZE);
        kiln_pixel_art_options_init(&pa); pa.cell = 0; CHECK(kiln_image_pixel_art(src, &pa, &out), KILN_STATUS_INVALID_ARGUMENT);
        kiln_pixel_art_options_init(&pa); pa.cell = 0xFFFFFFFFu; CHECK(kiln_image_pixel_art(src, &pa, &out), KILN_STATUS_OK);
        kiln_image_free(out); out = NULL;
        kiln_pixel_art_options_init(&pa); pa.colors = 100000; CHECK(kiln_image_pixel_art(src, &pa, &out), KILN_STATUS_INVALID_ARGUMENT);
        kiln_pixel_art_options_init(&pa); pa.palette_len = 9; CHECK(kiln_image_pixel_art(src, &pa, &out), KILN_STATUS_NULL_ARGUMENT);
        kiln_pixel_art_options_init(&pa); pa.palette_rgb = px; pa.palette_len = (size_t)-1; CHECK(kiln_image_pixel_art(src, &pa, &out), KILN_STATUS_INVALID_ARGUMENT);
        kiln_pixel_art_options_init(&pa); pa.struct_size = 12; CHECK(kiln_image_pixel_art(src, &pa, &out), KILN_STATUS_STRUCT_SIZE_MISMATCH);
        kiln_sprite_options so;
        kiln_rect box = {1, 2, 3, 4};
        kiln_sprite_options_init(&so); so.inner_tolerance = NAN; CHECK(kiln_image_make_sprite(src, &so, &out, &box), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(box.x == 0 && box.width == 0);
        kiln_sprite_options_init(&so); so.feather_radius = 0xFFFFFFFFu; CHECK(kiln_image_make_sprite(src, &so, &out, &box), KILN_STATUS_INVALID_ARGUMENT);
        kiln_sprite_options_init(&so); so.matte = 77; CHECK(kiln_image_make_sprite(src, &so, &out, &box), KILN_STATUS_INVALID_ARGUMENT);
        kiln_sprite_options_init(&so); so.matte = KILN_MATTE_GRAPH; CHECK(kiln_model_make_sprite(model, src, &so, &out, &box), KILN_STATUS_MODEL_NOT_FOUND);
        kiln_material_options mo;
        kiln_image *h = NULL, *n = NULL;
        kiln_material_options_init(&mo); mo.strength = INFINITY; CHECK(kiln_image_material_maps(src, &mo, &h, &n), KILN_STATUS_INVALID_ARGUMENT);
        kiln_material_options_init(&mo); mo.blur_radius = 0xFFFFFFFFu; CHECK(kiln_image_material_maps(src, &mo, &h, &n), KILN_STATUS_INVALID_ARGUMENT);
        CHECK(kiln_image_material_maps(src, NULL, NULL, NULL), KILN_STATUS_NULL_ARGUMENT);
        float score = 5.0f;
        CHECK(kiln_image_seam_score(src, 9, &score), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(score == 0.0f);
        /* ControlNet: preprocessors and kiln_control entries (this model has no ControlNet layout). */
        CHECK(kiln_image_canny(src, -1.0f, 200.0f, &out), KILN_STATUS_INVALID_ARGUMENT);
        EXPECT(out == NULL);
        CHECK(kiln_image_canny(NULL, 100.0f, 200.0f, &out), KILN_STATUS_NULL_ARGUMENT);
        CHECK(kiln_image_canny(src, 100.0f, 200.0f, NULL), KILN_STATUS_NULL_ARGUMENT);
        CHECK(kiln_image_height_to_depth(src, NULL), KILN_STATUS_NULL_ARGUMENT);
        CHECK(kiln_image_height_to_depth(src, &out), KILN_STATUS_OK);
        kiln_image_free(out); out = NULL;
        {
            kiln_control ctl;
            kiln_generate_options go;
            kiln_image *gen = NULL;
            kiln_control_init(&ctl);
            kiln_generate_options_init(&go);
            go.prompt = "x"; go.steps = 1; go.controls = &ctl; go.control_count = 1;
            CHECK(kiln_model_generate(model, &go, &gen), KILN_STATUS_NULL_ARGUMENT); /* no name */
            ctl.controlnet = "canny";
            CHECK(kiln_model_generate(model, &go, &gen), KILN_STATUS_NULL_ARGUMENT); /* no image */
            ctl.image = src; ctl.preprocess = 9;
            CHECK(kiln_model_generate(model, &go, &gen), KILN_STATUS_INVALID_ARGUMENT);
            ctl.preprocess = KILN_CONTROL_PREPROCESS_CANNY;
            CHECK(kiln_model_generate(model, &go, &gen), KILN_STATUS_MODEL_NOT_FOUND);
            ctl.struct_size = 4;
            CHECK(kiln_model_generate(model, &go, &gen), KILN_STATUS_STRUCT_SIZE_MISMATCH);
            go.controls = NULL;
            CHECK(kiln_model_generate(model, &go, &gen), KILN_STATUS_NULL_ARGUMENT);
            EXPECT(gen == NULL);
        }
        kiln_image_free(src);
    }

    /* String getters with tiny buffers. */
    {
        char tiny[1] = {'x'};
        size_t len = 0;
        CHECK(kiln_runtime_onnxruntime_version(rt, tiny, 0, &len), KILN_STATUS_BUFFER_TOO_SMALL);
        EXPECT(len > 0);
        CHECK(kiln_runtime_onnxruntime_version(rt, tiny, 1, &len), KILN_STATUS_BUFFER_TOO_SMALL);
        EXPECT(tiny[0] == 0);
        CHECK(kiln_runtime_onnxruntime_path(rt, NULL, 0, &len), KILN_STATUS_OK);
        CHECK(kiln_last_error_message(tiny, 1, &len), KILN_STATUS_OK);
    }
}

/* Callback that calls back into Kiln from the worker thread. */
typedef struct { int finished, reentrant_bad; uint32_t final_state; } reentry;

static void reenter(void *user, const kiln_job_event *e) {
    reentry *r = user;
    kiln_job_progress p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    if (e->kind == KILN_JOB_EVENT_KIND_PROGRESS) {
        if (kiln_job_poll(e->job, &p) != KILN_STATUS_OK) r->reentrant_bad++;
        if (e->step == 1 && kiln_job_cancel(e->job) != KILN_STATUS_OK) r->reentrant_bad++;
        kiln_image *img = NULL;
        kiln_generate_options o;
        base_options(&o);
        o.width = 7; /* refused before any work: no nested generation */
        if (kiln_model_generate(model, &o, &img) != KILN_STATUS_INVALID_SIZE) r->reentrant_bad++;
    }
    if (e->kind == KILN_JOB_EVENT_KIND_FINISHED) {
        r->finished++;
        r->final_state = e->state;
        /* Freeing its own job from inside FINISHED. */
        if (kiln_job_free(e->job) != KILN_STATUS_OK) r->reentrant_bad++;
    }
}

static void hostile_jobs(void) {
    kiln_generate_options o;
    uint64_t job = 0;
    uint32_t state = 99, w = 9, h = 9, step = 9;
    unsigned char buf[64 * 64 * 4];
    kiln_job_progress p;
    memset(&p, 0, sizeof p);
    CHECK(kiln_job_poll(0, &p), KILN_STATUS_STRUCT_SIZE_MISMATCH);
    p.struct_size = 20;
    CHECK(kiln_job_poll(0, &p), KILN_STATUS_STRUCT_SIZE_MISMATCH);
    p.struct_size = sizeof p;
    CHECK(kiln_job_poll(0, &p), KILN_STATUS_INVALID_HANDLE);
    CHECK(kiln_job_poll(0xFFFFFFFFFFFFFFFFull, &p), KILN_STATUS_INVALID_HANDLE);
    CHECK(kiln_job_wait(12345, 0, &state), KILN_STATUS_INVALID_HANDLE);
    EXPECT(state == 0);
    CHECK(kiln_job_image_size(12345, &w, &h), KILN_STATUS_INVALID_HANDLE);
    EXPECT(w == 0 && h == 0);
    CHECK(kiln_job_copy_preview(12345, buf, sizeof buf, 0, &step), KILN_STATUS_INVALID_HANDLE);
    EXPECT(step == 0);
    CHECK(kiln_job_free(0), KILN_STATUS_INVALID_HANDLE);
    CHECK(kiln_job_cancel(77), KILN_STATUS_INVALID_HANDLE);
    /* Model jobs: checked at submit, nothing queued; kiln_job_model on a bad id. */
    CHECK(kiln_job_submit_model_load(NULL, "x", NULL, NULL, &job), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_job_submit_model_load(rt, "\xff", NULL, NULL, &job), KILN_STATUS_INVALID_UTF8);
    CHECK(kiln_job_submit_model_load(rt, "/nonexistent/model", NULL, NULL, &job), KILN_STATUS_MODEL_NOT_FOUND);
    CHECK(kiln_job_submit_model_load(rt, NULL, NULL, NULL, &job), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_job_submit_with_adapters(model, NULL, 3, NULL, 0, NULL, &job), KILN_STATUS_NULL_ARGUMENT);
    CHECK(kiln_job_submit_with_adapters(NULL, NULL, 0, NULL, 0, NULL, &job), KILN_STATUS_NULL_ARGUMENT);
    EXPECT(job == 0);
    {
        kiln_model *made = (kiln_model *)(uintptr_t)1;
        CHECK(kiln_job_model(12345, &made), KILN_STATUS_INVALID_HANDLE);
        EXPECT(made == NULL);
        CHECK(kiln_job_model(12345, NULL), KILN_STATUS_NULL_ARGUMENT);
    }

    kiln_job_options jo;
    kiln_job_options_init(&jo);
    jo.struct_size = 2;
    base_options(&o);
    CHECK(kiln_job_submit(model, &o, &jo, &job), KILN_STATUS_STRUCT_SIZE_MISMATCH);
    EXPECT(job == 0);
    /* What a generation checks first is checked at submit: nothing queues. */
    base_options(&o); o.width = 3;
    CHECK(kiln_job_submit(model, &o, NULL, &job), KILN_STATUS_INVALID_SIZE);
    EXPECT(job == 0);
    base_options(&o); o.guidance_scale = NAN;
    CHECK(kiln_job_submit(model, &o, NULL, &job), KILN_STATUS_INVALID_ARGUMENT);
    base_options(&o); o.scheduler_overrides = "[1, 2]";
    CHECK(kiln_job_submit(model, &o, NULL, &job), KILN_STATUS_INVALID_ARGUMENT);
    EXPECT(job == 0);
    {
        /* img2img whose strength leaves no step to run fails in the job. */
        static unsigned char still[64 * 64 * 4];
        base_options(&o); o.init_image = still; o.init_image_len = sizeof still;
        o.init_image_width = 64; o.init_image_height = 64; o.strength = 0.1f;
        CHECK(kiln_job_submit(model, &o, NULL, &job), KILN_STATUS_OK);
    }
    CHECK(kiln_job_wait(job, 60000, &state), KILN_STATUS_OK);
    EXPECT(state == KILN_JOB_STATE_FAILED);
    CHECK(kiln_job_image_size(job, &w, &h), KILN_STATUS_INVALID_ARGUMENT);
    CHECK(kiln_job_copy_image(job, buf, sizeof buf, 0), KILN_STATUS_INVALID_ARGUMENT);
    CHECK(kiln_job_copy_preview(job, buf, sizeof buf, 0, &step), KILN_STATUS_BUSY);
    CHECK(kiln_job_free(job), KILN_STATUS_OK);
    CHECK(kiln_job_free(job), KILN_STATUS_INVALID_HANDLE);
    CHECK(kiln_job_poll(job, &p), KILN_STATUS_INVALID_HANDLE);

    /* A succeeded job, copied with hostile pitches. */
    base_options(&o);
    CHECK(kiln_job_submit(model, &o, NULL, &job), KILN_STATUS_OK);
    CHECK(kiln_job_wait(job, 60000, &state), KILN_STATUS_OK);
    EXPECT(state == KILN_JOB_STATE_SUCCEEDED);
    CHECK(kiln_job_copy_image(job, buf, sizeof buf, (size_t)-1), KILN_STATUS_BUFFER_TOO_SMALL);
    CHECK(kiln_job_copy_image(job, buf, sizeof buf, 4), KILN_STATUS_INVALID_ARGUMENT);
    CHECK(kiln_job_copy_image(job, buf, 100, 0), KILN_STATUS_BUFFER_TOO_SMALL);
    CHECK(kiln_job_copy_image(job, buf, sizeof buf, 0), KILN_STATUS_OK);
    CHECK(kiln_job_free(job), KILN_STATUS_OK);

    /* A callback that polls, cancels, makes a bad nested call, and frees its own job. */
    static reentry r;
    kiln_job_options_init(&jo);
    jo.callback = reenter;
    jo.user_data = &r;
    base_options(&o); o.steps = 20;
    CHECK(kiln_job_submit(model, &o, &jo, &job), KILN_STATUS_OK);
    /* The callback may have freed the job already: both answers are defined. */
    kiln_status waited = kiln_job_wait(job, 60000, &state);
    EXPECT(waited == KILN_STATUS_OK || waited == KILN_STATUS_INVALID_HANDLE);
    for (int i = 0; i < 6000 && r.finished == 0; ++i) { struct timespec ts = {0, 10000000}; nanosleep(&ts, NULL); }
    EXPECT(r.finished == 1);
    EXPECT(r.reentrant_bad == 0);
    EXPECT(r.final_state == KILN_JOB_STATE_CANCELLED);
    CHECK(kiln_job_free(job), KILN_STATUS_INVALID_HANDLE);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: hostile MODEL_DIR\n"); return 2; }
    if (kiln_runtime_create(NULL, &rt) != KILN_STATUS_OK) { fprintf(stderr, "runtime\n"); return 1; }
    model_dir = argv[1];
    if (kiln_model_load(rt, argv[1], &model) != KILN_STATUS_OK) { fprintf(stderr, "model\n"); return 1; }
    hostile_arguments();
    hostile_jobs();
    /* The same runtime and model still make a normal image. */
    kiln_generate_options o;
    base_options(&o);
    CHECK(gen(&o), KILN_STATUS_OK);
    kiln_model_free(model);
    kiln_runtime_destroy(rt);
    printf("checks %d, failed %d\n", checks, failed);
    return failed == 0 ? 0 : 1;
}
