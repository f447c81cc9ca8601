/* controlnet: a texture shaped by a painted height map, from C.
 *
 *   controlnet MODEL_DIR CONTROLNET PROMPT OUT.png [EDGES.png]
 *
 * Paints a 64x64 height map (a raised disc on a ramp), finds its Canny edges
 * with kiln_image_canny (written to EDGES.png when given), and generates with
 * the model's controlnet/CONTROLNET guided by those edges: one kiln_control
 * entry in kiln_generate_options. Then asks for a ControlNet the model lacks
 * and shows that the model stays usable after the error. */
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include "kiln.h"

static int fail(const char *what, kiln_status status) {
    char message[1024];
    kiln_last_error_message(message, sizeof message, NULL);
    fprintf(stderr, "controlnet: %s failed: %s: %s\n", what, kiln_status_name(status), message);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: controlnet MODEL_DIR CONTROLNET PROMPT OUT.png [EDGES.png]\n");
        return 2;
    }
    enum { W = 64, H = 64 };
    static uint8_t height_map[W * H * 4];
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            int dx = x - 32, dy = y - 30;
            uint8_t v = (uint8_t)(x * 2);
            if (dx * dx + dy * dy < 18 * 18) v = 230;
            uint8_t *p = &height_map[(y * W + x) * 4];
            p[0] = p[1] = p[2] = v;
            p[3] = 255;
        }
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
    int rc = 0;
    kiln_image *painted = NULL, *edges = NULL, *image = NULL;
    status = kiln_image_create(W, H, height_map, sizeof height_map, 0, &painted);
    if (status != KILN_STATUS_OK) { rc = fail("kiln_image_create", status); goto done; }
    status = kiln_image_canny(painted, 100.0f, 200.0f, &edges);
    if (status != KILN_STATUS_OK) { rc = fail("kiln_image_canny", status); goto done; }
    if (argc == 6 && kiln_image_write_png(edges, argv[5]) != KILN_STATUS_OK) { rc = fail("kiln_image_write_png", status); goto done; }

    kiln_control control;
    kiln_control_init(&control);
    control.controlnet = argv[2];
    control.image = edges;
    control.scale = 0.8f;
    kiln_generate_options options;
    kiln_generate_options_init(&options);
    options.prompt = argv[3];
    options.steps = 4;
    options.seed = 7;
    options.controls = &control;
    options.control_count = 1;
    status = kiln_model_generate(model, &options, &image);
    if (status != KILN_STATUS_OK) { rc = fail("kiln_model_generate", status); goto done; }
    status = kiln_image_write_png(image, argv[4]);
    if (status != KILN_STATUS_OK) { rc = fail("kiln_image_write_png", status); goto done; }
    printf("wrote %s (%ux%u) guided by controlnet/%s\n", argv[4], kiln_image_width(image), kiln_image_height(image), argv[2]);

    /* A ControlNet the model does not have: a status and a message naming
     * it, and the model still generates. */
    kiln_image_free(image);
    image = NULL;
    control.controlnet = "no-such-controlnet";
    status = kiln_model_generate(model, &options, &image);
    char message[1024];
    kiln_last_error_message(message, sizeof message, NULL);
    printf("missing controlnet: %s: %s\n", kiln_status_name(status), message);
    options.control_count = 0;
    status = kiln_model_generate(model, &options, &image);
    if (status != KILN_STATUS_OK) { rc = fail("kiln_model_generate after the error", status); goto done; }
    printf("still usable\n");
done:
    kiln_image_free(image);
    kiln_image_free(edges);
    kiln_image_free(painted);
    kiln_model_free(model);
    kiln_runtime_destroy(runtime);
    return rc;
}
