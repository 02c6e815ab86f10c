/*
 * loadgen - closed-loop load generator for the tlsmgr(8) protocol
 *
 * SYNOPSIS
 *	loadgen -s socket [-w workload] [-c conns] [-T threads]
 *		[-d seconds] [-W warmup] [-n ids] [-f first] [-z session_bytes]
 *		[-e seed_bytes] [-t cache_type] [-S slice_ms] [-x io_timeout]
 *
 *	workload: seed | lookup | update | mix | populate
 *
 * DESCRIPTION
 *	loadgen opens `conns` AF_UNIX stream connections to `socket` (a
 *	tlsmgr service socket such as $queue_directory/private/tlsmgr) and
 *	drives them as real Postfix clients do: it reads the server's
 *	greeting (protocol=tlsmgr_protocol), then on each connection sends
 *	one request in one write, reads one complete reply, and repeats.
 *	Nothing is pipelined (closed loop). The connections are spread over
 *	`threads` threads, each with its own epoll set (default 1 thread).
 *
 *	Requests are byte-exact as in Postfix 3.7's tls_mgr.c:
 *	    seed      request=seed size=<seed_bytes>
 *	    lookup    request=lookup cache_type=<t> cache_id=<id(i)>
 *	    update    request=update cache_type=<t> cache_id=<id(i)>
 *	              session=<base64 of session_bytes pseudo-random bytes>
 *	where i is drawn uniformly from [first, first+ids) by a per-connection
 *	xorshift generator (deterministic), and id(i) looks like a real smtp
 *	client cache id: "smtp&[10.a.b.c]:25&10.a.b.c&10.a.b.c&&<64 hex>".
 *	`mix` sends 80% lookup, 10% update, 10% seed. `populate` stores each
 *	id of [first, first+ids) exactly once (update), shared among the
 *	connections, and stops when done; it ignores -d and -W.
 *
 *	Replies are parsed as attribute lists ("0" format: name NUL value
 *	NUL ..., ended by an empty name): each name must be the one
 *	expected next (status, then seed/session for seed/lookup), status
 *	may be spelled unsigned (4294967295) or signed (-1), data values
 *	must be valid padded base64. An OK seed must carry seed_bytes
 *	bytes, an OK lookup session_bytes bytes; a non-OK reply must carry
 *	no data. Any byte after a reply's terminator is an error (the
 *	server spoke without being asked).
 *
 *	Latency is measured per request with clock_gettime(CLOCK_MONOTONIC),
 *	from just before the request's write to the byte that completes
 *	its reply. Requests completing in the first `warmup` seconds are
 *	not counted; after `warmup + seconds` no new request is sent and the
 *	replies still in flight are read and discarded.
 *
 * OUTPUT
 *	One JSON object on stdout: workload, conns, threads, window_s,
 *	requests, rps, per-request-type counts of ok/err/fail replies,
 *	latency_us {mean, p50, p90, p99, p999, max}, cpu_s (this process's
 *	user+system time over the whole run), and with -S a list of time
 *	slices {t, n, rps, p50, p99, max}.
 *
 * DIAGNOSTICS
 *	Exit 0 on success, 1 on bad usage, 2 when a connection fails (connect,
 *	EOF, I/O error, no reply within io_timeout seconds), 3 on a protocol
 *	violation. The message names the socket, the connection and the
 *	request, and shows the offending bytes.
 *
 * BUGS
 *	One request type per connection at a time; no TLS; AF_UNIX only.
 *	Latency samples are kept in memory (8 bytes each).
 *
 * SEE ALSO
 *	bench/tlsmgr_bench.py (the driver), bench/nullserver.c,
 *	src/tls/tls_mgr.c and src/util/attr_scan0.c (Postfix)
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAME	64		/* attribute name limit, as tlsmgr's */
#define MAX_SHORT	64		/* longest status / protocol value */
#define MAX_SESSION	65536		/* one decoded value, as tlsmgr's */
#define READ_BUF	65536

