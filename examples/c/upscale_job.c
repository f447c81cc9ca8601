/* upscale_job: a tileable texture at 4x its generated size without ever
 * blocking the frame loop. A seamless view of the model generates as one job;
 * its image is upscaled, seamless on both axes, as a second job on the same
 * workers; the game polls both once per "frame" and shows progress. The
 * handles go as soon as the jobs are queued: each job holds what it needs.
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

/* Polls `job` once per frame until it ends; returns its final state. */
static uint32_t run_frames(uint64_t job, const char *what) {
    kiln_job_progress progress = {0};
    progress.struct_size = sizeof progress;
    for (unsigned frame = 0;; ++frame) { /* one iteration = one game frame */
        if (kiln_job_poll(job, &progress) != KILN_STATUS_OK) return KILN_JOB_STATE_FAILED;
        if (frame % 200 == 0 || progress.state >= KILN_JOB_STATE_SUCCEEDED)
            printf("%s: frame %u, state %u, %u/%u\n", what, frame, progress.state, progress.step, progress.total_steps);
        if (progress.state >= KILN_JOB_STATE_SUCCEEDED) return progress.state;
        /* ... render the frame ... */
    }
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

    /* 1. Generate the tileable texture as a job. */
    kiln_generate_options options;
    kiln_generate_options_init(&options);
    options.prompt = "mossy cobblestone";
    options.steps = 8;
    options.seed = 7;
    uint64_t generate_job = 0;
    if ((status = kiln_job_submit(tiled, &options, NULL, &generate_job)) != KILN_STATUS_OK) return fail("kiln_job_submit", status);
    kiln_model_free(tiled); /* the job holds the model */
    kiln_model_free(model);
    if (run_frames(generate_job, "generate") != KILN_JOB_STATE_SUCCEEDED) return fail("the generation job", KILN_STATUS_OK);
    uint32_t width = 0, height = 0;
    kiln_job_image_size(generate_job, &width, &height);
    unsigned char *pixels = malloc((size_t)width * height * 4);
    if ((status = kiln_job_copy_image(generate_job, pixels, (size_t)width * height * 4, 0)) != KILN_STATUS_OK)
        return fail("kiln_job_copy_image", status);
    kiln_job_free(generate_job);

    /* 2. Upscale it as a job, seamless on both axes so it still tiles. */
    kiln_image *texture = NULL;
    if ((status = kiln_image_create(width, height, pixels, (size_t)width * height * 4, 0, &texture)) != KILN_STATUS_OK)
        return fail("kiln_image_create", status);
    free(pixels);
    kiln_upscale_options upscale;
    kiln_upscale_options_init(&upscale);
    upscale.seamless = KILN_SEAMLESS_XY;
    upscale.tile = 32; /* small tiles: bounded memory, and progress to show */
    uint64_t upscale_job = 0;
    if ((status = kiln_job_submit_upscale(upscaler, texture, &upscale, NULL, &upscale_job)) != KILN_STATUS_OK)
        return fail("kiln_job_submit_upscale", status);
    kiln_image_free(texture); /* copied at submit */
    kiln_upscaler_free(upscaler); /* the job holds the graph */
    if (run_frames(upscale_job, "upscale") != KILN_JOB_STATE_SUCCEEDED) {
        char message[512];
        kiln_job_error_message(upscale_job, message, sizeof message, NULL);
        fprintf(stderr, "upscale_job: the upscale ended: %s\n", message);
        return 1;
    }

    /* 3. Copy the result out (into an engine texture; here a PNG). */
    kiln_job_image_size(upscale_job, &width, &height);
    pixels = malloc((size_t)width * height * 4);
    if ((status = kiln_job_copy_image(upscale_job, pixels, (size_t)width * height * 4, 0)) != KILN_STATUS_OK)
        return fail("kiln_job_copy_image", status);
    kiln_job_free(upscale_job);
    if ((status = kiln_image_create(width, height, pixels, (size_t)width * height * 4, 0, &texture)) != KILN_STATUS_OK)
        return fail("kiln_image_create", status);
    free(pixels);
    if ((status = kiln_image_write_png(texture, argv[3])) != KILN_STATUS_OK) return fail("kiln_image_write_png", status);
    printf("wrote %s (%ux%u, tiles seamlessly)\n", argv[3], width, height);
    kiln_image_free(texture);
    kiln_runtime_destroy(runtime);
    return 0;
}
