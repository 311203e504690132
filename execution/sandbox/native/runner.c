/*
 * Native sandbox runner: the C twin of execution/sandbox/runner.py + engine.py.
 *
 * Process model: base worker (evaluated runtime.js once) -> one zygote per bundle key, forked
 * from the base, that evaluates the bundle and then runs every invoke of that key IN ITSELF.
 * Clean JS state per call does not come from fork: the bundle runtime (rt/ctx) allocates only
 * from one arena (see "the JS heap arena"); after the load the zygote copies the used part of
 * the arena aside (the snapshot), and after each call it copies back every page the call wrote
 * (write-protection faults mark them) and zeroes whatever the call used beyond the snapshot, so
 * the next call starts from the same bytes: globals, prototypes, timers, module state,
 * allocator state. A per-call seed still reseeds the JS random generators. The fork-per-call
 * model this replaces paid ~300 copy-on-write faults per call (QuickJS writes reference counts
 * all over the heap), the fork's page-table copy and the child's exit (~2.1 ms of runner CPU
 * per weather call); now a weather call costs ~0.2 ms of runner CPU, ~35 us of it the restore
 * of the ~180 pages such calls write. Introspect and test probes still run in a throw-away child
 * of the base.
 *
 * What it is NOT: a jail. All policy (uid, rlimits, netns, fds, env, the seccomp programs) is
 * decided in Python (execution/sandbox/native/launch.py), which applies it and execve()s this
 * binary. The launcher hands over, on fd 3, a boot block: [u32 len][JSON config][u32 len][worker
 * BPF][u32 len][call BPF]. This program only installs the two compiled filters (allowlists, see
 * launch.py): the worker filter after its own init, the call filter (no processes, no opens, no
 * signals, no executable memory) in each zygote right after its fork, before the bundle's
 * top-level code runs, and in each throw-away child, for the rest of that process's life. The
 * worker meters CPU from the kernel: a zygote's CPU clock after its load, the rusage of whatever it
 * reaps (a call killed by the backstop says what it used on its error frame). Per call, a zygote
 * arms ITIMER_PROF at the CPU limit + jail.CPU_BACKSTOP_MS (RLIMIT_CPU counts a process's whole
 * life, so it stays the jail's lifetime guard) and sets its RLIMIT_AS soft limit.
 *
 * Protocol: exactly protocol.py (4-byte big-endian length + UTF-8 JSON object with "type").
 * Exactly one process reads stdin at a time. The base forwards an invoke to its key's zygote,
 * which answers the host on stdout itself (reading fetch results and cancels from stdin while
 * the call runs) and then keeps reading stdin: further invokes of its key run without the base,
 * anything else is handed back to the base with stdin (see serve). A zygote that died in a call
 * (CPU backstop, crash) is reported on that call's error frame with "zygote_lost": true, and the
 * host loads the key again for the next call.
 * Engine: exactly engine.py; the JS side (js/dist/runtime.js) is shared, this file only drives
 * its private API (JSON text in, JSON text out) and services fetches and timers between entries.
 *
 * Frames are parsed with QuickJS's own JSON in a separate "wire" runtime (system malloc, never
 * restored), so host data never lands in the heap that bundle code runs in. Nothing else of a
 * call survives in C: the budget, the error, the fetch tables and the call id are reset per call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <math.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "quickjs.h"

#define MIB (1024 * 1024)
#define MAX_FRAME_BYTES (64u * 1024 * 1024)
#define STDIN 0
#define STDOUT 1
#define MAX_ZYGOTES 256

extern char **environ;

/* ------------------------------------------------------------------ growable text */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static void die(const char *what) {
    dprintf(2, "lightfast-runner: %s: %s\n", what, strerror(errno));
    _exit(2);
}

/* An internal check failed. Not abort(): a process that runs bundle code may not send signals,
 * not even to itself (the call filter kills on kill/tgkill), so it exits with a code of its own
 * that fail_exit names. */
#define RUNNER_ABORT_EXIT 70
static __attribute__((noreturn)) void fatal(const char *message) {
    dprintf(2, "lightfast-runner: %s\n", message);
    _exit(RUNNER_ABORT_EXIT);
}

static void buf_add(Buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) die("out of memory");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void buf_str(Buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_fmt(Buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_add(b, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string literal. QuickJS hands out lone surrogates as 3-byte sequences that are not
 * UTF-8; they become \u escapes (as JSON.stringify writes them) so the host can always decode. */
static void buf_json(Buf *b, const char *s, size_t n) {
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_add(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            buf_fmt(b, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            buf_add(b, (const char *)&s[i], 1);
            i++;
        } else {
            size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
            int ok = len && i + len <= n;
            for (size_t k = 1; ok && k < len; k++) ok = ((unsigned char)s[i + k] & 0xC0) == 0x80;
            if (ok && len == 3 && c == 0xED && (unsigned char)s[i + 1] >= 0xA0) {
                unsigned cp = ((c & 0x0F) << 12) | (((unsigned char)s[i + 1] & 0x3F) << 6) |
                              ((unsigned char)s[i + 2] & 0x3F);
                buf_fmt(b, "\\u%04x", cp);
            } else if (ok) {
                buf_add(b, &s[i], len);
            } else {
                buf_str(b, "\\ufffd");
                len = 1;
            }
            i += len;
        }
    }
    buf_add(b, "\"", 1);
}

static void buf_jsons(Buf *b, const char *s) { buf_json(b, s, strlen(s)); }

/* ------------------------------------------------------------------ frames */

static int read_exact(int fd, char *p, size_t n, int at_boundary) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return (at_boundary && got == 0) ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

/* 1: a frame in *out (NUL-terminated, caller frees); 0: clean EOF; -1: protocol error. */
static int read_frame(int fd, char **out, size_t *len) {
    unsigned char h[4];
    int r = read_exact(fd, (char *)h, 4, 1);
    if (r <= 0) return r;
    uint32_t n = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
    if (n > MAX_FRAME_BYTES) return -1;
    char *p = malloc((size_t)n + 1);
    if (!p) die("out of memory");
    if (read_exact(fd, p, n, 0) != 1) {
        free(p);
        return -1;
    }
    p[n] = 0;
    *out = p;
    *len = n;
    return 1;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int write_frame(int fd, const char *text, size_t n) {
    if (n > MAX_FRAME_BYTES) return -1;
    unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                          (unsigned char)n};
    /* One write for small frames: a frame is never interleaved with another writer's anyway
     * (one process answers at a time), but fewer syscalls are cheaper. */
    if (n < 65536) {
        char tmp[65536 + 4];
        memcpy(tmp, h, 4);
        memcpy(tmp + 4, text, n);
        return write_all(fd, tmp, n + 4);
    }
    if (write_all(fd, (const char *)h, 4) < 0) return -1;
    return write_all(fd, text, n);
}

static int wait_readable(int fd, double timeout_s) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ms = timeout_s <= 0 ? 0 : (int)ceil(timeout_s * 1000);
    for (;;) {
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR) continue;
        return r > 0;
    }
}

/* ------------------------------------------------------------------ the wire runtime (JSON) */

static JSRuntime *wrt;
static JSContext *wctx;

static JSValue wire_parse(const char *text, size_t len) {
    JSValue v = JS_ParseJSON(wctx, text, len, "<frame>");
    if (JS_IsException(v) || !JS_IsObject(v)) {
        JS_FreeValue(wctx, JS_GetException(wctx));
        JS_FreeValue(wctx, v);
        return JS_EXCEPTION;
    }
    return v;
}

static JSValue wget(JSValueConst obj, const char *key) { return JS_GetPropertyStr(wctx, obj, key); }

/* String(value) as malloc'd UTF-8 (the caller frees). */
static char *wstr(JSValueConst v) {
    size_t n;
    const char *s = JS_ToCStringLen(wctx, &n, v);
    if (!s) {
        JS_FreeValue(wctx, JS_GetException(wctx));
        return strdup("");
    }
    char *copy = malloc(n + 1);
    memcpy(copy, s, n + 1);
    JS_FreeCString(wctx, s);
    return copy;
}

static char *wstr_key(JSValueConst obj, const char *key) {
    JSValue v = wget(obj, key);
    char *s = wstr(v);
    JS_FreeValue(wctx, v);
    return s;
}

/* JSON text of a value (undefined -> "null"), malloc'd. */
static char *wjson(JSValueConst v) {
    if (JS_IsUndefined(v)) return strdup("null");
    JSValue t = JS_JSONStringify(wctx, v, JS_UNDEFINED, JS_UNDEFINED);
    if (JS_IsException(t) || JS_IsUndefined(t)) {
        JS_FreeValue(wctx, JS_GetException(wctx));
        return strdup("null");
    }
    char *s = wstr(t);
    JS_FreeValue(wctx, t);
    return s;
}

static char *wjson_key(JSValueConst obj, const char *key) {
    JSValue v = wget(obj, key);
    char *s = wjson(v);
    JS_FreeValue(wctx, v);
    return s;
}

static int wtype_is(JSValueConst frame, const char *type) {
    char *t = wstr_key(frame, "type");
    int same = strcmp(t, type) == 0;
    free(t);
    return same;
}

/* ------------------------------------------------------------------ errors */

typedef struct {
    const char *code;
    char message[1024];
    char *detail; /* JSON object text, malloc'd, or NULL for {} */
} Err;

static Err g_err;

static const char *const CODES[] = {
    "syntax_error", "invalid_bundle", "unknown_tool",  "invalid_input",  "tool_error",
    "timeout",      "cpu_limit",      "memory_limit",  "stack_overflow", "output_limit",
    "egress_denied", "sandbox_crash", "cancelled",     "quota_exceeded", "rate_limited", NULL};

static const char *known_code(const char *code) {
    for (int i = 0; CODES[i]; i++)
        if (strcmp(CODES[i], code) == 0) return CODES[i];
    return NULL;
}

static int fail(const char *code, const char *detail, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err.message, sizeof g_err.message, fmt, ap);
    va_end(ap);
    g_err.code = code;
    free(g_err.detail);
    g_err.detail = detail ? strdup(detail) : NULL;
    return -1;
}

static void err_json(Buf *b) {
    buf_str(b, "{\"type\":");
    buf_jsons(b, g_err.code ? g_err.code : "sandbox_crash"); /* every failure path sets it */
    buf_str(b, ",\"message\":");
    buf_jsons(b, g_err.message);
    buf_str(b, ",\"detail\":");
    buf_str(b, g_err.detail ? g_err.detail : "{}");
    buf_str(b, "}");
}

/* SandboxError.from_dict: an error object from the runtime or a frame, normalised. */
static int fail_from(JSValueConst error) {
    char *type = JS_IsObject(error) ? wstr_key(error, "type") : strdup("sandbox_crash");
    char *message = JS_IsObject(error) ? wstr_key(error, "message") : strdup("");
    JSValue detail = JS_IsObject(error) ? wget(error, "detail") : JS_UNDEFINED;
    char *detail_json = JS_IsObject(detail) && !JS_IsArray(detail) ? wjson(detail) : NULL;
    JS_FreeValue(wctx, detail);
    const char *code = known_code(type);
    if (code)
        fail(code, detail_json, "%s", message);
    else
        fail("sandbox_crash", detail_json, "unclassified error '%s': %s", type, message);
    free(type);
    free(message);
    free(detail_json);
    return -1;
}

/* ------------------------------------------------------------------ limits */

typedef struct {
    long long memory_mb, cpu_ms, wall_ms, stack_kb, output_bytes, log_bytes, concurrent_fetches,
        max_fetches, fetch_timeout_ms, fetch_response_bytes, fetch_request_bytes;
} Limits;

static const char *const LIMIT_NAMES[] = {
    "memory_mb",   "cpu_ms",           "wall_ms",          "stack_kb",
    "output_bytes", "log_bytes",       "concurrent_fetches", "max_fetches",
    "fetch_timeout_ms", "fetch_response_bytes", "fetch_request_bytes", NULL};

static Limits limits_default(void) {
    return (Limits){64, 5000, 30000, 1024, 1 * MIB, 256 * 1024, 4, 50, 10000, 5 * MIB, 1 * MIB};
}

/* Limits.from_dict: missing keys take defaults; unknown keys and non-positive values are refused. */
static int limits_parse(JSValueConst frame, Limits *out) {
    *out = limits_default();
    JSValue obj = wget(frame, "limits");
    int rc = 0;
    if (JS_IsObject(obj)) {
        JSPropertyEnum *props;
        uint32_t count;
        if (JS_GetOwnPropertyNames(wctx, &props, &count, obj, JS_GPN_STRING_MASK | JS_GPN_ENUM_ONLY) == 0) {
            for (uint32_t i = 0; i < count && rc == 0; i++) {
                const char *name = JS_AtomToCString(wctx, props[i].atom);
                int index = -1;
                for (int k = 0; LIMIT_NAMES[k]; k++)
                    if (name && !strcmp(LIMIT_NAMES[k], name)) index = k;
                JSValue v = JS_GetProperty(wctx, obj, props[i].atom);
                double d = 0;
                int numeric = JS_IsNumber(v) && JS_ToFloat64(wctx, &d, v) == 0;
                if (index < 0)
                    rc = fail("sandbox_crash", NULL, "runner failure: ValueError: unknown limit(s): %s", name);
                else if (!numeric || d <= 0 || d != floor(d) || d > 9e15)
                    rc = fail("sandbox_crash", NULL,
                              "runner failure: ValueError: limit %s must be a positive integer", name);
                else
                    ((long long *)out)[index] = (long long)d;
                JS_FreeValue(wctx, v);
                JS_FreeCString(wctx, name);
            }
            JS_FreePropertyEnum(wctx, props, count);
        }
    }
    JS_FreeValue(wctx, obj);
    if (rc == 0 && out->stack_kb > 4096)
        rc = fail("sandbox_crash", NULL,
                  "runner failure: ValueError: limit stack_kb must be at most 4096 (half the 8 MiB thread stack)");
    return rc;
}

static void limits_json(Buf *b, const Limits *l) {
    buf_str(b, "{");
    for (int k = 0; LIMIT_NAMES[k]; k++) {
        char digits[24], *d = digits + sizeof digits;
        unsigned long long v = (unsigned long long)((const long long *)l)[k]; /* positive by limits_parse */
        do *--d = (char)('0' + v % 10);
        while (v /= 10);
        buf_str(b, k ? ",\"" : "\"");
        buf_str(b, LIMIT_NAMES[k]);
        buf_str(b, "\":");
        buf_add(b, d, (size_t)(digits + sizeof digits - d));
    }
    buf_str(b, "}");
}

/* ------------------------------------------------------------------ clocks and budget */

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double wall_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

enum { BIND_CPU, BIND_WALL };

static void mem_reset(void);

typedef struct {
    Limits lim;
    double cpu_start, wall_start, cpu_deadline, wall_deadline;
    int binding;
    int active; /* an engine entry is running under this budget */
} Budget;

