/* cancel: stop a generation that is already running, and measure how long it
 * takes. Cancellation terminates the ONNX Runtime call in flight, so it takes
 * effect within one U-Net call, not at the end of the image.
 *
 *   cancel MODEL_DIR */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <time.h>
#endif

#include "kiln.h"

/* A monotonic clock in milliseconds: QueryPerformanceCounter on Windows
 * (MinGW and MSVC), clock_gettime elsewhere. */
static double now_ms(void) {
#ifdef _WIN32
    LARGE_INTEGER count, frequency;
    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&frequency);
    return (double)count.QuadPart * 1e3 / (double)frequency.QuadPart;
#else
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
#endif
}

static int fail(const char *what, kiln_status status) {
    char message[1024];
    kiln_last_error_message(message, sizeof message, NULL);
    fprintf(stderr, "cancel: %s failed: %s: %s\n", what, kiln_status_name(status), message);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: cancel MODEL_DIR\n");
        return 2;
    }
    kiln_runtime *runtime = NULL;
    kiln_status status = kiln_runtime_create(NULL, &runtime);
    if (status != KILN_STATUS_OK) return fail("kiln_runtime_create", status);
    kiln_model *model = NULL;
    if ((status = kiln_model_load(runtime, argv[1], &model)) != KILN_STATUS_OK) return fail("kiln_model_load", status);

    kiln_generate_options options;
    kiln_generate_options_init(&options);
    options.prompt = "polished marble";
    options.steps = 900; /* far more than will run */
    options.scheduler = KILN_SCHEDULER_DDIM;
    uint64_t job = 0;
    if ((status = kiln_job_submit(model, &options, NULL, &job)) != KILN_STATUS_OK) return fail("kiln_job_submit", status);

    kiln_job_progress progress = {0};
    progress.struct_size = sizeof progress;
    do { /* wait until it is really running */
        kiln_job_poll(job, &progress);
    } while (progress.step < 3 && progress.state < KILN_JOB_STATE_SUCCEEDED);

    double start = now_ms();
    kiln_job_cancel(job);
    uint32_t state = 0;
    kiln_job_wait(job, 60000, &state);
    double took = now_ms() - start;
    kiln_job_poll(job, &progress);

    char message[256];
    kiln_job_error_message(job, message, sizeof message, NULL);
    printf("cancelled at step %u of %u in %.2f ms (state %u): %s\n", progress.step, progress.total_steps, took, state, message);

    kiln_job_free(job);
    kiln_model_free(model);
    kiln_runtime_destroy(runtime);
    return state == KILN_JOB_STATE_CANCELLED ? 0 : 1;
}
