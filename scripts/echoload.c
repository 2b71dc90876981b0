/* Echo load generator for scripts/bench: N connections, each sends a fixed-size
 * message and waits for all of it to come back, for D seconds. Prints
 * "roundtrips=<n> seconds=<s> errors=<e>". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: echoload PORT CONNS MSGSIZE SECONDS\n");
        return 2;
    }
    int port = atoi(argv[1]), conns = atoi(argv[2]), size = atoi(argv[3]);
    double seconds = atof(argv[4]);
    char *msg = malloc(size), buf[65536];
    memset(msg, 'x', size);
    int *got = calloc(conns, sizeof(int)), *fds = calloc(conns, sizeof(int));
    int ep = epoll_create1(0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    long errors = 0, roundtrips = 0;
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); return 1; }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fds[i] = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        if (send(fd, msg, size, 0) != size) errors++;
    }
    double end = now() + seconds;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            int i = evs[k].data.u32;
            ssize_t r = recv(fds[i], buf, sizeof buf, 0);
            if (r <= 0) { errors++; epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL); continue; }
            got[i] += r;
            if (got[i] >= size) {
                got[i] = 0;
                roundtrips++;
                if (send(fds[i], msg, size, 0) != size) errors++;
            }
        }
    }
    printf("roundtrips=%ld seconds=%.3f errors=%ld\n", roundtrips, seconds, errors);
    return 0;
}