static Budget B;

static void budget_start(const Limits *lim) {
    B.lim = *lim;
    B.wall_start = wall_now(); /* first: CPU used since cpu_start <= wall time since wall_start */
    B.cpu_start = cpu_now();
    B.cpu_deadline = B.cpu_start + (double)lim->cpu_ms / 1000;
    B.wall_deadline = B.wall_start + (double)lim->wall_ms / 1000;
    B.binding = BIND_CPU;
    B.active = 0;
    mem_reset();
}

static int budget_exceeded(void) {
    char detail[64];
    if (B.binding == BIND_CPU) {
        snprintf(detail, sizeof detail, "{\"cpu_ms\":%lld}", B.lim.cpu_ms);
        return fail("cpu_limit", detail, "the CPU time limit of %lld ms was exceeded", B.lim.cpu_ms);
    }
    snprintf(detail, sizeof detail, "{\"wall_ms\":%lld}", B.lim.wall_ms);
    return fail("timeout", detail, "the time limit of %lld ms was exceeded", B.lim.wall_ms);
}

/* CPU seconds left in the budget, or a lower bound of it. The runner has one thread, so the CPU
 * time it used since the budget started is at most the wall time since then; while that bound
 * leaves room, the process CPU clock (a system call: it is not in the vDSO) is not read. */
static double cpu_left_at(double wall) {
    double bound = (B.cpu_deadline - B.cpu_start) - (wall - B.wall_start);
    return bound > 0 ? bound : B.cpu_deadline - cpu_now();
}

/* Budget.remaining(): fail with the binding limit when nothing is left. */
static int budget_check(void) {
    double wall = wall_now();
    double cpu_left = cpu_left_at(wall);
    double wall_left = B.wall_deadline - wall;
    B.binding = cpu_left <= wall_left ? BIND_CPU : BIND_WALL;
    if ((cpu_left < wall_left ? cpu_left : wall_left) <= 0) return budget_exceeded();
    return 0;
}

