/* lifetimes: the documented lifetimes under concurrency, 8 threads, built with
 * AddressSanitizer (leaks on) by tests/c_examples.rs.
 *  - Each thread loads its own model from one shared runtime, submits jobs,
 *    and frees its model while they are queued or running: jobs keep what they
 *    need, and run to the end.
 *  - The main thread destroys the runtime while those jobs run: models and jobs
 *    keep what they need of it.
 *  - Pairs of threads share job ids: one polls them in a loop while the other
 *    frees them; every poll answers OK or KILN_STATUS_INVALID_HANDLE.
 * Every job ends in exactly one terminal state.
 *
 *   lifetimes MODEL_DIR */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

#define THREADS 8
#define JOBS 2

static kiln_runtime *runtime;
static const char *model_dir;
static pthread_barrier_t loaded, destroyed;
static uint64_t shared_ids[THREADS / 2][JOBS];
static volatile int freed_all[THREADS / 2];

typedef struct { int index, bad, succeeded, polls_ok, polls_stale; } result;

static void *worker(void *arg) {
    result *r = arg;
    kiln_model *model = NULL;
    if (kiln_model_load(runtime, model_dir, &model) != KILN_STATUS_OK) r->bad++;
    pthread_barrier_wait(&loaded);
    pthread_barrier_wait(&destroyed); /* the runtime handle is gone from here on */
    int pair = r->index / 2;
    if (r->index % 2 == 0) {
        /* Submitter: queue jobs, free the model at once, then free the jobs
         * (after waiting for them) while the partner polls them. */
        kiln_generate_options o;
        kiln_generate_options_init(&o);
        o.prompt = "brick";
        o.steps = 3;
        o.scheduler = KILN_SCHEDULER_DDIM;
        for (int j = 0; j < JOBS; ++j) {
            uint64_t id = 0;
            if (kiln_job_submit(model, &o, NULL, &id) != KILN_STATUS_OK) r->bad++;
            __atomic_store_n(&shared_ids[pair][j], id, __ATOMIC_SEQ_CST);
        }
        kiln_model_free(model); /* while its jobs are queued or running */
        model = NULL;
        for (int j = 0; j < JOBS; ++j) {
            uint32_t state = 0;
            if (kiln_job_wait(shared_ids[pair][j], 120000, &state) != KILN_STATUS_OK) r->bad++;
            if (state == KILN_JOB_STATE_SUCCEEDED) r->succeeded++;
            else r->bad++;
            if (kiln_job_free(shared_ids[pair][j]) != KILN_STATUS_OK) r->bad++;
        }
        __atomic_store_n(&freed_all[pair], 1, __ATOMIC_SEQ_CST);
    } else {
        /* Poller: poll the partner's ids until it has freed them all. */
        kiln_model_free(model);
        while (!__atomic_load_n(&freed_all[pair], __ATOMIC_SEQ_CST)) {
            for (int j = 0; j < JOBS; ++j) {
                uint64_t id = __atomic_load_n(&shared_ids[pair][j], __ATOMIC_SEQ_CST);
                if (id == 0) continue;
                kiln_job_progress p;
                memset(&p, 0, sizeof p);
                p.struct_size = sizeof p;
                kiln_status s = kiln_job_poll(id, &p);
                if (s == KILN_STATUS_OK) r->polls_ok++;
                else if (s == KILN_STATUS_INVALID_HANDLE) r->polls_stale++;
                else r->bad++;
            }
            struct timespec pause = {0, 200000}; /* 0.2 ms: race, but leave the cores to the jobs */
            nanosleep(&pause, NULL);
        }
        /* After the free every id is stale. */
        for (int j = 0; j < JOBS; ++j) {
            kiln_job_progress p;
            memset(&p, 0, sizeof p);
            p.struct_size = sizeof p;
            if (kiln_job_poll(shared_ids[pair][j], &p) != KILN_STATUS_INVALID_HANDLE) r->bad++;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    model_dir = argv[1];
    kiln_runtime_options ro;
    kiln_runtime_options_init(&ro);
    ro.job_workers = 2;
    ro.intra_op_threads = 1;
    ro.sequential_load = 1;
    if (kiln_runtime_create(&ro, &runtime) != KILN_STATUS_OK) return 1;
    pthread_barrier_init(&loaded, NULL, THREADS + 1);
    pthread_barrier_init(&destroyed, NULL, THREADS + 1);
    pthread_t threads[THREADS];
    result results[THREADS];
    for (int t = 0; t < THREADS; ++t) {
        memset(&results[t], 0, sizeof results[t]);
        results[t].index = t;
        pthread_create(&threads[t], NULL, worker, &results[t]);
    }
    pthread_barrier_wait(&loaded);
    kiln_runtime_destroy(runtime); /* models loaded from it stay valid */
    runtime = NULL;
    pthread_barrier_wait(&destroyed);
    result total = {0};
    for (int t = 0; t < THREADS; ++t) {
        pthread_join(threads[t], NULL);
        total.bad += results[t].bad;
        total.succeeded += results[t].succeeded;
        total.polls_ok += results[t].polls_ok;
        total.polls_stale += results[t].polls_stale;
    }
    printf("succeeded %d of %d, polls ok %d, polls of freed ids %d, protocol errors %d\n", total.succeeded,
           THREADS / 2 * JOBS, total.polls_ok, total.polls_stale, total.bad);
    return (total.bad == 0 && total.succeeded == THREADS / 2 * JOBS) ? 0 : 1;
}