enum workload { WL_SEED, WL_LOOKUP, WL_UPDATE, WL_MIX, WL_POPULATE };
enum reqtype { RQ_SEED, RQ_LOOKUP, RQ_UPDATE, RQ_GREETING, RQ_COUNT = RQ_GREETING };

static const char *const workload_names[] = {"seed", "lookup", "update", "mix", "populate"};
static const char *const req_names[] = {"seed", "lookup", "update", "greeting"};

/* Expected reply attributes per request type, in order. */
static const char *const reply_attrs[][2] = {
	[RQ_SEED] = {"status", "seed"},
	[RQ_LOOKUP] = {"status", "session"},
	[RQ_UPDATE] = {"status", NULL},
	[RQ_GREETING] = {"protocol", NULL},
};

static struct options {
	const char *path;
	enum workload wl;
	int conns;
	int threads;
	double duration;
	double warmup;
	uint64_t ids;
	uint64_t first;
	int session_bytes;
	int seed_bytes;
	const char *cache_type;
	int slice_ms;
	double io_timeout;
} opt = {
	.wl = WL_LOOKUP, .conns = 1, .threads = 1, .duration = 5.0, .warmup = 0.5,
	.ids = 1000, .first = 0, .session_bytes = 256, .seed_bytes = 32,
	.cache_type = "smtp", .slice_ms = 0, .io_timeout = 10.0,
};

/* One latency sample: nanoseconds, and completion time (ms) in the window. */
struct sample {
	uint32_t lat_ns;
	uint32_t t_ms;
};

/* Incremental parser state for one reply ("0" attribute format). */
struct reply_parser {
	int in_value;			/* 0: reading a name, 1: a value */
	int nattr;			/* attributes completed so far */
	size_t nlen;
	char name[MAX_NAME + 1];
	size_t vlen;			/* value length (all bytes) */
	char shortval[MAX_SHORT + 1];	/* value head, for status/protocol */
	int pad;			/* '=' seen at the end of the value */
	int64_t status;
	size_t data_len;		/* decoded length of the data attribute */
	int have_data;
};

struct conn {
	int index;
	int fd;
	enum reqtype req;		/* request in flight */
	struct reply_parser rp;
	struct timespec sent;
	uint64_t rng;
	char *out;			/* request being written */
	size_t out_len;
	size_t out_off;
	const char *session_b64;	/* this connection's session value */
	uint64_t next_id;		/* populate: next id to store */
	int done;
};

struct counts {
	uint64_t ok, err, fail;
};

struct worker {
	pthread_t tid;
	int epfd;
	struct conn **conns;
	int nconns;
	struct sample *samples;
	size_t nsamples, cap;
	struct counts counts[RQ_COUNT];
	uint64_t requests;
};

static struct timespec t_begin, t_window, t_end;	/* run start, window start, end */
static size_t session_b64_len;

/* ---------- small helpers ---------- */

static void die(int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "loadgen: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		die(2, "out of memory (%zu bytes)", n);
	return p;
}

static int64_t ts_diff_ns(const struct timespec *a, const struct timespec *b)
{
	return (int64_t) (a->tv_sec - b->tv_sec) * 1000000000LL + (a->tv_nsec - b->tv_nsec);
}

static struct timespec ts_add(struct timespec t, double seconds)
{
	int64_t ns = t.tv_nsec + (int64_t) (seconds * 1e9);