static int on_interrupt(JSRuntime *r, void *opaque) {
    (void)r;
    (void)opaque;
    if (!B.active) return 0;
    double wall = wall_now();
    if (cpu_left_at(wall) <= 0) {
        B.binding = BIND_CPU;
        return 1;
    }
    if (wall >= B.wall_deadline) {
        B.binding = BIND_WALL;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the JS heap arena
 *
 * The bundle runtime (rt/ctx, never the wire runtime) allocates only from here, through
 * JS_NewRuntime2. The arena is one private anonymous mapping made at boot; everything the
 * allocator knows (bump pointer, free lists, high-water mark) lives in its first bytes, so a
 * memcpy of [arena, arena + snap_len) puts back the whole JS heap, allocator included, exactly
 * as it was when the snapshot was taken. QuickJS carves its small objects out of 4 KB slabs it
 * gets from here and enforces the memory limit itself (malloc_state), so this allocator only
 * has to be fast, keep 16-byte alignment, and return NULL at its end.
 *
 * Blocks carry a 16-byte header (class, requested size). Size classes, by total size: every
 * multiple of 16 up to 4096 + 16 (QuickJS's slab size plus the header, so slabs waste nothing),
 * then eight classes per power of two. A free block goes on its class's list, or gives its space back to the bump
 * pointer when it is the topmost block; realloc stays in place when the class still fits or
 * the block is topmost (growing strings and arrays). */

#define ARENA_MAGIC 0x4c46415245e4a001ull
#define ARENA_BLOCK_TAG 0x4c46424bu
#define ARENA_SMALL_MAX 4112u
#define ARENA_SMALL_CLASSES (ARENA_SMALL_MAX / 16 + 1)
#define ARENA_CLASSES (ARENA_SMALL_CLASSES + 8 * (48 - 12))
/* Virtual reservation at boot (MAP_NORESERVE: pages cost nothing until touched). A call may use
 * max(2 x memory_mb, 256 MB) + 64 MB of it: the limit's worth of live data and room for the
 * size classes' rounding and free-list fragmentation. */
#define ARENA_RESERVE ((size_t)2048 * MIB + (size_t)64 * MIB)
#define ARENA_MIN_RESERVE ((size_t)256 * MIB)
/* Above this, the part of the arena a call used beyond the snapshot is handed back to the
 * kernel (zero-filled on next touch) instead of being cleared with memset. */
#define ARENA_MADVISE_BYTES ((size_t)8 * MIB)

typedef struct {
    /* What the caller asked for: QuickJS counts usable sizes against the memory limit after the
     * allocation succeeded, so reporting the class size would overshoot the limit by up to 12.5%. */
    uint64_t usable;
    uint32_t cls;
    uint32_t tag;
} ArenaBlock;

typedef struct {
    uint64_t magic;
    char *bump;     /* first byte never handed out since the last restore (or the topmost free) */
    char *hw;       /* highest bump so far: everything at and above it is zero */
    void *free[ARENA_CLASSES];
} ArenaHeader;

static ArenaHeader *arena;       /* == the mapping's first byte */
static char *arena_end;          /* end of the mapping */
static char *arena_cap;          /* where the current load or call must stop */
static char *arena_snapshot;     /* copy of [arena, arena + snap_len), outside the arena */
static size_t snap_len;
static char *arena_dirty_max;    /* highest hw ever seen in this process (for the verify mode) */
static int verify_restore;       /* test mode: compare the arena with the snapshot after each restore */
static int break_restore;        /* test mode: copy nothing back (to prove the verify mode notices) */

/* Which pages a restore copies back. A weather call writes ~130 of the ~2,200 pages of its
 * snapshot (QuickJS reference counts, the objects it touches, the allocator's header), and a
 * memcpy costs the same per page whether the page changed or not; comparing first costs as
 * much as copying. So after the snapshot the zygote write-protects the snapshot's pages; the
 * first write to one faults, the SIGSEGV handler makes it writable and marks it hot, and from
 * then on every restore copies exactly the hot pages (plus the partial last page). A write to a
 * page that is not hot always faults first, so nothing a call writes can escape the copy. When
 * more than a quarter of the pages are hot (a cycle collection in one call touches the whole
 * heap), the hot set is cleared and the pages protected again, at most every
 * ARENA_COOL_MIN_CALLS restores so a workload that does touch everything pays its faults
 * rarely; and every ARENA_COOL_MAX_CALLS restores in any case, to shed pages only old calls
 * wrote. Re-learning a weather call's hot set costs ~130 faults, once. */
#define ARENA_PAGE 4096u
#define ARENA_COOL_MIN_CALLS 256
#define ARENA_COOL_MAX_CALLS 16384
#define ARENA_HOLE_MIN 256
static char *prot_start, *prot_end; /* the write-protected (or hot) whole pages of the snapshot */
static uint64_t *hot_bits;          /* one bit per page of [prot_start, prot_end) */
static uint64_t *saved_bits;        /* pages whose loaded bytes the snapshot holds */
static size_t hot_words;
static size_t hot_pages;            /* bits set in hot_bits */
static size_t saved_pages;          /* bits set in saved_bits */
static char *verify_copy;           /* verify mode: the whole loaded state, copied at snapshot time */
static int restores_since_cool;
/* For the `arena` test probe (benchmarks/sandbox_floor.py, tests): what restores cost. */
static struct {
    unsigned long long restores, restore_ns, faults, cools;
} arena_stats;

static int arena_create(void) {
    size_t size = ARENA_RESERVE;
    void *p = MAP_FAILED;
    while (size >= ARENA_MIN_RESERVE) {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) break;
        size /= 2;
    }
    if (p == MAP_FAILED) return -1;
    arena = p;
    arena_end = (char *)p + size;
    arena_cap = arena_end;
    arena->magic = ARENA_MAGIC;
    arena->bump = (char *)p + ((sizeof(ArenaHeader) + 63) & ~(size_t)63);
    arena->hw = arena->bump;
    arena_dirty_max = arena->bump;
    return 0;
}

/* The part of the arena a load or call with this memory limit may use. */
static void arena_set_cap(long long memory_mb) {
    size_t room = (size_t)(memory_mb * 2 > 256 ? memory_mb * 2 : 256) * MIB + (size_t)64 * MIB;
    size_t avail = (size_t)(arena_end - (char *)arena);
    arena_cap = (char *)arena + (room < avail ? room : avail);
}

static inline unsigned arena_class(size_t total, size_t *rounded) {
    if (total <= ARENA_SMALL_MAX) {
        *rounded = total;
        return (unsigned)(total >> 4);
    }
    unsigned lg = 63u - (unsigned)__builtin_clzll(total - 1); /* 2^lg < total <= 2^(lg+1) */
    size_t step = (size_t)1 << (lg - 3);
    size_t r = (total + step - 1) & ~(step - 1);
    *rounded = r;
    return ARENA_SMALL_CLASSES + (lg - 12) * 8 + (unsigned)(r >> (lg - 3)) - 9;
}

/* Total bytes of a class's blocks, header included. */
static inline size_t arena_class_size(unsigned cls) {
    if (cls < ARENA_SMALL_CLASSES) return (size_t)cls << 4;
    unsigned index = cls - ARENA_SMALL_CLASSES, lg = 12 + index / 8;
    return (size_t)(index % 8 + 9) << (lg - 3);
}

/* A block's total size for `size` usable bytes. Callers first refuse sizes larger than the arena
 * (arena_fits), so the header and rounding cannot wrap around SIZE_MAX. */
static inline size_t arena_total(size_t size) {
    size_t total = (size + sizeof(ArenaBlock) + 15) & ~(size_t)15;
    return total < 32 ? 32 : total;
}

static inline int arena_fits(size_t size) { return size <= (size_t)(arena_end - (char *)arena); }

/* ---- the heap's memory limit, enforced here rather than by QuickJS, so that the runner knows of
 * every allocation the limit refused (an out-of-memory that bundle code swallowed in a timer or a
 * promise job still makes the call a memory_limit) and sees the heap's peak at allocation time (a
 * 40 MB typed array freed before the next idle point still counts). QuickJS's own limit is set to
 * unlimited when the heap probe (malloc_size_field) is available; otherwise it keeps enforcing. */
static size_t *malloc_size_field;
static size_t mem_limit;   /* bytes; 0 while QuickJS enforces the limit itself */
static size_t mem_peak;    /* highest heap size an allocation reached since mem_reset */
static int mem_refused;    /* an allocation was refused at the limit since mem_reset */
#define QJS_MALLOC_OVERHEAD 8 /* quickjs.c MALLOC_OVERHEAD: what it adds per block it counts */

/* Start watching the heap for one load or call: peak from here, no refusal yet. */
static void mem_reset(void) {
    mem_peak = malloc_size_field ? *malloc_size_field : 0;
    mem_refused = 0;
}

/* Whether the heap may grow by `grow` bytes; records the peak, or the refusal. */
static inline int mem_admit(size_t grow) {
    if (!malloc_size_field) return 1;
    size_t used = *malloc_size_field;
    if (grow > SIZE_MAX / 2 - used) {
        mem_refused = 1;
        return 0;
    }
    size_t after = used + grow + QJS_MALLOC_OVERHEAD;
    if (mem_limit && after > mem_limit) {
        mem_refused = 1;
        return 0;
    }
    if (after > mem_peak) mem_peak = after;
    return 1;
}

/* A block of at least `size` bytes; *fresh says whether it is known to be zero. */
static void *arena_alloc(size_t size, int *fresh) {
    if (!arena_fits(size)) return NULL;
    size_t total;
    unsigned cls = arena_class(arena_total(size), &total);
    if (cls >= ARENA_CLASSES) return NULL;
    ArenaBlock *b = arena->free[cls];
    if (b) {
        arena->free[cls] = *(void **)(b + 1);
        *fresh = 0;
    } else {
        char *at = arena->bump;
        if ((size_t)(arena_cap - at) < total) return NULL;
        *fresh = at >= arena->hw;
        arena->bump = at + total;
        if (arena->bump > arena->hw) arena->hw = arena->bump;
        b = (ArenaBlock *)(void *)at;
        b->cls = cls;
    }
    b->usable = size;
    b->tag = ARENA_BLOCK_TAG;
    return b + 1;
}

static inline ArenaBlock *arena_block(const void *ptr) {
    ArenaBlock *b = (ArenaBlock *)ptr - 1;
    if (b->tag != ARENA_BLOCK_TAG) fatal("arena block header damaged");
    return b;
}

static void *arena_malloc(void *opaque, size_t size) {
    (void)opaque;
    int fresh;
    if (!mem_admit(size)) return NULL;
    return arena_alloc(size, &fresh);
}

static void *arena_calloc(void *opaque, size_t count, size_t size) {
    (void)opaque;
    if (size && count > SIZE_MAX / size) return NULL;
    if (!mem_admit(count * size)) return NULL;
    int fresh;
    void *p = arena_alloc(count * size, &fresh);
    if (p && !fresh) memset(p, 0, count * size);
    return p;
}

static void arena_free(void *opaque, void *ptr) {
    (void)opaque;
    if (!ptr) return;
    ArenaBlock *b = arena_block(ptr);
    b->tag = 0;
    if ((char *)b + arena_class_size(b->cls) == arena->bump) {
        arena->bump = (char *)b;
        return;
    }
    *(void **)ptr = arena->free[b->cls];
    arena->free[b->cls] = b;
}

static void *arena_realloc(void *opaque, void *ptr, size_t size) {
    if (!ptr) return arena_malloc(opaque, size);
    if (!size) {
        arena_free(opaque, ptr);
        return NULL;
    }
    ArenaBlock *b = arena_block(ptr);
    /* Refused before any arithmetic: a size near SIZE_MAX would wrap arena_total to a small block
     * that "fits" in place, and the caller would own far more than it got. */
    if (!arena_fits(size)) return NULL;
    if (size > b->usable && !mem_admit(size - b->usable)) return NULL;
    size_t total;
    unsigned cls = arena_class(arena_total(size), &total);
    if (cls >= ARENA_CLASSES) return NULL;
    size_t have = arena_class_size(b->cls);
    int top = (char *)b + have == arena->bump;
    if (total <= have && !(top && total < have)) {
        b->usable = size;
        return ptr;
    }
    if (top && (size_t)(arena_cap - (char *)b) >= total) {
        /* The topmost block grows or shrinks where it is. */
        b->usable = size;
        b->cls = cls;
        arena->bump = (char *)b + total;
        if (arena->bump > arena->hw) arena->hw = arena->bump;
        return ptr;
    }
    int fresh;
    void *p = arena_alloc(size, &fresh);
    if (!p) return NULL;
    memcpy(p, ptr, b->usable);
    arena_free(opaque, ptr);
    return p;
}

static size_t arena_usable_size(const void *ptr) {
    return ptr ? ((const ArenaBlock *)ptr - 1)->usable : 0;
}

static const JSMallocFunctions arena_functions = {arena_calloc, arena_malloc, arena_free, arena_realloc,
                                                  arena_usable_size};

static void on_arena_write_fault(int sig, siginfo_t *info, void *context) {
    (void)context;
    char *at = info->si_addr;
    /* The arena is mapped read-write: a permission fault inside the snapshot's pages can only be
     * a write to a page protected here. */
    if (info->si_code == SEGV_ACCERR && at >= prot_start && at < prot_end) {
        size_t page = (size_t)(at - prot_start) / ARENA_PAGE;
        uint64_t bit = 1ull << (page % 64);
        char *arena_page = prot_start + page * ARENA_PAGE, *saved_page = arena_snapshot + page * ARENA_PAGE;
        int saved_errno = errno; /* the interrupted code may be about to read it */
        int ok = 1;
        if (!(saved_bits[page / 64] & bit)) {
            /* First write since the snapshot: the page still holds its loaded bytes; keep them. */
            ok = mprotect(saved_page, ARENA_PAGE, PROT_READ | PROT_WRITE) == 0;
            if (ok) {
                memcpy(saved_page, arena_page, ARENA_PAGE);
                ok = mprotect(saved_page, ARENA_PAGE, PROT_READ) == 0;
                saved_bits[page / 64] |= bit;
                saved_pages++;
            }
        }
        ok = ok && mprotect(arena_page, ARENA_PAGE, PROT_READ | PROT_WRITE) == 0;
        errno = saved_errno;
        if (ok) {
            hot_pages += !(hot_bits[page / 64] & bit);
            hot_bits[page / 64] |= bit;
            arena_stats.faults++;
            return; /* the write is retried on a writable page */
        }
    }
    /* A real crash: let the default action kill the process (its parent reports it). */
    signal(sig, SIG_DFL);
}

/* Clear the hot set: every page of the snapshot read-only again. */
static int arena_protect(void) {
    if (prot_end > prot_start && mprotect(prot_start, (size_t)(prot_end - prot_start), PROT_READ) != 0) return -1;
    memset(hot_bits, 0, hot_words * sizeof(uint64_t));
    hot_pages = 0;
    restores_since_cool = 0;
    return 0;
}

static int page_is_zero(const char *page) {
    static const char zeros[ARENA_PAGE];
    return !memcmp(page, zeros, ARENA_PAGE);
}

/* Free blocks (holes) get zeroed bodies, so memory a call gets from one holds zeros, as memory
 * from the bump pointer does; whole pages of zeros go back to the kernel. Only what is not zero
 * yet is written: in a zygote, the pages it shares with the worker (copy-on-write) stay shared.
 * The blocks tile the arena up to the bump pointer. */
static void arena_clear_free_space(void) {
    static const char zeros[ARENA_PAGE];
    char *block = (char *)arena + ((sizeof(ArenaHeader) + 63) & ~(size_t)63);
    while (block < arena->bump) {
        ArenaBlock *b = (ArenaBlock *)(void *)block;
        size_t size = arena_class_size(b->cls);
        if (b->tag != ARENA_BLOCK_TAG && size >= ARENA_HOLE_MIN) {
            char *body = (char *)(b + 1) + sizeof(void *), *end = block + size;
            while (body < end) {
                size_t k = (size_t)(end - body) < sizeof zeros ? (size_t)(end - body) : sizeof zeros;
                if (memcmp(body, zeros, k)) memset(body, 0, k);
                body += k;
            }
        }
        block += size;
    }
    char *first = (char *)arena + ARENA_PAGE; /* the header page is never all zeros */
    for (char *page = first; page + ARENA_PAGE <= arena->bump; page += ARENA_PAGE)
        if (page_is_zero(page)) madvise(page, ARENA_PAGE, MADV_DONTNEED);
}

/* Record the loaded state: every call of this process starts from exactly these bytes. The
 * snapshot keeps a page's loaded bytes only once a call first writes it (the fault handler
 * saves it then); until then the arena page itself is the loaded state, read-only, and most
 * of it stays shared with the worker. */
static int arena_take_snapshot(void) {
    /* Space the load used and gave back above the bump pointer is cleared, so that the
     * snapshot's "zero from hw on" holds from the first call. */
    memset(arena->bump, 0, (size_t)(arena->hw - arena->bump));
    arena->hw = arena->bump;
    if (arena->hw > arena_dirty_max) arena_dirty_max = arena->hw;
    snap_len = (size_t)(arena->bump - (char *)arena);
    arena_clear_free_space();
    size_t mapped = (snap_len + ARENA_PAGE - 1) & ~(size_t)(ARENA_PAGE - 1);
    void *p = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    arena_snapshot = p;
    prot_start = (char *)arena;
    prot_end = (char *)arena + (snap_len & ~(size_t)(ARENA_PAGE - 1));
    /* The partial last page is never protected: it is kept now and copied back every time. */
    memcpy(arena_snapshot + (prot_end - prot_start), prot_end, (size_t)(snap_len - (size_t)(prot_end - prot_start)));
    if (verify_restore) {
        /* Test mode: a full copy to check every restore against, made independently of the
         * fault handler that fills the snapshot. */
        verify_copy = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (verify_copy == MAP_FAILED) return -1;
        memcpy(verify_copy, arena, snap_len);
        if (mprotect(verify_copy, mapped, PROT_READ) != 0) return -1;
    }
    /* Nothing but the fault handler writes the snapshot: a stray write into it faults instead. */
    if (mprotect(arena_snapshot, mapped, PROT_READ) != 0) return -1;
    size_t pages = (size_t)(prot_end - prot_start) / ARENA_PAGE;
    hot_words = (pages + 63) / 64;
    hot_bits = calloc(hot_words ? hot_words : 1, sizeof(uint64_t));
    saved_bits = calloc(hot_words ? hot_words : 1, sizeof(uint64_t));
    if (!hot_bits || !saved_bits) return -1;
    struct sigaction sa = {0};
    sa.sa_sigaction = on_arena_write_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0) return -1;
    return arena_protect();
}

/* Whether [p, end) holds only zeros; whole pages the kernel does not have are zero by definition
 * and are not read (reading them would map them). */
static int all_zero(const char *p, const char *end) {
    static const char zeros[ARENA_PAGE];
    unsigned char resident[256];
    const char *page = (const char *)(((uintptr_t)p + ARENA_PAGE - 1) & ~(uintptr_t)(ARENA_PAGE - 1));
    if (page >= end) return end <= p || !memcmp(p, zeros, (size_t)(end - p));
    if (memcmp(p, zeros, (size_t)(page - p))) return 0;
    p = page;
    size_t n = (size_t)(end - p);
    while (n) {
        size_t pages = (n + ARENA_PAGE - 1) / ARENA_PAGE;
        if (pages > sizeof resident) pages = sizeof resident;
        if (mincore((void *)p, pages * ARENA_PAGE, resident) != 0) memset(resident, 1, sizeof resident);
        for (size_t i = 0; i < pages && n; i++) {
            size_t k = n < ARENA_PAGE ? n : ARENA_PAGE;
            if ((resident[i] & 1) && memcmp(p, zeros, k)) return 0;
            p += k;
            n -= k;
        }
    }
    return 1;
}

/* Put the arena back to the snapshot: the loaded bytes copied over, everything a call used
 * beyond them zeroed, so the next call cannot see a single byte of this one. */
static void arena_restore(void) {
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    char *hw = arena->hw; /* read before the copy puts the snapshot's value back */
    char *snap_end = (char *)arena + snap_len;
    if (hw > arena_dirty_max) arena_dirty_max = hw;
    /* The hot pages, in runs of neighbours, and the partial page after the protected ones. */
    size_t pages = (size_t)(prot_end - prot_start) / ARENA_PAGE;
    for (size_t i = break_restore ? pages : 0; i < pages;) {
        uint64_t word = hot_bits[i / 64] >> (i % 64);
        if (!word) {
            i = (i / 64 + 1) * 64;
            continue;
        }
        i += (size_t)__builtin_ctzll(word);
        size_t end = i;
        while (end < pages && (hot_bits[end / 64] >> (end % 64) & 1)) end++;
        memcpy(prot_start + i * ARENA_PAGE, arena_snapshot + i * ARENA_PAGE, (end - i) * ARENA_PAGE);
        i = end;
    }
    memcpy(prot_end, arena_snapshot + (prot_end - (char *)arena), (size_t)(snap_end - prot_end));
    if (hw > snap_end) {
        size_t used = (size_t)(hw - snap_end);
        if (used > ARENA_MADVISE_BYTES) {
            char *page = (char *)(((uintptr_t)snap_end + 4095) & ~(uintptr_t)4095);
            memset(snap_end, 0, (size_t)(page - snap_end));
            if (madvise(page, (size_t)(hw - page), MADV_DONTNEED) != 0) memset(page, 0, (size_t)(hw - page));
        } else {
            memset(snap_end, 0, used);
        }
    }
    restores_since_cool++;
    /* The verify mode also re-protects every third restore, so tests exercise that path too. */
    int cool = restores_since_cool >= (verify_restore ? 3 : ARENA_COOL_MAX_CALLS) ||
               (restores_since_cool >= ARENA_COOL_MIN_CALLS && hot_pages > pages / 4);
    if (cool && arena_protect() != 0) {
        /* Could not protect again (e.g. out of memory maps): stop serving rather than miss writes. */
        fatal("could not write-protect the arena");
    }
    arena_stats.cools += (unsigned long long)cool;
    struct timespec done;
    clock_gettime(CLOCK_MONOTONIC, &done);
    arena_stats.restores++;
    arena_stats.restore_ns +=
        (unsigned long long)((done.tv_sec - started.tv_sec) * 1000000000LL + (done.tv_nsec - started.tv_nsec));
    if (verify_restore && (memcmp(arena, verify_copy, snap_len) ||
                           !all_zero(snap_end, arena_dirty_max))) {
        fatal("the restored arena differs from its snapshot");
    }
}

/* ------------------------------------------------------------------ the engine */

enum { F_LOAD, F_AFTER_LOAD, F_INTROSPECT, F_BEGIN, F_POLL, F_FIRE_TIMERS, F_FETCH_DONE, F_FETCH_TIMED_OUT,
       F_FINISH, F_TAKE_OUTPUT, F_DRAIN_LOGS, F_COUNT };
static const char *const API_NAMES[F_COUNT] = {"load",       "afterLoad", "introspect",   "begin",
                                               "poll",       "fireTimers", "fetchDone",   "fetchTimedOut",
                                               "finish",     "takeOutput", "drainLogs"};

static JSRuntime *rt;
static JSContext *ctx;
static JSValue api[F_COUNT];
/* JSRuntime starts with JSMallocFunctions (5 pointers), then JSMallocState {count, size, limit}:
 * the same layout engine.py reads, verified against the public API before use (malloc_size_field,
 * declared with the arena that uses it). */
static const double GC_HEADROOM_FRACTION = 0.5;
static const size_t SALVAGE_MEMORY_BYTES = 16 * MIB;
static const double SALVAGE_SECONDS = 0.05;

static size_t heap_size(void) {
    if (malloc_size_field) return *malloc_size_field;
    JSMemoryUsage u;
    JS_ComputeMemoryUsage(rt, &u);
    return (size_t)u.malloc_size;
}

/* The heap's memory limit: the arena's (mem_admit) when the heap probe works, else QuickJS's. */
static void set_memory_limit(size_t bytes) {
    if (malloc_size_field) {
        mem_limit = bytes;
        JS_SetMemoryLimit(rt, 0);
    } else {
        JS_SetMemoryLimit(rt, bytes);
    }
}

static void apply_limits(const Limits *l) {
    arena_set_cap(l->memory_mb);
    set_memory_limit((size_t)l->memory_mb * MIB);
    JS_SetMaxStackSize(rt, (size_t)l->stack_kb * 1024);
}

/* Keep call children from collecting (and so copying) the zygote's heap for small calls. */
static void raise_gc_threshold(const Limits *l) {
    if (!malloc_size_field) return;
    size_t used = heap_size(), limit = (size_t)l->memory_mb * MIB;
    size_t room = limit > used ? limit - used : 0;
    JS_SetGCThreshold(rt, used + (size_t)((double)room * GC_HEADROOM_FRACTION));
}

/* Engine._classify: only engine-made errors (interrupt, OOM, stack) or parse errors get here. */
static int classify(JSContext *c, int during_parse) {
    JSValue exc = JS_GetException(c);
    /* Converting the error runs (locked, built-in) JS: give it headroom but keep it bounded. */
    B.cpu_deadline = cpu_now() + SALVAGE_SECONDS;
    B.wall_deadline = wall_now() + SALVAGE_SECONDS;
    int saved_binding = B.binding;
    set_memory_limit((size_t)B.lim.memory_mb * MIB + SALVAGE_MEMORY_BYTES);
    B.active = 1;
    const char *text = JS_ToCString(c, exc);
    B.active = 0;
    B.binding = saved_binding;
    set_memory_limit((size_t)B.lim.memory_mb * MIB);
    if (!text) JS_FreeValue(c, JS_GetException(c));
    JS_FreeValue(c, exc);
    char first[512];
    const char *src = text ? text : "(Failed obtaining QuickJS error string. Concurrency issue?)";
    size_t n = strcspn(src, "\n");
    if (n > 500) {
        n = 500;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) n--; /* whole UTF-8 characters */
    }
    memcpy(first, src, n);
    first[n] = 0;
    int stack = strstr(src, "stack overflow") || strstr(src, "call stack size exceeded") ||
                strstr(first, "Maximum call stack size exceeded");
    int rc;
    char detail[64];
    if (strncmp(first, "InternalError: interrupted", 26) == 0) {
        rc = budget_exceeded();
    } else if (strstr(first, "out of memory")) {
        snprintf(detail, sizeof detail, "{\"memory_mb\":%lld}", B.lim.memory_mb);
        rc = fail("memory_limit", detail, "the memory limit of %lld MB was exceeded", B.lim.memory_mb);
    } else if (stack) {
        snprintf(detail, sizeof detail, "{\"stack_kb\":%lld}", B.lim.stack_kb);
        rc = fail("stack_overflow", detail, "maximum call stack size exceeded");
    } else if (during_parse) {
        rc = fail("syntax_error", NULL, "the engine could not parse the bundle: %s", first);
    } else {
        rc = fail("sandbox_crash", NULL, "the sandbox runtime failed: %s", first);
    }
    if (text) JS_FreeCString(c, text);
    return rc;
}

