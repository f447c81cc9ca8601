// Tests of kiln.hpp against the built library: ownership, results and errors, the job API, ControlNet, SDXL
// embeddings, a LoRA's own text-encoder strength, int8 weights and the base-to-refiner hand-off against the
// Rust tests' goldens, fused attention against the exported graphs' pictures, LoRA slots (fed LoRAs against
// the merged ones), the upscaler (against the C API and tests/upscaler.rs's golden, cancelled from another
// thread), the texture helpers, upscales and generations with their upscale as jobs (against the blocking
// calls), the throwing layer. Run by tests/cpp_binding.rs as
// `test_kiln MODEL_DIR CONTROLNET_MODEL_DIR REFINER_MODEL_DIR SCRATCH_DIR`; prints "N passed, N failed".
// MODEL_DIR is tests/fixtures/tiny-sd: tiny-sdxl, sdxl-embedding, lora, lora_component, upscaler, matting and
// golden/ are found beside it; REFINER_MODEL_DIR is the refiner-style fixture tests/common assembles.
#include "kiln.hpp"

#include "goldens.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// Handles own a C object each: movable, never copyable, and moving never throws.
static_assert(!std::is_copy_constructible<kiln::Runtime>::value && std::is_nothrow_move_constructible<kiln::Runtime>::value, "");
static_assert(!std::is_copy_constructible<kiln::Model>::value && std::is_nothrow_move_assignable<kiln::Model>::value, "");
static_assert(!std::is_copy_constructible<kiln::Image>::value && std::is_nothrow_move_constructible<kiln::Image>::value, "");
static_assert(!std::is_copy_constructible<kiln::Job>::value && std::is_nothrow_move_assignable<kiln::Job>::value, "");
static_assert(!std::is_copy_constructible<kiln::Upscaler>::value && std::is_nothrow_move_assignable<kiln::Upscaler>::value, "");
static_assert(sizeof(kiln::Image) == sizeof(void *) && sizeof(kiln::Job) == sizeof(std::uint64_t), "handles add no state");
static_assert(sizeof(kiln::Upscaler) == sizeof(void *), "handles add no state");
static_assert(kiln::to_c(kiln::UpscaleAlpha::bilinear) == KILN_UPSCALE_ALPHA_BILINEAR, "");
static_assert(kiln::to_c(kiln::Status::model_not_found) == KILN_STATUS_MODEL_NOT_FOUND, "");
static_assert(kiln::to_c(kiln::JobState::cancelled) == KILN_JOB_STATE_CANCELLED, "");

