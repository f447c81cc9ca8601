/* async_poll: the frame-loop pattern. Loads the model as a job behind a
 * loading bar, then submits two jobs, polls them once per "frame" without ever
 * blocking, shows progress, cancels the second, and copies the first into an
 * engine-owned texture buffer with a row pitch.
 *
 *   async_poll MODEL_DIR */
#include <stdio.h>
#include <stdlib.h>

#include "kiln.h"

static int fail(const char *what, kiln_status status) {
    char message[1024];
    kiln_last_error_message(message, sizeof message, NULL);
    fprintf(stderr, "async_poll: %s failed: %s: %s\n", what, kiln_status_name(status), message);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: async_poll MODEL_DIR\n");
        return 2;
    }
    kiln_runtime *runtime = NULL;
    kiln_status status = kiln_runtime_create(NULL, &runtime);
    if (status != KILN_STATUS_OK) return fail("kiln_runtime_create", status);
    /* The loading screen: a load job's progress counts KiB of the graphs whose
     * sessions are made, so step / total_steps is the bar's fraction. */
    uint64_t load_job = 0;
    status = kiln_job_submit_model_load(runtime, argv[1], NULL, NULL, &load_job);
    if (status != KILN_STATUS_OK) return fail("kiln_job_submit_model_load", status);
    kiln_job_progress loading = {0};
    loading.struct_size = sizeof loading;
    unsigned shown = 101;
    do {
        if ((status = kiln_job_poll(load_job, &loading)) != KILN_STATUS_OK) return fail("kiln_job_poll", status);
        unsigned percent = (unsigned)(100.0 * loading.step / loading.total_steps);
        if (percent != shown) {
            printf("loading %u%%", shown = percent);
            /* 0 of 1 until the job knows which graphs it opens */
            if (loading.total_steps > 1) printf(" (%u of %u KiB)", loading.step, loading.total_steps);
            printf("\n");
        }
        /* ... render the loading screen ... */
    } while (loading.state < KILN_JOB_STATE_SUCCEEDED);
    if (loading.state != KILN_JOB_STATE_SUCCEEDED) {
        char message[1024];
        kiln_job_error_message(load_job, message, sizeof message, NULL);
        fprintf(stderr, "async_poll: loading %s ended in state %u: %s\n", argv[1], loading.state, message);
        return 1;
    }
    kiln_model *model = NULL;
    if ((status = kiln_job_model(load_job, &model)) != KILN_STATUS_OK) return fail("kiln_job_model", status);
    kiln_job_free(load_job);

    kiln_generate_options options;
    kiln_generate_options_init(&options);
    options.prompt = "weathered oak planks";
    options.steps = 12;
    uint64_t texture_job = 0, doomed_job = 0;
    kiln_job_options job_options;
    kiln_job_options_init(&job_options);
    job_options.priority = 1;
    if ((status = kiln_job_submit(model, &options, &job_options, &texture_job)) != KILN_STATUS_OK) return fail("kiln_job_submit", status);
    options.steps = 900; /* long enough to still be queued or running when cancelled */
    if ((status = kiln_job_submit(model, &options, NULL, &doomed_job)) != KILN_STATUS_OK) return fail("kiln_job_submit", status);

    kiln_job_progress progress = {0};
    progress.struct_size = sizeof progress;
    unsigned frame = 0;
    for (;; ++frame) { /* one iteration = one game frame */
        if ((status = kiln_job_poll(texture_job, &progress)) != KILN_STATUS_OK) return fail("kiln_job_poll", status);
        if (frame % 50 == 0) printf("frame %u: state %u, step %u/%u\n", frame, progress.state, progress.step, progress.total_steps);
        if (progress.state >= KILN_JOB_STATE_SUCCEEDED) break;
        if (frame == 1) kiln_job_cancel(doomed_job); /* the player changed their mind */
        /* ... render the frame ... */
    }
    if (progress.state != KILN_JOB_STATE_SUCCEEDED) {
        char message[512];
        kiln_job_error_message(texture_job, message, sizeof message, NULL);
        fprintf(stderr, "async_poll: job ended in state %u: %s\n", progress.state, message);
        return 1;
    }
    uint32_t width = 0, height = 0;
    kiln_job_image_size(texture_job, &width, &height);
    size_t pitch = (size_t)width * 4 + 64; /* engines often pad rows */
    unsigned char *texture = malloc(pitch * height);
    status = kiln_job_copy_image(texture_job, texture, pitch * height, pitch);
    if (status != KILN_STATUS_OK) return fail("kiln_job_copy_image", status);
    printf("texture %ux%u ready after %u frames; first pixel %u %u %u %u\n", width, height, frame,
           texture[0], texture[1], texture[2], texture[3]);

    uint32_t doomed_state = 0;
    kiln_job_wait(doomed_job, 60000, &doomed_state);
    printf("second job state %u (cancelled = %u)\n", doomed_state, (unsigned)KILN_JOB_STATE_CANCELLED);

    free(texture);
    kiln_job_free(texture_job);
    kiln_job_free(doomed_job);
    kiln_model_free(model);
    kiln_runtime_destroy(runtime);
    return doomed_state == KILN_JOB_STATE_CANCELLED ? 0 : 1;
}