/* Call a runtime API function under the budget; its JSON reply as malloc'd text. */
static char *call_text(int fn, int argc, JSValueConst *argv, size_t *len) {
    if (budget_check() < 0) return NULL;
    JS_UpdateStackTop(rt);
    B.active = 1;
    JSValue v = JS_Call(ctx, api[fn], JS_NULL, argc, argv);
    B.active = 0;
    if (JS_IsException(v)) {
        classify(ctx, 0);
        return NULL;
    }
    if (!JS_IsString(v)) {
        JS_FreeValue(ctx, v);
        fail("sandbox_crash", NULL, "runtime function %s returned a non-string", API_NAMES[fn]);
        return NULL;
    }
    size_t n;
    const char *s = JS_ToCStringLen(ctx, &n, v);
    JS_FreeValue(ctx, v);
    if (!s) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        fail("memory_limit", NULL, "the memory limit of %lld MB was exceeded", B.lim.memory_mb);
        return NULL;
    }
    char *copy = malloc(n + 1);
    memcpy(copy, s, n + 1);
    JS_FreeCString(ctx, s);
    if (len) *len = n;
    return copy;
}

/* The same, parsed in the wire runtime (JS_EXCEPTION with g_err set on failure). */
static JSValue call_json(int fn, int argc, JSValueConst *argv) {
    size_t n;
    char *text = call_text(fn, argc, argv, &n);
    if (!text) return JS_EXCEPTION;
    JSValue v = wire_parse(text, n);
    free(text);
    if (JS_IsException(v)) fail("sandbox_crash", NULL, "runtime function %s returned bad JSON", API_NAMES[fn]);
    return v;
}

static JSValue call1(int fn, const char *arg) {
    JSValue a = JS_NewString(ctx, arg);
    JSValue r = call_json(fn, 1, (JSValueConst *)&a);
    JS_FreeValue(ctx, a);
    return r;
}

static int reply_ok(JSValueConst reply) {
    JSValue ok = wget(reply, "ok");
    int yes = JS_ToBool(wctx, ok) == 1;
    JS_FreeValue(wctx, ok);
    return yes;
}

static int fail_from_reply(JSValueConst reply) {
    JSValue e = wget(reply, "error");
    fail_from(e);
    JS_FreeValue(wctx, e);
    return -1;
}

/* Run the promise job queue until it is empty. */
static int run_jobs(void) {
    for (;;) {
        if (budget_check() < 0) return -1;
        JSContext *c;
        JS_UpdateStackTop(rt);
        B.active = 1;
        int r = JS_ExecutePendingJob(rt, &c);
        B.active = 0;
        if (r < 0) return classify(c, 0);
        if (r == 0) return 0;
    }
}

static void random_hex(char out[65]) {
    unsigned char seed[32];
    size_t got = 0;
    while (got < sizeof seed) {
        ssize_t r = getrandom(seed + got, sizeof seed - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("getrandom");
        got += (size_t)r;
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[seed[i] >> 4];
        out[2 * i + 1] = hex[seed[i] & 15];
    }
    out[64] = 0;
}

static char runtime_path[4096];

/* Engine(): evaluate runtime.js and keep its private API; NULL or an error message. */
static const char *engine_init(char *error, size_t size) {
    FILE *f = fopen(runtime_path, "rb");
    if (!f) {
        snprintf(error, size, "sandbox_crash: %s is missing: run `npm run build:runtime` (make setup)", runtime_path);
        return error;
    }
    Buf src = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_add(&src, chunk, n);
    fclose(f);
    if (!arena) {
        snprintf(error, size, "sandbox_crash: could not map the JS heap arena: %s", strerror(errno));
        return error;
    }
    rt = JS_NewRuntime2(&arena_functions, arena);
    ctx = rt ? JS_NewContext(rt) : NULL;
    if (!ctx) {
        snprintf(error, size, "sandbox_crash: could not create the JS runtime in its arena");
        return error;
    }
    Limits d = limits_default();
    apply_limits(&d);
    JS_SetInterruptHandler(rt, on_interrupt, NULL);
    size_t *fields = (size_t *)(void *)rt;
    JSMemoryUsage u;
    JS_ComputeMemoryUsage(rt, &u);
    if (fields[7] == (size_t)d.memory_mb * MIB && (int64_t)fields[6] == u.malloc_size) malloc_size_field = &fields[6];
    apply_limits(&d); /* from now on the arena enforces the limit, if the probe found the field */
    budget_start(&(Limits){.memory_mb = d.memory_mb, .cpu_ms = 10000, .wall_ms = 60000, .stack_kb = d.stack_kb});
    B.active = 1;
    JSValue r = JS_Eval(ctx, src.p, src.n, "<input>", JS_EVAL_TYPE_GLOBAL);
    B.active = 0;
    free(src.p);
    if (JS_IsException(r)) {
        classify(ctx, 0);
        snprintf(error, size, "%s: %s", g_err.code, g_err.message);
        return error;
    }
    JS_FreeValue(ctx, r);
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue holder = JS_GetPropertyStr(ctx, global, "__lightfastRuntime");
    for (int i = 0; i < F_COUNT; i++) api[i] = JS_GetPropertyStr(ctx, holder, API_NAMES[i]);
    JS_FreeValue(ctx, holder);
    /* Only the engine holds the API: bundle code must not be able to call it. */
    JSAtom atom = JS_NewAtom(ctx, "__lightfastRuntime");
    JS_DeleteProperty(ctx, global, atom, 0);
    JS_FreeAtom(ctx, atom);
    JS_FreeValue(ctx, global);
    for (int i = 0; i < F_COUNT; i++)
        if (!JS_IsFunction(ctx, api[i])) {
            snprintf(error, size, "sandbox_crash: runtime.js has no API function %s", API_NAMES[i]);
            return error;
        }
    JS_RunGC(rt);
    return NULL;
}

/* Engine.load: evaluate a transformed bundle and find its agents. */
static int engine_load(JSValueConst frame, const Limits *lim) {
    apply_limits(lim);
    budget_start(lim);
    char seed[65];
    random_hex(seed);
    Buf args = {0};
    char *env = wjson_key(frame, "env");
    JSValue fname = wget(frame, "filename");
    char *filename = JS_IsString(fname) ? wstr(fname) : strdup("bundle.js");
    if (!*filename) {
        free(filename);
        filename = strdup("bundle.js");
    }
    JS_FreeValue(wctx, fname);
    /* "warm": false (introspection): the runtime skips evaluating lazy globals the bundle names. */
    JSValue warm = wget(frame, "warm");
    int cold = JS_IsBool(warm) && !JS_ToBool(wctx, warm);
    JS_FreeValue(wctx, warm);
    buf_str(&args, "{\"env\":");
    buf_str(&args, strcmp(env, "null") ? env : "{}");
    buf_fmt(&args, ",\"seed\":\"%s\",\"limits\":", seed);
    limits_json(&args, lim);
    buf_str(&args, ",\"filename\":");
    buf_jsons(&args, filename);
    if (cold) buf_str(&args, ",\"warm\":false");
    buf_str(&args, "}");
    free(env);
    char *script = wstr_key(frame, "script");
    int rc = -1;
    JSValue fn = JS_UNDEFINED;
    if (budget_check() < 0) goto out;
    JS_UpdateStackTop(rt);
    B.active = 1;
    /* The bundle's own file name in its stack frames (the runtime's are "<input>"): the host maps
       the frames of this file back to the upload (execution/sandbox/locate.py). */
    fn = JS_Eval(ctx, script, strlen(script), filename, JS_EVAL_TYPE_GLOBAL);
    B.active = 0;
    free(script);
    script = NULL;
    if (JS_IsException(fn)) {
        classify(ctx, 1);
        goto out;
    }
    JSValue argv[2] = {fn, JS_NewString(ctx, args.p)};
    JSValue reply = call_json(F_LOAD, 2, argv);
    JS_FreeValue(ctx, argv[1]);
    if (JS_IsException(reply)) goto out;
    if (!reply_ok(reply)) {
        fail_from_reply(reply);
        JS_FreeValue(wctx, reply);
        goto out;
    }
    JS_FreeValue(wctx, reply);
    if (run_jobs() < 0) goto out;
    reply = call_json(F_AFTER_LOAD, 0, NULL);
    if (JS_IsException(reply)) goto out;
    JS_FreeValue(wctx, reply);
    JS_FreeValue(ctx, fn);
    fn = JS_UNDEFINED;
    JS_RunGC(rt);
    raise_gc_threshold(lim);
    rc = 0;
out:
    JS_FreeValue(ctx, fn);
    free(script);
    free(filename);
    free(args.p);
    return rc;
}

/* ------------------------------------------------------------------ the host channel (fds 0/1) */

static char *call_id_json; /* the id of the frame being served, as JSON */
static int fetch_seq;

static int host_start_fetch(const char *request_json) {
    Buf f = {0};
    fetch_seq++;
    buf_str(&f, "{\"type\":\"fetch\",\"id\":");
    buf_str(&f, call_id_json);
    buf_fmt(&f, ",\"fetch_id\":%d,\"request\":", fetch_seq);
    buf_str(&f, request_json);
    buf_str(&f, "}");
    if (write_frame(STDOUT, f.p, f.n) < 0) _exit(0); /* the host is gone */
    free(f.p);
    return fetch_seq;
}

typedef int (*FetchHandler)(int fetch_id, const char *result_json, void *opaque);

/* FdHostChannel.poll: wait up to `timeout` s for the first fetch result, then drain. */
static int host_poll(double timeout, FetchHandler handler, void *opaque) {
    double wait = timeout > 0 ? timeout : 0;
    while (wait_readable(STDIN, wait)) {
        char *text;
        size_t n;
        int r = read_frame(STDIN, &text, &n);
        if (r == 0) _exit(0); /* the host is gone; nobody is left to answer */
        if (r < 0) die("protocol error on stdin");
        JSValue frame = wire_parse(text, n);
        free(text);
        if (JS_IsException(frame)) die("bad frame on stdin");
        int rc = 0;
        if (wtype_is(frame, "cancel")) {
            rc = fail("cancelled", NULL, "the call was cancelled");
        } else if (wtype_is(frame, "fetch-result")) {
            char *id = wjson_key(frame, "id");
            if (strcmp(id, call_id_json) == 0) {
                JSValue fid = wget(frame, "fetch_id");
                int32_t fetch_id = 0;
                JS_ToInt32(wctx, &fetch_id, fid);
                JS_FreeValue(wctx, fid);
                char *result = wjson_key(frame, "result");
                rc = handler(fetch_id, result, opaque);
                free(result);
            }
            free(id);
        }
        JS_FreeValue(wctx, frame);
        if (rc < 0) return -1;
        wait = 0;
    }
    return 0;
}

/* ------------------------------------------------------------------ one call (engine.py _Call) */

typedef struct {
    int js_id;
    char *request;
} Queued;

typedef struct {
    int host_id, js_id;
    double started;
} InFlight;

typedef struct {
    Queued *queued;
    int nqueued, capq;
    InFlight *flight;
    int nflight, capf;
    int fetches;
    size_t peak;
} Call;

static void sample_memory(Call *c) {
    size_t used = heap_size();
    if (used > c->peak) c->peak = used;
    if (mem_peak > c->peak) c->peak = mem_peak; /* allocations between samples, freed since */
}

static void start_fetches(Call *c) {
    while (c->nqueued && c->nflight < B.lim.concurrent_fetches) {
        Queued q = c->queued[0];
        memmove(c->queued, c->queued + 1, sizeof(Queued) * (size_t)--c->nqueued);
        int host_id = host_start_fetch(q.request);
        free(q.request);
        if (c->nflight == c->capf) {
            c->capf = c->capf ? 2 * c->capf : 8;
            c->flight = realloc(c->flight, sizeof(InFlight) * (size_t)c->capf);
        }
        c->flight[c->nflight++] = (InFlight){host_id, q.js_id, wall_now()};
        c->fetches++;
    }
}

static int deliver_fetch(int fetch_id, const char *result_json, void *opaque) {
    Call *c = opaque;
    for (int i = 0; i < c->nflight; i++) {
        if (c->flight[i].host_id != fetch_id) continue;
        int js_id = c->flight[i].js_id;
        c->flight[i] = c->flight[--c->nflight];
        JSValue argv[2] = {JS_NewInt32(ctx, js_id), JS_NewString(ctx, result_json)};
        JSValue r = call_json(F_FETCH_DONE, 2, argv);
        JS_FreeValue(ctx, argv[1]);
        if (JS_IsException(r)) return -1;
        JS_FreeValue(wctx, r);
        return 0;
    }
    return 0; /* a fetch the call already gave up on (timed out) */
}

static int call_wait(Call *c, JSValueConst next_timer) {
    double fetch_timeout = (double)B.lim.fetch_timeout_ms / 1000;
    double wait = B.wall_deadline - wall_now();
    if (JS_IsNumber(next_timer)) {
        double ms;
        JS_ToFloat64(wctx, &ms, next_timer);
        if (ms / 1000 < wait) wait = ms / 1000;
    }
    double now = wall_now();
    for (int i = 0; i < c->nflight; i++)
        if (c->flight[i].started + fetch_timeout - now < wait) wait = c->flight[i].started + fetch_timeout - now;
    if (wait <= 0 && B.wall_deadline - wall_now() <= 0) {
        B.binding = BIND_WALL;
        return budget_exceeded();
    }
    sample_memory(c);
    if (host_poll(wait > 0 ? wait : 0, deliver_fetch, c) < 0) return -1;
    now = wall_now();
    for (int i = 0; i < c->nflight;) {
        if (now - c->flight[i].started >= fetch_timeout) {
            int js_id = c->flight[i].js_id;
            c->flight[i] = c->flight[--c->nflight];
            JSValue a = JS_NewInt32(ctx, js_id);
            JSValue r = call_json(F_FETCH_TIMED_OUT, 1, (JSValueConst *)&a);
            if (JS_IsException(r)) return -1;
            JS_FreeValue(wctx, r);
        } else {
            i++;
        }
    }
    start_fetches(c);
    if (B.wall_deadline - wall_now() <= 0) {
        B.binding = BIND_WALL;
        return budget_exceeded();
    }
    return 0;
}

/* Append the body of an engine result: ok, output|error, logs, usage. */
static void result_body(Buf *out, Call *c, int ok, const char *output, const char *logs) {
    sample_memory(c);
    size_t peak = c->peak;
    if (ok) {
        buf_str(out, "\"ok\":true,\"output\":");
        buf_str(out, output);
    } else {
        buf_str(out, "\"ok\":false,\"error\":");
        err_json(out);
        /* Samples are taken at idle points; the heap reached its limit in between. */
        if (g_err.code && !strcmp(g_err.code, "memory_limit") && peak < (size_t)B.lim.memory_mb * MIB)
            peak = (size_t)B.lim.memory_mb * MIB;
    }
    /* Past the call's limit only the runtime itself allocates: salvaging the logs of a failed call
     * gets SALVAGE_MEMORY_BYTES more. That is not the bundle's use; it reports the limit. */
    if (mem_limit && peak > (size_t)B.lim.memory_mb * MIB) peak = (size_t)B.lim.memory_mb * MIB;
    buf_str(out, ",\"logs\":");
    buf_str(out, logs ? logs : "[]");
    buf_fmt(out, ",\"usage\":{\"cpu_ms\":%lld,\"wall_ms\":%lld,\"peak_memory_bytes\":%zu,\"fetches\":%d}",
            llround((cpu_now() - B.cpu_start) * 1000), llround((wall_now() - B.wall_start) * 1000), peak,
            c->fetches);
}

/* Read the logs after a limit error, with a little extra time and memory to do it. */
static char *salvage_logs(void) {
    set_memory_limit((size_t)B.lim.memory_mb * MIB + SALVAGE_MEMORY_BYTES);
    double saved_cpu = B.cpu_deadline, saved_wall = B.wall_deadline;
    Err saved = g_err;
    g_err.detail = NULL;
    B.cpu_deadline = cpu_now() + SALVAGE_SECONDS;
    B.wall_deadline = wall_now() + SALVAGE_SECONDS;
    JSValue reply = call_json(F_DRAIN_LOGS, 0, NULL);
    B.cpu_deadline = saved_cpu;
    B.wall_deadline = saved_wall;
    free(g_err.detail);
    g_err = saved;
    if (JS_IsException(reply))
        return strdup("[{\"level\":\"warn\",\"message\":\"[logs lost: the sandbox could not return them after the error]\"}]");
    JSValue logs = wget(reply, "logs");
    char *text = JS_IsArray(logs) ? wjson(logs) : strdup("[]");
    JS_FreeValue(wctx, logs);
    JS_FreeValue(wctx, reply);
    return text;
}

static int call_loop(Call *c, const char *args, char **output, char **logs) {
    JSValue r = call1(F_BEGIN, args);
    if (JS_IsException(r)) return -1;
    JS_FreeValue(wctx, r);
    for (;;) {
        if (run_jobs() < 0) return -1;
        JSValue state = call_json(F_POLL, 0, NULL);
        if (JS_IsException(state)) return -1;
        JSValue done = wget(state, "done");
        int is_done = JS_ToBool(wctx, done) == 1;
        JS_FreeValue(wctx, done);
        if (is_done) {
            JS_FreeValue(wctx, state);
            break;
        }
        JSValue fetches = wget(state, "fetches");
        int64_t count = 0;
        if (JS_IsArray(fetches)) JS_GetLength(wctx, fetches, &count);
        for (int64_t i = 0; i < count; i++) {
            JSValue item = JS_GetPropertyInt64(wctx, fetches, i);
            JSValue id = wget(item, "id");
            int32_t js_id = 0;
            JS_ToInt32(wctx, &js_id, id);
            JS_FreeValue(wctx, id);
            if (c->nqueued == c->capq) {
                c->capq = c->capq ? 2 * c->capq : 8;
                c->queued = realloc(c->queued, sizeof(Queued) * (size_t)c->capq);
            }
            c->queued[c->nqueued++] = (Queued){js_id, wjson_key(item, "request")};
            JS_FreeValue(wctx, item);
        }
        JS_FreeValue(wctx, fetches);
        start_fetches(c);
        JSValue next = wget(state, "nextTimerMs");
        JS_FreeValue(wctx, state);
        double next_ms = 0;
        int has_timer = JS_IsNumber(next) && JS_ToFloat64(wctx, &next_ms, next) == 0;
        if (has_timer && next_ms <= 0) {
            JS_FreeValue(wctx, next);
            r = call_json(F_FIRE_TIMERS, 0, NULL);
            if (JS_IsException(r)) return -1;
            JS_FreeValue(wctx, r);
            continue;
        }
        if (!has_timer && !c->nflight && !c->nqueued) {
            JS_FreeValue(wctx, next);
            return fail("timeout", "{\"reason\":\"nothing_pending\"}",
                        "the tool's promise can never settle: nothing is pending (no timers, no fetches)");
        }
        int rc = call_wait(c, next);
        JS_FreeValue(wctx, next);
        if (rc < 0) return -1;
    }
    JSValue status = call_json(F_FINISH, 0, NULL);
    if (JS_IsException(status)) return -1;
    JSValue logs_v = wget(status, "logs");
    *logs = JS_IsArray(logs_v) ? wjson(logs_v) : strdup("[]");
    JS_FreeValue(wctx, logs_v);
    if (!reply_ok(status)) {
        fail_from_reply(status);
        JS_FreeValue(wctx, status);
        return 1; /* a classified failure of the tool, with its logs */
    }
    JS_FreeValue(wctx, status);
    size_t size;
    char *text = call_text(F_TAKE_OUTPUT, 0, NULL, &size);
    if (!text) return -1;
    if ((long long)size > B.lim.output_bytes) {
        free(text);
        char detail[64];
        snprintf(detail, sizeof detail, "{\"output_bytes\":%lld}", B.lim.output_bytes);
        fail("output_limit", detail, "output is larger than the limit of %lld bytes", B.lim.output_bytes);
        return 1;
    }
    *output = text;
    return 0;
}

/* A call that failed after the heap limit refused an allocation failed because of it, whatever the
 * bundle made of the out-of-memory error: swallowed in a timer callback or a promise job (the
 * tool's promise then never settles: "nothing pending", or the wall limit), or re-thrown. When
 * QuickJS cannot even allocate the InternalError at the limit it throws null instead (seen with
 * 1e7 promises and huge regex replacements: where the limit falls depends on the heap's layout,
 * so any change of the runtime's size could turn those memory_limits into tool_errors). */
static void classify_refused_memory(void) {
    if (!mem_refused || !g_err.code || !strcmp(g_err.code, "memory_limit")) return;
    int swallowed = !strcmp(g_err.code, "timeout") || !strcmp(g_err.code, "sandbox_crash");
    /* QuickJS throws null when the heap is too full to build even the "out of memory" error
     * ("non-Error value thrown: object" is how the runtime describes a thrown null). */
    int rethrown = !strcmp(g_err.code, "tool_error") &&
                   (strstr(g_err.message, "out of memory") || !strcmp(g_err.message, "non-Error value thrown: object"));
    if (!swallowed && !rethrown) return;
    char detail[96];
    snprintf(detail, sizeof detail, "{\"memory_mb\":%lld,\"after\":\"%s\"}", B.lim.memory_mb, g_err.code);
    fail("memory_limit", detail, "the memory limit of %lld MB was exceeded", B.lim.memory_mb);
}

/* Engine.invoke: one tool call; appends the result body to `out`. Never fails the frame. */
static void engine_invoke(JSValueConst frame, const Limits *lim, Buf *out) {
    budget_start(lim);
    Call c = {0};
    char seed[65];
    random_hex(seed);
    Buf args = {0};
    char *agent = wstr_key(frame, "agent"), *tool = wstr_key(frame, "tool");
    char *input = wjson_key(frame, "input");
    JSValue cv = wget(frame, "context");
    char *context = JS_IsObject(cv) && !JS_IsArray(cv) ? wjson(cv) : strdup("{}");
    JS_FreeValue(wctx, cv);
    buf_str(&args, "{\"agent\":");
    buf_jsons(&args, agent);
    buf_str(&args, ",\"tool\":");
    buf_jsons(&args, tool);
    buf_str(&args, ",\"input\":");
    buf_jsons(&args, input);
    buf_str(&args, ",\"context\":");
    buf_str(&args, context);
    buf_fmt(&args, ",\"seed\":\"%s\",\"limits\":", seed);
    limits_json(&args, lim);
    buf_str(&args, "}");
    free(agent);
    free(tool);
    free(input);
    free(context);
    apply_limits(lim);
    /* The call's own limit may differ from the one the zygote loaded with. */
    raise_gc_threshold(lim);
    char *output = NULL, *logs = NULL;
    int rc = call_loop(&c, args.p, &output, &logs);
    free(args.p);
    if (rc != 0) classify_refused_memory();
    if (rc == 0) {
        result_body(out, &c, 1, output, logs);
    } else if (rc > 0) {
        result_body(out, &c, 0, NULL, logs);
    } else {
        free(logs);
        logs = salvage_logs();
        result_body(out, &c, 0, NULL, logs);
    }
    free(output);
    free(logs);
    /* The zygote serves call after call: what the call kept on the C side goes too. */
    for (int i = 0; i < c.nqueued; i++) free(c.queued[i].request);
    free(c.queued);
    free(c.flight);
}

/* Engine.introspect after engine_load: the manifest JSON, malloc'd, or NULL with g_err. */
static char *engine_introspect(void) {
    Limits d = limits_default();
    apply_limits(&d);
    budget_start(&d);
    JSValue reply = call_json(F_INTROSPECT, 0, NULL);
    if (JS_IsException(reply)) return NULL;
    if (!reply_ok(reply)) {
        fail_from_reply(reply);
        JS_FreeValue(wctx, reply);
        return NULL;
    }
    char *manifest = wjson_key(reply, "manifest");
    JS_FreeValue(wctx, reply);
    return manifest;
}

/* ------------------------------------------------------------------ jail pieces applied here */

typedef struct {
    int drop_uid, rlimits, no_new_privs, seccomp, netns, close_fds, clear_env;
} Layers;

static Layers layers;
static int probes_enabled;
static struct sock_fprog worker_filter, call_filter;
static long vsize_at_settle;

static int install_filter(struct sock_fprog *prog) {
    if (!prog->len) {
        errno = ENOSYS;
        return -1;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0) == 0) return 0;
    if (errno != EACCES) return -1;
    /* Without CAP_SYS_ADMIN (uid already dropped) the kernel wants no_new_privs first. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0);
}

static void close_all_but(int a, int b) {
    /* close_range(2): one syscall, cheap enough per call. */
    int keep[2] = {a < b ? a : b, a < b ? b : a};
    int start = 3;
    for (int i = 0; i < 2; i++) {
        if (keep[i] < start) continue;
        if (keep[i] > start) syscall(436 /* close_range */, start, keep[i] - 1, 0);
        start = keep[i] + 1;
    }
    syscall(436, start, ~0U, 0);
}

