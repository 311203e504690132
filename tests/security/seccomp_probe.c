/* Test helper for tests/security/test_seccomp.py: install one seccomp program, make one system call.
 *
 *   seccomp_probe BPF_FILE NR [ARG...]   (up to six integer arguments, decimal or 0x hex)
 *
 * Exits 0 once the call returned, whatever it returned (the filter allowed it); a call the filter
 * does not allow kills the process with SIGSYS before it runs. Nothing else runs between the
 * filter and the call, so the verdict is the filter's alone.
 */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3 || argc > 9) {
        fprintf(stderr, "usage: %s BPF_FILE NR [ARG...]\n", argv[0]);
        return 2;
    }
    static unsigned char program[65536];
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    size_t n = fread(program, 1, sizeof program, f);
    fclose(f);
    long nr = strtol(argv[2], NULL, 0);
    long args[6] = {0};
    for (int i = 3; i < argc; i++) args[i - 3] = (long)strtoull(argv[i], NULL, 0);
    struct sock_fprog prog = {(unsigned short)(n / 8), (struct sock_filter *)program};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 3;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) return 4;
    syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]);
    syscall(SYS_exit_group, 0);
    return 0;
}
