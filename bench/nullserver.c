/*
 * nullserver - a do-nothing tlsmgr(8) look-alike that answers from fixed replies
 *
 * SYNOPSIS
 *	nullserver -s socket [-z session_bytes] [-e seed_bytes] [-M] [-B]
 *
 * DESCRIPTION
 *	nullserver listens on the AF_UNIX stream socket `socket` (removed
 *	first if it exists, mode 0666) and serves any number of clients
 *	from one epoll loop. It sends tlsmgr's greeting
 *	(protocol=tlsmgr_protocol) on accept, reads attribute lists ("0"
 *	format: name NUL value NUL ..., ended by an empty name) with a
 *	streaming parser, and answers each complete request with a reply
 *	prepared at start-up, chosen by the request name only:
 *	    seed      status=0 seed=<seed_bytes zero bytes, base64>
 *	    lookup    status=0 session=<session_bytes zero bytes, base64>
 *	    update    status=0
 *	    delete    status=0
 *	    policy    status=0 cachable=1 timeout=3600
 *	    other     status=FAIL
 *	It stores nothing and looks at no other attribute. Replies to all
 *	the requests found in one read go out in one write, as a tuned
 *	server would batch them. It is the ceiling against which the load
 *	generator (bench/loadgen.c) shows that it is not the bottleneck.
 *
 *	-M	every lookup misses: status=4294967295 session= (empty).
 *	-B	broken on purpose: seed replies say OK with an empty seed, a
 *		reply the load generator must reject (used by its test).
 *
 *	It runs until it is killed (SIGTERM or SIGINT end it at once).
 *
 * DIAGNOSTICS
 *	Start-up errors (socket path too long, bind, listen) are printed on
 *	stderr and the exit status is 1. A client that breaks the attribute
 *	framing (a name longer than 64 bytes) is disconnected.
 *
 * BUGS
 *	Unbounded output buffering per client (clients are trusted).
 *
 * SEE ALSO
 *	bench/loadgen.c, bench/tlsmgr_bench.py
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_NAME	64
#define READ_BUF	65536

static const char greeting[] = "protocol\0tlsmgr_protocol\0";	/* + implicit NUL */

struct reply {
	const char *name;		/* request name */
	char *bytes;
	size_t len;
};

static struct reply replies[6];
static struct reply fail_reply;

struct client {
	int fd;
	int in_value;
	int nattr;
	size_t nlen;
	char name[MAX_NAME + 1];
	size_t rlen;
	char request[MAX_NAME + 1];	/* value of the first attribute */
	char *out;
	size_t out_len, out_cap, out_off;
	int want_out;			/* EPOLLOUT registered */
};

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "nullserver: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static char *zero_b64(int nbytes, size_t *len)
{
	size_t n = 4 * (((size_t) nbytes + 2) / 3);
	char *s = malloc(n + 1);
	size_t i;

	if (s == NULL)
		die("out of memory");
	for (i = 0; i < n; i++)
		s[i] = 'A';
	if (nbytes % 3 == 1)
		s[n - 2] = s[n - 1] = '=';
	else if (nbytes % 3 == 2)
		s[n - 1] = '=';
	s[n] = 0;
	*len = n;
	return s;
}

/* Build "name\0value\0...\0" from a NULL-terminated list of strings. */
static struct reply make_reply(const char *request, ...)
{
	struct reply r = {.name = request};
	va_list ap;
	const char *s;
	size_t cap = 64;

	r.bytes = malloc(cap);
	va_start(ap, request);
	while ((s = va_arg(ap, const char *)) != NULL) {
		size_t n = strlen(s) + 1;

		while (r.len + n + 1 > cap)
			r.bytes = realloc(r.bytes, cap *= 2);
		if (r.bytes == NULL)
			die("out of memory");
		memcpy(r.bytes + r.len, s, n);
		r.len += n;
	}
	va_end(ap);
	r.bytes[r.len++] = 0;
	return r;
}

static void make_replies(int session_bytes, int seed_bytes, int miss, int broken)
{
	size_t n;
	char *seed = zero_b64(seed_bytes, &n), *session = zero_b64(session_bytes, &n);

	replies[0] = make_reply("seed", "status", "0", "seed", broken ? "" : seed, NULL);
	replies[1] = miss ? make_reply("lookup", "status", "4294967295", "session", "", NULL)
	    : make_reply("lookup", "status", "0", "session", session, NULL);
	replies[2] = make_reply("update", "status", "0", NULL);
	replies[3] = make_reply("delete", "status", "0", NULL);
	replies[4] = make_reply("policy", "status", "0", "cachable", "1", "timeout", "3600", NULL);
	replies[5] = make_reply("tktkey", "status", "4294967295", "keybuf", "", NULL);
	fail_reply = make_reply("", "status", "4294967294", NULL);
	free(seed);
	free(session);
}

