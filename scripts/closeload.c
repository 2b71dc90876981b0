/* One-request connections for scripts/bench proxy: N at a time, each connects, sends
 * GET / with Connection: close (after a PROXY v2 header when PROXY is 1), reads to EOF,
 * and is replaced, for D seconds. Prints "requests=<n> seconds=<s> errors=<e>". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char V2[] = "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c"
                         "\xc0\x00\x02\x07\xc0\x00\x02\x01\x10\x92\x00\x50";
static const char REQ[] = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
static struct sockaddr_in addr;
static char msg[256];
static int msglen, ep;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int start(int slot, char *got) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) return -1;
    if (send(fd, msg, msglen, 0) != msglen) { close(fd); return -1; }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((unsigned long)slot << 32) | fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    got[slot] = 0;
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: closeload PORT CONNS SECONDS PROXY\n");
        return 2;
    }
    int port = atoi(argv[1]), conns = atoi(argv[2]), proxy = atoi(argv[4]);
    double seconds = atof(argv[3]);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (proxy) { memcpy(msg, V2, 28); msglen = 28; }
    memcpy(msg + msglen, REQ, sizeof REQ - 1);
    msglen += sizeof REQ - 1;
    ep = epoll_create1(0);
    char *got = calloc(conns, 1), buf[65536];
    long requests = 0, errors = 0;
    for (int i = 0; i < conns; i++)
        if (start(i, got) < 0) errors++;
    double end = now() + seconds;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            int slot = evs[k].data.u64 >> 32, fd = evs[k].data.u64 & 0xffffffff;
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r > 0) {
                if (!got[slot]) got[slot] = r >= 12 && !memcmp(buf, "HTTP/1.1 200", 12) ? 1 : 2;
                continue;
            }
            if (got[slot] == 1) requests++; else errors++;
            close(fd);  /* (closing drops it from the epoll set) */
            if (start(slot, got) < 0) errors++;
        }
    }
    printf("requests=%ld seconds=%.3f errors=%ld\n", requests, seconds, errors);
    return 0;
}
