/* Static native counterpart of `demo-app sleep SECS`: sleeps, then exits 0. As PID 1 of its
 * container it would ignore SIGTERM by default, so it exits 128+N on SIGTERM/SIGINT like a
 * well-behaved service (and like a wasmcell guest). */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static void stop(int sig) { _exit(128 + sig); }

int main(int argc, char **argv) {
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    unsigned secs = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 600;
    while (secs > 0) secs = sleep(secs);
    return 0;
}