	t.tv_sec += ns / 1000000000LL;
	t.tv_nsec = ns % 1000000000LL;
	return t;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ULL;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t base64_encode(char *out, const unsigned char *in, size_t len)
{
	size_t i, o = 0;

	for (i = 0; i + 2 < len; i += 3) {
		out[o++] = b64chars[in[i] >> 2];
		out[o++] = b64chars[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		out[o++] = b64chars[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		out[o++] = b64chars[in[i + 2] & 63];
	}
	if (i < len) {
		out[o++] = b64chars[in[i] >> 2];
		if (i + 1 < len) {
			out[o++] = b64chars[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
			out[o++] = b64chars[(in[i + 1] & 15) << 2];
		} else {
			out[o++] = b64chars[(in[i] & 3) << 4];
			out[o++] = '=';
		}
		out[o++] = '=';
	}
	out[o] = 0;
	return o;
}

static int is_b64char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
	    || c == '+' || c == '/';
}

/* A cache id like a real smtp client's: host part from i, 64 hex digits. */
static size_t make_cache_id(char *buf, size_t size, uint64_t i)
{
	unsigned a = (unsigned) (i >> 16) & 255, b = (unsigned) (i >> 8) & 255, c = (unsigned) i & 255;

	return (size_t) snprintf(buf, size,
	    "smtp&[10.%u.%u.%u]:25&10.%u.%u.%u&10.%u.%u.%u&&%016" PRIX64 "%016" PRIX64
	    "%016" PRIX64 "%016" PRIX64, a, b, c, a, b, c, a, b, c,
	    splitmix64(i), splitmix64(i ^ 1), splitmix64(i ^ 2), splitmix64(i ^ 3));
}

/* Escape up to 48 bytes for an error message. */
static const char *show(const char *p, size_t n)
{
	static __thread char buf[4 * 48 + 8];
	size_t i, o = 0;

	for (i = 0; i < n && i < 48; i++) {
		unsigned char c = (unsigned char) p[i];

		if (c >= 32 && c < 127 && c != '\\')
			buf[o++] = (char) c;
		else
			o += (size_t) sprintf(buf + o, "\\x%02x", c);
	}
	if (i < n)
		o += (size_t) sprintf(buf + o, "...");
	buf[o] = 0;
	return buf;
}

/* ---------- requests ---------- */

static void append(struct conn *c, const char *s, size_t n)
{
	memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
}

#define APPEND_LIT(c, lit) append((c), (lit), sizeof(lit) - 1)

static void build_request(struct conn *c, enum reqtype req, uint64_t id)
{
	char idbuf[160];
	size_t idlen;

	c->req = req;
	c->out_len = c->out_off = 0;
	APPEND_LIT(c, "request\0");
	if (req == RQ_SEED) {
		char num[16];
		int n = snprintf(num, sizeof(num), "%d", opt.seed_bytes);

		APPEND_LIT(c, "seed\0size\0");
		append(c, num, (size_t) n + 1);
		APPEND_LIT(c, "\0");
		return;
	}
	append(c, req == RQ_LOOKUP ? "lookup" : "update", 7);
	APPEND_LIT(c, "cache_type\0");
	append(c, opt.cache_type, strlen(opt.cache_type) + 1);
	APPEND_LIT(c, "cache_id\0");
	idlen = make_cache_id(idbuf, sizeof(idbuf), id);
	append(c, idbuf, idlen + 1);
	if (req == RQ_UPDATE) {
		APPEND_LIT(c, "session\0");
		append(c, c->session_b64, session_b64_len + 1);
	}
	APPEND_LIT(c, "\0");
}

/* Choose and build the next request; return 0 when this connection is done. */
static int next_request(struct conn *c)
{
	uint64_t r, id;

	if (opt.wl == WL_POPULATE) {
		if (c->next_id >= opt.first + opt.ids)
			return 0;
		build_request(c, RQ_UPDATE, c->next_id);
		c->next_id += (uint64_t) opt.conns;
		return 1;
	}
	r = xorshift(&c->rng);
	id = opt.first + (r >> 8) % opt.ids;
	switch (opt.wl) {
	case WL_SEED:
		build_request(c, RQ_SEED, 0);
		break;
	case WL_LOOKUP:
		build_request(c, RQ_LOOKUP, id);
		break;
	case WL_UPDATE:
		build_request(c, RQ_UPDATE, id);
		break;
	default:			/* WL_MIX: 80% lookup, 10% update, 10% seed */
		r &= 0xff;
		r = r * 100 / 256;
		build_request(c, r < 80 ? RQ_LOOKUP : r < 90 ? RQ_UPDATE : RQ_SEED, id);
		break;
	}
	return 1;
}

/* ---------- reply parser ---------- */

static void parser_reset(struct reply_parser *p)
{
	memset(p, 0, sizeof(*p));
	p->status = INT64_MIN;
}

static int64_t parse_status(const char *s, int *ok)
{
	int neg = 0;
	uint64_t v = 0;

	*ok = 0;
	if (*s == '-') {
		neg = 1;
		s++;
	}
	if (*s == 0)
		return 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > 0xFFFFFFFFULL)
			return 0;
		v = v * 10 + (uint64_t) (*s - '0');
	}
	if (v > 0xFFFFFFFFULL)
		return 0;
	*ok = 1;
	if (neg)
		return -(int64_t) v;
	return (int32_t) (uint32_t) v;	/* 4294967295 -> -1 */
}

static void protocol_error(const struct conn *c, const char *what, const char *bytes, size_t n)
{
	die(3, "%s: connection %d: %s in reply to %s (at \"%s\")", opt.path, c->index, what,
	    req_names[c->req], show(bytes, n));
}

/* A value ended: check it against what the request expects. */
static void value_done(struct conn *c, const char *at, size_t left)
{
	struct reply_parser *p = &c->rp;
	const char *want_data = reply_attrs[c->req][1];

	if (p->nattr == 0 && c->req == RQ_GREETING) {
		if (p->vlen > MAX_SHORT || strcmp(p->shortval, "tlsmgr_protocol") != 0)
			protocol_error(c, "greeting value is not tlsmgr_protocol", at, left);
	} else if (p->nattr == 0) {
		int ok = 0;

		if (p->vlen <= MAX_SHORT)
			p->status = parse_status(p->shortval, &ok);
		if (!ok)
			protocol_error(c, "malformed status value", at, left);
	} else if (want_data != NULL) {
		if (p->vlen % 4 != 0)
			protocol_error(c, "base64 length is not a multiple of 4", at, left);
		p->data_len = p->vlen / 4 * 3 - (size_t) p->pad;
		p->have_data = 1;
	}
	p->nattr++;
}

/* The list terminator arrived: classify the reply. Returns 0 OK, -1 ERR, -2 FAIL. */
static int reply_done(struct conn *c, const char *at, size_t left)
{
	struct reply_parser *p = &c->rp;
	int want = reply_attrs[c->req][1] ? 2 : 1;
	size_t want_len;

	if (p->nattr < want)
		protocol_error(c, "missing attribute", at, left);
	if (c->req == RQ_GREETING)
		return 0;
	if (p->status != 0 && p->status != -1 && p->status != -2)
		protocol_error(c, "unknown status code", at, left);
	if (want == 2 && p->status != 0 && p->data_len != 0)
		protocol_error(c, "error reply carries data", at, left);
	want_len = c->req == RQ_SEED ? (size_t) opt.seed_bytes : (size_t) opt.session_bytes;
	if (want == 2 && p->status == 0 && p->data_len != want_len) {
		char msg[96];

		snprintf(msg, sizeof(msg), "OK reply carries %zu data bytes, expected %zu",
			 p->data_len, want_len);
		protocol_error(c, msg, at, left);
	}
	return (int) p->status;
}

/*
 * Feed bytes to the parser. Returns the number of bytes consumed; *done is
 * set when the list terminator was consumed (then no byte may follow).
 */
static size_t parse_reply(struct conn *c, const char *buf, size_t len, int *done)
{
	struct reply_parser *p = &c->rp;
	size_t i;

	*done = 0;
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char) buf[i];

