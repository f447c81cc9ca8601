/* sdxl: SDXL's second prompt and size conditioning from C.
 *
 *   sdxl MODEL_DIR PROMPT PROMPT_2 OUT.png
 *
 * Generates a 96x64 image from an SDXL export with PROMPT for the first text
 * encoder and PROMPT_2 for the second, telling the model the picture was a
 * 160x128 original cropped at (top 8, left 16). The fields are appended to
 * kiln_generate_options; zero means "as diffusers defaults" (the output size,
 * no crop). A model that is not SDXL refuses them with
 * KILN_STATUS_INVALID_ARGUMENT and a message naming the field. */
#include <stdio.h>

#include "kiln.h"

static int fail(const char *what, kiln_status status) {
    char message[1024];
    kiln_last_error_message(message, sizeof message, NULL);
    fprintf(stderr, "sdxl: %s failed: %s: %s\n", what, kiln_status_name(status), message);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: sdxl MODEL_DIR PROMPT PROMPT_2 OUT.png\n");
        return 2;
    }
    kiln_runtime *runtime = NULL;
    kiln_status status = kiln_runtime_create(NULL, &runtime);
    if (status != KILN_STATUS_OK) return fail("kiln_runtime_create", status);
    kiln_model *model = NULL;
    status = kiln_model_load(runtime, argv[1], &model);
    if (status != KILN_STATUS_OK) {
        kiln_runtime_destroy(runtime);
        return fail("kiln_model_load", status);
    }

    kiln_generate_options options;
    kiln_generate_options_init(&options);
    options.prompt = argv[2];
    options.prompt_2 = argv[3];        /* NULL or "" = the same as prompt */
    options.width = 96;
    options.height = 64;
    options.steps = 6;
    options.guidance_scale = 5.0f;
    options.scheduler = KILN_SCHEDULER_EULER;
    options.seed = 7;
    options.original_width = 160;      /* 0 x 0 = the output size */
    options.original_height = 128;
    options.crop_top = 8;
    options.crop_left = 16;

    kiln_image *image = NULL;
    status = kiln_model_generate(model, &options, &image);
    if (status == KILN_STATUS_OK) {
        printf("generated %ux%u\n", kiln_image_width(image), kiln_image_height(image));
        status = kiln_image_write_png(image, argv[4]);
        if (status != KILN_STATUS_OK) fail("kiln_image_write_png", status);
    } else {
        fail("kiln_model_generate", status);
    }

    kiln_image_free(image);
    kiln_model_free(model);
    kiln_runtime_destroy(runtime);
    return status == KILN_STATUS_OK ? 0 : 1;
}
