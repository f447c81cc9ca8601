/* upscale_job: a tileable texture at 4x its generated size without ever
 * blocking the frame loop. One job generates it on a seamless view of the
 * model and upscales it, seamless on both axes, on Kiln's job workers; the
 * game polls it once per "frame" and shows one progress count (U-Net calls,
 * then tiles). The handles go as soon as the job is queued: it holds what it
 * needs. (An image the game already has is upscaled the same way with
 * kiln_job_submit_upscale.)
 *
 *   upscale_job MODEL_DIR UPSCALER OUT.png */
#include <stdio.h>
#include <stdlib.h>

#include "kiln.h"

static int fail(const char *what, kiln_status status) {
    char message[1024];
    kiln_last_error_message(message, sizeof message, NULL);
    fprintf(stderr, "upscale_job: %s failed: %s: %s\n", what, kiln_status_name(status), message);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: upscale_job MODEL_DIR UPSCALER OUT.png\n");
        return 2;
    }
    kiln_status status;
    kiln_runtime *runtime = NULL;
    if ((status = kiln_runtime_create(NULL, &runtime)) != KILN_STATUS_OK) return fail("kiln_runtime_create", status);
    kiln_model *model = NULL, *tiled = NULL;
    if ((status = kiln_model_load(runtime, argv[1], &model)) != KILN_STATUS_OK) return fail("kiln_model_load", status);
    if ((status = kiln_model_seamless(model, KILN_SEAMLESS_XY, &tiled)) != KILN_STATUS_OK) return fail("kiln_model_seamless", status);
    kiln_upscaler *upscaler = NULL;
    if ((status = kiln_upscaler_load(runtime, argv[2], &upscaler)) != KILN_STATUS_OK) return fail("kiln_upscaler_load", status);

    kiln_generate_options options;
    kiln_generate_options_init(&options);
    options.prompt = "mossy cobblestone";
    options.steps = 8;
    options.seed = 7;
    kiln_upscale_options upscale;
    kiln_upscale_options_init(&upscale);
    upscale.tile = 32; /* small tiles: bounded memory, and progress to show */
    uint64_t job = 0;
    /* The upscale wraps on the view's seamless axes, so the 4x texture still tiles. */
    if ((status = kiln_job_submit_upscaled(tiled, &options, upscaler, &upscale, NULL, &job)) != KILN_STATUS_OK)
        return fail("kiln_job_submit_upscaled", status);
    kiln_model_free(tiled); /* the job holds the model and the upscaler */
    kiln_model_free(model);
    kiln_upscaler_free(upscaler);

    kiln_job_progress progress = {0};
    progress.struct_size = sizeof progress;
    uint32_t shown = (uint32_t)-1;
    for (unsigned long frame = 0;; ++frame) { /* one iteration = one game frame */
        if ((status = kiln_job_poll(job, &progress)) != KILN_STATUS_OK) return fail("kiln_job_poll", status);
        if (progress.step != shown || progress.state >= KILN_JOB_STATE_SUCCEEDED) { /* a progress bar would move */
            shown = progress.step;
            printf("frame %lu: state %u, %u/%u\n", frame, progress.state, progress.step, progress.total_steps);
        }
        if (progress.state >= KILN_JOB_STATE_SUCCEEDED) break;
        /* ... render the frame ... */
    }
    if (progress.state != KILN_JOB_STATE_SUCCEEDED) {
        char message[512];
        kiln_job_error_message(job, message, sizeof message, NULL);
        fprintf(stderr, "upscale_job: the job ended: %s\n", message);
        return 1;
    }

    /* Copy the result out (into an engine texture; here a PNG). */
    uint32_t width = 0, height = 0;
    kiln_job_image_size(job, &width, &height);
    unsigned char *pixels = malloc((size_t)width * height * 4);
    if ((status = kiln_job_copy_image(job, pixels, (size_t)width * height * 4, 0)) != KILN_STATUS_OK)
        return fail("kiln_job_copy_image", status);
    kiln_job_free(job);
    kiln_image *texture = NULL;
    if ((status = kiln_image_create(width, height, pixels, (size_t)width * height * 4, 0, &texture)) != KILN_STATUS_OK)
        return fail("kiln_image_create", status);
    free(pixels);
    if ((status = kiln_image_write_png(texture, argv[3])) != KILN_STATUS_OK) return fail("kiln_image_write_png", status);
    printf("wrote %s (%ux%u, tiles seamlessly)\n", argv[3], width, height);
    kiln_image_free(texture);
    kiln_runtime_destroy(runtime);
    return 0;
}
