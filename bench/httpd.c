/* Static native HTTP server: the ceiling for `make bench`'s HTTP figures. HTTP/1.1 with
 * keep-alive, one thread per connection, answers every request with a fixed 20-byte body
 * (the size of demo-http's `GET /`). Request bodies are not expected (GET only).
 *     httpd PORT   (listens on 127.0.0.1:PORT; SIGTERM/SIGINT exit 128+N) */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\n"
    "hello from native!!\n";

static void stop(int sig) { _exit(128 + sig); }

static void *serve(void *arg) {
    int fd = (int)(long)arg;
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n <= 0) break;
        have += (size_t)n;
        /* Answer every complete request head in the buffer. */
        char *start = buf, *end;
        while ((end = memmem(start, have - (size_t)(start - buf), "\r\n\r\n", 4)) != NULL) {
            if (write(fd, RESPONSE, sizeof RESPONSE - 1) < 0) goto done;
            start = end + 4;
        }
        have -= (size_t)(start - buf);
        memmove(buf, start, have);
        if (have == sizeof buf) break; /* a head larger than the buffer */
    }
done:
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    signal(SIGPIPE, SIG_IGN);
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 1024) < 0) return 1;
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(long)c) != 0) { close(c); continue; }
        pthread_detach(t);
    }
}