static int passed = 0, failed = 0;
#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (cond) {                                                                     \
            ++passed;                                                                   \
        } else {                                                                        \
            ++failed;                                                                   \
            std::printf("FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                               \
    } while (0)

static kiln_generate_options options_for(const char *prompt, std::uint64_t seed, std::uint32_t steps) {
    auto o = kiln::defaults<kiln_generate_options>();
    o.prompt = prompt;
    o.seed = seed;
    o.steps = steps;
    return o;
}

static void test_errors_keep_handles_usable(const kiln::Runtime &rt) {
    kiln::Result<kiln::Model> missing = rt.load_model("/nonexistent/kiln-model");
    CHECK(!missing.ok());
    CHECK(missing.status() == kiln::Status::model_not_found);
    CHECK(missing.error().message().find("/nonexistent/kiln-model") != std::string::npos);
    CHECK(missing.error().describe().rfind("KILN_STATUS_MODEL_NOT_FOUND: ", 0) == 0);
    std::printf("missing model: %s\n", missing.error().describe().c_str());

    std::vector<std::uint8_t> px(4 * 4 * 4 - 1, 0);
    kiln::Result<kiln::Image> small = kiln::Image::create(4, 4, px.data(), px.size());
    CHECK(small.status() == kiln::Status::buffer_too_small);
    px.push_back(0);
    kiln::Result<kiln::Image> fine = kiln::Image::create(4, 4, px.data(), px.size());
    CHECK(fine.ok() && fine->width() == 4 && fine->height() == 4);

    kiln::Result<float> axis = fine->seam_score(kiln::Seamless::xy);
    CHECK(axis.status() == kiln::Status::invalid_argument);
    kiln::Result<float> score = fine->seam_score(kiln::Seamless::x);
    CHECK(score.ok() && *score == 1.0f);  // a flat image scores exactly 1 (kiln.h)

    CHECK(rt.onnxruntime_version().ok());
    CHECK(rt.provider_available(kiln::Provider::cpu).value_or(false));
}

static void test_generate(const kiln::Model &model) {
    kiln::Result<kiln_model_info> info = model.info();
    CHECK(info.ok() && info->default_size > 0);
    const std::uint32_t size = info->default_size;

    auto o = options_for("weathered oak planks", 7, 4);
    kiln::Result<kiln::Image> image = model.generate(o);
    CHECK(image.ok() && image->width() == size && image->height() == size);

    // The same request into an engine buffer with padded rows: same pixels, padding untouched.
    const std::size_t pitch = size * 4 + 16;
    std::vector<std::uint8_t> buffer(pitch * size, 0xAB);
    CHECK(model.generate_into(o, buffer.data(), buffer.size(), pitch).ok());
    bool same = true, padding_kept = true;
    for (std::uint32_t y = 0; y < size; ++y) {
        same = same && std::memcmp(buffer.data() + y * pitch, image->pixels() + y * size * 4, size * 4) == 0;
        for (std::size_t x = size * 4; x < pitch; ++x) padding_kept = padding_kept && buffer[y * pitch + x] == 0xAB;
    }
    CHECK(same);
    CHECK(padding_kept);

    auto bad = o;
    bad.width = 7;
    kiln::Result<kiln::Image> refused = model.generate(bad);
    CHECK(refused.status() == kiln::Status::invalid_size);
    CHECK(model.generate(o).ok());  // the model is still usable

    kiln::Result<kiln::Image> art = image->pixel_art();
    CHECK(art.ok() && art->width() > 0);
    kiln::Result<kiln::MaterialMaps> maps = image->material_maps();
    CHECK(maps.ok() && maps->height.width() == size && maps->normal.height() == size);
}

// The fixture LoRA (tests/fixtures/lora, made for tiny-sd) changes the image; a broken file is refused with
// its specific status and leaves the base model usable.
static void test_loras(const kiln::Model &model, const std::string &lora_dir) {
    auto o = options_for("mossy stone brick wall", 11, 4);
    kiln::Result<kiln::Image> base = model.generate(o);
    kiln::Result<kiln::Model> styled = model.with_loras({{lora_dir + "/style.kohya.safetensors", 1.0f}});
    CHECK(base.ok() && styled.ok());
    if (!base || !styled) return;
    kiln::Result<std::vector<kiln::LoraSpec>> listed = styled->loras();
    CHECK(listed.ok() && listed->size() == 1 && listed->front().scale == 1.0f &&
          listed->front().path.find("style.kohya.safetensors") != std::string::npos);
    kiln::Result<kiln::Image> image = styled->generate(o);
    CHECK(image.ok());
    if (image) {
        const std::size_t n = std::size_t(base->width()) * base->height() * 4;
        std::size_t differing = 0;
        for (std::size_t i = 0; i < n; ++i) differing += base->pixels()[i] != image->pixels()[i];
        std::printf("lora: %zu of %zu bytes differ from the base model's image (need > 0)\n", differing, n);
        CHECK(image->width() == base->width() && differing > 0);
    }
    kiln::Result<kiln::Model> mismatched = model.with_loras({{lora_dir + "/broken/rank_mismatch.safetensors", 1.0f}});
    CHECK(mismatched.status() == kiln::Status::adapter_mismatch);
    CHECK(!mismatched && mismatched.error().message().find("rank mismatch") != std::string::npos);
    CHECK(model.with_loras({{lora_dir + "/broken/truncated.safetensors", 1.0f}}).status() == kiln::Status::model_invalid);
    kiln::Result<kiln::Image> again = model.generate(o);
    CHECK(again.ok() && std::memcmp(again->pixels(), base->pixels(), std::size_t(base->width()) * base->height() * 4) == 0);
}

// A text-encoder strength of a LoRA's own (ComfyUI's strength_clip): the query gives it back, or the LoRA's
// scale where none was given; loras() lists it only where it differs from the scale; a non-finite one is
// refused as invalid_argument (also through the throwing layer) and leaves the model usable.
static void test_lora_text_encoder_scale(const kiln::Model &model, const std::string &lora_dir) {
    const std::string style = lora_dir + "/style.kohya.safetensors", detail = lora_dir + "/detail.kohya.safetensors";
    kiln::Result<kiln::Model> m = model.with_loras({{style, 1.0f, 0.0f}, {detail, 0.5f}});
    CHECK(m.ok());
    if (!m) {
        std::printf("text-encoder scale: %s\n", m.error().describe().c_str());
        return;
    }
    CHECK(m->lora_text_encoder_scale(0).value_or(-1.0f) == 0.0f);
    CHECK(m->lora_text_encoder_scale(1).value_or(-1.0f) == 0.5f);
    CHECK(m->lora_text_encoder_scale(2).status() == kiln::Status::invalid_argument);
    CHECK(model.lora_text_encoder_scale(0).status() == kiln::Status::invalid_argument);  // a plain model has none
    kiln::Result<std::vector<kiln::LoraSpec>> listed = m->loras();
    CHECK(listed.ok() && listed->size() == 2);
    if (listed && listed->size() == 2) {
        CHECK((*listed)[0].scale == 1.0f && (*listed)[0].text_encoder_scale == 0.0f);
        CHECK((*listed)[1].scale == 0.5f && !(*listed)[1].text_encoder_scale);
    }
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        kiln::Result<kiln::Model> refused = model.with_loras({{style, 1.0f, bad}});
        CHECK(refused.status() == kiln::Status::invalid_argument);
        CHECK(!refused && refused.error().message().find("loras[0].text_encoder_scale") != std::string::npos);
        if (!refused) std::printf("text-encoder scale %g: %s\n", double(bad), refused.error().describe().c_str());
    }
#ifdef KILN_CPP_EXCEPTIONS
    bool thrown = false;
    try {
        kiln::Model never = kiln::check(model.with_loras({{style, 1.0f, -std::numeric_limits<float>::infinity()}}));
        (void)never;
    } catch (const kiln::Exception &e) {
        thrown = e.error().status() == kiln::Status::invalid_argument;
    }
    CHECK(thrown);
#endif
    CHECK(model.generate(options_for("after the refused LoRA", 2, 2)).ok());
}

// ControlNet on the fixture with tests/fixtures/controlnet added: a painted height map's Canny edges shape
// the image (it differs from the uncontrolled one), Kiln's own Canny preprocessing of the painted map gives
// the same pixels as passing the edges, and a missing ControlNet is refused with the model still usable.
static void test_controlnet(const kiln::Runtime &rt, const std::string &dir) {
    kiln::Result<kiln::Model> model = rt.load_model(dir);
    CHECK(model.ok());
    if (!model) return;
    const std::uint32_t size = 64;
    std::vector<std::uint8_t> painted(size * size * 4, 255);
    for (std::uint32_t y = 0; y < size; ++y)
        for (std::uint32_t x = 0; x < size; ++x) {
            int dx = int(x) - 32, dy = int(y) - 30;
            std::uint8_t v = dx * dx + dy * dy < 18 * 18 ? 230 : std::uint8_t(x * 2);
            std::memset(&painted[(y * size + x) * 4], v, 3);
        }
    kiln::Result<kiln::Image> height = kiln::Image::create(size, size, painted.data(), painted.size());
    CHECK(height.ok());
    if (!height) return;
    kiln::Result<kiln::Image> edges = height->canny(100.0f, 200.0f);
    kiln::Result<kiln::Image> depth = height->height_to_depth();
    CHECK(edges.ok() && depth.ok());
    if (!edges || !depth) return;
    std::size_t white = 0, lo = 255, hi = 0;
    for (std::size_t i = 0; i < std::size_t(size) * size; ++i) {
        white += edges->pixels()[i * 4] == 255;
        lo = std::min<std::size_t>(lo, depth->pixels()[i * 4]);
        hi = std::max<std::size_t>(hi, depth->pixels()[i * 4]);
    }
    std::printf("controlnet: %zu edge pixels; depth spans %zu..%zu\n", white, lo, hi);
    CHECK(white > 0 && white < std::size_t(size) * size / 2);
    CHECK(lo == 0 && hi == 255);
    CHECK(height->canny(-1.0f, 200.0f).status() == kiln::Status::invalid_argument);

    auto o = options_for("mossy stone brick wall", 7, 4);
    kiln::Result<kiln::Image> plain = model->generate(o);
    ::kiln_control control = kiln::control("tiny", *edges, 0.8f);
    o.controls = &control;
    o.control_count = 1;
    kiln::Result<kiln::Image> guided = model->generate(o);
    ::kiln_control by_name = kiln::control("tiny", *height, 0.8f, kiln::ControlPreprocess::canny);
    o.controls = &by_name;
    kiln::Result<kiln::Image> preprocessed = model->generate(o);
    CHECK(plain.ok() && guided.ok() && preprocessed.ok());
    if (!plain || !guided || !preprocessed) return;
    const std::size_t n = std::size_t(size) * size * 4;
    std::size_t differing = 0;
    for (std::size_t i = 0; i < n; ++i) differing += plain->pixels()[i] != guided->pixels()[i];
    std::printf("controlnet: %zu of %zu bytes differ from the uncontrolled image (need > 0)\n", differing, n);
    CHECK(guided->width() == size && differing > 0);
    CHECK(std::memcmp(guided->pixels(), preprocessed->pixels(), n) == 0);

    ::kiln_control missing = kiln::control("no-such-controlnet", *edges);
    o.controls = &missing;
    kiln::Result<kiln::Image> refused = model->generate(o);
    CHECK(refused.status() == kiln::Status::model_not_found);
    CHECK(!refused && refused.error().message().find("tiny") != std::string::npos);
    o.controls = &control;
    kiln::Result<kiln::Image> again = model->generate(o);
    CHECK(again.ok() && std::memcmp(again->pixels(), guided->pixels(), n) == 0);
}

// SDXL's second prompt through the C struct: on tiny-sdxl (tests/fixtures/tiny-sdxl) prompt_2 equal to prompt
// gives the default's pixels exactly and another prompt_2 changes them; an SD 1.x model refuses the field.
static void test_sdxl(const kiln::Runtime &rt, const kiln::Model &sd1, const std::string &sdxl_dir) {
    auto o = options_for("mossy stone brick wall", 5, 3);
    o.prompt_2 = "rusty metal plate";
    kiln::Result<kiln::Image> refused = sd1.generate(o);
    CHECK(refused.status() == kiln::Status::invalid_argument);
    CHECK(!refused && refused.error().message().find("options->prompt_2") != std::string::npos);
    CHECK(sd1.generate(options_for("mossy stone brick wall", 5, 3)).ok());

    kiln::Result<kiln::Model> xl = rt.load_model(sdxl_dir);
    CHECK(xl.ok());
    if (!xl) return;
    auto plain = options_for("mossy stone brick wall", 5, 3);
    auto same = plain;
    same.prompt_2 = plain.prompt;
    kiln::Result<kiln::Image> a = xl->generate(plain), b = xl->generate(same), c = xl->generate(o);
    CHECK(a.ok() && b.ok() && c.ok());
    if (!a || !b || !c) return;
    const std::size_t n = std::size_t(a->width()) * a->height() * 4;
    std::size_t differing = 0;
    for (std::size_t i = 0; i < n; ++i) differing += a->pixels()[i] != c->pixels()[i];
    std::printf("sdxl prompt_2: %zu of %zu bytes differ from prompt_2 = prompt (need > 0)\n", differing, n);
    CHECK(std::memcmp(a->pixels(), b->pixels(), n) == 0);
    CHECK(differing > 0);
}

// The parity bound of tests/sdxl.rs for decoded images, applied past 8-bit rounding (the binding returns
// bytes): what tests/sdxl_embedding.rs and tests/sdxl_handoff.rs check.
static const double image_bound = 2e-3;

// A measured value against its bound, printed as "MARGIN id measured bound" for tests/cpp_binding.rs, which
// reports it through tests/common's check_margin.
static void margin(const char *id, double measured, double bound) {
    std::printf("MARGIN %s %.17g %.17g\n", id, measured, bound);
    CHECK(measured <= bound);
}

// A golden case's request (its strings point into `c`, which must outlive the options): prompts, steps,
// guidance, the scheduler (Euler or DDIM) its draws were recorded for, and the draws as the initial noise.
static kiln_generate_options golden_options(const goldens::Json &c, const std::vector<float> &draws) {
    auto o = kiln::defaults<kiln_generate_options>();
    o.prompt = c["prompt"].text.c_str();
    o.negative_prompt = c.has("negative_prompt") ? c["negative_prompt"].text.c_str() : nullptr;
    o.width = o.height = 64;
    o.steps = std::uint32_t(c["steps"].number);
    o.guidance_scale = float(c["guidance_scale"].number);
    const std::string &scheduler = c["kiln_scheduler"].text;
    CHECK(scheduler == "euler" || scheduler == "ddim");
    o.scheduler = kiln::to_c(scheduler == "ddim" ? kiln::Scheduler::ddim : kiln::Scheduler::euler);
    o.initial_noise = draws.data();
    o.initial_noise_len = draws.size();
    return o;
}

static kiln::Result<std::vector<std::uint8_t>> pixels(const kiln::Model &m, const kiln_generate_options &o) {
    std::vector<std::uint8_t> rgba(64 * 64 * 4);
    kiln::Result<void> r = m.generate_into(o, rgba.data(), rgba.size());
    if (!r) return r.error();
    return rgba;
}

static void write_file(const std::string &path, const std::vector<std::uint8_t> &bytes) {
    std::FILE *f = std::fopen(path.c_str(), "wb");
    CHECK(f != nullptr);
    if (!f) return;
    CHECK(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    CHECK(std::fclose(f) == 0);
}

// tests/fixtures/sdxl-embedding (clip_l + clip_g vectors; tests/sdxl_embedding.rs checks it from Rust against
// diffusers): through with_adapters the image is the golden's within the parity bound past 8-bit rounding, the
// plain model is far from it, and an embedding for the other family is adapter_mismatch with both models
// unchanged. The image goes to SCRATCH_DIR for tests/cpp_binding.rs to compare with the C API's.
static void test_sdxl_embedding(const kiln::Runtime &rt, const kiln::Model &sd1, const std::string &fixtures,
                                const std::string &scratch) {
    const std::string folder = fixtures + "/sdxl-embedding";
    const goldens::Json c = goldens::golden_case(folder + "/cases.json", "");
    const std::string name = c["name"].text;
    const std::vector<float> draws = goldens::read_npy_f32(folder + "/" + name + ".draws.npy");
    const std::vector<float> want = goldens::read_npy_f32(folder + "/" + name + ".image.npy");
    const kiln_generate_options o = golden_options(c, draws);
    kiln::Result<kiln::Model> xl = rt.load_model(fixtures + "/tiny-sdxl");
    CHECK(xl.ok());
    if (!xl) return;
    const std::string file = folder + "/" + c["file"].text;
    auto embedding = kiln::defaults<kiln_embedding>();
    embedding.path = file.c_str();
    embedding.token = c["token"].text.c_str();
    kiln::Result<kiln::Model> embedded = xl->with_adapters({}, {embedding});
    CHECK(embedded.ok());
    if (!embedded) return;
    kiln::Result<std::vector<std::uint8_t>> got = pixels(*embedded, o), plain = pixels(*xl, o);
    CHECK(got.ok() && plain.ok());
    if (!got || !plain) return;
    write_file(scratch + "/sdxl-embedding.rgba", *got);
    const double d = goldens::past_rounding(*got, want), control = goldens::past_rounding(*plain, want);
    std::printf("sdxl embedding: %.3e from the golden past 8-bit rounding (bound %.0e); the plain model %.3e\n", d,
                image_bound, control);
    margin("cpp_binding::sdxl_embedding::xl_embedding_euler::image_abs_past_8bit", d, image_bound);
    CHECK(control > image_bound);  // else this test would not catch the embedding dropped

    auto sd1_file = kiln::defaults<kiln_embedding>();
    const std::string sd1_path = fixtures + "/lora/learned_embeds.safetensors";
    sd1_file.path = sd1_path.c_str();
    kiln::Result<kiln::Model> refused = xl->with_adapters({}, {sd1_file});
    CHECK(refused.status() == kiln::Status::adapter_mismatch);
    CHECK(!refused && refused.error().message().find("SD 1.x/2.x") != std::string::npos);
    if (!refused) std::printf("SD 1.x embedding on SDXL: %s\n", refused.error().describe().c_str());
    kiln::Result<std::vector<std::uint8_t>> again = pixels(*xl, o);
    CHECK(again.ok() && *again == *plain);
    kiln::Result<kiln::Model> other_way = sd1.with_adapters({}, {embedding});
    CHECK(other_way.status() == kiln::Status::adapter_mismatch);
    CHECK(!other_way && other_way.error().message().find("SDXL embedding") != std::string::npos);
    CHECK(sd1.generate(options_for("after the refused embedding", 1, 2)).ok());
}

// tests/fixtures/lora_component, case style_te0_ddim (tests/lora.rs checks it from Rust against diffusers'
// set_adapters + fuse_lora): the style LoRA at U-Net strength 1 with the text encoder left alone gives the
// golden image within the parity bound past 8-bit rounding; the same LoRA at one strength does not.
static void test_lora_component_golden(const kiln::Model &sd1, const std::string &fixtures) {
    const std::string folder = fixtures + "/lora_component";
    const goldens::Json c = goldens::golden_case(folder + "/cases.json", "style_te0_ddim");
    const std::vector<float> noise = goldens::read_npy_f32(folder + "/noise_1x4x8x8.npy");
    const std::vector<float> want = goldens::read_npy_f32(folder + "/" + c["files"]["image"].text);
    kiln_generate_options o = golden_options(c, noise);
    CHECK(o.scheduler == kiln::to_c(kiln::Scheduler::ddim) && o.steps == 8);
    const goldens::Json &lora = c["loras"].items.at(0);
    kiln::LoraSpec spec{folder + "/" + lora["file"].text, float(lora["scale"].number), float(lora["text_encoder_scale"].number)};
    kiln::Result<kiln::Model> split = sd1.with_loras({spec});
    spec.text_encoder_scale.reset();
    kiln::Result<kiln::Model> one_strength = sd1.with_loras({spec});
    CHECK(split.ok() && one_strength.ok());
    if (!split || !one_strength) return;
    CHECK(split->lora_text_encoder_scale(0).value_or(-1.0f) == 0.0f);
    kiln::Result<std::vector<std::uint8_t>> got = pixels(*split, o), control = pixels(*one_strength, o);
    CHECK(got.ok() && control.ok());
    if (!got || !control) return;
    const double d = goldens::past_rounding(*got, want), far = goldens::past_rounding(*control, want);
    std::printf("lora text-encoder scale 0: %.3e from the golden past 8-bit rounding (bound %.0e); one strength %.3e\n",
                d, image_bound, far);
    margin("cpp_binding::lora_component::style_te0_ddim::image_abs_past_8bit", d, image_bound);
    CHECK(far > image_bound);  // else this test would not catch the text-encoder scale dropped
}

// A seed golden's euler_a 64x64 case `c` (torch-seed's euler_a_64, variation's euler_a_64_cpu) as options; the
// strings point into `c`, which must outlive them.
static kiln_generate_options euler_a_64_options(const goldens::Json &c) {
    auto o = options_for(c["prompt"].text.c_str(), std::uint64_t(c["seed"].number), std::uint32_t(c["steps"].number));
    o.negative_prompt = c["negative_prompt"].text.c_str();
    o.width = o.height = 64;
    o.guidance_scale = float(c["guidance_scale"].number);
    o.scheduler = kiln::to_c(kiln::Scheduler::euler_a);
    return o;
}

// tests/fixtures/golden/torch-seed, case euler_a_64 (tests/torch_seed.rs checks it from Rust): diffusers called
// with only generator=torch.Generator("cpu").manual_seed(seed). With noise_generator = torch_cpu the seed alone
// gives that image within the parity bound past 8-bit rounding; Kiln's own generator gives another picture
// from the same seed; torch_cuda gives golden/torch-cuda-seed's image for the same request (diffusers with
// torch.Generator("cuda"), AUTOMATIC1111's default seeds) within the same bound, another picture than
// torch_cpu's; an unknown generator is invalid_argument and the model generates after it.
static void test_torch_seed(const kiln::Model &sd1, const std::string &fixtures) {
    const std::string folder = fixtures + "/golden/torch-seed";
    const goldens::Json all = goldens::JsonParser(goldens::read_file(folder + "/cases.json")).document();
    const goldens::Json &c = all["cases"].items.at(0);
    CHECK(c["name"].text == "euler_a_64" && c["kiln_scheduler"].text == "euler_a");
    const std::vector<float> want = goldens::read_npy_f32(folder + "/" + c["image"].text);
    auto o = euler_a_64_options(c);
    CHECK(o.noise_generator == kiln::to_c(kiln::NoiseGenerator::kiln));  // the default
    kiln::Result<std::vector<std::uint8_t>> own = pixels(sd1, o);
    o.noise_generator = kiln::to_c(kiln::NoiseGenerator::torch_cpu);
    kiln::Result<std::vector<std::uint8_t>> torch = pixels(sd1, o);
    CHECK(own.ok() && torch.ok());
    if (!own || !torch) return;
    const double d = goldens::past_rounding(*torch, want), far = goldens::past_rounding(*own, want);
    std::printf("torch seed: %.3e from diffusers' image past 8-bit rounding (bound %.0e); Kiln's noise %.3e\n", d, image_bound, far);
    margin("cpp_binding::torch_seed::euler_a_64::image_abs_past_8bit", d, image_bound);
    CHECK(far > image_bound);

    // PyTorch's CUDA generator, computed on the host: the CUDA golden's first case is the same request.
    const std::string cuda_folder = fixtures + "/golden/torch-cuda-seed";
    const goldens::Json cuda_all = goldens::JsonParser(goldens::read_file(cuda_folder + "/cases.json")).document();
    const goldens::Json &cc = cuda_all["cases"].items.at(0);
    for (const char *key : {"name", "prompt", "negative_prompt", "kiln_scheduler"}) CHECK(cc[key].text == c[key].text);
    for (const char *key : {"steps", "guidance_scale", "width", "height", "seed"}) CHECK(cc[key].number == c[key].number);
    const std::vector<float> want_cuda = goldens::read_npy_f32(cuda_folder + "/" + cc["image"].text);
    o.noise_generator = kiln::to_c(kiln::NoiseGenerator::torch_cuda);
    kiln::Result<std::vector<std::uint8_t>> cuda = pixels(sd1, o);
    CHECK(cuda.ok());
    if (!cuda) return;
    std::size_t differing = 0;
    for (std::size_t i = 0; i < cuda->size(); ++i) differing += (*cuda)[i] != (*torch)[i];
    const double dc = goldens::past_rounding(*cuda, want_cuda), cpu_far = goldens::past_rounding(*torch, want_cuda);
    std::printf("torch cuda seed: %.3e from diffusers' image past 8-bit rounding (bound %.0e); torch_cpu's image %.3e; "
                "%zu of %zu bytes differ from torch_cpu's (need > 0)\n",
                dc, image_bound, cpu_far, differing, cuda->size());
    margin("cpp_binding::torch_cuda_seed::euler_a_64::image_abs_past_8bit", dc, image_bound);
    CHECK(cpu_far > image_bound);  // else this test would not catch torch_cuda read as torch_cpu
    CHECK(differing > 0);

    o.noise_generator = 7;
    kiln::Result<std::vector<std::uint8_t>> bad = pixels(sd1, o);
    CHECK(bad.status() == kiln::Status::invalid_argument);
    CHECK(bad.error().message().find("noise_generator 7") != std::string::npos);
    o.noise_generator = kiln::to_c(kiln::NoiseGenerator::torch_cpu);
    kiln::Result<std::vector<std::uint8_t>> again = pixels(sd1, o);
    CHECK(again.ok() && *again == *torch);
}

// tests/fixtures/golden/variation, case euler_a_64_cpu (tests/variation.rs checks it from Rust): diffusers started
// from AUTOMATIC1111's blend of seed 2026's torch CPU draw with variation seed 7's at strength 0.3, every other
// draw from the seed's generator. variation_seed + variation_strength give that image within the parity bound
// past 8-bit rounding (the bound test_torch_seed uses); strength 0 (the default) is the seed's own picture, far
// from it; a job gives the same pixels; strength 2 is invalid_argument naming variation_strength (at the blocking
// call and at submit), and the model generates the variation after it.
static void test_variation(const kiln::Model &sd1, const std::string &fixtures) {
    const std::string folder = fixtures + "/golden/variation";
    const goldens::Json all = goldens::JsonParser(goldens::read_file(folder + "/cases.json")).document();
    const goldens::Json &c = all["cases"].items.at(0);
    CHECK(c["name"].text == "euler_a_64_cpu" && c["kind"].text == "txt2img" && c["kiln_scheduler"].text == "euler_a");
    CHECK(c["noise"].text == "torch" && c["width"].number == 64 && c["height"].number == 64);
    const std::vector<float> want = goldens::read_npy_f32(folder + "/" + c["image"].text);
    auto o = euler_a_64_options(c);
    o.noise_generator = kiln::to_c(kiln::NoiseGenerator::torch_cpu);
    CHECK(o.variation_seed == 0 && o.variation_strength == 0.0f);  // the defaults: no variation
    o.variation_seed = std::uint64_t(c["variation_seed"].number);
    kiln::Result<std::vector<std::uint8_t>> plain = pixels(sd1, o);  // strength still 0: the seed's own picture
    o.variation_strength = float(c["variation_strength"].number);
    kiln::Result<std::vector<std::uint8_t>> varied = pixels(sd1, o);
    CHECK(plain.ok() && varied.ok());
    if (!plain || !varied) return;
    const double d = goldens::past_rounding(*varied, want), far = goldens::past_rounding(*plain, want);
    std::printf("variation: %.3e from diffusers' image past 8-bit rounding (bound %.0e); strength 0 %.3e\n", d, image_bound, far);
    margin("cpp_binding::variation::euler_a_64_cpu::image_abs_past_8bit", d, image_bound);
    CHECK(far > image_bound);  // else this test would not catch the variation dropped

    kiln::Result<kiln::Job> job = sd1.submit(o);
    CHECK(job.ok());
    if (job) {
        CHECK(job->wait(300000).value_or(kiln::JobState::failed) == kiln::JobState::succeeded);
        kiln::Result<std::vector<std::uint8_t>> queued = job->image();
        CHECK(queued.ok() && *queued == *varied);
    }

    o.variation_strength = 2.0f;
    kiln::Result<std::vector<std::uint8_t>> bad = pixels(sd1, o);
    CHECK(bad.status() == kiln::Status::invalid_argument);
    CHECK(bad.error().message().find("variation_strength 2") != std::string::npos);
    kiln::Result<kiln::Job> bad_job = sd1.submit(o);  // refused at submit, no job queued
    CHECK(bad_job.status() == kiln::Status::invalid_argument);
    CHECK(!bad_job && bad_job.error().message().find("variation_strength") != std::string::npos);
    o.variation_strength = float(c["variation_strength"].number);
    kiln::Result<std::vector<std::uint8_t>> again = pixels(sd1, o);
    CHECK(again.ok() && *again == *varied);
}

// int8 weights at load (tests/quantize.rs checks the same case from Rust): the default load options and a
// default load say Quantization::none; quantization 7 is invalid_argument naming options->quantization 7 (at
// load and at submit); the layout before the field (struct_size 16 on 64-bit) loads as exported whatever the
// field holds; Quantization::int8 loads tiny-sd with int8 weights, which model info reports, and its image for
// golden/quantize's euler_cfg (seed 42, torch_cpu, euler, 8 steps, 64x64) is within twice the int8 reference's
// own spread in mean |difference| from the reference's image (cases.json's int8_jittered_1e-6.image_mean_abs;
// dynamic quantization spreads any float pipeline's result that much), past 8-bit rounding as the other goldens
// here are compared. The float model's bytes differ (else the option did nothing: the float image is within the
// bound too).
static void test_quantization(const kiln::Runtime &rt, const kiln::Model &sd1, const std::string &fixtures) {
    const std::string folder = fixtures + "/golden/quantize", model_dir = fixtures + "/tiny-sd";
    const goldens::Json c = goldens::golden_case(folder + "/cases.json", "euler_cfg");
    CHECK(c["fixture"].text == "tiny-sd" && c["kiln_scheduler"].text == "euler" && c["lora"].kind == goldens::Json::Kind::null);
    const std::vector<float> want = goldens::read_npy_f32(folder + "/euler_cfg.image.npy");

    auto lo = kiln::defaults<kiln_model_load_options>();
    CHECK(lo.quantization == kiln::to_c(kiln::Quantization::none) && lo.struct_size == sizeof(kiln_model_load_options));
    kiln::Result<kiln_model_info> plain_info = sd1.info();
    CHECK(plain_info.ok() && plain_info->quantization == kiln::to_c(kiln::Quantization::none));

    lo.quantization = 7;
    kiln::Result<kiln::Model> bad = rt.load_model(model_dir, &lo);
    CHECK(bad.status() == kiln::Status::invalid_argument);
    CHECK(!bad && bad.error().message().find("options->quantization 7") != std::string::npos);
    if (!bad) std::printf("quantization 7: %s\n", bad.error().describe().c_str());
    kiln::Result<kiln::Job> bad_job = rt.submit_load_model(model_dir, &lo);  // refused at submit, no job queued
    CHECK(bad_job.status() == kiln::Status::invalid_argument);
    CHECK(!bad_job && bad_job.error().message().find("options->quantization 7") != std::string::npos);

    lo.quantization = kiln::to_c(kiln::Quantization::int8);
    auto older = lo;
    older.struct_size = std::uint32_t(offsetof(kiln_model_load_options, quantization));  // 16 on 64-bit targets
    kiln::Result<kiln::Model> as_exported = rt.load_model(model_dir, &older);
    kiln::Result<kiln::Model> q = rt.load_model(model_dir, &lo);
    CHECK(as_exported.ok() && q.ok());
    if (!as_exported || !q) return;
    kiln::Result<kiln_model_info> older_info = as_exported->info(), info = q->info();
    CHECK(older_info.ok() && older_info->quantization == kiln::to_c(kiln::Quantization::none));
    CHECK(info.ok() && info->quantization == kiln::to_c(kiln::Quantization::int8));
    CHECK(info.ok() && plain_info.ok() && info->default_size == plain_info->default_size &&
          info->has_vae_encoder == plain_info->has_vae_encoder);

    auto o = options_for(c["prompt"].text.c_str(), std::uint64_t(c["seed"].number), std::uint32_t(c["steps"].number));
    o.negative_prompt = c["negative_prompt"].text.c_str();
    o.width = o.height = 64;
    o.guidance_scale = float(c["guidance_scale"].number);
    o.scheduler = kiln::to_c(kiln::Scheduler::euler);
    o.noise_generator = kiln::to_c(kiln::NoiseGenerator::torch_cpu);
    kiln::Result<std::vector<std::uint8_t>> got = pixels(*q, o), float_model = pixels(sd1, o);
    CHECK(got.ok() && float_model.ok());
    if (!got || !float_model) return;
    const double bound = 2.0 * c["int8_jittered_1e-6"]["image_mean_abs"].number;
    const double d = goldens::mean_past_rounding(*got, want), float_d = goldens::mean_past_rounding(*float_model, want);
    std::size_t differing = 0;
    for (std::size_t i = 0; i < got->size(); ++i) differing += (*got)[i] != (*float_model)[i];
    const double raw = goldens::mean_abs(*got, want), float_raw = goldens::mean_abs(*float_model, want);
    std::printf("int8 euler_cfg: mean |difference| %.3e from the int8 reference past 8-bit rounding (bound %.3e, twice the "
                "reference's own spread; %.3e with the rounding); the float model %.3e (%.3e); %zu of %zu bytes differ "
                "from the float model's (need > 0)\n",
                d, bound, raw, float_d, float_raw, differing, got->size());
    margin("cpp_binding::quantize::euler_cfg::image_mean_abs_past_8bit", d, bound);
    CHECK(differing > 0);
    kiln::Result<std::vector<std::uint8_t>> again = pixels(*q, o);
    CHECK(again.ok() && *again == *got);
}

// Fused attention at load (kiln_model_load_options.attention, kiln_model_info.fused_attention): the default load
// options say Attention::automatic and sizeof (32 on 64-bit targets); a default load of tiny-sd (no TensorRT or
// CoreML preferred) runs its 12 U-Net attention layers fused, as does Attention::fused, and Attention::exported
// none; the layout before the field (struct_size 24 on 64-bit) loads with the default;
// model info at its older size 36 leaves the bytes past it alone; attention 9 is invalid_argument naming
// options->attention 9 (at load and at submit); a load job with Attention::exported reports 0. The exported and
// the fused pictures for one request (64x64, 4 steps, seed 7) differ by float rounding only: at most 2 in any
// 8-bit channel (not asserted equal or unequal byte for byte).
static void test_attention(const kiln::Runtime &rt, const kiln::Model &sd1, const std::string &model_dir) {
    auto lo = kiln::defaults<kiln_model_load_options>();
    CHECK(lo.attention == kiln::to_c(kiln::Attention::automatic) && lo.lora_slots == 0);
    CHECK(lo.struct_size == sizeof(kiln_model_load_options));
    CHECK(kiln::to_c(kiln::Attention::exported) == KILN_ATTENTION_EXPORTED && kiln::to_c(kiln::Attention::fused) == KILN_ATTENTION_FUSED);
    kiln::Result<kiln_model_info> default_info = sd1.info();
    CHECK(default_info.ok() && default_info->fused_attention == 12);
    if (default_info) std::printf("default load: %u attention layers fused\n", default_info->fused_attention);

    // kiln_model_info at the size before fused_attention: the C API writes none of it.
    kiln_model_info older_info{};
    older_info.struct_size = std::uint32_t(offsetof(kiln_model_info, fused_attention));  // 36
    older_info.fused_attention = 0xABCD;
    CHECK(::kiln_model_get_info(sd1.get(), &older_info) == KILN_STATUS_OK);
    CHECK(older_info.fused_attention == 0xABCD && default_info.ok() && older_info.default_size == default_info->default_size);

    lo.attention = 9;
    kiln::Result<kiln::Model> bad = rt.load_model(model_dir, &lo);
    CHECK(bad.status() == kiln::Status::invalid_argument);
    CHECK(!bad && bad.error().message().find("options->attention 9") != std::string::npos);
    if (!bad) std::printf("attention 9: %s\n", bad.error().describe().c_str());
    kiln::Result<kiln::Job> bad_job = rt.submit_load_model(model_dir, &lo);  // refused at submit, no job queued
    CHECK(bad_job.status() == kiln::Status::invalid_argument);
    CHECK(!bad_job && bad_job.error().message().find("options->attention 9") != std::string::npos);

    lo.attention = kiln::to_c(kiln::Attention::exported);
    // The layout before `attention` ends padded to the pointer's alignment: 24 on 64-bit targets, whose last 4
    // bytes (padding then) are where `attention` now lies; Kiln does not read them as a setting.
    auto older = kiln::defaults<kiln_model_load_options>();
    older.attention = kiln::to_c(kiln::Attention::exported);
    older.struct_size = std::uint32_t(kiln::abi::round_up(offsetof(kiln_model_load_options, attention), alignof(kiln_model_load_options)));
    kiln::Result<kiln::Model> exported = rt.load_model(model_dir, &lo);
    kiln::Result<kiln::Model> as_default = rt.load_model(model_dir, &older);
    auto fo = kiln::defaults<kiln_model_load_options>();
    fo.attention = kiln::to_c(kiln::Attention::fused);
    kiln::Result<kiln::Model> fused = rt.load_model(model_dir, &fo);
    CHECK(exported.ok() && as_default.ok() && fused.ok());
    for (const kiln::Result<kiln::Model> *m : {&exported, &as_default, &fused})
        if (!*m) std::printf("attention load: %s\n", m->error().describe().c_str());
    if (!exported || !as_default || !fused) return;
    kiln::Result<kiln_model_info> exported_info = exported->info(), as_default_info = as_default->info(),
                                  fused_info = fused->info();
    CHECK(exported_info.ok() && exported_info->fused_attention == 0);
    CHECK(as_default_info.ok() && as_default_info->fused_attention == 12);
    CHECK(fused_info.ok() && fused_info->fused_attention == 12);
    CHECK(exported_info.ok() && exported_info->quantization == kiln::to_c(kiln::Quantization::none));

    kiln::Result<kiln::Job> job = rt.submit_load_model(model_dir, &lo);
    CHECK(job.ok());
    if (job) {
        CHECK(job->wait(300000).value_or(kiln::JobState::failed) == kiln::JobState::succeeded);
        kiln::Result<kiln::Model> queued = job->model();
        kiln::Result<kiln_model_info> queued_info = queued ? queued->info() : kiln::Result<kiln_model_info>(queued.error());
        CHECK(queued_info.ok() && queued_info->fused_attention == 0);
    }

    auto o = options_for("weathered oak planks", 7, 4);
    o.width = o.height = 64;
    kiln::Result<std::vector<std::uint8_t>> plain = pixels(*exported, o), fast = pixels(sd1, o), forced = pixels(*fused, o);
    CHECK(plain.ok() && fast.ok() && forced.ok());
    if (!plain || !fast || !forced) return;
    int worst = 0, forced_worst = 0;
    std::size_t differing = 0;
    for (std::size_t i = 0; i < plain->size(); ++i) {
        const int e = std::abs(int((*plain)[i]) - int((*fast)[i]));
        differing += e != 0;
        worst = std::max(worst, e);
        forced_worst = std::max(forced_worst, std::abs(int((*plain)[i]) - int((*forced)[i])));
    }
    std::printf("attention: exported vs fused (default load) max 8-bit difference %d (bound 2), %zu of %zu bytes "
                "differ; exported vs Attention::fused max %d\n",
                worst, differing, plain->size(), forced_worst);
    margin("cpp_binding::attention::exported_vs_fused::max_8bit_abs", worst, 2);
    margin("cpp_binding::attention::exported_vs_forced_fused::max_8bit_abs", forced_worst, 2);
}

// LoRA slots at load (kiln_model_load_options.lora_slots, kiln_model_info.lora_slots): the default load options
// say 0 (the field that was `reserved`, so sizeof stays 32 on 64-bit targets) and a default load of tiny-sd
// reports no slotted layer; model info at its older size 40 leaves the field alone; lora_slots 2 is
// invalid_argument naming options->lora_slots (at load and at submit); lora_slots 1 (true) gives the U-Net's
// 121 layers a slot (also from a load job). Such a model's plain pictures, and those of its empty LoRA set, are
// the model's loaded without slots bit for bit; with_loras of the style LoRA at 1.0 feeds it (the pictures
// change, the same request twice gives the same bytes, a job gives the blocking call's bytes) and draws the
// merged LoRA's pictures to float rounding: at most 2 in any 8-bit channel (64x64, 4 steps, seed 11).
static void test_lora_slots(const kiln::Runtime &rt, const kiln::Model &sd1, const std::string &model_dir) {
    const std::uint32_t tiny_sd_slotted_layers = 121;
    auto lo = kiln::defaults<kiln_model_load_options>();
    CHECK(lo.lora_slots == 0 && lo.struct_size == sizeof(kiln_model_load_options));
    CHECK(sizeof(void *) != 8 || sizeof(kiln_model_load_options) == 32);
    CHECK(sizeof(kiln_model_info) == 44 && offsetof(kiln_model_info, lora_slots) == 40);
    kiln::Result<kiln_model_info> default_info = sd1.info();
    CHECK(default_info.ok() && default_info->lora_slots == 0);

    // kiln_model_info at the size before lora_slots: the C API writes none of it.
    kiln_model_info older_info{};
    older_info.struct_size = std::uint32_t(offsetof(kiln_model_info, lora_slots));  // 40
    older_info.lora_slots = 0xABCD;
    CHECK(::kiln_model_get_info(sd1.get(), &older_info) == KILN_STATUS_OK);
    CHECK(older_info.lora_slots == 0xABCD && default_info.ok() && older_info.default_size == default_info->default_size &&
          older_info.fused_attention == default_info->fused_attention);

    lo.lora_slots = 2;
    kiln::Result<kiln::Model> bad = rt.load_model(model_dir, &lo);
    CHECK(bad.status() == kiln::Status::invalid_argument);
    CHECK(!bad && bad.error().message().find("lora_slots") != std::string::npos);
    if (!bad) std::printf("lora_slots 2: %s\n", bad.error().describe().c_str());
    kiln::Result<kiln::Job> bad_job = rt.submit_load_model(model_dir, &lo);  // refused at submit, no job queued
    CHECK(bad_job.status() == kiln::Status::invalid_argument);
    CHECK(!bad_job && bad_job.error().message().find("lora_slots") != std::string::npos);

    lo.lora_slots = true;
    kiln::Result<kiln::Model> slotted = rt.load_model(model_dir, &lo);
    CHECK(slotted.ok());
    if (!slotted) {
        std::printf("lora_slots load: %s\n", slotted.error().describe().c_str());
        return;
    }
    kiln::Result<kiln_model_info> info = slotted->info();
    CHECK(info.ok() && info->lora_slots == tiny_sd_slotted_layers);
    if (info) std::printf("lora_slots: %u U-Net layers with a LoRA slot\n", info->lora_slots);
    kiln::Result<kiln::Job> job = rt.submit_load_model(model_dir, &lo);
    CHECK(job.ok());
    if (job) {
        CHECK(job->wait(300000).value_or(kiln::JobState::failed) == kiln::JobState::succeeded);
        kiln::Result<kiln::Model> queued = job->model();
        kiln::Result<kiln_model_info> queued_info = queued ? queued->info() : kiln::Result<kiln_model_info>(queued.error());
        CHECK(queued_info.ok() && queued_info->lora_slots == tiny_sd_slotted_layers);
    }

    const std::string style = model_dir + "/../lora/style.kohya.safetensors";
    auto o = options_for("mossy stone brick wall", 11, 4);
    o.width = o.height = 64;
    kiln::Result<kiln::Model> empty = slotted->with_loras({});
    kiln::Result<kiln::Model> fed = slotted->with_loras({{style, 1.0f}});
    kiln::Result<kiln::Model> merged = sd1.with_loras({{style, 1.0f}});
    CHECK(empty.ok() && fed.ok() && merged.ok());
    for (const kiln::Result<kiln::Model> *m : {&empty, &fed, &merged})
        if (!*m) std::printf("lora_slots with_loras: %s\n", m->error().describe().c_str());
    if (!empty || !fed || !merged) return;
    kiln::Result<std::vector<kiln::LoraSpec>> listed = fed->loras();
    CHECK(listed.ok() && listed->size() == 1 && listed->front().path.find("style.kohya.safetensors") != std::string::npos);
    kiln::Result<kiln_model_info> fed_info = fed->info();
    CHECK(fed_info.ok() && fed_info->lora_slots == tiny_sd_slotted_layers);

    kiln::Result<std::vector<std::uint8_t>> plain = pixels(sd1, o), slotted_plain = pixels(*slotted, o),
                                            slotted_empty = pixels(*empty, o), styled = pixels(*fed, o),
                                            styled_again = pixels(*fed, o), styled_merged = pixels(*merged, o);
    CHECK(plain.ok() && slotted_plain.ok() && slotted_empty.ok() && styled.ok() && styled_again.ok() && styled_merged.ok());
    if (!plain || !slotted_plain || !slotted_empty || !styled || !styled_again || !styled_merged) return;
    CHECK(*slotted_plain == *plain);  // bit for bit
    CHECK(*slotted_empty == *plain);
    CHECK(*styled_again == *styled);  // deterministic
    std::size_t differing = 0;
    int worst = 0;
    for (std::size_t i = 0; i < plain->size(); ++i) {
        differing += (*plain)[i] != (*styled)[i];
        worst = std::max(worst, std::abs(int((*styled)[i]) - int((*styled_merged)[i])));
    }
    std::printf("lora_slots: the fed style LoRA changes %zu of %zu bytes (need > 0); fed vs merged max 8-bit "
                "difference %d (bound 2); plain and empty set equal the unslotted model's bytes: %s\n",
                differing, plain->size(), worst, *slotted_plain == *plain && *slotted_empty == *plain ? "yes" : "no");
    CHECK(differing > 0);
    margin("cpp_binding::lora_slots::fed_vs_merged::max_8bit_abs", worst, 2);

    // The job form feeds it too: with_loras' bytes.
    kiln::Result<kiln::Job> switched = slotted->submit_with_loras({{style, 1.0f}});
    CHECK(switched.ok());
    if (switched) {
        CHECK(switched->wait(300000).value_or(kiln::JobState::failed) == kiln::JobState::succeeded);
        kiln::Result<kiln::Model> queued = switched->model();
        kiln::Result<std::vector<std::uint8_t>> queued_pixels =
            queued ? pixels(*queued, o) : kiln::Result<std::vector<std::uint8_t>>(queued.error());
        CHECK(queued_pixels.ok() && *queued_pixels == *styled);
    }
}

// The base-to-refiner hand-off (tests/sdxl_handoff.rs, case euler_08: its only draw is the initial noise):
// options.refiner + refiner_start give the golden within the parity bound past 8-bit rounding, NULL (an empty
// kiln::Model's get()) is the base alone and far from it, a job gives the same pixels with its refiner handle
// freed right after submit, and bad requests get their specific status with both models usable after.
static void test_refiner(const kiln::Runtime &rt, const kiln::Model &sd1, const std::string &fixtures,
                         const std::string &refiner_dir, const std::string &scratch) {
    const std::string golden = fixtures + "/golden/sdxl_handoff";
    const goldens::Json c = goldens::golden_case(golden + "/cases.json", "euler_08");
    const std::vector<float> draws = goldens::read_npy_f32(golden + "/euler_08.draws.npy");
    const std::vector<float> want = goldens::read_npy_f32(golden + "/euler_08.image.npy");
    kiln::Result<kiln::Model> xl = rt.load_model(fixtures + "/tiny-sdxl");
    kiln::Result<kiln::Model> refiner = rt.load_model(refiner_dir);
    CHECK(xl.ok() && refiner.ok());
    if (!xl || !refiner) return;
    kiln_generate_options o = golden_options(c, draws);
    o.refiner = refiner->get();
    o.refiner_start = float(c["refiner_start"].number);
    kiln::Result<std::vector<std::uint8_t>> got = pixels(*xl, o);
    CHECK(got.ok());
    if (!got) return;
    write_file(scratch + "/sdxl-handoff.rgba", *got);
    kiln_generate_options alone = o;
    alone.refiner = kiln::Model().get();  // an empty (or moved-from) handle is NULL: no hand-off
    kiln::Result<std::vector<std::uint8_t>> base_alone = pixels(*xl, alone);
    CHECK(base_alone.ok());
    if (!base_alone) return;
    const double d = goldens::past_rounding(*got, want), control = goldens::past_rounding(*base_alone, want);
    std::printf("hand-off: %.3e from the golden past 8-bit rounding (bound %.0e); the base alone %.3e\n", d,
                image_bound, control);
    margin("cpp_binding::sdxl_handoff::euler_08::image_abs_past_8bit", d, image_bound);
    CHECK(control > image_bound);  // else this test would not catch the refiner dropped

    // A job keeps its own reference to the refiner: the handle may be freed once submit returns.
    kiln::Result<kiln::Job> job = kiln::Error();
    {
        kiln::Result<kiln::Model> second = rt.load_model(refiner_dir);
        CHECK(second.ok());
        if (!second) return;
        kiln_generate_options queued = o;
        queued.refiner = second->get();
        job = xl->submit(queued);
    }
    CHECK(job.ok());
    if (job) {
        CHECK(job->wait(300000).value_or(kiln::JobState::failed) == kiln::JobState::succeeded);
        kiln::Result<kiln::Progress> p = job->poll();
        const std::size_t calls = c["base_timesteps"].items.size() + c["refiner_timesteps"].items.size();
        CHECK(p.ok() && p->total_steps == calls && p->step == calls);  // one job's progress over both stages
        kiln::Result<std::vector<std::uint8_t>> queued_pixels = job->image();
        CHECK(queued_pixels.ok() && *queued_pixels == *got);
    }

    kiln_generate_options bad = o;
    bad.refiner = sd1.get();
    kiln::Result<std::vector<std::uint8_t>> sd1_refiner = pixels(*xl, bad);
    CHECK(sd1_refiner.status() == kiln::Status::invalid_argument);
    CHECK(!sd1_refiner && sd1_refiner.error().message().find("options->refiner") != std::string::npos);
    for (float start : {0.0f, 1.0f, -0.5f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        bad = o;
        bad.refiner_start = start;
        kiln::Result<std::vector<std::uint8_t>> refused = pixels(*xl, bad);
        CHECK(refused.status() == kiln::Status::invalid_argument);
        CHECK(!refused && refused.error().message().find("options->refiner_start") != std::string::npos);
    }
    bad = o;
    bad.scheduler = kiln::to_c(kiln::Scheduler::heun);
    CHECK(pixels(*xl, bad).status() == kiln::Status::unsupported);
    auto sd1_base = options_for("mossy stone brick wall", 3, 2);
    sd1_base.refiner = refiner->get();
    CHECK(sd1.generate(sd1_base).status() == kiln::Status::invalid_argument);
    kiln::Result<std::vector<std::uint8_t>> again = pixels(*xl, o);
    CHECK(again.ok() && *again == *got);
}

// The upscaler (tests/fixtures/upscaler; tests/upscaler.rs checks it from Rust against torch): x4 finds scale 4;
// the fixture picture upscaled through the binding equals the raw C API's bytes for the same options (plain,
// seamless, defaults) and tests/upscaler.rs's whole-image golden past 8-bit rounding; a seamless upscale commutes
// with shifting the picture around its borders, a plain one does not; the fixed-size x2 graph reads its
// settings file; a missing path, the matting graph and bad options get their own status with the upscaler
// usable; a cancel with nothing in flight does nothing, one from a second thread stops a long upscale with
// Status::cancelled and the next call succeeds; the upscaler outlives its runtime.
static kiln::Result<kiln::Image> c_api_upscale(const kiln::Runtime &rt, const std::string &path, const kiln::Image &image,
                                               const kiln_upscale_options &o) {
    ::kiln_upscaler *raw = nullptr;
    ::kiln_status s = ::kiln_upscaler_load(rt.get(), path.c_str(), &raw);
    if (s != KILN_STATUS_OK) return kiln::Error(static_cast<kiln::Status>(s), "kiln_upscaler_load");
    ::kiln_image *out = nullptr;
    s = ::kiln_upscaler_upscale(raw, image.get(), &o, &out);
    ::kiln_upscaler_free(raw);
    if (s != KILN_STATUS_OK) return kiln::Error(static_cast<kiln::Status>(s), "kiln_upscaler_upscale");
    return kiln::Image(out);
}

// RGBA8 pixels moved by (dx, dy) around the borders.
static std::vector<std::uint8_t> rolled(const std::uint8_t *rgba, std::uint32_t w, std::uint32_t h, std::uint32_t dx,
                                        std::uint32_t dy) {
    std::vector<std::uint8_t> out(std::size_t(w) * h * 4);
    for (std::uint32_t y = 0; y < h; ++y)
        for (std::uint32_t x = 0; x < w; ++x)
            std::memcpy(&out[(std::size_t((y + dy) % h) * w + (x + dx) % w) * 4], &rgba[(std::size_t(y) * w + x) * 4], 4);
    return out;
}

struct ByteDiff {
    std::size_t count = 0;
    int worst = 0;
};

static ByteDiff byte_diff(const std::vector<std::uint8_t> &a, const std::vector<std::uint8_t> &b) {
    ByteDiff d;
    if (a.size() != b.size()) return {a.size() + b.size(), 255};
    for (std::size_t i = 0; i < a.size(); ++i) {
        const int e = std::abs(int(a[i]) - int(b[i]));
        d.count += e != 0;
        d.worst = std::max(d.worst, e);
    }
    return d;
}

static bool same_pixels(const kiln::Image &a, const kiln::Image &b) {
    return a && b && a.width() == b.width() && a.height() == b.height() &&
           std::memcmp(a.pixels(), b.pixels(), a.size_bytes()) == 0;
}

static void test_upscaler(const std::string &fixtures) {
    const std::string dir = fixtures + "/upscaler";
    kiln::Result<kiln::Upscaler> up = kiln::Error();
    {
        // A runtime of its own, destroyed first: the upscaler keeps what it needs of it.
        kiln::Result<kiln::Runtime> own = kiln::Runtime::create();
        CHECK(own.ok());
        if (!own) return;
        up = own->load_upscaler(dir + "/x4");
    }
    CHECK(up.ok());
    if (!up) {
        std::printf("upscaler: %s\n", up.error().describe().c_str());
        return;
    }
    CHECK(up->scale().value_or(0) == 4);
    kiln::Result<kiln::Runtime> rt = kiln::Runtime::create();
    CHECK(rt.ok());
    if (!rt) return;

    // The fixture picture: 24x20 RGBA, alpha falling from 255 to 40.
    const std::vector<float> npy = goldens::read_npy_f32(dir + "/image.npy");
    CHECK(npy.size() == 24 * 20 * 4);
    if (npy.size() != 24 * 20 * 4) return;
    std::vector<std::uint8_t> rgba(npy.size());
    for (std::size_t i = 0; i < npy.size(); ++i) rgba[i] = std::uint8_t(npy[i]);
    kiln::Result<kiln::Image> picture = kiln::Image::create(24, 20, rgba.data(), rgba.size());
    CHECK(picture.ok());
    if (!picture) return;

    auto o = kiln::defaults<kiln_upscale_options>();
    CHECK(o.struct_size == sizeof o && o.tile == 256 && o.context == 16);
    CHECK(o.seamless == kiln::to_c(kiln::Seamless::none) && o.alpha == kiln::to_c(kiln::UpscaleAlpha::graph));
    o.tile = 8;  // 3 x 3 tiles, with more context than the net's receptive field (19)
    o.context = 20;
    kiln::Result<kiln::Image> plain = up->upscale(*picture, &o);
    CHECK(plain.ok() && plain->width() == 96 && plain->height() == 80);
    if (!plain) return;
    kiln::Result<kiln::Image> c_plain = c_api_upscale(*rt, dir + "/x4", *picture, o);
    CHECK(c_plain.ok() && same_pixels(*plain, *c_plain));

    // RGB against tests/upscaler.rs's golden: torch's run of the net on the whole picture, [3, 80, 96].
    const std::vector<float> planes = goldens::read_npy_f32(dir + "/golden/x4_whole.npy");
    CHECK(planes.size() == 3 * 96 * 80);
    if (planes.size() == 3 * 96 * 80) {
        std::vector<float> rgb(planes.size());
        for (std::size_t i = 0; i < 96 * 80; ++i)
            for (std::size_t ch = 0; ch < 3; ++ch) rgb[i * 3 + ch] = planes[ch * 96 * 80 + i];
        const double d = goldens::past_rounding(plain->to_vector(), rgb);
        std::printf("upscaler x4: %.3e from the golden past 8-bit rounding (bound 1e-5)\n", d);
        margin("cpp_binding::upscaler::x4_whole::rgb_abs_past_8bit", d, 1e-5);
    }

    // Seamless: other bytes than the plain upscale, the C API's for the same options, and the upscale of the
    // tiling the picture stands for: the picture shifted around by (5, 3) upscales to the upscale shifted by
    // (20, 12) (up to float rounding), which the plain upscale, padded at the borders, is not.
    auto wrap = o;
    wrap.seamless = kiln::to_c(kiln::Seamless::xy);
    kiln::Result<kiln::Image> seamless = up->upscale(*picture, &wrap);
    kiln::Result<kiln::Image> c_seamless = c_api_upscale(*rt, dir + "/x4", *picture, wrap);
    CHECK(seamless.ok() && c_seamless.ok());
    if (!seamless || !c_seamless) return;
    CHECK(same_pixels(*seamless, *c_seamless));
    CHECK(!same_pixels(*seamless, *plain));
    const std::vector<std::uint8_t> shifted_rgba = rolled(picture->pixels(), 24, 20, 5, 3);
    kiln::Result<kiln::Image> shifted = kiln::Image::create(24, 20, shifted_rgba.data(), shifted_rgba.size());
    CHECK(shifted.ok());
    if (!shifted) return;
    kiln::Result<kiln::Image> shifted_seamless = up->upscale(*shifted, &wrap), shifted_plain = up->upscale(*shifted, &o);
    CHECK(shifted_seamless.ok() && shifted_plain.ok());
    if (!shifted_seamless || !shifted_plain) return;
    const ByteDiff wrapped = byte_diff(rolled(seamless->pixels(), 96, 80, 20, 12), shifted_seamless->to_vector());
    const ByteDiff padded = byte_diff(rolled(plain->pixels(), 96, 80, 20, 12), shifted_plain->to_vector());
    std::printf("upscaler shifted picture vs shifted upscale: seamless %zu bytes differ (at most %d), plain %zu (at most %d)\n",
                wrapped.count, wrapped.worst, padded.count, padded.worst);
    CHECK(wrapped.worst <= 1 && wrapped.count * 100 < padded.count);

    // Bilinear alpha: the same RGB, other alpha; nullptr options are the defaults.
    auto bilinear = o;
    bilinear.alpha = kiln::to_c(kiln::UpscaleAlpha::bilinear);
    kiln::Result<kiln::Image> soft = up->upscale(*picture, &bilinear);
    CHECK(soft.ok() && !same_pixels(*soft, *plain));
    if (soft) {
        bool rgb_same = true;
        for (std::size_t i = 0; i < plain->size_bytes(); ++i)
            if (i % 4 != 3) rgb_same = rgb_same && soft->pixels()[i] == plain->pixels()[i];
        CHECK(rgb_same);
    }
    kiln::Result<kiln::Image> defaults = up->upscale(*picture);
    kiln::Result<kiln::Image> c_defaults = c_api_upscale(*rt, dir + "/x4", *picture, kiln::defaults<kiln_upscale_options>());
    CHECK(defaults.ok() && c_defaults.ok() && same_pixels(*defaults, *c_defaults));

    // A fixed 16x16 graph with its settings in x2-fixed.json.
    kiln::Result<kiln::Upscaler> x2 = rt->load_upscaler(dir + "/x2-fixed.onnx");
    CHECK(x2.ok() && x2->scale().value_or(0) == 2);
    if (x2) {
        kiln::Result<kiln::Image> doubled = x2->upscale(*picture);
        CHECK(doubled.ok() && doubled->width() == 48 && doubled->height() == 40);
    }

    // Bad paths and graphs, bad options: their own status and message, the upscaler usable after.
    kiln::Result<kiln::Upscaler> missing = rt->load_upscaler(dir + "/missing");
    CHECK(missing.status() == kiln::Status::model_not_found);
    CHECK(!missing && missing.error().message().find("missing") != std::string::npos);
    kiln::Result<kiln::Upscaler> matting = rt->load_upscaler(fixtures + "/matting/fixed/model.onnx");
    CHECK(matting.status() == kiln::Status::model_invalid);
    CHECK(!matting && matting.error().message().find("output") != std::string::npos);
    if (!matting) std::printf("matting graph as an upscaler: %s\n", matting.error().describe().c_str());
    auto bad = o;
    bad.alpha = 2;
    kiln::Result<kiln::Image> refused = up->upscale(*picture, &bad);
    CHECK(refused.status() == kiln::Status::invalid_argument);
    CHECK(!refused && refused.error().message().find("alpha") != std::string::npos);
    bad = o;
    bad.seamless = 4;
    CHECK(up->upscale(*picture, &bad).status() == kiln::Status::invalid_argument);
    bad = o;
    bad.context = 1025;
    CHECK(up->upscale(*picture, &bad).status() == kiln::Status::invalid_argument);
    bad = o;
    bad.struct_size = 12;
    CHECK(up->upscale(*picture, &bad).status() == kiln::Status::struct_size_mismatch);
    CHECK(up->upscale(kiln::Image()).status() == kiln::Status::null_argument);
    const kiln::Upscaler empty;
    CHECK(empty.scale().status() == kiln::Status::null_argument);
    CHECK(empty.upscale(*picture).status() == kiln::Status::null_argument);
    CHECK(empty.cancel().status() == kiln::Status::null_argument);
    kiln::Result<kiln::Image> after = up->upscale(*picture, &o);
    CHECK(after.ok() && same_pixels(*after, *plain));

    // Cancel: with nothing in flight a no-op; from a second thread, it stops a long upscale (256x256 in 8-pixel
    // tiles: 1024 graph runs), and the next call runs normally.
    CHECK(up->cancel().ok());
    CHECK(up->upscale(*picture, &o).ok());
    std::vector<std::uint8_t> noise(256 * 256 * 4);
    for (std::size_t i = 0; i < noise.size(); ++i) noise[i] = std::uint8_t(i % 251);
    kiln::Result<kiln::Image> big = kiln::Image::create(256, 256, noise.data(), noise.size());
    CHECK(big.ok());
    if (!big) return;
    std::atomic<bool> done{false};
    kiln::Status long_status = kiln::Status::ok;
    std::string long_message;
    const kiln::Upscaler &shared = *up;
    std::thread worker([&] {
        kiln::Result<kiln::Image> r = shared.upscale(*big, &o);
        long_status = r.status();
        long_message = r.error().message();
        done = true;
    });
    // The worker's call may not have started yet, and a cancel before it starts is a no-op: repeat until it ends.
    const auto started = std::chrono::steady_clock::now();
    unsigned cancels = 0;
    bool cancel_ok = true;
    while (!done) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        cancel_ok = cancel_ok && up->cancel().ok();
        ++cancels;
    }
    worker.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("upscaler: the long upscale ended after %.2f s and %u cancels: %s %s\n", secs, cancels,
                kiln::status_name(long_status), long_message.c_str());
    CHECK(cancel_ok);
    CHECK(long_status == kiln::Status::cancelled);
    kiln::Result<kiln::Image> later = up->upscale(*picture, &o);
    CHECK(later.ok() && same_pixels(*later, *plain));

    // Moving an upscaler moves ownership: the moved-from one is empty and frees nothing.
    kiln::Upscaler moved = std::move(*up);
    CHECK(!*up && moved && moved.scale().value_or(0) == 4);
}

// A diagonal colour ramp with hard wrap seams, 64x64 RGB (tests/job_kinds.rs and tests/texture.rs).
static std::vector<std::uint8_t> ramp() {
    std::vector<std::uint8_t> rgb;
    for (std::uint32_t y = 0; y < 64; ++y)
        for (std::uint32_t x = 0; x < 64; ++x)
            rgb.insert(rgb.end(), {std::uint8_t(x * 4), std::uint8_t(y * 4), std::uint8_t((x + y) * 2)});
    return rgb;
}

// A job's end state, size and pixels; its own message printed when it did not succeed.
struct JobResult {
    kiln::JobState state = kiln::JobState::failed;
    kiln::Size size;
    std::vector<std::uint8_t> pixels;
};

static JobResult finish(const kiln::Job &job) {
    JobResult r;
    r.state = job.wait(300000).value_or(kiln::JobState::failed);
    if (r.state != kiln::JobState::succeeded) {
        std::printf("job %llu ended %u: %s\n", static_cast<unsigned long long>(job.id()), kiln::to_c(r.state),
                    job.error_message().value_or("(no message)").c_str());
        return r;
    }
    r.size = job.image_size().value_or(kiln::Size{});
    r.pixels = job.image().value_or(std::vector<std::uint8_t>());
    return r;
}

static bool same_bytes(const JobResult &r, const kiln::Result<kiln::Image> &image) {
    return image.ok() && r.size.width == image->width() && r.size.height == image->height() &&
           r.pixels.size() == image->size_bytes() && std::memcmp(r.pixels.data(), image->pixels(), r.pixels.size()) == 0;
}

// The texture helpers as jobs (the inputs of tests/job_kinds.rs): bad arguments are refused at submit with their
// own status and no job; queued on a model handle destroyed right after submit, each job counts U-Net calls,
// makes previews and gives the blocking call's bytes.
static void test_texture_jobs(const kiln::Runtime &rt, const kiln::Model &model, const std::string &model_dir) {
    const std::vector<std::uint8_t> picture = ramp();
    auto o = options_for("sandstone", 0, 3);
    o.strength = 1.0f;
    o.scheduler = kiln::to_c(kiln::Scheduler::ddim);  // one U-Net call per step
    auto jo = kiln::defaults<kiln_job_options>();
    jo.preview_interval = 1;

    // Checked at submit: no picture, a size off the model's multiple, a band too wide or 0, no model, bad job options.
    kiln::Result<kiln::Job> refused = model.submit_make_tileable(o, 16, &jo);
    CHECK(refused.status() == kiln::Status::invalid_argument);
    CHECK(!refused && refused.error().message().find("init_image") != std::string::npos);
    if (!refused) std::printf("tileable job without a picture: %s\n", refused.error().describe().c_str());
    o.init_image = picture.data();
    o.init_image_len = picture.size();
    o.init_image_width = 64;
    o.init_image_height = 64;
    o.init_image_channels = 3;
    refused = model.submit_extend_texture(o, 5, 0, 0, 0, &jo);
    CHECK(refused.status() == kiln::Status::invalid_size && !refused.error().message().empty());
    CHECK(model.submit_make_tileable(o, 32, &jo).status() == kiln::Status::invalid_argument);
    CHECK(model.submit_make_tileable(o, 0).status() == kiln::Status::invalid_argument);
    CHECK(kiln::Model().submit_make_tileable(o, 16).status() == kiln::Status::null_argument);
    CHECK(kiln::Model().submit_extend_texture(o, 0, 0, 64, 0).status() == kiln::Status::null_argument);
    auto bad = jo;
    bad.struct_size = 3;
    CHECK(model.submit_extend_texture(o, 0, 0, 64, 0, &bad).status() == kiln::Status::struct_size_mismatch);
    CHECK(model.submit_make_tileable(o, 16, &bad).status() == kiln::Status::struct_size_mismatch);
#ifdef KILN_CPP_EXCEPTIONS
    bool thrown = false;
    try {
        kiln::Job never = kiln::check(model.submit_make_tileable(o, 0));
        (void)never;
    } catch (const kiln::Exception &e) {
        thrown = e.error().status() == kiln::Status::invalid_argument;
    }
    CHECK(thrown);
#endif

    // Queued on a second load of the model, destroyed at once: each job holds its model.
    kiln::Result<kiln::Job> tile_job = kiln::Error(), extend_job = kiln::Error();
    {
        kiln::Result<kiln::Model> second = rt.load_model(model_dir);
        CHECK(second.ok());
        if (!second) return;
        tile_job = second->submit_make_tileable(o, 16, &jo);
        extend_job = second->submit_extend_texture(o, 0, 0, 64, 0, &jo);
    }
    CHECK(tile_job.ok() && extend_job.ok());
    if (!tile_job || !extend_job) return;
    const JobResult tiled = finish(*tile_job), extended = finish(*extend_job);
    CHECK(tiled.state == kiln::JobState::succeeded && extended.state == kiln::JobState::succeeded);
    for (const kiln::Job *job : {&*tile_job, &*extend_job}) {
        kiln::Result<kiln::Progress> p = job->poll();
        CHECK(p.ok() && p->step == 3 && p->total_steps == 3);  // U-Net calls, as a generation job counts them
        CHECK(p.ok() && p->preview_step == 3 && p->preview_width == 8);
        kiln::Result<kiln::Preview> preview = job->preview();
        CHECK(preview.ok() && preview->width == 8 && preview->step == 3);
        CHECK(job->error_message().value_or("x").empty());
    }
    std::printf("texture jobs: tileable %ux%u, extended %ux%u\n", tiled.size.width, tiled.size.height,
                extended.size.width, extended.size.height);
    CHECK(extended.size.width == 64 && extended.size.height == 128);
    CHECK(tiled.size.width == 64 && tiled.size.height == 64);

    // The blocking calls give the same bytes.
    kiln::Result<kiln::Image> direct_tiled = model.make_tileable(o, 16);
    kiln::Result<kiln::Image> direct_extended = model.extend_texture(o, 0, 0, 64, 0);
    CHECK(direct_tiled.ok() && direct_extended.ok());
    CHECK(same_bytes(tiled, direct_tiled));
    CHECK(same_bytes(extended, direct_extended));
}

// Upscales as jobs (tests/fixtures/upscaler/x4, the options of test_upscaler): a job gives upscale()'s bytes with
// its upscaler and image destroyed right after submit; its progress counts graph runs (3x3 tiles of 8 on a 24x20
// picture, twice with transparency through the graph) from submission on, with no previews; bad arguments are
// refused at submit with their own status and no job; a running job ends cancelled by Job::cancel and by
// Upscaler::cancel (a job queued behind it still runs).
static void test_upscale_jobs(const std::string &fixtures) {
    const std::string dir = fixtures + "/upscaler";
    kiln::Result<kiln::Runtime> rt = kiln::Runtime::create();
    CHECK(rt.ok());
    if (!rt) return;
    kiln::Result<kiln::Upscaler> up = rt->load_upscaler(dir + "/x4");
    CHECK(up.ok());
    if (!up) {
        std::printf("upscale jobs: %s\n", up.error().describe().c_str());
        return;
    }
    // The fixture picture (alpha falling from 255 to 40) and an opaque one of the same size.
    const std::vector<float> npy = goldens::read_npy_f32(dir + "/image.npy");
    CHECK(npy.size() == 24 * 20 * 4);
    if (npy.size() != 24 * 20 * 4) return;
    std::vector<std::uint8_t> rgba(npy.size()), opaque_rgba(npy.size());
    for (std::size_t i = 0; i < npy.size(); ++i) {
        rgba[i] = std::uint8_t(npy[i]);
        opaque_rgba[i] = i % 4 == 3 ? 255 : std::uint8_t(npy[i]);
    }
    kiln::Result<kiln::Image> picture = kiln::Image::create(24, 20, rgba.data(), rgba.size());
    kiln::Result<kiln::Image> opaque = kiln::Image::create(24, 20, opaque_rgba.data(), opaque_rgba.size());
    CHECK(picture.ok() && opaque.ok());
    if (!picture || !opaque) return;
    auto o = kiln::defaults<kiln_upscale_options>();
    o.tile = 8;
    o.context = 20;
    auto wrap = o;
    wrap.seamless = kiln::to_c(kiln::Seamless::xy);
    auto bilinear = o;
    bilinear.alpha = kiln::to_c(kiln::UpscaleAlpha::bilinear);

    struct Case {
        const char *name;
        const kiln::Image *image;
        const kiln_upscale_options *options;
        std::uint32_t runs;
    };
    const Case cases[] = {
        {"opaque", &*opaque, &o, 3 * 3},
        {"alpha through the graph", &*picture, &o, 3 * 3 * 2},
        {"seamless, alpha through the graph", &*picture, &wrap, 3 * 3 * 2},
        {"bilinear alpha", &*picture, &bilinear, 3 * 3},
    };
    for (const Case &c : cases) {
        kiln::Result<kiln::Image> blocking = up->upscale(*c.image, c.options);
        CHECK(blocking.ok());
        if (!blocking) return;
        // Its own upscaler and a copy of the image, both destroyed once submit returns.
        kiln::Result<kiln::Job> job = kiln::Error();
        {
            kiln::Result<kiln::Upscaler> own = rt->load_upscaler(dir + "/x4");
            kiln::Result<kiln::Image> copy = kiln::Image::create(24, 20, c.image->pixels(), c.image->size_bytes());
            CHECK(own.ok() && copy.ok());
            if (!own || !copy) return;
            auto jo = kiln::defaults<kiln_job_options>();
            jo.preview_interval = 1;  // ignored: an upscale makes no previews
            job = own->submit(*copy, c.options, &jo);
        }
        CHECK(job.ok());
        if (!job) {
            std::printf("upscale job (%s): %s\n", c.name, job.error().describe().c_str());
            return;
        }
        kiln::Result<kiln::Progress> first = job->poll();
        CHECK(first.ok() && first->total_steps == c.runs);  // known from submission on
        const JobResult r = finish(*job);
        kiln::Result<kiln::Progress> p = job->poll();
        std::printf("upscale job (%s): %ux%u, step %u/%u (expected %u graph runs)\n", c.name, r.size.width,
                    r.size.height, p.ok() ? p->step : 0, p.ok() ? p->total_steps : 0, c.runs);
        CHECK(r.state == kiln::JobState::succeeded);
        CHECK(r.size.width == 96 && r.size.height == 80);
        CHECK(same_bytes(r, blocking));
        CHECK(p.ok() && p->step == c.runs && p->total_steps == c.runs && p->preview_step == 0);
        CHECK(job->preview().status() == kiln::Status::busy);
    }
    // nullptr options and job options are the defaults.
    kiln::Result<kiln::Job> defaults_job = up->submit(*picture);
    CHECK(defaults_job.ok());
    if (defaults_job) CHECK(same_bytes(finish(*defaults_job), up->upscale(*picture)));

    // Checked at submit: each bad input its own status and message, no job, the upscaler usable after.
    auto bad = o;
    bad.alpha = 2;
    kiln::Result<kiln::Job> refused = up->submit(*picture, &bad);
    CHECK(refused.status() == kiln::Status::invalid_argument);
    CHECK(!refused && refused.error().message().find("alpha") != std::string::npos);
    if (!refused) std::printf("upscale job with alpha 2: %s\n", refused.error().describe().c_str());
    bad = o;
    bad.seamless = 4;
    CHECK(up->submit(*picture, &bad).status() == kiln::Status::invalid_argument);
    bad = o;
    bad.context = 1025;
    CHECK(up->submit(*picture, &bad).status() == kiln::Status::invalid_argument);
    bad = o;
    bad.struct_size = 12;
    CHECK(up->submit(*picture, &bad).status() == kiln::Status::struct_size_mismatch);
    auto bad_jo = kiln::defaults<kiln_job_options>();
    bad_jo.struct_size = 3;
    CHECK(up->submit(*picture, &o, &bad_jo).status() == kiln::Status::struct_size_mismatch);
    CHECK(up->submit(kiln::Image(), &o).status() == kiln::Status::null_argument);
    CHECK(kiln::Upscaler().submit(*picture, &o).status() == kiln::Status::null_argument);
    std::vector<std::uint8_t> wide_rgba(4097 * 4, 255);
    kiln::Result<kiln::Image> wide = kiln::Image::create(4097, 1, wide_rgba.data(), wide_rgba.size());
    CHECK(wide.ok());
    if (wide) {
        kiln::Result<kiln::Job> too_big = up->submit(*wide, &o);
        CHECK(too_big.status() == kiln::Status::invalid_size);
        CHECK(!too_big && too_big.error().message().find("16384") != std::string::npos);
    }
#ifdef KILN_CPP_EXCEPTIONS
    bool thrown = false;
    try {
        kiln::Job never = kiln::check(kiln::Upscaler().submit(*picture));
        (void)never;
    } catch (const kiln::Exception &e) {
        thrown = e.error().status() == kiln::Status::null_argument;
    }
    CHECK(thrown);
#endif

    // Cancel a running job (256x256 in 8-pixel tiles: 1024 graph runs), by the job and by its upscaler; a job
    // queued behind it (one job worker: the runtimes here all have the default) still runs.
    std::vector<std::uint8_t> noise(256 * 256 * 4);
    for (std::size_t i = 0; i < noise.size(); ++i) noise[i] = i % 4 == 3 ? 255 : std::uint8_t(i % 251);
    kiln::Result<kiln::Image> big = kiln::Image::create(256, 256, noise.data(), noise.size());
    CHECK(big.ok());
    if (!big) return;
    kiln::Result<kiln::Image> small = up->upscale(*opaque, &o);
    CHECK(small.ok());
    for (bool by_upscaler : {false, true}) {
        kiln::Result<kiln::Job> long_job = up->submit(*big, &o);
        kiln::Result<kiln::Job> after = up->submit(*opaque, &o);
        CHECK(long_job.ok() && after.ok());
        if (!long_job || !after) return;
        kiln::Progress p;
        const auto started = std::chrono::steady_clock::now();
        for (;;) {
            kiln::Result<kiln::Progress> polled = long_job->poll();
            CHECK(polled.ok());
            if (!polled) break;
            p = *polled;
            if (p.finished() || (p.state == kiln::JobState::running && p.step >= 1)) break;
            if (std::chrono::steady_clock::now() - started > std::chrono::seconds(120)) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        CHECK(p.state == kiln::JobState::running && p.total_steps == 32 * 32);
        CHECK(by_upscaler ? up->cancel().ok() : long_job->cancel().ok());
        const kiln::JobState end = long_job->wait(60000).value_or(kiln::JobState::failed);
        kiln::Result<kiln::Progress> stopped = long_job->poll();
        const std::string message = long_job->error_message().value_or("");
        std::printf("upscale job cancelled by the %s at step %u/%u: %s\n", by_upscaler ? "upscaler" : "job",
                    stopped.ok() ? stopped->step : 0, stopped.ok() ? stopped->total_steps : 0, message.c_str());
        CHECK(end == kiln::JobState::cancelled);
        CHECK(stopped.ok() && stopped->step < stopped->total_steps);
        CHECK(message.find("cancel") != std::string::npos);
        CHECK(long_job->image_size().status() != kiln::Status::ok);
        const JobResult later = finish(*after);
        CHECK(later.state == kiln::JobState::succeeded && same_bytes(later, small));
    }
}

// A generation and its upscale as one job (Model::submit_upscaled; the inputs of tests/job_kinds.rs): on a seamless
// view of the tiny model, with the view and the upscaler destroyed right after submit, the job gives the view's
// generate() upscaled by upscale() wrapping on x and y (upscale_options->seamless is ignored: none here), not the
// padded upscale; on the plain model, seamless xy in the options is ignored the other way. Progress is one count,
// 4 DDIM U-Net calls then 2x2 tiles of 32 px (total 8, known from submission on), with previews from the
// generation; bad arguments are refused at submit with their own status and no job.
static void test_upscaled_jobs(const std::string &model_dir) {
    kiln::Result<kiln::Runtime> rt = kiln::Runtime::create();
    CHECK(rt.ok());
    if (!rt) return;
    const std::string upscaler_dir = model_dir + "/../upscaler/x4";
    kiln::Result<kiln::Model> model = rt->load_model(model_dir);
    kiln::Result<kiln::Upscaler> up = rt->load_upscaler(upscaler_dir);
    CHECK(model.ok() && up.ok());
    if (!model || !up) return;
    kiln::Result<kiln::Model> view = model->seamless(kiln::Seamless::xy);
    CHECK(view.ok());
    if (!view) return;
    auto o = options_for("mossy cobblestone", 5, 4);
    o.scheduler = kiln::to_c(kiln::Scheduler::ddim);  // one U-Net call per step
    auto uo = kiln::defaults<kiln_upscale_options>();
    uo.tile = 32;
    uo.seamless = kiln::to_c(kiln::Seamless::none);  // ignored: the view tiles along x and y
    auto jo = kiln::defaults<kiln_job_options>();
    jo.preview_interval = 2;
    const std::uint32_t total = 4 + 2 * 2;

    // Checked at submit: a size the model cannot make, a result too large, bad options, empty handles.
    auto bad = o;
    bad.width = 72;
    kiln::Result<kiln::Job> refused = view->submit_upscaled(bad, *up, &uo, &jo);
    CHECK(refused.status() == kiln::Status::invalid_size && !refused.error().message().empty());
    if (!refused) std::printf("upscaled job 72 wide: %s\n", refused.error().describe().c_str());
    bad.width = 8192;
    refused = view->submit_upscaled(bad, *up, &uo, &jo);
    CHECK(refused.status() == kiln::Status::invalid_size);
    CHECK(!refused && refused.error().message().find("16384") != std::string::npos);
    auto bad_uo = uo;
    bad_uo.context = 1025;
    CHECK(view->submit_upscaled(o, *up, &bad_uo, &jo).status() == kiln::Status::invalid_argument);
    bad_uo = uo;
    bad_uo.struct_size = 12;
    CHECK(view->submit_upscaled(o, *up, &bad_uo, &jo).status() == kiln::Status::struct_size_mismatch);
    auto bad_jo = jo;
    bad_jo.struct_size = 3;
    CHECK(view->submit_upscaled(o, *up, &uo, &bad_jo).status() == kiln::Status::struct_size_mismatch);
    CHECK(view->submit_upscaled(o, kiln::Upscaler(), &uo, &jo).status() == kiln::Status::null_argument);
    CHECK(kiln::Model().submit_upscaled(o, *up, &uo, &jo).status() == kiln::Status::null_argument);
#ifdef KILN_CPP_EXCEPTIONS
    bool thrown = false;
    try {
        kiln::Job never = kiln::check(view->submit_upscaled(bad, *up));
        (void)never;
    } catch (const kiln::Exception &e) {
        thrown = e.error().status() == kiln::Status::invalid_size;
    }
    CHECK(thrown);
#endif

    // Queued on a view and an upscaler of their own, both destroyed once submit returns.
    kiln::Result<kiln::Job> job = kiln::Error();
    {
        kiln::Result<kiln::Model> own_view = model->seamless(kiln::Seamless::xy);
        kiln::Result<kiln::Upscaler> own_up = rt->load_upscaler(upscaler_dir);
        CHECK(own_view.ok() && own_up.ok());
        if (!own_view || !own_up) return;
        job = own_view->submit_upscaled(o, *own_up, &uo, &jo);
    }
    CHECK(job.ok());
    if (!job) {
        std::printf("upscaled job: %s\n", job.error().describe().c_str());
        return;
    }
    kiln::Result<kiln::Progress> first = job->poll();
    CHECK(first.ok() && first->total_steps == total);  // known from submission on
    const JobResult r = finish(*job);
    kiln::Result<kiln::Progress> p = job->poll();
    std::printf("upscaled job: %ux%u, step %u/%u (expected %u), preview step %u\n", r.size.width, r.size.height,
                p.ok() ? p->step : 0, p.ok() ? p->total_steps : 0, total, p.ok() ? p->preview_step : 0);
    CHECK(r.state == kiln::JobState::succeeded);
    CHECK(r.size.width == 256 && r.size.height == 256);
    CHECK(p.ok() && p->step == total && p->total_steps == total && p->preview_step == 4);
    kiln::Result<kiln::Preview> preview = job->preview();
    CHECK(preview.ok() && preview->step == 4 && preview->width > 0);
    CHECK(job->error_message().value_or("x").empty());

    // The blocking calls: the view's generation upscaled wrapping on x and y, not the padded upscale.
    kiln::Result<kiln::Image> generated = view->generate(o);
    CHECK(generated.ok());
    if (!generated) return;
    auto wrap = uo;
    wrap.seamless = kiln::to_c(kiln::Seamless::xy);
    kiln::Result<kiln::Image> expected = up->upscale(*generated, &wrap);
    kiln::Result<kiln::Image> padded = up->upscale(*generated, &uo);
    CHECK(expected.ok() && padded.ok());
    CHECK(same_bytes(r, expected));
    CHECK(!same_bytes(r, padded));

    // The plain model does not wrap, whatever the options say; nullptr options are the defaults.
    kiln::Result<kiln::Job> plain_job = model->submit_upscaled(o, *up, &wrap);
    kiln::Result<kiln::Job> defaults_job = view->submit_upscaled(o, *up);
    CHECK(plain_job.ok() && defaults_job.ok());
    if (!plain_job || !defaults_job) return;
    kiln::Result<kiln::Image> plain_generated = model->generate(o);
    CHECK(plain_generated.ok());
    if (!plain_generated) return;
    CHECK(same_bytes(finish(*plain_job), up->upscale(*plain_generated, &uo)));
    auto default_wrap = kiln::defaults<kiln_upscale_options>();
    default_wrap.seamless = kiln::to_c(kiln::Seamless::xy);
    CHECK(same_bytes(finish(*defaults_job), up->upscale(*generated, &default_wrap)));
}

// Model loads and LoRA switches as jobs (Runtime::submit_load_model, Model::submit_with_loras / submit_with_adapters,
// Job::model; the inputs of tests/job_kinds.rs): bad arguments are refused at submit with their own status and no
// job; a load job counts KiB of the graphs it opens, all of them when done, and its model (a handle of its own per Job::model call, outliving the
// job) generates the blocking load's bytes; a LoRA job on a model destroyed right after submit gives with_loras'
// bytes; a missing LoRA file fails the job; an image job has no model and a model job no image; a load queued
// behind a long job is busy, and cancelled it never runs.
static kiln::Result<std::vector<std::uint8_t>> generated_bytes(const kiln::Model &m) {
    kiln::Result<kiln::Image> image = m.generate(options_for("brick wall", 3, 4));
    if (!image) return image.error();
    return image->to_vector();
}

static kiln::Result<kiln::Model> finished_model(const kiln::Job &job) {
    const kiln::JobState state = job.wait(300000).value_or(kiln::JobState::failed);
    if (state != kiln::JobState::succeeded)
        std::printf("model job %llu ended %u: %s\n", static_cast<unsigned long long>(job.id()), kiln::to_c(state),
                    job.error_message().value_or("(no message)").c_str());
    return job.model();
}

static void test_model_jobs(const kiln::Model &blocking, const std::string &model_dir) {
    // One job worker, so a job queued behind a long one is surely queued.
    auto ro = kiln::defaults<kiln_runtime_options>();
    ro.job_workers = 1;
    kiln::Result<kiln::Runtime> rt = kiln::Runtime::create(&ro);
    CHECK(rt.ok());
    if (!rt) return;
    const std::string detail = model_dir + "/../lora/detail.kohya.safetensors";

    // Checked at submit; nothing queued.
    kiln::Result<kiln::Job> refused = rt->submit_load_model("/nonexistent/kiln-model");
    CHECK(refused.status() == kiln::Status::model_not_found);
    CHECK(!refused && refused.error().message().find("/nonexistent/kiln-model") != std::string::npos);
    if (!refused) std::printf("load job of a missing folder: %s\n", refused.error().describe().c_str());
    auto lo = kiln::defaults<kiln_model_load_options>();
    lo.seamless = 9;
    CHECK(rt->submit_load_model(model_dir, &lo).status() == kiln::Status::invalid_argument);
    auto bad_jo = kiln::defaults<kiln_job_options>();
    bad_jo.struct_size = 3;
    CHECK(rt->submit_load_model(model_dir, nullptr, &bad_jo).status() == kiln::Status::struct_size_mismatch);
    CHECK(kiln::Runtime().submit_load_model(model_dir).status() == kiln::Status::null_argument);
#ifdef KILN_CPP_EXCEPTIONS
    bool thrown = false;
    try {
        kiln::Job never = kiln::check(rt->submit_load_model("/nonexistent/kiln-model"));
        (void)never;
    } catch (const kiln::Exception &e) {
        thrown = e.error().status() == kiln::Status::model_not_found;
    }
    CHECK(thrown);
#endif

    // A load job's model generates the blocking load's bytes; each Job::model call is a handle of its own.
    kiln::Result<kiln::Job> load = rt->submit_load_model(model_dir);
    CHECK(load.ok());
    if (!load) {
        std::printf("load job: %s\n", load.error().describe().c_str());
        return;
    }
    kiln::Result<kiln::Progress> first = load->poll();
    CHECK(first.ok() && first->total_steps >= 1);  // 1 until the load plans its graphs, then their KiB
    kiln::Result<kiln::Model> loaded = finished_model(*load);
    kiln::Result<kiln::Model> again = load->model();
    CHECK(loaded.ok() && again.ok());
    if (!loaded || !again) return;
    CHECK(loaded->get() != again->get());
    kiln::Result<kiln::Progress> done = load->poll();
    CHECK(done.ok() && done->state == kiln::JobState::succeeded && done->step == done->total_steps && done->total_steps > 1);
    kiln::Result<kiln::Size> no_image = load->image_size();
    CHECK(no_image.status() == kiln::Status::invalid_argument);
    CHECK(!no_image && no_image.error().message().find("made a model") != std::string::npos);
    CHECK(load->image().status() == kiln::Status::invalid_argument);
    CHECK(load->error_message().value_or("x").empty());
    const std::uint64_t load_id = load->id();
    CHECK(load->free().ok());  // the handles outlive the job
    CHECK(kiln::Job(load_id).model().status() == kiln::Status::invalid_handle);
    kiln::Result<std::vector<std::uint8_t>> direct = generated_bytes(blocking);
    kiln::Result<std::vector<std::uint8_t>> from_job = generated_bytes(*loaded);
    CHECK(direct.ok() && from_job.ok() && *direct == *from_job);
    CHECK(again->info().ok());
    if (!direct || !from_job) return;
    std::printf("load job: its model generated the blocking load's %zu bytes: %s\n", direct->size(),
                *direct == *from_job ? "yes" : "no");

    // A LoRA switch as a job, on a model handle destroyed right after submit: with_loras' bytes.
    kiln::Result<kiln::Job> switched = kiln::Error();
    {
        kiln::Model own = std::move(*again);
        switched = own.submit_with_loras({{detail, 0.8f}});
    }
    CHECK(switched.ok());
    if (!switched) {
        std::printf("LoRA job: %s\n", switched.error().describe().c_str());
        return;
    }
    kiln::Result<kiln::Model> styled = finished_model(*switched);
    kiln::Result<kiln::Model> styled_blocking = blocking.with_loras({{detail, 0.8f}});
    CHECK(styled.ok() && styled_blocking.ok());
    if (!styled || !styled_blocking) return;
    kiln::Result<std::vector<kiln::LoraSpec>> listed = styled->loras();
    CHECK(listed.ok() && listed->size() == 1 && listed->front().scale == 0.8f &&
          listed->front().path.find("detail.kohya.safetensors") != std::string::npos);
    kiln::Result<std::vector<std::uint8_t>> styled_bytes = generated_bytes(*styled);
    kiln::Result<std::vector<std::uint8_t>> styled_direct = generated_bytes(*styled_blocking);
    CHECK(styled_bytes.ok() && styled_direct.ok());
    if (!styled_bytes || !styled_direct) return;
    CHECK(*styled_bytes == *styled_direct);
    CHECK(*styled_bytes != *from_job);  // and the LoRA changed the image
    kiln::Result<std::vector<std::uint8_t>> unchanged = generated_bytes(*loaded);
    CHECK(unchanged.ok() && *unchanged == *from_job);  // the model it came from is unchanged

    // The C structs of with_adapters (copied at submit), with an empty switch giving the plain weights back.
    auto l = kiln::defaults<kiln_lora>();
    l.path = detail.c_str();
    l.scale = 0.8f;
    kiln::Result<kiln::Job> adapters = loaded->submit_with_adapters({l}, {});
    kiln::Result<kiln::Job> plain = styled->submit_with_loras({});
    CHECK(adapters.ok() && plain.ok());
    if (!adapters || !plain) return;
    kiln::Result<kiln::Model> from_adapters = finished_model(*adapters);
    kiln::Result<kiln::Model> from_plain = finished_model(*plain);
    CHECK(from_adapters.ok() && from_plain.ok());
    if (from_adapters) CHECK(generated_bytes(*from_adapters).value_or({}) == *styled_direct);
    if (from_plain) CHECK(generated_bytes(*from_plain).value_or({}) == *from_job);

    // Its arguments are checked at submit; its files by the job.
    CHECK(loaded->submit_with_loras({{detail, std::numeric_limits<float>::quiet_NaN()}}).status() ==
          kiln::Status::invalid_argument);
    auto bad_l = l;
    bad_l.struct_size = 3;
    CHECK(loaded->submit_with_adapters({bad_l}, {}).status() == kiln::Status::struct_size_mismatch);
    CHECK(kiln::Model().submit_with_loras({{detail, 0.8f}}).status() == kiln::Status::null_argument);
    CHECK(kiln::Model().submit_with_adapters({l}, {}).status() == kiln::Status::null_argument);
    kiln::Result<kiln::Job> missing = loaded->submit_with_loras({{"/nonexistent/style.safetensors", 0.8f}});
    CHECK(missing.ok());
    if (missing) {
        CHECK(missing->wait(60000).value_or(kiln::JobState::succeeded) == kiln::JobState::failed);
        const std::string why = missing->error_message().value_or("");
        std::printf("LoRA job of a missing file: %s\n", why.c_str());
        CHECK(why.find("/nonexistent/style.safetensors") != std::string::npos);
        CHECK(missing->model().status() == kiln::Status::invalid_argument);
    }

    // Queued behind a long generation: busy, and cancelled it never runs.
    auto longer = options_for("brick wall", 3, 900);
    longer.scheduler = kiln::to_c(kiln::Scheduler::ddim);
    kiln::Result<kiln::Job> busy = loaded->submit(longer);
    kiln::Result<kiln::Job> queued = rt->submit_load_model(model_dir);
    CHECK(busy.ok() && queued.ok());
    if (!busy || !queued) return;
    CHECK(queued->model().status() == kiln::Status::busy);
    CHECK(queued->cancel().ok() && busy->cancel().ok());
    CHECK(queued->wait(60000).value_or(kiln::JobState::failed) == kiln::JobState::cancelled);
    kiln::Result<kiln::Progress> never_ran = queued->poll();
    CHECK(never_ran.ok() && never_ran->step == 0);
    CHECK(queued->model().status() == kiln::Status::invalid_argument);

    // The other way round: an image job has no model.
    kiln::Result<kiln::Job> image_job = loaded->submit(options_for("brick wall", 3, 2));
    CHECK(image_job.ok());
    if (!image_job) return;
    CHECK(image_job->wait(60000).value_or(kiln::JobState::failed) == kiln::JobState::succeeded);
    kiln::Result<kiln::Model> none = image_job->model();
    CHECK(none.status() == kiln::Status::invalid_argument);
    CHECK(!none && none.error().message().find("made an image") != std::string::npos);
}

// A seamless view as a job (Model::submit_seamless, Job::model; the inputs of tests/job_kinds.rs): its view
// generates exactly the bytes seamless()'s view does, not the plain model's, from a model destroyed right after
// submit; progress in KiB of the graphs it remakes; axes that are no Seamless are refused at submit, with no job.
static void test_seamless_job(const kiln::Runtime &rt, const kiln::Model &blocking, const std::string &model_dir) {
    CHECK(blocking.submit_seamless(static_cast<kiln::Seamless>(9)).status() == kiln::Status::invalid_argument);
    kiln::Result<kiln::Job> bad_axes = blocking.submit_seamless(static_cast<kiln::Seamless>(9));
    CHECK(!bad_axes && bad_axes.error().message().find("axes") != std::string::npos);
    CHECK(kiln::Model().submit_seamless(kiln::Seamless::xy).status() == kiln::Status::null_argument);
    auto bad_jo = kiln::defaults<kiln_job_options>();
    bad_jo.struct_size = 3;
    CHECK(blocking.submit_seamless(kiln::Seamless::xy, &bad_jo).status() == kiln::Status::struct_size_mismatch);

    // Submitted from a handle destroyed right after: the job holds the model.
    kiln::Result<kiln::Job> job = kiln::Error();
    {
        kiln::Result<kiln::Model> own = rt.load_model(model_dir);
        CHECK(own.ok());
        if (!own) return;
        job = own->submit_seamless(kiln::Seamless::xy);
    }
    CHECK(job.ok());
    if (!job) {
        std::printf("seamless job: %s\n", job.error().describe().c_str());
        return;
    }
    kiln::Result<kiln::Progress> first = job->poll();
    CHECK(first.ok() && first->total_steps >= 1);  // 1 until the load plans its graphs, then their KiB
    kiln::Result<kiln::Model> view = finished_model(*job);
    CHECK(view.ok());
    if (!view) return;
    kiln::Result<kiln::Progress> done = job->poll();
    CHECK(done.ok() && done->state == kiln::JobState::succeeded && done->step == done->total_steps && done->total_steps > 1);
    CHECK(job->image_size().status() == kiln::Status::invalid_argument);
    CHECK(job->error_message().value_or("x").empty());
    CHECK(job->free().ok());  // the view outlives the job

    kiln::Result<kiln::Model> blocking_view = blocking.seamless(kiln::Seamless::xy);
    CHECK(blocking_view.ok());
    if (!blocking_view) return;
    kiln::Result<std::vector<std::uint8_t>> tiled = generated_bytes(*view);
    kiln::Result<std::vector<std::uint8_t>> direct = generated_bytes(*blocking_view);
    kiln::Result<std::vector<std::uint8_t>> plain = generated_bytes(blocking);
    CHECK(tiled.ok() && direct.ok() && plain.ok());
    if (!tiled || !direct || !plain) return;
    CHECK(*tiled == *direct);
    CHECK(*tiled != *plain);
    std::printf("seamless job: its view generated seamless()'s %zu bytes: %s\n", tiled->size(),
                *tiled == *direct ? "yes" : "no");
}

// An upscaler load as a job (Runtime::submit_load_upscaler, Job::upscaler; tests/fixtures/upscaler/x4): a missing
// path is refused at submit with no job; queued on a runtime destroyed right after submit, the job counts KiB of
// its graph with no previews and its upscaler (a handle of its own per Job::upscaler call, outliving the job)
// upscales a picture to exactly the bytes of the blocking load's upscaler; Job::model on it, and Job::upscaler on
// a model load or an image job, are Status::invalid_argument.
static void test_upscaler_load_job(const kiln::Runtime &rt, const kiln::Model &model, const std::string &model_dir) {
    const std::string x4 = model_dir + "/../upscaler/x4";

    // Checked at submit; nothing queued.
    kiln::Result<kiln::Job> refused = rt.submit_load_upscaler(model_dir + "/../upscaler/missing");
    CHECK(refused.status() == kiln::Status::model_not_found);
    CHECK(!refused && refused.error().message().find("missing") != std::string::npos);
    if (!refused) std::printf("upscaler load job of a missing path: %s\n", refused.error().describe().c_str());
    auto bad_jo = kiln::defaults<kiln_job_options>();
    bad_jo.struct_size = 3;
    CHECK(rt.submit_load_upscaler(x4, &bad_jo).status() == kiln::Status::struct_size_mismatch);
    CHECK(kiln::Runtime().submit_load_upscaler(x4).status() == kiln::Status::null_argument);
#ifdef KILN_CPP_EXCEPTIONS
    bool thrown = false;
    try {
        kiln::Job never = kiln::check(rt.submit_load_upscaler("/nonexistent/kiln-upscaler"));
        (void)never;
    } catch (const kiln::Exception &e) {
        thrown = e.error().status() == kiln::Status::model_not_found;
    }
    CHECK(thrown);
#endif

    // Submitted on a runtime of its own, destroyed right after: the job keeps what it needs of it.
    kiln::Result<kiln::Job> job = kiln::Error();
    {
        kiln::Result<kiln::Runtime> own = kiln::Runtime::create();
        CHECK(own.ok());
        if (!own) return;
        job = own->submit_load_upscaler(x4);
    }
    CHECK(job.ok());
    if (!job) {
        std::printf("upscaler load job: %s\n", job.error().describe().c_str());
        return;
    }
    kiln::Result<kiln::Progress> first = job->poll();
    CHECK(first.ok() && first->total_steps >= 1);  // 1 until the load plans its graphs, then their KiB
    const kiln::JobState state = job->wait(300000).value_or(kiln::JobState::failed);
    if (state != kiln::JobState::succeeded)
        std::printf("upscaler load job ended %u: %s\n", kiln::to_c(state),
                    job->error_message().value_or("(no message)").c_str());
    CHECK(state == kiln::JobState::succeeded);
    kiln::Result<kiln::Upscaler> loaded = job->upscaler();
    kiln::Result<kiln::Upscaler> again = job->upscaler();
    CHECK(loaded.ok() && again.ok());
    if (!loaded || !again) return;
    CHECK(loaded->get() != again->get());
    kiln::Result<kiln::Progress> done = job->poll();
    CHECK(done.ok() && done->state == kiln::JobState::succeeded && done->step == done->total_steps &&
          done->total_steps > 1 && done->preview_step == 0);
    CHECK(job->preview().status() == kiln::Status::busy);
    CHECK(job->error_message().value_or("x").empty());
    kiln::Result<kiln::Model> no_model = job->model();
    CHECK(no_model.status() == kiln::Status::invalid_argument);
    CHECK(!no_model && no_model.error().message().find("kiln_job_upscaler") != std::string::npos);
    CHECK(job->image_size().status() == kiln::Status::invalid_argument);
    const std::uint64_t job_id = job->id();
    CHECK(job->free().ok());  // the handles outlive the job
    CHECK(kiln::Job(job_id).upscaler().status() == kiln::Status::invalid_handle);
    CHECK(loaded->scale().value_or(0) == 4 && again->scale().value_or(0) == 4);

    // Its upscaler upscales exactly as the blocking load's: a 24x20 picture with falling alpha, 3x3 tiles of 8.
    std::vector<std::uint8_t> rgba;
    for (std::uint32_t y = 0; y < 20; ++y)
        for (std::uint32_t x = 0; x < 24; ++x)
            rgba.insert(rgba.end(), {std::uint8_t(x * 10), std::uint8_t(y * 12), std::uint8_t((x + y) * 5),
                                     std::uint8_t(255 - y * 10)});
    kiln::Result<kiln::Image> picture = kiln::Image::create(24, 20, rgba.data(), rgba.size());
    kiln::Result<kiln::Upscaler> blocking = rt.load_upscaler(x4);
    CHECK(picture.ok() && blocking.ok());
    if (!picture || !blocking) return;
    auto o = kiln::defaults<kiln_upscale_options>();
    o.tile = 8;
    o.context = 20;
    kiln::Result<kiln::Image> from_job = loaded->upscale(*picture, &o);
    kiln::Result<kiln::Image> direct = blocking->upscale(*picture, &o);
    CHECK(from_job.ok() && direct.ok());
    if (!from_job || !direct) return;
    CHECK(from_job->width() == 96 && from_job->height() == 80);
    CHECK(from_job->to_vector() == direct->to_vector());
    CHECK(again->upscale(*picture, &o).value_or(kiln::Image()).to_vector() == direct->to_vector());
    std::printf("upscaler load job: its upscaler gave the blocking load's %zu bytes: %s\n", direct->size_bytes(),
                from_job->to_vector() == direct->to_vector() ? "yes" : "no");

    // The other way round: a model load and an image job have no upscaler.
    kiln::Result<kiln::Job> model_job = rt.submit_load_model(model_dir);
    kiln::Result<kiln::Job> image_job = model.submit(options_for("brick wall", 3, 2));
    CHECK(model_job.ok() && image_job.ok());
    if (!model_job || !image_job) return;
    CHECK(model_job->wait(300000).value_or(kiln::JobState::failed) == kiln::JobState::succeeded);
    CHECK(image_job->wait(60000).value_or(kiln::JobState::failed) == kiln::JobState::succeeded);
    CHECK(model_job->upscaler().status() == kiln::Status::invalid_argument);
    CHECK(image_job->upscaler().status() == kiln::Status::invalid_argument);
}

static void test_job(const kiln::Model &model) {
    auto o = options_for("weathered oak planks", 7, 4);
    kiln::Result<kiln::Image> reference = model.generate(o);
    CHECK(reference.ok());

    auto jo = kiln::defaults<kiln_job_options>();
    jo.preview_interval = 1;
    kiln::Result<kiln::Job> job = model.submit(o, &jo);
    CHECK(job.ok());
    kiln::Progress p;
    unsigned frames = 0;
    while (true) {  // one iteration = one frame
        kiln::Result<kiln::Progress> polled = job->poll();
        CHECK(polled.ok());
        if (!polled) return;
        p = *polled;
        ++frames;
        if (p.finished()) break;
        (void)job->wait(5);  // stands in for rendering a frame
    }
    std::printf("job finished after %u polls: state %u, step %u/%u\n", frames, kiln::to_c(p.state), p.step, p.total_steps);
    CHECK(p.state == kiln::JobState::succeeded);
    CHECK(p.step == p.total_steps && p.total_steps > 0);
    kiln::Result<std::vector<std::uint8_t>> pixels = job->image();
    CHECK(pixels.ok() && pixels->size() == reference->size_bytes());
    CHECK(pixels.ok() && std::memcmp(pixels->data(), reference->pixels(), reference->size_bytes()) == 0);
    kiln::Result<kiln::Preview> preview = job->preview();
    CHECK(preview.ok() && preview->width > 0 && preview->pixels.size() == std::size_t(preview->width) * preview->height * 4);
    CHECK(job->error_message().ok() && job->error_message()->empty());

    // Cancel a long job; its own message says so; freeing twice is a status, not a crash.
    auto longer = options_for("weathered oak planks", 7, 900);
    kiln::Result<kiln::Job> doomed = model.submit(longer);
    CHECK(doomed.ok());
    CHECK(doomed->preview().status() == kiln::Status::busy);  // no preview interval, so never one
    CHECK(doomed->cancel().ok());
    kiln::Result<kiln::JobState> end = doomed->wait(60000);
    CHECK(end.ok() && *end == kiln::JobState::cancelled);
    CHECK(doomed->image_size().status() != kiln::Status::ok);
    std::uint64_t id = doomed->id();
    CHECK(doomed->free().ok());
    kiln::Job stale(id);
    CHECK(stale.poll().status() == kiln::Status::invalid_handle);
    CHECK(stale.free().status() == kiln::Status::invalid_handle);

    // Moving a job moves ownership: the moved-from one is empty and frees nothing.
    kiln::Result<kiln::Job> a = model.submit(o);
    CHECK(a.ok());
    kiln::Job b = std::move(*a);
    CHECK(a->id() == 0 && b.id() != 0);
    CHECK(b.wait(60000).value_or(kiln::JobState::failed) == kiln::JobState::succeeded);
}

#ifdef KILN_CPP_EXCEPTIONS
static void test_throwing_layer(const kiln::Runtime &rt) {
    bool thrown = false;
    try {
        kiln::Model m = kiln::check(rt.load_model("/nonexistent/kiln-model"));
        (void)m;
    } catch (const kiln::Exception &e) {
        thrown = e.error().status() == kiln::Status::model_not_found &&
                 std::string(e.what()).find("KILN_STATUS_MODEL_NOT_FOUND") != std::string::npos;
    }
    CHECK(thrown);
    CHECK(kiln::check(rt.onnxruntime_version()).size() > 0);

    bool upscaler_thrown = false;
    try {
        kiln::Upscaler u = kiln::check(rt.load_upscaler("/nonexistent/kiln-upscaler"));
        (void)u;
    } catch (const kiln::Exception &e) {
        upscaler_thrown = e.error().status() == kiln::Status::model_not_found;
    }
    CHECK(upscaler_thrown);
}
#endif

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3 && argc != 5) {
        std::fprintf(stderr, "usage: test_kiln MODEL_DIR [CONTROLNET_MODEL_DIR [REFINER_MODEL_DIR SCRATCH_DIR]]\n");
        return 2;
    }
    CHECK(kiln::header_matches_library());
    kiln::Result<kiln::Runtime> rt = kiln::Runtime::create();
    CHECK(rt.ok());
    if (!rt) {
        std::printf("runtime: %s\n", rt.error().describe().c_str());
        std::printf("%d passed, %d failed\n", passed, failed);
        return 1;
    }
    test_errors_keep_handles_usable(*rt);
    kiln::Result<kiln::Model> model = rt->load_model(argv[1]);
    CHECK(model.ok());
    if (model) {
        test_generate(*model);
        test_job(*model);
        test_texture_jobs(*rt, *model, argv[1]);
        test_loras(*model, std::string(argv[1]) + "/../lora");
        test_lora_text_encoder_scale(*model, std::string(argv[1]) + "/../lora");
        test_model_jobs(*model, argv[1]);
        test_seamless_job(*rt, *model, argv[1]);
        test_upscaler_load_job(*rt, *model, argv[1]);
        test_sdxl(*rt, *model, std::string(argv[1]) + "/../tiny-sdxl");
        if (argc == 5) {
            // The goldens' readers throw on a missing or malformed file: a failure, not a crash.
            const std::string fixtures = std::string(argv[1]) + "/..";
            try {
                test_sdxl_embedding(*rt, *model, fixtures, argv[4]);
                test_lora_component_golden(*model, fixtures);
                test_torch_seed(*model, fixtures);
                test_variation(*model, fixtures);
                test_quantization(*rt, *model, fixtures);
                test_attention(*rt, *model, argv[1]);
                test_lora_slots(*rt, *model, argv[1]);
                test_refiner(*rt, *model, fixtures, argv[3], argv[4]);
            } catch (const std::exception &e) {
                ++failed;
                std::printf("FAILED reading the goldens: %s\n", e.what());
            }
        }
        kiln::Model moved = std::move(*model);
        CHECK(!*model && moved);
    }
    try {
        test_upscaler(std::string(argv[1]) + "/..");
        test_upscale_jobs(std::string(argv[1]) + "/..");
        test_upscaled_jobs(argv[1]);
    } catch (const std::exception &e) {
        ++failed;
        std::printf("FAILED reading the upscaler fixtures: %s\n", e.what());
    }
    if (argc >= 3) test_controlnet(*rt, argv[2]);
#ifdef KILN_CPP_EXCEPTIONS
    test_throwing_layer(*rt);
#endif
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
