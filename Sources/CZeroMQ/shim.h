#ifndef UNIMOE_CZEROMQ_SHIM_H
#define UNIMOE_CZEROMQ_SHIM_H
#include <zmq.h>
#include <errno.h>

/// errno as ZeroMQ reports it (a function, so Swift reads it right after the failing call).
static inline int CZeroMQ_errno(void) { return zmq_errno(); }
#endif
