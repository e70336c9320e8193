#ifndef UNIMOE_CMICROHTTPD_SHIM_H
#define UNIMOE_CMICROHTTPD_SHIM_H
// libmicrohttpd (Debian's libmicrohttpd-dev). Its start and option calls are variadic and its
// sentinels are macros, which Swift cannot import; these helpers give them fixed signatures.
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <microhttpd.h>

/// Starts a daemon with one thread per connection (MHD's own polling thread accepts), bound to
/// the IPv4 address `ipv4` and `port` (0: any free port), with the limits that fend off hostile
/// clients: at most `connection_limit` connections, `timeout_seconds` of silence per connection
/// (slow senders are cut off), `memory_limit` bytes per connection for headers and buffers.
/// NULL on failure (errno says why; EINVAL for an address that is not IPv4 dotted-quad).
static inline struct MHD_Daemon *CMHD_start(const char *ipv4, uint16_t port, unsigned int connection_limit,
                                            unsigned int timeout_seconds, size_t memory_limit,
                                            MHD_AccessHandlerCallback handler, void *handler_context,
                                            MHD_RequestCompletedCallback completed, void *completed_context) {
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (inet_pton(AF_INET, ipv4, &addr.sin_addr) != 1) { errno = EINVAL; return NULL; }
    return MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG,
                            port, NULL, NULL, handler, handler_context,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_CONNECTION_LIMIT, connection_limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, timeout_seconds,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, memory_limit,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, completed_context,
                            MHD_OPTION_END);
}

/// The port the daemon listens on (the chosen one when started with port 0).
static inline uint16_t CMHD_bound_port(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

/// Replaces one connection's inactivity timeout (0: none), e.g. once its request has arrived.
static inline void CMHD_set_timeout(struct MHD_Connection *connection, unsigned int seconds) {
    MHD_set_connection_option(connection, MHD_CONNECTION_OPTION_TIMEOUT, seconds);
}

static inline uint64_t CMHD_size_unknown(void) { return MHD_SIZE_UNKNOWN; }
static inline ssize_t CMHD_end_of_stream(void) { return MHD_CONTENT_READER_END_OF_STREAM; }
static inline ssize_t CMHD_end_with_error(void) { return MHD_CONTENT_READER_END_WITH_ERROR; }
#endif
