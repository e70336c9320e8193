#ifndef UNIMOE_COPENBLAS_SHIM_H
#define UNIMOE_COPENBLAS_SHIM_H
// OpenBLAS's own cblas.h (Debian: /usr/include/x86_64-linux-gnu/openblas-pthread/, found through
// pkg-config "openblas"), which also declares openblas_set_num_threads / openblas_get_num_threads.
#include <cblas.h>
#endif
