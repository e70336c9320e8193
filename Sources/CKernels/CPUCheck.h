// A CPU feature check run once per process (private to the kernels; not in include/).
#ifndef UNIMOE_CPU_CHECK_H
#define UNIMOE_CPU_CHECK_H
#if defined(__x86_64__)

/// `probe()`'s answer, asked once: `*slot` starts at -1 and keeps the answer; threads that race to
/// check store the same one.
static inline int unimoe_check_once(int *slot, int (*probe)(void)) {
    int known = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (known < 0) {
        __builtin_cpu_init();
        known = probe();
        __atomic_store_n(slot, known, __ATOMIC_RELAXED);
    }
    return known;
}

#endif
#endif