		if (!p->in_value) {
			if (ch != 0) {
				if (p->nlen >= MAX_NAME)
					protocol_error(c, "attribute name too long", buf + i, len - i);
				p->name[p->nlen++] = (char) ch;
				continue;
			}
			if (p->nlen == 0) {	/* empty name: end of list */
				*done = 1;
				return i + 1;
			}
			p->name[p->nlen] = 0;
			if (p->nattr >= 2 || reply_attrs[c->req][p->nattr] == NULL
			    || strcmp(p->name, reply_attrs[c->req][p->nattr]) != 0)
				protocol_error(c, "unexpected attribute", buf + i - p->nlen,
					       len - i + p->nlen);
			p->in_value = 1;
			p->vlen = 0;
			p->pad = 0;
			continue;
		}
		if (ch == 0) {
			p->shortval[p->vlen <= MAX_SHORT ? p->vlen : MAX_SHORT] = 0;
			value_done(c, buf + i, len - i);
			p->in_value = 0;
			p->nlen = 0;
			continue;
		}
		if (p->nattr == 0) {
			if (p->vlen < MAX_SHORT)
				p->shortval[p->vlen] = (char) ch;
		} else if (ch == '=') {
			if (++p->pad > 2)
				protocol_error(c, "bad base64 padding", buf + i, len - i);
		} else if (p->pad || !is_b64char(ch)) {
			protocol_error(c, "bad base64 character", buf + i, len - i);
		}
		if (++p->vlen > 4 * (MAX_SESSION / 3 + 1))
			protocol_error(c, "value too long", buf + i, len - i);
	}
	return len;
}

