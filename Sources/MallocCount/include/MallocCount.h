// An LD_PRELOAD library for tests and benchmarks: counts the process's heap allocations and prints
// "malloc-count: N" to stderr at exit. Nothing links it; `AllocationTests` preloads it into `unimoe`.
#ifndef UNIMOE_MALLOC_COUNT_H
#define UNIMOE_MALLOC_COUNT_H
/// Allocations so far (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign).
long unimoe_malloc_count(void);
#endif
