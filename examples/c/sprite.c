/* sprite: a game sprite with alpha from C, cut out by a matting graph.
 *
 *   sprite MODEL_DIR MATTING PROMPT OUT.png
 *
 * MATTING is a matting graph (a folder with model.onnx and config.json, or an
 * .onnx file), or "-" for the model folder's own matting/ if it has one.
 * Generates one image, cuts the sprite out with kiln_model_make_sprite (the
 * matting graph when there is one, else the chroma key), premultiplies its
 * alpha for the engine's blending, and writes it as a PNG. */
#include <stdio.h>
#include <string.h>

#include "kiln.h"

static int fail(const char *what, kiln_status status) {
    char message[1024];
    kiln_last_error_message(message, sizeof message, NULL);
    fprintf(stderr, "sprite: %s failed: %s: %s\n", what, kiln_status_name(status), message);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: sprite MODEL_DIR MATTING|- PROMPT OUT.png\n");
        return 2;
    }
    kiln_runtime *runtime = NULL;
    kiln_status status = kiln_runtime_create(NULL, &runtime);
    if (status != KILN_STATUS_OK) return fail("kiln_runtime_create", status);

    kiln_model_load_options load;
    kiln_model_load_options_init(&load);
    if (strcmp(argv[2], "-") != 0) load.matting_path = argv[2];
    kiln_model *model = NULL;
    status = kiln_model_load_with(runtime, argv[1], &load, &model);
    if (status != KILN_STATUS_OK) {
        kiln_runtime_destroy(runtime);
        return fail("kiln_model_load_with", status);
    }
    kiln_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    kiln_model_get_info(model, &info);

    kiln_generate_options options;
    kiln_generate_options_init(&options);
    options.prompt = argv[3];
    options.steps = 2;
    kiln_image *image = NULL, *sprite = NULL;
    status = kiln_model_generate(model, &options, &image);
    if (status != KILN_STATUS_OK) {
        fail("kiln_model_generate", status);
    } else {
        kiln_sprite_options sprite_options;
        kiln_sprite_options_init(&sprite_options);
        sprite_options.premultiplied = 1;
        kiln_rect box;
        status = kiln_model_make_sprite(model, image, &sprite_options, &sprite, &box);
        if (status != KILN_STATUS_OK) {
            fail("kiln_model_make_sprite", status);
        } else {
            printf("matte: %s, visible box %u,%u %ux%u\n", info.has_matting ? "graph" : "key", box.x, box.y, box.width,
                   box.height);
            status = kiln_image_write_png(sprite, argv[4]);
            if (status != KILN_STATUS_OK) fail("kiln_image_write_png", status);
        }
    }
    kiln_image_free(sprite);
    kiln_image_free(image);
    kiln_model_free(model);
    kiln_runtime_destroy(runtime);
    return status == KILN_STATUS_OK ? 0 : 1;
}