/* ---------- connections ---------- */

static int connect_one(int index)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(opt.path) >= sizeof(sun.sun_path))
		die(1, "socket path too long: %s", opt.path);
	strcpy(sun.sun_path, opt.path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die(2, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0)
		die(2, "connect %s (connection %d): %s", opt.path, index, strerror(errno));
	if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
		die(2, "fcntl: %s", strerror(errno));
	return fd;
}

static void set_events(struct worker *w, struct conn *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};

	if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		die(2, "epoll_ctl: %s", strerror(errno));
}

/* Write what is left of the request; wait for EPOLLOUT when the socket is full. */
static void flush_request(struct worker *w, struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);

		if (n < 0 && errno == EAGAIN) {
			set_events(w, c, EPOLLIN | EPOLLOUT);
			return;
		}
		if (n < 0)
			die(2, "%s: connection %d: write %s request: %s", opt.path, c->index,
			    req_names[c->req], strerror(errno));
		c->out_off += (size_t) n;
	}
}

static void send_next(struct worker *w, struct conn *c, const struct timespec *now)
{
	if (ts_diff_ns(now, &t_end) >= 0 || !next_request(c)) {
		c->done = 1;
		return;
	}
	parser_reset(&c->rp);
	clock_gettime(CLOCK_MONOTONIC, &c->sent);
	flush_request(w, c);
}

static void record(struct worker *w, struct conn *c, int status, const struct timespec *now)
{
	int64_t lat = ts_diff_ns(now, &c->sent);
	int64_t t = ts_diff_ns(now, &t_window);
	struct counts *k;

	if (c->req == RQ_GREETING || (opt.wl != WL_POPULATE && (t < 0 || ts_diff_ns(now, &t_end) > 0)))
		return;
	k = &w->counts[c->req];
	if (status == 0)
		k->ok++;
	else if (status == -1)
		k->err++;
	else
		k->fail++;
	w->requests++;
	if (w->nsamples == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 65536;
		w->samples = realloc(w->samples, w->cap * sizeof(*w->samples));
		if (w->samples == NULL)
			die(2, "out of memory for latency samples");
	}
	w->samples[w->nsamples].lat_ns = lat > UINT32_MAX ? UINT32_MAX : (uint32_t) lat;
	w->samples[w->nsamples].t_ms = t < 0 ? 0 : (uint32_t) (t / 1000000);
	w->nsamples++;
}

