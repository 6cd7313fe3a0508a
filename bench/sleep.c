/* Static native counterpart of `demo-app sleep SECS`: sleeps, then exits 0. */
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    unsigned secs = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 600;
    while (secs > 0) secs = sleep(secs);
    return 0;
}
