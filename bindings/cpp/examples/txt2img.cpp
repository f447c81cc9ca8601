// txt2img: examples/c/txt2img.c in C++ with kiln.hpp, and the same pixels.
//
//   txt2img MODEL_DIR PROMPT OUT.png
//
// Loads ONNX Runtime, loads the model, generates one image at the model's native size with the
// default settings and seed 42, and writes it as a PNG. Every failure prints Kiln's own message.
#include <cstdio>

#include "kiln.hpp"

static int fail(const char *what, const kiln::Error &error) {
    std::fprintf(stderr, "txt2img: %s failed: %s\n", what, error.describe().c_str());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: txt2img MODEL_DIR PROMPT OUT.png\n");
        return 2;
    }
    if (!kiln::header_matches_library()) {
        std::fprintf(stderr, "txt2img: header %s does not match library %s\n", KILN_VERSION_STRING, kiln::version_string());
        return 1;
    }

    auto runtime_options = kiln::defaults<kiln_runtime_options>();
    kiln::Result<kiln::Runtime> runtime = kiln::Runtime::create(&runtime_options);
    if (!runtime) return fail("kiln_runtime_create", runtime.error());
    std::printf("ONNX Runtime %s\n", runtime->onnxruntime_version().value_or("?").c_str());

    kiln::Result<kiln::Model> model = runtime->load_model(argv[1]);
    if (!model) return fail("kiln_model_load", model.error());

    auto options = kiln::defaults<kiln_generate_options>();
    options.prompt = argv[2];
    options.seed = 42;

    kiln::Result<kiln::Image> image = model->generate(options);
    if (!image) return fail("kiln_model_generate", image.error());
    std::printf("generated %ux%u\n", image->width(), image->height());
    kiln::Result<void> written = image->write_png(argv[3]);
    if (!written) return fail("kiln_image_write_png", written.error());
    return 0;
}
