/* txt2img: the smallest complete use of Kiln from C.
 *
 *   txt2img MODEL_DIR PROMPT OUT.png [STEPS]
 *
 * Loads ONNX Runtime (searched: ORT_DYLIB_PATH, beside libkiln, the project's
 * fetched copy), loads the model, generates one image at the model's native
 * size (STEPS denoising steps, default 20) and writes it as a PNG. Every
 * failure prints Kiln's own message. */
#include <stdio.h>
#include <stdlib.h>

#include "kiln.h"

static int fail(const char *what, kiln_status status) {
    char message[1024];
    kiln_last_error_message(message, sizeof message, NULL);
    fprintf(stderr, "txt2img: %s failed: %s: %s\n", what, kiln_status_name(status), message);
    return 1;
}

int main(int argc, char **argv) {
    unsigned long steps = 0; /* 0: the library's default */
    char *end = NULL;
    if (argc == 5) steps = strtoul(argv[4], &end, 10);
    if ((argc != 4 && argc != 5) || (argc == 5 && (*argv[4] == '\0' || *end != '\0' || steps == 0 || steps > 1000))) {
        fprintf(stderr, "usage: txt2img MODEL_DIR PROMPT OUT.png [STEPS (1 to 1000)]\n");
        return 2;
    }
    if (kiln_version() != KILN_VERSION) {
        fprintf(stderr, "txt2img: header %s does not match library %s\n", KILN_VERSION_STRING, kiln_version_string());
        return 1;
    }

    kiln_runtime_options runtime_options;
    kiln_runtime_options_init(&runtime_options);
    kiln_runtime *runtime = NULL;
    kiln_status status = kiln_runtime_create(&runtime_options, &runtime);
    if (status != KILN_STATUS_OK) return fail("kiln_runtime_create", status);

    char ort_version[64];
    kiln_runtime_onnxruntime_version(runtime, ort_version, sizeof ort_version, NULL);
    printf("ONNX Runtime %s\n", ort_version);

    kiln_model *model = NULL;
    status = kiln_model_load(runtime, argv[1], &model);
    if (status != KILN_STATUS_OK) {
        kiln_runtime_destroy(runtime);
        return fail("kiln_model_load", status);
    }

    kiln_generate_options options;
    kiln_generate_options_init(&options);
    options.prompt = argv[2];
    options.seed = 42;
    options.steps = (uint32_t)steps;

    kiln_image *image = NULL;
    status = kiln_model_generate(model, &options, &image);
    if (status == KILN_STATUS_OK) {
        printf("generated %ux%u\n", kiln_image_width(image), kiln_image_height(image));
        status = kiln_image_write_png(image, argv[3]);
        if (status != KILN_STATUS_OK) fail("kiln_image_write_png", status);
    } else {
        fail("kiln_model_generate", status);
    }

    kiln_image_free(image);
    kiln_model_free(model);
    kiln_runtime_destroy(runtime);
    return status == KILN_STATUS_OK ? 0 : 1;
}