/* A zygote's /proc/self/statm, opened before its call filter (which allows no opens). */
static int statm_fd = -1;

static long current_vsize(void) {
    long pages = 0;
    if (statm_fd >= 0) {
        char text[128];
        ssize_t n = pread(statm_fd, text, sizeof text - 1, 0);
        if (n > 0) {
            text[n] = 0;
            pages = strtol(text, NULL, 10);
        }
        return pages * sysconf(_SC_PAGESIZE);
    }
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld", &pages) != 1) pages = 0;
        fclose(f);
    }
    return pages * sysconf(_SC_PAGESIZE);
}

/* Return free malloc memory to the kernel: fewer pages for each fork and exit to map. */
static void settle(void) {
    malloc_trim(0);
    vsize_at_settle = current_vsize();
}

/* jail.apply_call_child_jail, applied once to a process that runs bundle code (a zygote right
 * after its fork, before the bundle loads; a throw-away introspect/probe child before it reads
 * its frame): no new processes, the call allowlist (launch.py). It stays in force for the
 * process's whole life. */
static rlim_t as_hard;     /* the jail's RLIMIT_AS hard limit */
static rlim_t as_soft_now; /* the RLIMIT_AS soft limit this process last set (0: not yet) */

static int jail_for_calls(void) {
    if (layers.rlimits) {
        struct rlimit r = {0, 0};
        setrlimit(RLIMIT_NPROC, &r);
        getrlimit(RLIMIT_AS, &r);
        as_hard = r.rlim_max;
    }
    signal(SIGPROF, SIG_DFL);
    /* Date's local-time methods (getHours, getTimezoneOffset, toString...) call localtime_r, whose
     * first use loads the zone (an open the call filter refuses: SIGSYS killed any bundle that
     * formats a date, e.g. with date-fns). Bundle code runs in UTC, as on edge runtimes and
     * whatever the host's zone: loaded here, under the worker filter, libc keeps it cached. */
    setenv("TZ", "UTC", 1);
    tzset();
    if (layers.seccomp && install_filter(&call_filter) < 0) return -1;
    return 0;
}

/* The per-call half, around each call: the address-space limit for this call's memory limit
 * (soft, so a later call with a larger memory limit can have it; the jail's hard limit stays)
 * and the CPU backstop. RLIMIT_CPU counts the whole life of a process that serves many calls,
 * so it stays the jail's lifetime guard; the per-call CPU backstop is ITIMER_PROF. */
static void call_limits_begin(const Limits *lim) {
    if (!layers.rlimits) return;
    /* jail.CPU_BACKSTOP_MS: the interrupt handler stops JS at the CPU limit, but a single native
     * builtin (JSON.parse, String.prototype.repeat on tens of MB) never checks it; SIGPROF's default
     * action kills the process a bounded time later and its parent reports cpu_limit. */
    long backstop_ms = (long)lim->cpu_ms + 60;
    struct itimerval prof = {{0, 0}, {backstop_ms / 1000, (backstop_ms % 1000) * 1000}};
    setitimer(ITIMER_PROF, &prof, NULL);
    /* The JS heap is in the arena (already mapped, so already counted); this bounds what the
     * runner itself allocates for the call (frames, output and log text). */
    rlim_t headroom = (rlim_t)((lim->memory_mb * 2 > 128 ? lim->memory_mb * 2 : 128) + 128) * MIB;
    rlim_t limit = (rlim_t)vsize_at_settle + headroom;
    if (as_hard != RLIM_INFINITY && as_hard < limit) limit = as_hard;
    if (limit == as_soft_now) return;
    struct rlimit r = {limit, as_hard};
    if (setrlimit(RLIMIT_AS, &r) == 0) as_soft_now = limit;
}

static void call_limits_end(void) {
    if (!layers.rlimits) return;
    static const struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_PROF, &off, NULL);
}

/* ------------------------------------------------------------------ test probes (--test-probes) */

static void errno_name(Buf *b, int e) {
    const char *name = strerrorname_np(e);
    if (name)
        buf_jsons(b, name);
    else
        buf_fmt(b, "\"%d\"", e);
}

static int probe_fetch_done;
static char *probe_fetch_result;
static int probe_fetch_wanted;

static int probe_fetch_handler(int fetch_id, const char *result_json, void *opaque) {
    (void)opaque;
    if (fetch_id == probe_fetch_wanted) {
        probe_fetch_result = strdup(result_json);
        probe_fetch_done = 1;
    }
    return 0;
}

/* A write to an unmapped page, behind a pointer the compiler cannot see through. */
static void raise_fault(void) {
    static volatile uintptr_t address = 8;
    *(volatile int *)address = 1;
}