static void queue_bytes(struct client *c, const char *p, size_t n)
{
	if (c->out_len + n > c->out_cap) {
		while (c->out_len + n > c->out_cap)
			c->out_cap = c->out_cap ? 2 * c->out_cap : 4096;
		c->out = realloc(c->out, c->out_cap);
		if (c->out == NULL)
			die("out of memory");
	}
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
}

static void answer(struct client *c)
{
	size_t i;

	c->request[c->rlen < MAX_NAME ? c->rlen : MAX_NAME] = 0;
	for (i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
		if (strcmp(c->request, replies[i].name) == 0) {
			queue_bytes(c, replies[i].bytes, replies[i].len);
			return;
		}
	}
	queue_bytes(c, fail_reply.bytes, fail_reply.len);
}

/* Streaming parse of requests; returns -1 when the framing is broken. */
static int consume(struct client *c, const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		char ch = buf[i];

		if (!c->in_value) {
			if (ch != 0) {
				if (c->nlen >= MAX_NAME)
					return -1;
				c->name[c->nlen++] = ch;
			} else if (c->nlen == 0) {
				answer(c);
				c->nattr = 0;
				c->rlen = 0;
			} else {
				c->in_value = 1;
			}
			continue;
		}
		if (ch == 0) {
			c->in_value = 0;
			c->nlen = 0;
			c->nattr++;
		} else if (c->nattr == 0 && c->rlen < MAX_NAME) {
			c->request[c->rlen++] = ch;
		}
	}
	return 0;
}

static void drop(int epfd, struct client *c)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->out);
	free(c);
}

/* Write queued replies; returns -1 on a dead client. */
static int flush_out(int epfd, struct client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);

		if (n < 0 && errno == EAGAIN) {
			struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};

			if (!c->want_out && epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
				return -1;
			c->want_out = 1;
			return 0;
		}
		if (n < 0)
			return -1;
		c->out_off += (size_t) n;
	}
	c->out_off = c->out_len = 0;
	if (c->want_out) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

		c->want_out = 0;
		if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
			return -1;
	}
	return 0;
}

static int listen_on(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		die("socket path too long: %s", path);
	strcpy(sun.sun_path, path);
	(void) unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0)
		die("bind %s: %s", path, strerror(errno));
	if (chmod(path, 0666) < 0 || listen(fd, 4096) < 0)
		die("listen %s: %s", path, strerror(errno));
	return fd;
}

static void accept_all(int epfd, int lfd)
{
	int fd;

	while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		struct client *c = calloc(1, sizeof(*c));
		struct epoll_event ev = {.events = EPOLLIN};

		if (c == NULL)
			die("out of memory");
		c->fd = fd;
		ev.data.ptr = c;
		queue_bytes(c, greeting, sizeof(greeting));
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 || flush_out(epfd, c) < 0)
			drop(epfd, c);
	}
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	int session_bytes = 256, seed_bytes = 32, miss = 0, broken = 0;
	int ch, epfd, lfd;
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
	char *buf;

	while ((ch = getopt(argc, argv, "s:z:e:MB")) != -1) {
		switch (ch) {
		case 's': path = optarg; break;
		case 'z': session_bytes = atoi(optarg); break;
		case 'e': seed_bytes = atoi(optarg); break;
		case 'M': miss = 1; break;
		case 'B': broken = 1; break;
		default: die("usage: nullserver -s socket [-z session_bytes] [-e seed_bytes] [-M] [-B]");
		}
	}
	if (path == NULL || optind != argc || session_bytes < 0 || seed_bytes < 1)
		die("usage: nullserver -s socket [-z session_bytes] [-e seed_bytes] [-M] [-B]");
	signal(SIGPIPE, SIG_IGN);
	make_replies(session_bytes, seed_bytes, miss, broken);
	buf = malloc(READ_BUF);
	lfd = listen_on(path);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (buf == NULL || epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0)
		die("epoll: %s", strerror(errno));
	for (;;) {
		struct epoll_event events[256];
		int i, n = epoll_wait(epfd, events, 256, -1);

		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			struct client *c = events[i].data.ptr;
			ssize_t got;

			if (c == NULL) {
				accept_all(epfd, lfd);
				continue;
			}
			if (events[i].events & EPOLLOUT && c->out_len > 0) {
				if (flush_out(epfd, c) < 0) {
					drop(epfd, c);
					continue;
				}
			}
			if (!(events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
				continue;
			got = read(c->fd, buf, READ_BUF);
			if (got < 0 && errno == EAGAIN)
				continue;
			if (got <= 0 || consume(c, buf, (size_t) got) < 0
			    || (c->out_len > c->out_off && flush_out(epfd, c) < 0))
				drop(epfd, c);
		}
	}
}
