#ifndef UNIMOE_CFFMPEG_SHIM_H
#define UNIMOE_CFFMPEG_SHIM_H
#include <libavformat/avformat.h>
#include <libavcodec/avcodec.h>
#include <libavutil/avutil.h>
#include <libavutil/error.h>
#include <libavutil/imgutils.h>
#include <libavutil/display.h>
#include <libavutil/opt.h>
#include <libavutil/channel_layout.h>
#include <libavutil/tx.h>
#include <libswscale/swscale.h>
#include <libswresample/swresample.h>
#include <errno.h>

// Macros Swift cannot import, as functions.
static inline int CFFmpeg_AVERROR(int e) { return AVERROR(e); }
static inline int CFFmpeg_AVERROR_EOF(void) { return AVERROR_EOF; }
static inline int CFFmpeg_AVERROR_EAGAIN(void) { return AVERROR(EAGAIN); }
static inline int64_t CFFmpeg_AV_NOPTS_VALUE(void) { return AV_NOPTS_VALUE; }
static inline AVRational CFFmpeg_AV_TIME_BASE_Q(void) { return (AVRational){1, AV_TIME_BASE}; }

/// The message FFmpeg has for an error code, written into buf (av_err2str is a macro over a
/// compound literal, which Swift cannot import).
static inline const char *CFFmpeg_err2str(int errnum, char *buf, size_t size) {
    av_strerror(errnum, buf, size);
    return buf;
}

/// The display matrix (9 int32, 16.16 fixed point) of a stream, or NULL. FFmpeg 6.1 moved stream side
/// data into codecpar->coded_side_data and FFmpeg 7 removed av_stream_get_side_data; Debian 12 has
/// FFmpeg 5.1, where only the stream side data exists. Both are checked where they exist.
static inline const int32_t *CFFmpeg_stream_display_matrix(const AVStream *st) {
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(60, 29, 100)
    const AVPacketSideData *psd = av_packet_side_data_get(st->codecpar->coded_side_data,
                                                          st->codecpar->nb_coded_side_data,
                                                          AV_PKT_DATA_DISPLAYMATRIX);
    if (psd && psd->size >= 9 * sizeof(int32_t)) return (const int32_t *)psd->data;
#endif
#if LIBAVFORMAT_VERSION_MAJOR < 61
    size_t size = 0;
    const uint8_t *d = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (d && size >= 9 * sizeof(int32_t)) return (const int32_t *)d;
#endif
    return NULL;
}

/// AVSEEK_SIZE and AVSEEK_FORCE, macros Swift cannot import.
static inline int CFFmpeg_AVSEEK_SIZE(void) { return AVSEEK_SIZE; }
static inline int CFFmpeg_AVSEEK_FORCE(void) { return AVSEEK_FORCE; }
static inline int CFFmpeg_AVERROR_INVALIDDATA(void) { return AVERROR_INVALIDDATA; }
static inline int CFFmpeg_AVERROR_EXIT(void) { return AVERROR_EXIT; }
static inline int CFFmpeg_AVERROR_DECODER_NOT_FOUND(void) { return AVERROR_DECODER_NOT_FOUND; }
static inline int CFFmpeg_AVERROR_STREAM_NOT_FOUND(void) { return AVERROR_STREAM_NOT_FOUND; }
#endif