static void on_readable(struct worker *w, struct conn *c, char *buf)
{
	struct timespec now;
	ssize_t n;
	size_t used;
	int done, status;

	n = read(c->fd, buf, READ_BUF);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n < 0)
		die(2, "%s: connection %d: read reply to %s: %s", opt.path, c->index,
		    req_names[c->req], strerror(errno));
	if (n == 0)
		die(2, "%s: connection %d: server closed the connection%s", opt.path, c->index,
		    c->done ? " (after the last reply)" : c->req == RQ_GREETING
		    ? " before its greeting" : " while a request was pending");
	if (c->done || c->out_off < c->out_len)
		die(3, "%s: connection %d: unsolicited bytes from the server (\"%s\")", opt.path,
		    c->index, show(buf, (size_t) n));
	used = parse_reply(c, buf, (size_t) n, &done);
	if (!done)
		return;
	if (used < (size_t) n)
		die(3, "%s: connection %d: %zd unsolicited bytes after the reply to %s (\"%s\")",
		    opt.path, c->index, n - (ssize_t) used, req_names[c->req],
		    show(buf + used, (size_t) n - used));
	clock_gettime(CLOCK_MONOTONIC, &now);
	status = reply_done(c, buf + used, 0);
	record(w, c, status, &now);
	send_next(w, c, &now);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event events[64];
	char *buf = xmalloc(READ_BUF);
	struct timespec now, last_progress;
	int i, active;

	for (i = 0; i < w->nconns; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w->conns[i]};

		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->conns[i]->fd, &ev) < 0)
			die(2, "epoll_ctl: %s", strerror(errno));
	}
	clock_gettime(CLOCK_MONOTONIC, &last_progress);
	for (;;) {
		int n = epoll_wait(w->epfd, events, 64, 100);

		if (n < 0 && errno != EINTR)
			die(2, "epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			struct conn *c = events[i].data.ptr;

			if (events[i].events & EPOLLOUT) {
				flush_request(w, c);
				if (c->out_off == c->out_len)
					set_events(w, c, EPOLLIN);
			}
			if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				on_readable(w, c, buf);
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (n > 0)
			last_progress = now;
		for (active = 0, i = 0; i < w->nconns; i++)
			active += !w->conns[i]->done;
		if (active == 0)
			break;
		if (ts_diff_ns(&now, &last_progress) > (int64_t) (opt.io_timeout * 1e9)) {
			for (i = 0; w->conns[i]->done; i++)
				;
			die(2, "%s: connection %d: no reply to %s within %.0f s", opt.path,
			    w->conns[i]->index, req_names[w->conns[i]->req], opt.io_timeout);
		}
	}
	free(buf);
	return NULL;
}

/* ---------- results ---------- */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values, in microseconds. */
static double pct_us(const uint32_t *v, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return 0.0;
	rank = (size_t) (p * (double) n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1] / 1000.0;
}

static void print_slices(const struct sample *s, size_t n, double window)
{
	size_t nslices = (size_t) (window * 1000.0 / opt.slice_ms) + 1;
	size_t *counts = calloc(nslices, sizeof(size_t)), *starts = calloc(nslices, sizeof(size_t));
	uint32_t *lat = xmalloc((n ? n : 1) * sizeof(uint32_t));
	size_t i, k;

	if (counts == NULL || starts == NULL)
		die(2, "out of memory");
	for (i = 0; i < n; i++) {
		k = s[i].t_ms / (uint32_t) opt.slice_ms;
		counts[k < nslices ? k : nslices - 1]++;
	}
	for (k = 1; k < nslices; k++)
		starts[k] = starts[k - 1] + counts[k - 1];
	memset(counts, 0, nslices * sizeof(size_t));
	for (i = 0; i < n; i++) {
		k = s[i].t_ms / (uint32_t) opt.slice_ms;
		k = k < nslices ? k : nslices - 1;
		lat[starts[k] + counts[k]++] = s[i].lat_ns;
	}
	printf(",\"slice_ms\":%d,\"slices\":[", opt.slice_ms);
	for (k = 0; k < nslices; k++) {
		uint32_t *v = lat + starts[k];
		double len = opt.slice_ms / 1000.0;

		if (k == nslices - 1)
			len = window - (double) k * len;
		if (len <= 0)
			break;
		qsort(v, counts[k], sizeof(uint32_t), cmp_u32);
		printf("%s{\"t\":%.3f,\"n\":%zu,\"rps\":%.1f,\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}",
		       k ? "," : "", (double) k * opt.slice_ms / 1000.0, counts[k],
		       (double) counts[k] / len, pct_us(v, counts[k], 0.50),
		       pct_us(v, counts[k], 0.99), counts[k] ? v[counts[k] - 1] / 1000.0 : 0.0);
	}
	printf("]");
	free(counts);
	free(starts);
	free(lat);
}