/* jail.run_probe, in C: a look at the jail from inside a call child. */
static int run_probe(JSValueConst frame, Buf *out) {
    char *name = wstr_key(frame, "probe");
    JSValue args = wget(frame, "args");
    int rc = 0;
    if (!strcmp(name, "ids")) {
        gid_t groups[64];
        int n = getgroups(64, groups);
        buf_fmt(out, "{\"uid\":%d,\"euid\":%d,\"gid\":%d,\"groups\":[", getuid(), geteuid(), getgid());
        for (int i = 0; i < n; i++) buf_fmt(out, "%s%d", i ? "," : "", groups[i]);
        buf_str(out, "]}");
    } else if (!strcmp(name, "env")) {
        buf_str(out, "{");
        int first = 1;
        for (char **e = environ; e && *e; e++) {
            char *eq = strchr(*e, '=');
            if (!eq) continue;
            buf_str(out, first ? "" : ",");
            first = 0;
            buf_json(out, *e, (size_t)(eq - *e));
            buf_str(out, ":");
            buf_jsons(out, eq + 1);
        }
        buf_str(out, "}");
    } else if (!strcmp(name, "fds")) {
        struct stat st;
        buf_str(out, "[");
        int first = 1;
        for (int fd = 0; fd < 256; fd++)
            if (fstat(fd, &st) == 0) {
                buf_fmt(out, "%s%d", first ? "" : ",", fd);
                first = 0;
            }
        buf_str(out, "]");
    } else if (!strcmp(name, "rlimits")) {
        static const struct { const char *n; int r; } kinds[] = {{"as", RLIMIT_AS},       {"cpu", RLIMIT_CPU},
                                                               {"fsize", RLIMIT_FSIZE}, {"nofile", RLIMIT_NOFILE},
                                                               {"nproc", RLIMIT_NPROC}, {"core", RLIMIT_CORE}};
        buf_str(out, "{");
        for (int i = 0; i < 6; i++) {
            struct rlimit r;
            getrlimit(kinds[i].r, &r);
            long long s = r.rlim_cur == RLIM_INFINITY ? -1 : (long long)r.rlim_cur;
            long long h = r.rlim_max == RLIM_INFINITY ? -1 : (long long)r.rlim_max;
            buf_fmt(out, "%s\"%s\":[%lld,%lld]", i ? "," : "", kinds[i].n, s, h);
        }
        buf_str(out, "}");
    } else if (!strcmp(name, "socket")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0)
            errno_name(out, errno);
        else {
            close(s);
            buf_str(out, "\"ok\"");
        }
    } else if (!strcmp(name, "connect")) {
        char *host = wstr_key(args, "host");
        JSValue pv = wget(args, "port");
        int32_t port = 0;
        JS_ToInt32(wctx, &port, pv);
        JS_FreeValue(wctx, pv);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) {
            errno_name(out, errno);
        } else {
            struct timeval tv = {2, 0};
            setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
            inet_pton(AF_INET, host, &sa.sin_addr);
            if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0)
                buf_str(out, "\"ok\"");
            else
                errno_name(out, errno);
            close(s);
        }
        free(host);
    } else if (!strcmp(name, "read_file")) {
        char *path = wstr_key(args, "path");
        int fd = open(path, O_RDONLY);
        char byte;
        if (fd < 0 || read(fd, &byte, 1) < 0)
            errno_name(out, errno);
        else
            buf_str(out, "\"ok\"");
        if (fd >= 0) close(fd);
        free(path);
    } else if (!strcmp(name, "fork")) {
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        if (pid < 0)
            errno_name(out, errno);
        else {
            waitpid(pid, NULL, 0);
            buf_str(out, "\"ok\"");
        }
    } else if (!strcmp(name, "execve")) {
        char *argv[] = {"probe", NULL};
        execv("/nonexistent/probe", argv);
        errno_name(out, errno);
    } else if (!strcmp(name, "itimer")) {
        struct itimerval prof;
        getitimer(ITIMER_PROF, &prof);
        buf_fmt(out, "%.6f", (double)prof.it_value.tv_sec + (double)prof.it_value.tv_usec / 1e6);
    } else if (!strcmp(name, "status")) {
        FILE *f = fopen("/proc/self/status", "r");
        char line[512];
        buf_str(out, "{");
        int first = 1;
        while (f && fgets(line, sizeof line, f)) {
            if (strncmp(line, "NoNewPrivs", 10) && strncmp(line, "Seccomp", 7)) continue;
            char *colon = strchr(line, ':');
            if (!colon) continue;
            *colon = 0;
            char *value = colon + 1;
            value += strspn(value, " \t");
            value[strcspn(value, "\n")] = 0;
            buf_str(out, first ? "" : ",");
            first = 0;
            buf_jsons(out, line);
            buf_str(out, ":");
            buf_jsons(out, value);
        }
        if (f) fclose(f);
        buf_str(out, "}");
    } else if (!strcmp(name, "sleep")) {
        JSValue sv = wget(args, "seconds");
        double seconds = 0;
        JS_ToFloat64(wctx, &seconds, sv);
        JS_FreeValue(wctx, sv);
        struct timespec ts = {(time_t)seconds, (long)((seconds - floor(seconds)) * 1e9)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
        buf_str(out, "null");
    } else if (!strcmp(name, "spin")) {
        for (volatile int spin = 1; spin;) {
        }
    } else if (!strcmp(name, "crash")) {
        /* A real fault: a process under the call filter may not signal, not even itself. */
        raise_fault();
    } else if (!strcmp(name, "exit")) {
        JSValue cv = wget(args, "code");
        int32_t code = 7;
        if (!JS_IsUndefined(cv)) JS_ToInt32(wctx, &code, cv);
        JS_FreeValue(wctx, cv);
        _exit(code);
    } else if (!strcmp(name, "fetch")) {
        char *request = wjson_key(args, "request");
        probe_fetch_wanted = host_start_fetch(request);
        free(request);
        while (!probe_fetch_done && rc == 0) rc = host_poll(1.0, probe_fetch_handler, NULL);
        if (rc == 0) buf_str(out, probe_fetch_result);
    } else {
        rc = fail("sandbox_crash", NULL, "runner failure: KeyError: '%s'", name);
    }
    JS_FreeValue(wctx, args);
    free(name);
    return rc;
}

/* ------------------------------------------------------------------ processes (runner.py) */

/* Shared between the worker and one zygote (MAP_SHARED, one page): the call the zygote is
 * running, so that the worker can answer for it if the zygote dies in it. */
typedef struct {
    volatile int running;
    int unused;
    volatile long long cpu_start_ns; /* the zygote's CPU clock when the call started */
    char id[4080]; /* the call's id as JSON; empty: the call the worker forwarded */
} CallSlot;

typedef struct {
    char *key;
    pid_t pid;
    int command_fd, status_fd;
    CallSlot *slot;
    char *forwarded_id; /* id of the last call the worker forwarded to it */
    int dead, dead_status; /* it died between calls: the next invoke of its key says so */
} Zygote;

static Zygote zygotes[MAX_ZYGOTES];
static int nzygotes;
static int stdin_owner = -1;      /* the zygote that reads stdin now (-1: the worker) */
static CallSlot *call_slot;       /* in a zygote: its slot */
static int own_fds[2] = {-1, -1}; /* a zygote's pipes to its worker */
static pid_t answered[1024];      /* throw-away children that answered and are not reaped yet */
static int nanswered;
static int have_engine;

/* ---- CPU metering. Every load and call is metered to its organization from a clock the bundle
 * cannot set: the kernel's accounting of the process that ran it. The worker (which never runs
 * bundle code) reads a zygote's CPU clock after its load, and the rusage of any zygote or child it
 * reaps; processes that run bundle code measure themselves only in C, around the engine. */

static long long timeval_ms(struct timeval t) { return (long long)t.tv_sec * 1000 + t.tv_usec / 1000; }

static long long rusage_cpu_ms(const struct rusage *ru) { return timeval_ms(ru->ru_utime) + timeval_ms(ru->ru_stime); }

/* A child's whole CPU time so far (it is alive, or a zombie not reaped yet); -1 if unknown. */
static long long child_cpu_ms(pid_t pid) {
    /* The kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED), as clock_getcpuclockid builds it
     * (without the clock_getres probe glibc adds, which the worker filter need not allow). */
    clockid_t clock = (clockid_t)((~(unsigned)pid) << 3) | 2;
    struct timespec t;
    if (clock_gettime(clock, &t) != 0) return -1;
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* This process's CPU time since it was forked (the kernel starts a child's clock at zero). */
static long long own_cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* waitpid that also returns the child's CPU time in ms (the kernel's rusage of the reaped child). */
static long long reap_cpu_ms(pid_t pid, int *status) {
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    if (wait4(pid, status, 0, &ru) != pid) return -1;
    return rusage_cpu_ms(&ru);
}

/* An error frame for request `id_json` from g_err. `zygote_lost`: the bundle's zygote is gone
 * (or was never there), so the host must send `load` again before the next invoke of its key.
 * `cpu_ms` >= 0: the CPU the failed load or call used, as "usage". */
static void send_error_frame_cpu(const char *id_json, int zygote_lost, long long cpu_ms) {
    Buf f = {0};
    buf_str(&f, "{\"type\":\"error\",\"id\":");
    buf_str(&f, id_json);
    buf_str(&f, ",\"error\":");
    err_json(&f);
    if (cpu_ms >= 0) buf_fmt(&f, ",\"usage\":{\"cpu_ms\":%lld}", cpu_ms);
    buf_str(&f, zygote_lost ? ",\"zygote_lost\":true}" : "}");
    write_frame(STDOUT, f.p, f.n);
    free(f.p);
}

static void send_error_frame(const char *id_json, int zygote_lost) { send_error_frame_cpu(id_json, zygote_lost, -1); }

static void send_error(const char *id_json) { send_error_frame(id_json, 0); }

/* _classify_exit: a process died before answering. */
static void fail_exit(int status, const char *what) {
    char detail[64];
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == SIGXCPU || sig == SIGPROF) {
            fail("cpu_limit", sig == SIGXCPU ? "{\"signal\":\"SIGXCPU\"}" : "{\"signal\":\"SIGPROF\"}",
                 "%s exceeded its CPU time limit", what);
            return;
        }
        const char *abbrev = sigabbrev_np(sig);
        snprintf(detail, sizeof detail, "{\"signal\":%d}", sig);
        if (sig == SIGSYS) {
            fail("sandbox_crash", detail, "%s was killed by signal SIGSYS (a system call the seccomp filter does not allow)",
                 what);
            return;
        }
        fail("sandbox_crash", detail, "%s was killed by signal SIG%s", what, abbrev ? abbrev : "?");
        return;
    }
    snprintf(detail, sizeof detail, "{\"exit_code\":%d}", WEXITSTATUS(status));
    if (WEXITSTATUS(status) == RUNNER_ABORT_EXIT) {
        fail("sandbox_crash", detail, "%s aborted: an internal check of the runner failed", what);
        return;
    }
    fail("sandbox_crash", detail, "%s exited with status %d without answering", what, WEXITSTATUS(status));
}

static void close_private_fds(int keep_a, int keep_b) {
    if (layers.close_fds) {
        close_all_but(keep_a, keep_b);
        return;
    }
    for (int i = 0; i < 2; i++)
        if (own_fds[i] >= 0) close(own_fds[i]);
    for (int i = 0; i < nzygotes; i++) {
        if (zygotes[i].dead || zygotes[i].command_fd < 0) continue; /* closed when it died, or none */
        close(zygotes[i].command_fd);
        close(zygotes[i].status_fd);
    }
}

/* A process forked from the worker keeps nothing of the worker's zygotes. */
static void forget_zygotes(int keep_a, int keep_b) {
    close_private_fds(keep_a, keep_b);
    for (int i = 0; i < nzygotes; i++)
        if (zygotes[i].slot) munmap(zygotes[i].slot, sizeof(CallSlot));
    nzygotes = 0;
}

/* The body of a throw-away child's frame: the result frame's fields after "id". */
static int child_body(JSValueConst frame, const Limits *lim, Buf *out) {
    if (wtype_is(frame, "introspect")) {
        if (engine_load(frame, lim) < 0) return -1;
        char *manifest = engine_introspect();
        if (!manifest) return -1;
        buf_str(out, "\"ok\":true,\"manifest\":");
        buf_str(out, manifest);
        free(manifest);
        return 0;
    }
    if (wtype_is(frame, "probe") && probes_enabled) {
        Buf probe = {0};
        int rc = run_probe(frame, &probe);
        if (rc == 0) {
            buf_str(out, "\"ok\":true,\"probe\":");
            buf_str(out, probe.p ? probe.p : "null");
        }
        free(probe.p);
        return rc;
    }
    char *kind = wstr_key(frame, "type");
    fail("sandbox_crash", NULL, "a throw-away child cannot run a '%s' frame", kind);
    free(kind);
    return -1;
}

/* Answer one frame on stdout under the call jail and limits: an introspect or probe in a
 * throw-away child, an invoke in a zygote (`invoke`). */
static void answer_frame(JSValueConst frame, int invoke) {
    /* A zygote answers call after call: nothing of the last one's C state is reused. */
    free(g_err.detail);
    g_err = (Err){0};
    free(call_id_json);
    call_id_json = wjson_key(frame, "id");
    fetch_seq = 0;
    if (call_slot) {
        size_t n = strlen(call_id_json);
        if (n < sizeof call_slot->id)
            memcpy(call_slot->id, call_id_json, n + 1);
        else
            call_slot->id[0] = 0;
        call_slot->cpu_start_ns = own_cpu_ns();
        call_slot->running = 1;
    }
    Buf out = {0};
    buf_str(&out, "{\"type\":\"result\",\"id\":");
    buf_str(&out, call_id_json);
    buf_str(&out, ",");
    Limits lim;
    int rc = limits_parse(frame, &lim);
    if (rc == 0) {
        call_limits_begin(&lim);
        if (invoke)
            engine_invoke(frame, &lim, &out);
        else
            rc = child_body(frame, &lim, &out);
        call_limits_end();
    }
    if (rc < 0) {
        out.n = 0;
        buf_str(&out, "{\"type\":\"error\",\"id\":");
        buf_str(&out, call_id_json);
        buf_str(&out, ",\"error\":");
        err_json(&out);
    }
    /* A throw-away child (introspect: it loads the bundle) ran nothing before this frame, so its
     * CPU clock since the fork is the frame's whole cost. */
    if (!invoke) buf_fmt(&out, ",\"usage\":{\"cpu_ms\":%lld}", own_cpu_ns() / 1000000);
    buf_str(&out, "}");
    if (write_frame(STDOUT, out.p, out.n) < 0) _exit(3);
    if (call_slot) call_slot->running = 0;
    free(out.p);
}

static __attribute__((noreturn)) void child_main(int go_r, int done_w) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    forget_zygotes(go_r, done_w);
    if (jail_for_calls() < 0) _exit(4);
    char *text;
    size_t n;
    if (read_frame(go_r, &text, &n) != 1) _exit(0);
    close(go_r);
    JSValue frame = wire_parse(text, n);
    free(text);
    if (JS_IsException(frame)) _exit(5);
    answer_frame(frame, 0);
    if (write(done_w, "1", 1) != 1) _exit(3);
    _exit(0);
}

static void reap_answered(void) {
    int kept = 0;
    for (int i = 0; i < nanswered; i++)
        if (waitpid(answered[i], NULL, WNOHANG) == 0) answered[kept++] = answered[i];
    nanswered = kept;
}

