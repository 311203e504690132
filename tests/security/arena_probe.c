/* Test harness for tests/security/test_runner_limits.py: the native runner's JS heap arena,
 * exercised directly (runner.c is included whole: its allocator functions are static).
 * Prints one line per check, "ok NAME" or "FAIL NAME", and exits 1 on any failure. */
#define main lightfast_runner_main
#include "runner.c"
#undef main

static int failures;

static void check(int ok, const char *name) {
    printf("%s %s\n", ok ? "ok" : "FAIL", name);
    failures += !ok;
}

int main(void) {
    if (arena_create() < 0) return 2;
    arena_set_cap(64);
    void *small = arena_malloc(NULL, 100);
    check(small != NULL, "malloc");
    /* Sizes whose header and rounding wrap around SIZE_MAX must be refused, never "fit". */
    static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 8, SIZE_MAX - 15, SIZE_MAX - 16, SIZE_MAX - 31,
                                  SIZE_MAX - 4096, SIZE_MAX / 2 + 1};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        check(arena_realloc(NULL, small, huge[i]) == NULL, "realloc_wrap_refused");
        check(arena_malloc(NULL, huge[i]) == NULL, "malloc_wrap_refused");
    }
    check(arena_calloc(NULL, 2, SIZE_MAX / 2 + 1) == NULL, "calloc_overflow_refused");
    /* The topmost block: the in-place growth path must refuse them too. */
    void *top = arena_malloc(NULL, 64);
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++)
        check(arena_realloc(NULL, top, huge[i]) == NULL, "realloc_top_wrap_refused");
    check(arena_usable_size(top) == 64 && arena_usable_size(small) == 100, "blocks_unchanged");
    /* Ordinary growth still works, in place and by moving. */
    memset(small, 7, 100);
    char *grown = arena_realloc(NULL, small, 100000);
    check(grown != NULL && grown[99] == 7 && arena_usable_size(grown) == 100000, "realloc_grows");
    char *topgrown = arena_realloc(NULL, top, 1 << 20);
    check(topgrown != NULL && arena_usable_size(topgrown) == 1 << 20, "realloc_top_grows");
    /* Past the arena's cap for this memory limit: refused, not wrapped. */
    check(arena_realloc(NULL, topgrown, (size_t)1 << 40) == NULL, "realloc_beyond_cap_refused");
    return failures ? 1 : 0;
}