static void report(struct worker *w, int nw, const struct timespec *t_done)
{
	struct counts total[RQ_COUNT];
	struct sample *all;
	uint32_t *lat;
	size_t n = 0, i;
	uint64_t requests = 0;
	double window, sum = 0.0, cpu;
	struct rusage ru;
	int k, r;

	memset(total, 0, sizeof(total));
	for (k = 0; k < nw; k++) {
		n += w[k].nsamples;
		requests += w[k].requests;
		for (r = 0; r < RQ_COUNT; r++) {
			total[r].ok += w[k].counts[r].ok;
			total[r].err += w[k].counts[r].err;
			total[r].fail += w[k].counts[r].fail;
		}
	}
	all = xmalloc((n ? n : 1) * sizeof(*all));
	lat = xmalloc((n ? n : 1) * sizeof(*lat));
	for (n = 0, k = 0; k < nw; k++) {
		memcpy(all + n, w[k].samples, w[k].nsamples * sizeof(*all));
		n += w[k].nsamples;
	}
	for (i = 0; i < n; i++) {
		lat[i] = all[i].lat_ns;
		sum += all[i].lat_ns;
	}
	qsort(lat, n, sizeof(uint32_t), cmp_u32);
	if (opt.wl == WL_POPULATE)
		window = ts_diff_ns(t_done, &t_begin) / 1e9;
	else
		window = opt.duration;
	getrusage(RUSAGE_SELF, &ru);
	cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec
	    + ru.ru_stime.tv_usec / 1e6;

	printf("{\"workload\":\"%s\",\"conns\":%d,\"threads\":%d,\"window_s\":%.3f,"
	       "\"requests\":%" PRIu64 ",\"rps\":%.1f,\"by_request\":{",
	       workload_names[opt.wl], opt.conns, opt.threads, window, requests,
	       window > 0 ? requests / window : 0.0);
	for (r = 0; r < RQ_COUNT; r++)
		printf("%s\"%s\":{\"ok\":%" PRIu64 ",\"err\":%" PRIu64 ",\"fail\":%" PRIu64 "}",
		       r ? "," : "", req_names[r], total[r].ok, total[r].err, total[r].fail);
	printf("},\"latency_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
	       "\"p999\":%.1f,\"max\":%.1f},\"cpu_s\":%.3f",
	       n ? sum / n / 1000.0 : 0.0, pct_us(lat, n, 0.50), pct_us(lat, n, 0.90),
	       pct_us(lat, n, 0.99), pct_us(lat, n, 0.999), n ? lat[n - 1] / 1000.0 : 0.0, cpu);
	if (opt.slice_ms > 0 && opt.wl != WL_POPULATE)
		print_slices(all, n, window);
	printf("}\n");
	free(all);
	free(lat);
}

/* ---------- main ---------- */

static void usage(void)
{
	die(1, "usage: loadgen -s socket [-w seed|lookup|update|mix|populate] [-c conns] "
	    "[-T threads] [-d seconds] [-W warmup] [-n ids] [-f first] [-z session_bytes] "
	    "[-e seed_bytes] [-t cache_type] [-S slice_ms] [-x io_timeout]");
}

static long num_arg(const char *s, long min, long max, int ch)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == 0 || *end != 0 || v < min || v > max)
		die(1, "-%c: bad value \"%s\" (expected %ld..%ld)", ch, s, min, max);
	return v;
}

static double real_arg(const char *s, double min, int ch)
{
	char *end;
	double v = strtod(s, &end);

	if (*s == 0 || *end != 0 || v < min)
		die(1, "-%c: bad value \"%s\" (expected a number >= %g)", ch, s, min);
	return v;
}

