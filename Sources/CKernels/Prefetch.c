// The mat-vec tiles' prefetch (see include/CKernels.h for why it is a call).
#include "CKernels.h"

__attribute__((noinline)) void unimoe_prefetch_rows(const void *line, long stride, long rows) {
    const char *p = (const char *)line;
    for (long r = 0; r < rows; r++) __builtin_prefetch(p + r * stride, 0, 2);
}
