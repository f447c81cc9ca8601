/* stress: 8 threads x 50 jobs over two models, with random cancels and frees,
 * built with AddressSanitizer by tests/c_examples.rs. Checks that every job
 * ends in exactly one terminal state, that freed or stale ids are reported as
 * KILN_STATUS_INVALID_HANDLE, and that every job that succeeds produced exactly
 * the pixels the same request gives when run serially.
 *
 *   stress MODEL_DIR */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

#define THREADS 8
#define JOBS 50
#define SEEDS 4
#define SIDE 64
#define BYTES (SIDE * SIDE * 4)

static kiln_model *models[2];
static unsigned char expected[2][SEEDS][BYTES];
static const char *prompts[2] = {"brick wall", "rusty iron"};

typedef struct {
    unsigned seed;
    int succeeded, cancelled, failed, mismatched, bad;
} worker_result;

static unsigned next_random(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static void options_for(kiln_generate_options *o, int m, int seed) {
    kiln_generate_options_init(o);
    o->prompt = prompts[m];
    o->steps = 3;
    o->seed = (uint64_t)seed;
    o->scheduler = KILN_SCHEDULER_DDIM;
}

static void *worker(void *arg) {
    worker_result *r = arg;
    unsigned char pixels[BYTES];
    for (int i = 0; i < JOBS; ++i) {
        int m = next_random(&r->seed) % 2, seed = next_random(&r->seed) % SEEDS, action = next_random(&r->seed) % 4;
        kiln_generate_options o;
        options_for(&o, m, seed);
        uint64_t job = 0;
        if (kiln_job_submit(models[m], &o, NULL, &job) != KILN_STATUS_OK) { r->bad++; continue; }
        if (action == 0) kiln_job_cancel(job);
        if (action == 1) { /* free while queued or running: cancels and releases */
            if (kiln_job_free(job) != KILN_STATUS_OK) r->bad++;
            kiln_job_progress p = {0};
            p.struct_size = sizeof p;
            if (kiln_job_poll(job, &p) != KILN_STATUS_INVALID_HANDLE) r->bad++;
            continue;
        }
        uint32_t state = 0;
        if (kiln_job_wait(job, 120000, &state) != KILN_STATUS_OK) { r->bad++; continue; }
        switch (state) {
        case KILN_JOB_STATE_SUCCEEDED:
            r->succeeded++;
            if (kiln_job_copy_image(job, pixels, sizeof pixels, 0) != KILN_STATUS_OK) r->bad++;
            else if (memcmp(pixels, expected[m][seed], BYTES) != 0) r->mismatched++;
            break;
        case KILN_JOB_STATE_CANCELLED: r->cancelled++; break;
        case KILN_JOB_STATE_FAILED: r->failed++; break;
        default: r->bad++; /* not terminal after wait: never allowed */
        }
        if (action == 0 && state == KILN_JOB_STATE_SUCCEEDED) { /* cancel raced completion: fine */ }
        if (kiln_job_free(job) != KILN_STATUS_OK) r->bad++;
        if (kiln_job_free(job) != KILN_STATUS_INVALID_HANDLE) r->bad++; /* double free is reported */
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    kiln_runtime_options ro;
    kiln_runtime_options_init(&ro);
    ro.job_workers = 2;
    ro.intra_op_threads = 1;
    kiln_runtime *runtime = NULL;
    if (kiln_runtime_create(&ro, &runtime) != KILN_STATUS_OK) return 1;
    for (int m = 0; m < 2; ++m)
        if (kiln_model_load(runtime, argv[1], &models[m]) != KILN_STATUS_OK) return 1;
    for (int m = 0; m < 2; ++m) /* the serial reference */
        for (int s = 0; s < SEEDS; ++s) {
            kiln_generate_options o;
            options_for(&o, m, s);
            if (kiln_model_generate_into(models[m], &o, expected[m][s], BYTES, 0) != KILN_STATUS_OK) return 1;
        }

    pthread_t threads[THREADS];
    worker_result results[THREADS];
    for (int t = 0; t < THREADS; ++t) {
        memset(&results[t], 0, sizeof results[t]);
        results[t].seed = 1234u + (unsigned)t * 7919u;
        pthread_create(&threads[t], NULL, worker, &results[t]);
    }
    worker_result total = {0};
    for (int t = 0; t < THREADS; ++t) {
        pthread_join(threads[t], NULL);
        total.succeeded += results[t].succeeded;
        total.cancelled += results[t].cancelled;
        total.failed += results[t].failed;
        total.mismatched += results[t].mismatched;
        total.bad += results[t].bad;
    }
    kiln_model_free(models[0]);
    kiln_model_free(models[1]);
    kiln_runtime_destroy(runtime);
    printf("succeeded %d, cancelled %d, failed %d, mismatched %d, protocol errors %d\n", total.succeeded,
           total.cancelled, total.failed, total.mismatched, total.bad);
    return (total.failed == 0 && total.mismatched == 0 && total.bad == 0 && total.succeeded > 0 && total.cancelled > 0) ? 0 : 1;
}
