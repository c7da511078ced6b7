/*
 * C0: the benchmark's "limit" anchor (BENCH.md), not a peer.
 *
 * One epoll loop, LF framing, ASCII upper-case, DESCONEXION ends the session,
 * no limits and none of the rest of the protocol: what a line echo costs
 * when nothing but the system calls is paid.  It prints the address it
 * listens on as its first line, like every server the bench starts:
 *
 *     c0 --host 127.0.0.1 --port 0
 *
 * A client that does not read is not read from while its unsent output is
 * over OUT_LIMIT, so a pipelining client cannot make it grow without bound.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE 65536
#define OUT_LIMIT (1 << 20)
#define MAX_EVENTS 256

struct conn {
    int fd;
    int closing;   /* DESCONEXION answered: close once the output is sent */
    char *in;      /* an unfinished line */
    size_t in_len, in_cap;
    char *out;     /* unsent replies */
    size_t out_len, out_cap, out_off;
    unsigned events;
};

static int epfd;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t cap2 = *cap ? *cap : 256;
    while (cap2 < need) cap2 *= 2;
    char *grown = realloc(*buf, cap2);
    if (!grown) die("realloc");
    *buf = grown;
    *cap = cap2;
}

static void set_events(struct conn *c, unsigned events) {
    if (events == c->events) return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    c->events = events;
}

static void drop(struct conn *c) {
    close(c->fd); /* closing the only descriptor removes it from the epoll set */
    free(c->in);
    free(c->out);
    free(c);
}

static int is_disconnect(const char *line, size_t len) {
    static const char word[] = "DESCONEXION";
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
    while (len && (*line == ' ' || *line == '\t')) line++, len--;
    if (len != sizeof word - 1) return 0;
    for (size_t i = 0; i < len; i++)
        if ((line[i] & ~0x20) != word[i]) return 0;
    return 1;
}

/* Append the reply to every complete line of data[0..len) (after any held part). */
static void feed(struct conn *c, const char *data, size_t len) {
    size_t start = 0;
    for (size_t i = 0; i < len && !c->closing; i++) {
        if (data[i] != '\n') continue;
        const char *line = data + start;
        size_t line_len = i - start;
        if (c->in_len) {
            reserve(&c->in, &c->in_cap, c->in_len + line_len);
            memcpy(c->in + c->in_len, line, line_len);
            line = c->in;
            line_len += c->in_len;
            c->in_len = 0;
        }
        reserve(&c->out, &c->out_cap, c->out_len + line_len + 1);
        char *dst = c->out + c->out_len;
        for (size_t k = 0; k < line_len; k++) {
            char ch = line[k];
            dst[k] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
        }
        dst[line_len] = '\n';
        c->out_len += line_len + 1;
        if (is_disconnect(line, line_len)) c->closing = 1;
        start = i + 1;
    }
    if (!c->closing && start < len) {
        reserve(&c->in, &c->in_cap, c->in_len + (len - start));
        memcpy(c->in + c->in_len, data + start, len - start);
        c->in_len += len - start;
    }
}

/* Send what is pending; returns -1 if the connection is gone. */
static int flush(struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->closing && c->out_len == 0) return -1;
    size_t pending = c->out_len - c->out_off;
    set_events(c, (pending > OUT_LIMIT ? 0 : EPOLLIN) | (pending ? EPOLLOUT : 0));
    return 0;
}

static void on_ready(struct conn *c, unsigned events, char *buf) {
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        if (flush(c) < 0) {
            drop(c);
            return;
        }
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)) || !(c->events & EPOLLIN)) return;
    ssize_t n = recv(c->fd, buf, READ_SIZE, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        drop(c);
        return;
    }
    feed(c, buf, (size_t)n);
    if (flush(c) < 0) drop(c);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 5000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_storage addr = {0};
    socklen_t alen;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)port);
        alen = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)port);
        alen = sizeof *v6;
    } else {
        fprintf(stderr, "error: not an IP address: %s\n", host);
        return 2;
    }
    int lfd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&addr, alen) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    int bound = ntohs(addr.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
    if (addr.ss_family == AF_INET6) printf("C0 listening on [%s]:%d\n", host, bound);
    else printf("C0 listening on %s:%d\n", host, bound);
    fflush(stdout);

    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl");
    static char buf[READ_SIZE];
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c) {
                on_ready(c, events[i].events, buf);
                continue;
            }
            for (;;) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                if (fd < 0) break; /* EAGAIN, or a client that gave up */
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                c = calloc(1, sizeof *c);
                if (!c) die("calloc");
                c->fd = fd;
                c->events = EPOLLIN;
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev) < 0) die("epoll_ctl");
            }
        }
    }
}