/* Hand an introspect or probe frame to a throw-away child of the base, which answers the host
 * itself; wait until it has (its exit is reaped later, off the answer's path). */
static void run_in_child(const char *text, size_t n, const char *id_json) {
    reap_answered();
    int go[2], done[2];
    if (pipe2(go, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        close(go[1]);
        close(done[0]);
        child_main(go[0], done[1]);
    }
    close(go[0]);
    close(done[1]);
    write_frame(go[1], text, n); /* a dead child is reported below from its exit status */
    close(go[1]);
    char byte = 0;
    ssize_t r;
    do r = read(done[0], &byte, 1);
    while (r < 0 && errno == EINTR);
    close(done[0]);
    if (r == 1 && byte == '1') {
        if (nanswered == (int)(sizeof answered / sizeof answered[0])) {
            waitpid(answered[0], NULL, 0);
            memmove(answered, answered + 1, sizeof(pid_t) * (size_t)--nanswered);
        }
        answered[nanswered++] = pid;
        return;
    }
    int status = 0;
    long long cpu_ms = reap_cpu_ms(pid, &status);
    fail_exit(status, "the call");
    send_error_frame_cpu(id_json, 0, cpu_ms);
}

static void zygote_load_failed(int status_w) {
    Buf f = {0};
    buf_str(&f, "{\"type\":\"error\",\"ok\":false,\"error\":");
    err_json(&f);
    buf_str(&f, "}");
    write_frame(status_w, f.p, f.n);
    _exit(0);
}

/* A key's invoke in its zygote: answered on stdout, then the heap put back. */
static void zygote_call(JSValue frame) {
    if (probes_enabled && wtype_is(frame, "probe")) {
        /* The `arena` test probe: what this zygote's restores cost so far (nothing to restore). */
        char *id = wjson_key(frame, "id"), *name = wstr_key(frame, "probe");
        Buf f = {0};
        if (!strcmp(name, "garbage")) {
            /* Test-only: what a zygote that lost control of its output would send (a header
             * announcing more than follows, then bytes that are not JSON): the host must drop
             * this zygote and nothing else. */
            static const char junk[] = "\x00\x00\x00\x10{\"type\":\"result\",";
            write_all(STDOUT, junk, sizeof junk - 1);
            free(id);
            free(name);
            JS_FreeValue(wctx, frame);
            return;
        }
        if (strcmp(name, "arena")) {
            fail("sandbox_crash", NULL, "a bundle zygote answers only the 'arena' probe, not '%s'", name);
            send_error(id);
            free(id);
            free(name);
            JS_FreeValue(wctx, frame);
            return;
        }
        free(name);
        buf_fmt(&f, "{\"type\":\"result\",\"id\":%s,\"ok\":true,\"probe\":", id);
        buf_fmt(&f, "{\"snapshot_bytes\":%zu,\"pages\":%zu,\"hot_pages\":%zu,\"saved_pages\":%zu,", snap_len,
                (snap_len + ARENA_PAGE - 1) / ARENA_PAGE, hot_pages, saved_pages);
        buf_fmt(&f, "\"restores\":%llu,", arena_stats.restores);
        buf_fmt(&f, "\"restore_ns\":%llu,\"faults\":%llu,\"cools\":%llu}}", arena_stats.restore_ns,
                arena_stats.faults, arena_stats.cools);
        write_frame(STDOUT, f.p, f.n);
        free(f.p);
        free(id);
        JS_FreeValue(wctx, frame);
        return;
    }
    answer_frame(frame, 1);
    JS_FreeValue(wctx, frame);
    arena_restore();
}

/* The frame just read from stdin, if the zygote runs it itself: an invoke of its own key (with
 * an id that fits its slot). Late frames of ended calls are dropped (*drop). */
static JSValue zygote_takes(const char *text, size_t n, const char *key, int *drop) {
    *drop = 0;
    JSValue frame = wire_parse(text, n);
    if (JS_IsException(frame)) return JS_EXCEPTION; /* the worker says why */
    char *kind = wstr_key(frame, "type");
    int mine = 0;
    if (!strcmp(kind, "cancel") || !strcmp(kind, "fetch-result")) {
        *drop = 1;
    } else if (!strcmp(kind, "invoke") || (probes_enabled && !strcmp(kind, "probe"))) {
        char *k = wstr_key(frame, "key"), *id = wjson_key(frame, "id");
        mine = !strcmp(k, key) && strlen(id) < sizeof call_slot->id;
        free(k);
        free(id);
    }
    free(kind);
    if (mine) return frame;
    JS_FreeValue(wctx, frame);
    return JS_EXCEPTION;
}

/* A bundle's zygote: loads the bundle once, snapshots the JS heap, jails itself for calls, then
 * runs the invokes of its key in this process and puts the heap back after each one. The
 * worker hands it a call (and stdin) on the command pipe; from then on it reads stdin itself,
 * serving its own key's invokes without the worker, until a frame for anything else arrives,
 * which it hands back (and stdin with it) on the status pipe. */
static __attribute__((noreturn)) void zygote_main(JSValueConst frame, const Limits *lim, const char *key,
                                                 CallSlot *slot, int command_r, int status_w) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (int i = 0; i < nzygotes; i++) munmap(zygotes[i].slot, sizeof(CallSlot));
    if (layers.close_fds) {
        close_all_but(command_r, status_w);
    } else {
        for (int i = 0; i < nzygotes; i++) {
            if (zygotes[i].dead) continue;
            close(zygotes[i].command_fd);
            close(zygotes[i].status_fd);
        }
    }
    nzygotes = 0;
    nanswered = 0;
    own_fds[0] = command_r;
    own_fds[1] = status_w;
    statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    /* The call filter goes on before a single byte of bundle code runs: the bundle's top-level
     * code is as untrusted as its tools. Everything the load needs is in the call allowlist. */
    if (jail_for_calls() < 0) {
        fail("sandbox_crash", NULL, "could not install the call filter: %s", strerror(errno));
        zygote_load_failed(status_w);
    }
    /* Top-level bundle code runs here once; bound its CPU like a call's. */
    struct rlimit cpu;
    getrlimit(RLIMIT_CPU, &cpu);
    if (layers.rlimits) {
        rlim_t budget = (rlim_t)((lim->cpu_ms + 999) / 1000 + 1);
        struct rlimit r = {budget < cpu.rlim_max ? budget : cpu.rlim_max, cpu.rlim_max};
        setrlimit(RLIMIT_CPU, &r);
    }
    if (engine_load(frame, lim) < 0) zygote_load_failed(status_w);
    if (layers.rlimits) {
        /* From here on RLIMIT_CPU is only the lifetime guard the jail set (it counts every call
         * this process will run); each call has its own ITIMER_PROF backstop. */
        struct rlimit r = {cpu.rlim_max, cpu.rlim_max};
        setrlimit(RLIMIT_CPU, &r);
    }
    if (arena_take_snapshot() < 0) {
        fail("sandbox_crash", NULL, "could not snapshot the loaded JS heap: %s", strerror(errno));
        zygote_load_failed(status_w);
    }
    settle();
    static const char ok[] = "{\"type\":\"result\",\"ok\":true}";
    write_frame(status_w, ok, sizeof ok - 1);
    call_slot = slot;
    for (;;) {
        char *text;
        size_t n;
        if (read_frame(command_r, &text, &n) != 1) _exit(0); /* the worker dropped us */
        JSValue call = wire_parse(text, n);
        free(text);
        if (JS_IsException(call)) _exit(5);
        zygote_call(call);
        for (;;) {
            int r = read_frame(STDIN, &text, &n);
            if (r == 0) _exit(0); /* the host closed stdin; the worker sees us go and exits too */
            if (r < 0) die("protocol error on stdin");
            int drop;
            JSValue mine = zygote_takes(text, n, key, &drop);
            if (!JS_IsException(mine)) {
                free(text);
                zygote_call(mine);
                continue;
            }
            if (!drop && write_frame(status_w, text, n) < 0) _exit(0);
            free(text);
            if (!drop) break;
        }
    }
}

static void zygote_close(Zygote *z) {
    if (!z->dead && z->command_fd >= 0) {
        close(z->command_fd);
        close(z->status_fd);
    }
    if (z->slot) munmap(z->slot, sizeof(CallSlot));
    free(z->forwarded_id);
    free(z->key);
}

static void zygote_remove(int index) {
    zygotes[index] = zygotes[--nzygotes];
}

static int zygote_find(const char *key) {
    for (int i = 0; i < nzygotes; i++)
        if (!strcmp(zygotes[i].key, key)) return i;
    return -1;
}

static void evict(const char *key) {
    int i = zygote_find(key);
    if (i < 0) return;
    Zygote z = zygotes[i];
    zygote_remove(i);
    zygote_close(&z);
    if (z.dead) return;
    kill(z.pid, SIGKILL);
    waitpid(z.pid, NULL, 0);
}

/* Zygote `i` closed its status pipe: it died. If it was in a call, that call gets its classified
 * error here (`id_json` when the worker knows which call it is); otherwise its key is marked,
 * and the next invoke of it says how it died. */
static void zygote_died(int i, const char *id_json) {
    Zygote *z = &zygotes[i];
    int st = 0;
    kill(z->pid, SIGKILL);
    long long total_ms = reap_cpu_ms(z->pid, &st);
    close(z->command_fd);
    close(z->status_fd);
    if (!id_json && z->slot->running) {
        z->slot->id[sizeof z->slot->id - 1] = 0;
        id_json = z->slot->id[0] ? z->slot->id : z->forwarded_id ? z->forwarded_id : "null";
    }
    if (id_json) {
        /* The call's CPU: the zygote's whole life (kernel rusage) minus what it had used when the
         * call started. The host meters at least the CPU limit + backstop for a backstop kill. */
        long long start_ms = z->slot->cpu_start_ns / 1000000;
        long long cpu_ms = total_ms < 0 ? -1 : start_ms >= 0 && start_ms <= total_ms ? total_ms - start_ms : total_ms;
        fail_exit(st, "the call");
        send_error_frame_cpu(id_json, 1, cpu_ms);
        z->dead = 1;
        Zygote gone = *z;
        zygote_remove(i);
        zygote_close(&gone);
        return;
    }
    z->dead = 1;
    z->dead_status = st;
}

/* A load's limits, and room for one more zygote; on refusal the error frame is sent, -1. */
static int load_admit(JSValueConst frame, const char *id, Limits *lim) {
    if (limits_parse(frame, lim) == 0 && nzygotes < MAX_ZYGOTES) return 0;
    if (nzygotes == MAX_ZYGOTES) fail("sandbox_crash", NULL, "too many bundle zygotes in one worker");
    send_error(id);
    return -1;
}

static void evict_listed(JSValueConst frame);

static void handle_load(JSValueConst frame, const char *id) {
    evict_listed(frame);
    char *key = wstr_key(frame, "key");
    Buf f = {0};
    int found = zygote_find(key);
    if (found >= 0 && zygotes[found].dead) {
        Zygote gone = zygotes[found];
        zygote_remove(found);
        zygote_close(&gone);
        found = -1;
    }
    if (found >= 0) {
        buf_fmt(&f, "{\"type\":\"result\",\"id\":%s,\"ok\":true,\"cached\":true}", id);
        write_frame(STDOUT, f.p, f.n);
        free(f.p);
        free(key);
        return;
    }
    Limits lim;
    if (load_admit(frame, id, &lim) < 0) {
        free(key);
        return;
    }
    int command[2], status[2];
    if (pipe2(command, O_CLOEXEC) < 0 || pipe2(status, O_CLOEXEC) < 0) die("pipe");
    CallSlot *slot = mmap(NULL, sizeof(CallSlot), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (slot == MAP_FAILED) die("mmap");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        close(command[1]);
        close(status[0]);
        zygote_main(frame, &lim, key, slot, command[0], status[1]);
    }
    close(command[0]);
    close(status[1]);
    char *text = NULL;
    size_t n;
    JSValue reply = JS_UNDEFINED;
    if (read_frame(status[0], &text, &n) == 1) reply = wire_parse(text, n);
    free(text);
    if (!JS_IsObject(reply) || !reply_ok(reply)) {
        close(command[1]);
        close(status[0]);
        int st = 0;
        long long cpu_ms = reap_cpu_ms(pid, &st);
        munmap(slot, sizeof(CallSlot));
        if (JS_IsObject(reply))
            fail_from_reply(reply);
        else
            fail_exit(st, "loading the bundle");
        send_error_frame_cpu(id, 0, cpu_ms);
    } else {
        /* The zygote has done nothing but load since its fork: its CPU clock is the load's cost. */
        long long cpu_ms = child_cpu_ms(pid);
        zygotes[nzygotes++] = (Zygote){key, pid, command[1], status[0], slot, NULL, 0, 0};
        key = NULL;
        buf_fmt(&f, "{\"type\":\"result\",\"id\":%s,\"ok\":true,\"cached\":false,\"usage\":{\"cpu_ms\":%lld}}", id,
                cpu_ms < 0 ? 0 : cpu_ms);
        write_frame(STDOUT, f.p, f.n);
    }
    JS_FreeValue(wctx, reply);
    free(f.p);
    free(key);
}

/* Forward an invoke to its key's zygote, which answers the host itself and reads stdin from then
 * on (the worker waits for it to hand stdin back, see serve). */
static void handle_invoke(JSValueConst frame, const char *text, size_t n, const char *id) {
    char *key = wstr_key(frame, "key");
    int i = zygote_find(key);
    if (i < 0) {
        fail("sandbox_crash", NULL, "bundle key '%s' is not loaded in this worker", key);
        send_error_frame(id, 1);
        free(key);
        return;
    }
    free(key);
    if (zygotes[i].dead) {
        /* It died after its last answer (putting the heap back, or killed while idle). */
        fail_exit(zygotes[i].dead_status, "the bundle's zygote");
        send_error_frame(id, 1);
        Zygote gone = zygotes[i];
        zygote_remove(i);
        zygote_close(&gone);
        return;
    }
    if (write_frame(zygotes[i].command_fd, text, n) < 0) {
        zygote_died(i, id);
        return;
    }
    free(zygotes[i].forwarded_id);
    zygotes[i].forwarded_id = strdup(id);
    stdin_owner = i;
}

static int has_key(JSValueConst frame);

/* ------------------------------------------------------------------ zygote channels (boot "channels")
 *
 * The local pool's mode: each zygote gets its own pair of pipes to the host, dup'ed onto the
 * zygote's fds 0/1 at fork, and the host's ends are sent to the host over the worker's stdin
 * (a unix socket in this mode) with SCM_RIGHTS. The host then talks to the zygote directly for
 * everything of its key (load result, invokes, fetch results, cancels); the zygote never holds
 * the worker's stdin or stdout, so a zygote that misbehaves can only break its own channel. The
 * worker only forks (load), kills (evict) and reports how a zygote died (reap). Without the
 * mode (the Docker backend's attached stdio cannot carry fds) the stdin hand-off above serves. */

