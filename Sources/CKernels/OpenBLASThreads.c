// OpenBLAS held at one thread from load on (see include/CKernels.h).
#include "CKernels.h"

// Weak, so a product that does not link OpenBLAS (or an OpenBLAS without a pthread server) links
// and runs: the calls are skipped where the symbols are absent.
extern void openblas_set_num_threads(int threads) __attribute__((weak));
extern int blas_thread_shutdown_(void) __attribute__((weak));
extern int blas_server_avail __attribute__((weak));

void unimoe_openblas_single_thread(void) {
    // This order matters: with the count at one, the shutdown joins every server thread and the
    // later one-thread products never restart them; the other way round, setting the count restarts them.
    if (openblas_set_num_threads) openblas_set_num_threads(1);
    if (blas_thread_shutdown_) blas_thread_shutdown_();
}

int unimoe_openblas_threads_running(void) {
    return &blas_server_avail != 0 && blas_server_avail != 0;
}

// Runs after OpenBLAS's own constructor (a shared library's initialisers run before its
// dependents'), before main.
__attribute__((constructor)) static void unimoe_openblas_single_thread_at_load(void) {
    unimoe_openblas_single_thread();
}
