/* paho_race.c -- an LD_PRELOAD library that makes paho's lost wake-up
 * happen in every run instead of one run in five, to check that the pipeline
 * gets over it in storage, the service that runs paho (README: Performance,
 * "A stall of about a second").
 *
 * paho 1.3.12's send thread looks at its queue, then, if empty, locks a
 * condition variable's mutex and waits on it for up to 1 s; a message queued
 * between the look and the wait is not noticed until the second is up. Its
 * wait starts with clock_gettime(CLOCK_REALTIME) (Thread_wait_cond), so
 * sleeping WIDEN_US (default 500) microseconds there, in the thread paho
 * names "MQTTAsync_send", widens that window from a few microseconds to half
 * a millisecond. Diagnosis only: never linked into a service.
 *
 *   cc -shared -fPIC -o /tmp/paho_race.so bench/paho_race.c -ldl
 *   bench/bench.py --only single,half --env LD_PRELOAD=/tmp/paho_race.so
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    static int (*real)(clockid_t, struct timespec *);
    if (!real)
        real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    if (clk == CLOCK_REALTIME) {
        char name[16] = "";
        pthread_getname_np(pthread_self(), name, sizeof name);
        if (!strcmp(name, "MQTTAsync_send")) {
            const char *us = getenv("WIDEN_US");
            usleep(us ? (useconds_t)atoi(us) : 500);
        }
    }
    return real(clk, ts);
}