static int channels;

/* Send the host's ends of a new zygote's channel over fd 0: one byte carrying both fds. */
static int send_channel(int to_zygote, int from_zygote) {
    char byte = 'z';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int fds[2] = {to_zygote, from_zygote};
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t r;
    do r = sendmsg(STDIN, &msg, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r == 1 ? 0 : -1;
}

/* The introspect frame in a (throw-away) zygote that loaded the bundle: its manifest. */
static void zygote_introspect(JSValue frame) {
    char *id = wjson_key(frame, "id");
    free(g_err.detail);
    g_err = (Err){0};
    char *manifest = engine_introspect();
    Buf f = {0};
    if (manifest) {
        buf_fmt(&f, "{\"type\":\"result\",\"id\":%s,\"ok\":true,\"manifest\":", id);
        buf_str(&f, manifest);
        buf_str(&f, "}");
        if (write_frame(STDOUT, f.p, f.n) < 0) _exit(3);
    } else {
        send_error(id);
    }
    free(manifest);
    free(f.p);
    free(id);
    JS_FreeValue(wctx, frame);
}

/* A zygote on its own channel (fds 0/1 are its pipes to the host): load, answer the load frame
 * itself, then serve the frames of its key until the host closes the channel. */
static __attribute__((noreturn)) void zygote_channel_main(JSValueConst frame, const Limits *lim) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (layers.close_fds) close_all_but(STDIN, STDOUT);
    nzygotes = 0;
    nanswered = 0;
    char *load_id = wjson_key(frame, "id");
    statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    /* The call filter goes on before a single byte of bundle code runs: the bundle's top-level
     * code is as untrusted as its tools. Everything the load needs is in the call allowlist. */
    if (jail_for_calls() < 0) {
        fail("sandbox_crash", NULL, "could not install the call filter: %s", strerror(errno));
        send_error_frame_cpu(load_id, 0, own_cpu_ns() / 1000000);
        _exit(0);
    }
    struct rlimit cpu;
    getrlimit(RLIMIT_CPU, &cpu);
    if (layers.rlimits) {
        rlim_t budget = (rlim_t)((lim->cpu_ms + 999) / 1000 + 1);
        struct rlimit r = {budget < cpu.rlim_max ? budget : cpu.rlim_max, cpu.rlim_max};
        setrlimit(RLIMIT_CPU, &r);
    }
    int loaded = engine_load(frame, lim) == 0;
    if (loaded && layers.rlimits) {
        struct rlimit r = {cpu.rlim_max, cpu.rlim_max};
        setrlimit(RLIMIT_CPU, &r);
    }
    if (loaded && arena_take_snapshot() < 0) {
        fail("sandbox_crash", NULL, "could not snapshot the loaded JS heap: %s", strerror(errno));
        loaded = 0;
    }
    if (loaded) settle();
    /* The load's CPU, measured in C (bundle code cannot reach it); a zygote that dies in its load
     * is measured by its worker from the kernel's rusage when the host asks it to reap. */
    long long load_cpu_ms = own_cpu_ns() / 1000000;
    if (!loaded) {
        send_error_frame_cpu(load_id, 0, load_cpu_ms);
        _exit(0);
    }
    Buf ok = {0};
    buf_fmt(&ok, "{\"type\":\"result\",\"id\":%s,\"ok\":true,\"cached\":false,\"usage\":{\"cpu_ms\":%lld}}",
            load_id, load_cpu_ms);
    if (write_frame(STDOUT, ok.p, ok.n) < 0) _exit(0);
    free(ok.p);
    free(load_id);
    for (;;) {
        char *text;
        size_t n;
        int r = read_frame(STDIN, &text, &n);
        if (r == 0) _exit(0); /* the host dropped this zygote */
        if (r < 0) _exit(5);
        JSValue f = wire_parse(text, n);
        free(text);
        if (JS_IsException(f)) _exit(5);
        if (wtype_is(f, "invoke") || (probes_enabled && wtype_is(f, "probe"))) {
            zygote_call(f);
        } else if (wtype_is(f, "introspect")) {
            zygote_introspect(f);
        } else if (wtype_is(f, "cancel") || wtype_is(f, "fetch-result")) {
            JS_FreeValue(wctx, f); /* late frames of a call that already ended */
        } else {
            char *id = wjson_key(f, "id");
            fail("sandbox_crash", NULL, "a bundle zygote does not serve this frame type");
            send_error(id);
            free(id);
            JS_FreeValue(wctx, f);
        }
    }
}

static void evict_listed(JSValueConst frame) {
    JSValue ev = wget(frame, "evict");
    int64_t count = 0;
    if (JS_IsArray(ev)) JS_GetLength(wctx, ev, &count);
    for (int64_t i = 0; i < count; i++) {
        JSValue k = JS_GetPropertyInt64(wctx, ev, i);
        char *key = wstr(k);
        evict(key);
        free(key);
        JS_FreeValue(wctx, k);
    }
    JS_FreeValue(wctx, ev);
}

/* `load` in channel mode: fork the zygote on a new channel, send the host its ends and answer
 * at once with the zygote's pid; the zygote answers the load itself on its channel. */
static void handle_load_channel(JSValueConst frame, const char *id) {
    evict_listed(frame);
    char *key = wstr_key(frame, "key");
    evict(key); /* a key the host loads again is one whose channel it gave up */
    Limits lim;
    if (load_admit(frame, id, &lim) < 0) {
        free(key);
        return;
    }
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        if (dup2(in[0], STDIN) < 0 || dup2(out[1], STDOUT) < 0) _exit(6);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        zygote_channel_main(frame, &lim);
    }
    close(in[0]);
    close(out[1]);
    int sent = send_channel(in[1], out[0]);
    close(in[1]);
    close(out[0]);
    if (sent < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail("sandbox_crash", NULL, "could not pass the zygote's channel to the host: %s", strerror(errno));
        send_error(id);
        free(key);
        return;
    }
    zygotes[nzygotes++] = (Zygote){key, pid, -1, -1, NULL, NULL, 0, 0};
    Buf f = {0};
    buf_fmt(&f, "{\"type\":\"result\",\"id\":%s,\"ok\":true,\"pid\":%d}", id, (int)pid);
    write_frame(STDOUT, f.p, f.n);
    free(f.p);
}

/* `reap {key}`: the host saw the zygote's channel close; say how it died (and reap it). */
static void handle_reap(JSValueConst frame, const char *id) {
    char *key = wstr_key(frame, "key");
    int i = zygote_find(key);
    free(key);
    if (i < 0) {
        fail("sandbox_crash", NULL, "the bundle's zygote is gone");
        send_error_frame(id, 1);
        return;
    }
    Zygote z = zygotes[i];
    zygote_remove(i);
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    if (wait4(z.pid, &st, WNOHANG, &ru) == 0) {
        kill(z.pid, SIGKILL);
        wait4(z.pid, &st, 0, &ru);
    }
    z.dead = 1; /* no pipes to close */
    zygote_close(&z);
    fail_exit(st, "the call");
    /* The kernel's CPU figure for the zygote's whole life: the host subtracts what it metered. */
    send_error_frame_cpu(id, 1, rusage_cpu_ms(&ru));
}

/* The frames only channel mode has (or serves differently); 0 when `kind` is not one. */
static int handle_channel_frame(const char *kind, JSValueConst frame, const char *id) {
    if (!strcmp(kind, "load")) {
        handle_load_channel(frame, id);
    } else if (!strcmp(kind, "reap")) {
        handle_reap(frame, id);
    } else if (!strcmp(kind, "evict")) {
        evict_listed(frame);
        Buf f = {0};
        buf_fmt(&f, "{\"type\":\"result\",\"id\":%s,\"ok\":true}", id);
        write_frame(STDOUT, f.p, f.n);
        free(f.p);
    } else if (!strcmp(kind, "invoke") || (!strcmp(kind, "probe") && has_key(frame))) {
        fail("sandbox_crash", NULL, "a '%s' frame goes to its zygote's own channel", kind);
        send_error_frame(id, 1);
    } else {
        return 0;
    }
    return 1;
}

static int has_key(JSValueConst frame) {
    JSValue key = wget(frame, "key");
    int present = JS_IsString(key);
    JS_FreeValue(wctx, key);
    return present;
}

static void handle_frame(const char *text, size_t n) {
    JSValue frame = wire_parse(text, n);
    if (JS_IsException(frame)) die("bad frame on stdin");
    JSValue tv = wget(frame, "type");
    if (!JS_IsString(tv)) die("frame without a string type");
    char *kind = wstr(tv);
    JS_FreeValue(wctx, tv);
    char *id = wjson_key(frame, "id");
    int known = !strcmp(kind, "load") || !strcmp(kind, "invoke") || !strcmp(kind, "introspect") ||
                (probes_enabled && !strcmp(kind, "probe")) ||
                (channels && (!strcmp(kind, "reap") || !strcmp(kind, "evict")));
    if (!strcmp(kind, "cancel") || !strcmp(kind, "fetch-result")) {
        /* late frames for a call that already ended */
    } else if (!known) {
        fail("sandbox_crash", NULL, "unknown frame type '%s'", kind);
        send_error(id);
    } else if (!have_engine && strcmp(kind, "probe")) {
        fail("sandbox_crash", NULL, "engine unavailable");
        send_error(id);
    } else if (channels && handle_channel_frame(kind, frame, id)) {
        /* answered */
    } else if (!strcmp(kind, "load")) {
        handle_load(frame, id);
    } else if (!strcmp(kind, "invoke")) {
        handle_invoke(frame, text, n, id);
    } else if (!strcmp(kind, "probe") && has_key(frame)) {
        handle_invoke(frame, text, n, id); /* the `arena` probe, answered by the key's zygote */
    } else {
        run_in_child(text, n, id);
    }
    JS_FreeValue(wctx, frame);
    free(kind);
    free(id);
}

/* The worker's loop. Exactly one process reads stdin at a time: the worker, or the zygote it
 * last handed a call to, until that zygote hands back a frame that is not its own (or dies). */
static void serve(void) {
    for (;;) {
        char *text;
        size_t n;
        if (stdin_owner >= 0) {
            int i = stdin_owner;
            int r = read_frame(zygotes[i].status_fd, &text, &n);
            stdin_owner = -1;
            if (r != 1) {
                zygote_died(i, NULL);
                continue;
            }
        } else {
            int r = read_frame(STDIN, &text, &n);
            if (r == 0) return;
            if (r < 0) die("protocol error on stdin");
        }
        handle_frame(text, n);
        free(text);
    }
}

/* ------------------------------------------------------------------ boot */

static void *read_block(int fd, uint32_t *len) {
    unsigned char h[4];
    if (read_exact(fd, (char *)h, 4, 0) != 1) die("boot block truncated");
    *len = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
    if (*len > 16 * MIB) die("boot block too large");
    char *p = malloc(*len + 1);
    if (read_exact(fd, p, *len, 0) != 1) die("boot block truncated");
    p[*len] = 0;
    return p;
}

static int wbool(JSValueConst obj, const char *key) {
    JSValue v = wget(obj, key);
    int b = JS_ToBool(wctx, v) == 1;
    JS_FreeValue(wctx, v);
    return b;
}

int main(int argc, char **argv) {
    double started = wall_now();
    if (argc != 3 || strcmp(argv[1], "--boot-fd")) {
        dprintf(2, "usage: lightfast-runner --boot-fd N (started by execution/sandbox/native/launch.py)\n");
        return 2;
    }
    int boot_fd = atoi(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    wrt = JS_NewRuntime();
    wctx = JS_NewContext(wrt);
    /* The boot block from launch.py: config JSON, then the two compiled seccomp programs. */
    uint32_t len, wlen, clen;
    char *config_text = read_block(boot_fd, &len);
    void *wbpf = read_block(boot_fd, &wlen);
    void *cbpf = read_block(boot_fd, &clen);
    close(boot_fd);
    worker_filter = (struct sock_fprog){(unsigned short)(wlen / 8), wbpf};
    call_filter = (struct sock_fprog){(unsigned short)(clen / 8), cbpf};
    JSValue config = wire_parse(config_text, len);
    if (JS_IsException(config)) die("boot config is not JSON");
    free(config_text);
    JSValue lv = wget(config, "layers");
    layers = (Layers){wbool(lv, "drop_uid"), wbool(lv, "rlimits"), wbool(lv, "no_new_privs"), wbool(lv, "seccomp"),
                      wbool(lv, "netns"),    wbool(lv, "close_fds"), wbool(lv, "clear_env")};
    JS_FreeValue(wctx, lv);
    probes_enabled = wbool(config, "probes");
    channels = wbool(config, "channels");
    verify_restore = wbool(config, "verify_restore");
    break_restore = wbool(config, "break_restore");
    char *path = wstr_key(config, "runtime");
    snprintf(runtime_path, sizeof runtime_path, "%s", path);
    free(path);
    /* execve resets the dumpable flag: the no_new_privs layer set it off in the launcher. */
    if (layers.no_new_privs) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

    /* Large runner-side buffers (frames, output text) get their own mappings and go back to the
     * kernel when freed: a zygote serves many calls and must not keep the largest one's heap. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1 * MIB);
    char engine_error[4400];
    if (arena_create() < 0) arena = NULL;
    const char *engine_failed = engine_init(engine_error, sizeof engine_error);
    have_engine = engine_failed == NULL;
    /* Cleared once here, the runtime's free space stays shared by every zygote forked later. */
    if (have_engine) arena_clear_free_space();
    settle();

    char seccomp_state[256] = "off";
    if (layers.seccomp) {
        if (install_filter(&worker_filter) == 0)
            snprintf(seccomp_state, sizeof seccomp_state, "on");
        else
            snprintf(seccomp_state, sizeof seccomp_state, "unavailable: %s", strerror(errno));
    }
    JSValue status = wget(config, "status");
    JS_SetPropertyStr(wctx, status, "seccomp", JS_NewString(wctx, seccomp_state));
    char *status_json = wjson(status);
    JS_FreeValue(wctx, status);
    JS_FreeValue(wctx, config);

    Buf ready = {0};
    buf_str(&ready, "{\"type\":\"log\",\"level\":\"info\",\"message\":\"ready\",\"detail\":{\"layers\":");
    buf_str(&ready, status_json);
    buf_str(&ready, ",\"engine\":");
    buf_jsons(&ready, engine_failed ? engine_failed : "ok");
    buf_fmt(&ready, ",\"pid\":%d,\"startup_ms\":%.2f,\"runner\":\"native\",\"heap_probe\":%s}}", getpid(),
            (wall_now() - started) * 1000, malloc_size_field ? "true" : "false");
    free(status_json);
    if (write_frame(STDOUT, ready.p, ready.n) < 0) return 1;
    free(ready.p);
    serve();
    return 0;
}