static void parse_args(int argc, char **argv)
{
	int ch, i;

	while ((ch = getopt(argc, argv, "s:w:c:T:d:W:n:f:z:e:t:S:x:")) != -1) {
		switch (ch) {
		case 's': opt.path = optarg; break;
		case 'w':
			for (i = 0; i <= WL_POPULATE && strcmp(optarg, workload_names[i]); i++)
				;
			if (i > WL_POPULATE)
				die(1, "-w: unknown workload \"%s\"", optarg);
			opt.wl = (enum workload) i;
			break;
		case 'c': opt.conns = (int) num_arg(optarg, 1, 100000, ch); break;
		case 'T': opt.threads = (int) num_arg(optarg, 1, 256, ch); break;
		case 'd': opt.duration = real_arg(optarg, 0.001, ch); break;
		case 'W': opt.warmup = real_arg(optarg, 0.0, ch); break;
		case 'n': opt.ids = (uint64_t) num_arg(optarg, 1, 1L << 40, ch); break;
		case 'f': opt.first = (uint64_t) num_arg(optarg, 0, 1L << 40, ch); break;
		case 'z': opt.session_bytes = (int) num_arg(optarg, 0, MAX_SESSION, ch); break;
		case 'e': opt.seed_bytes = (int) num_arg(optarg, 1, 255, ch); break;
		case 't': opt.cache_type = optarg; break;
		case 'S': opt.slice_ms = (int) num_arg(optarg, 1, 3600000, ch); break;
		case 'x': opt.io_timeout = real_arg(optarg, 0.1, ch); break;
		default: usage();
		}
	}
	if (opt.path == NULL || optind != argc)
		usage();
	if (opt.threads > opt.conns)
		opt.threads = opt.conns;
	if (strlen(opt.cache_type) > 32)
		die(1, "-t: cache type too long");
}

/* Many connections need many fds: raise the soft limit to the hard one. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	struct worker *workers;
	struct conn *conns;
	unsigned char *raw;
	size_t out_cap;
	struct timespec t_done;
	int i;

	parse_args(argc, argv);
	raise_nofile();
	session_b64_len = 4 * (((size_t) opt.session_bytes + 2) / 3);
	out_cap = 256 + 160 + session_b64_len;
	raw = xmalloc((size_t) opt.session_bytes + 1);
	conns = calloc((size_t) opt.conns, sizeof(*conns));
	workers = calloc((size_t) opt.threads, sizeof(*workers));
	if (conns == NULL || workers == NULL)
		die(2, "out of memory");
	for (i = 0; i < opt.threads; i++) {
		workers[i].epfd = epoll_create1(EPOLL_CLOEXEC);
		if (workers[i].epfd < 0)
			die(2, "epoll_create1: %s", strerror(errno));
		workers[i].conns = xmalloc(sizeof(struct conn *) * ((size_t) opt.conns / opt.threads + 1));
	}
	for (i = 0; i < opt.conns; i++) {
		struct conn *c = &conns[i];
		struct worker *w = &workers[i % opt.threads];
		char *b64 = xmalloc(session_b64_len + 1);
		uint64_t s = splitmix64((uint64_t) i + 1);
		int j;

		/* Each connection stores its own pseudo-random session bytes. */
		for (j = 0; j < opt.session_bytes; j++)
			raw[j] = (unsigned char) (xorshift(&s) >> 56);
		base64_encode(b64, raw, (size_t) opt.session_bytes);
		c->index = i;
		c->session_b64 = b64;
		c->rng = splitmix64(0x5eed0000ULL + (uint64_t) i) | 1;
		c->out = xmalloc(out_cap);
		c->next_id = opt.first + (uint64_t) i;
		c->req = RQ_GREETING;
		parser_reset(&c->rp);
		c->fd = connect_one(i);
		w->conns[w->nconns++] = c;
	}
	free(raw);
	clock_gettime(CLOCK_MONOTONIC, &t_begin);
	t_window = ts_add(t_begin, opt.wl == WL_POPULATE ? 0.0 : opt.warmup);
	t_end = opt.wl == WL_POPULATE ? ts_add(t_begin, 1e9) : ts_add(t_window, opt.duration);
	for (i = 0; i < opt.threads; i++)
		if (pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]) != 0)
			die(2, "pthread_create failed");
	for (i = 0; i < opt.threads; i++)
		pthread_join(workers[i].tid, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t_done);
	report(workers, opt.threads, &t_done);
	for (i = 0; i < opt.conns; i++)
		close(conns[i].fd);
	return 0;
}
