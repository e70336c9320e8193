import CFFmpeg
import Foundation

/// State the custom AVIOContext callbacks reach through their opaque pointer: the chunked input,
/// the read position and the reason a read failed (so the error thrown names it, not just "I/O error").
final class StreamIO {
    let input: ChunkedInput
    let maxBytes: Int
    var position = 0
    var failure: MediaError?

    init(input: ChunkedInput, maxBytes: Int) {
        self.input = input
        self.maxBytes = maxBytes
    }
}

private func streamRead(_ opaque: UnsafeMutableRawPointer?, _ buf: UnsafeMutablePointer<UInt8>?, _ size: Int32) -> Int32 {
    guard let opaque, let buf, size > 0 else { return CFFmpeg_AVERROR_EOF() }
    let io = Unmanaged<StreamIO>.fromOpaque(opaque).takeUnretainedValue()
    switch io.input.read(at: io.position, into: buf, count: Int(size), maxBytes: io.maxBytes) {
    case .bytes(let n):
        io.position += n
        return Int32(n)
    case .endOfFile:
        return CFFmpeg_AVERROR_EOF()
    case .failed(let reason):
        io.failure = .aborted(file: io.input.name, reason: reason)
        return CFFmpeg_AVERROR(EIO)
    case .tooLarge:
        io.failure = .limitExceeded(file: io.input.name, reason: "more than \(io.maxBytes) bytes")
        return CFFmpeg_AVERROR(EFBIG)
    }
}

private func streamSeek(_ opaque: UnsafeMutableRawPointer?, _ offset: Int64, _ whence: Int32) -> Int64 {
    guard let opaque else { return Int64(CFFmpeg_AVERROR(EINVAL)) }
    let io = Unmanaged<StreamIO>.fromOpaque(opaque).takeUnretainedValue()
    let how = whence & ~CFFmpeg_AVSEEK_FORCE()
    if how == CFFmpeg_AVSEEK_SIZE() {
        // Only a finished upload has a size; demuxers treat "unknown" as a live stream and go on.
        guard io.input.isFinished, let size = io.input.totalSize() else { return Int64(CFFmpeg_AVERROR(ENOSYS)) }
        return Int64(size)
    }
    let target: Int
    switch how {
    case SEEK_SET: target = Int(offset)
    case SEEK_CUR: target = io.position + Int(offset)
    case SEEK_END:
        guard let size = io.input.totalSize() else { return Int64(CFFmpeg_AVERROR(EIO)) }
        target = size + Int(offset)
    default: return Int64(CFFmpeg_AVERROR(EINVAL))
    }
    guard target >= 0 else { return Int64(CFFmpeg_AVERROR(EINVAL)) }
    io.position = target
    return Int64(target)
}

/// An opened container (AVFormatContext), from a path or a chunked stream. Owns the context and,
/// for streams, the custom AVIOContext and its buffer; both are freed in deinit.
final class MediaInput {
    /// FFmpeg's AVPROBE_SCORE_RETRY (AVPROBE_SCORE_MAX / 4): a format probed at this score or lower
    /// is refused (`init`).
    static let weakestProbeScore: Int32 = 25

    let name: String
    let limits: MediaLimits
    private(set) var format: UnsafeMutablePointer<AVFormatContext>
    private var avio: UnsafeMutablePointer<AVIOContext>?
    private let streamIO: StreamIO?

    init(_ source: MediaSource, limits: MediaLimits) throws {
        _ = MediaInput.quietLogging
        name = source.name
        self.limits = limits
        var ctx: UnsafeMutablePointer<AVFormatContext>? = nil
        switch source {
        case .file(let path):
            streamIO = nil
            var st = stat()
            guard stat(path, &st) == 0 else {
                throw MediaError.cannotOpen(file: path, reason: String(cString: strerror(errno)))
            }
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw MediaError.cannotOpen(file: path, reason: "not a regular file") }
            guard st.st_size > 0 else { throw MediaError.empty(file: path) }
            guard Int(st.st_size) <= limits.maxBytes else {
                throw MediaError.limitExceeded(file: path, reason: "\(st.st_size) bytes, more than the \(limits.maxBytes) allowed")
            }
            let ret = avformat_open_input(&ctx, path, nil, nil)
            guard ret >= 0, let ctx else {
                throw MediaError.cannotOpen(file: path, reason: ret == CFFmpeg_AVERROR(ENOENT) ? "file vanished before it could be read"
                                                                                        : ffErrorString(ret))
            }
            format = ctx
        case .stream(let input):
            guard input.waitFor(offset: 1) else {
                if let reason = input.failureReason { throw MediaError.aborted(file: input.name, reason: reason) }
                throw MediaError.empty(file: input.name)
            }
            let io = StreamIO(input: input, maxBytes: limits.maxBytes)
            streamIO = io
            let bufferSize: Int32 = 64 * 1024
            guard let buffer = av_malloc(Int(bufferSize)),
                  let pb = avio_alloc_context(buffer.assumingMemoryBound(to: UInt8.self), bufferSize, 0,
                                              Unmanaged.passUnretained(io).toOpaque(), streamRead, nil, streamSeek) else {
                throw MediaError.cannotOpen(file: input.name, reason: "out of memory")
            }
            pb.pointee.seekable = AVIO_SEEKABLE_NORMAL
            avio = pb
            guard let fresh = avformat_alloc_context() else {
                MediaInput.freeAVIO(&avio)
                throw MediaError.cannotOpen(file: input.name, reason: "out of memory")
            }
            fresh.pointee.pb = pb
            fresh.pointee.flags |= AVFMT_FLAG_CUSTOM_IO
            ctx = fresh
            let ret = avformat_open_input(&ctx, nil, nil, nil)   // frees ctx on failure
            guard ret >= 0, let ctx else {
                let failure = io.failure
                MediaInput.freeAVIO(&avio)
                throw failure ?? MediaError.cannotOpen(file: input.name, reason: ffErrorString(ret))
            }
            format = ctx
        }
        // From here on deinit frees everything.
        // A format FFmpeg only guessed at is noise to us: at or below AVPROBE_SCORE_RETRY (25 of 100)
        // FFmpeg itself warns "misdetection possible", and random bytes land there (lrc at 5, h263
        // at 25 in 2 of 60 random 100 KB files; now and then mp3, which then decodes noise), while
        // every real file of the tests scores 50 (jpg by its extension) or more.
        let score = format.pointee.probe_score
        if score <= MediaInput.weakestProbeScore {
            let guess = format.pointee.iformat.map { String(cString: $0.pointee.name) } ?? "none"
            throw MediaError.cannotOpen(file: name, reason: "not a recognisable media file (FFmpeg's best guess, \(guess), "
                                                     + "scored only \(score) of 100)")
        }
        try check(avformat_find_stream_info(format, nil), "avformat_find_stream_info")
        let duration = format.pointee.duration
        if duration != CFFmpeg_AV_NOPTS_VALUE(), Double(duration) / Double(AV_TIME_BASE) > limits.maxDurationSeconds {
            throw MediaError.limitExceeded(file: name, reason: String(format: "%.1f s long, more than the %.0f s allowed",
                                                                      Double(duration) / Double(AV_TIME_BASE), limits.maxDurationSeconds))
        }
    }

    /// FFmpeg's own log lines would break the one-line error contract of the CLI; every failure
    /// comes back as a MediaError instead. UNIMOE_FFMPEG_LOG=1 keeps FFmpeg's warnings for debugging.
    private static let quietLogging: Bool = {
        let verbose = ProcessInfo.processInfo.environment["UNIMOE_FFMPEG_LOG"] == "1"
        av_log_set_level(verbose ? AV_LOG_WARNING : AV_LOG_QUIET)
        return true
    }()

    deinit {
        var ctx: UnsafeMutablePointer<AVFormatContext>? = format
        avformat_close_input(&ctx)   // does not free a custom pb
        MediaInput.freeAVIO(&avio)
    }

    private static func freeAVIO(_ pb: inout UnsafeMutablePointer<AVIOContext>?) {
        guard pb != nil else { return }
        av_freep(&pb!.pointee.buffer)
        avio_context_free(&pb)
    }

    /// `check` with this input's name; a failed stream read reports its own reason instead.
    @discardableResult
    func check(_ ret: Int32, _ function: String) throws -> Int32 {
        if ret < 0, let failure = streamIO?.failure { throw failure }
        return try Media.check(ret, function, file: name)
    }

    /// The error a failed read left behind, if any.
    var readFailure: MediaError? { streamIO?.failure }

    /// The best stream of `type`, or `MediaError.noStream`.
    func bestStream(_ type: AVMediaType, kind: String) throws -> UnsafeMutablePointer<AVStream> {
        let index = av_find_best_stream(format, type, -1, -1, nil, 0)
        if index == CFFmpeg_AVERROR_STREAM_NOT_FOUND() || index == CFFmpeg_AVERROR_DECODER_NOT_FOUND() {
            // A stream that exists but cannot be decoded gets its own message.
            for i in 0..<Int(format.pointee.nb_streams) {
                if let st = format.pointee.streams[i], st.pointee.codecpar.pointee.codec_type == type {
                    let codec = String(cString: avcodec_get_name(st.pointee.codecpar.pointee.codec_id))
                    throw MediaError.noDecoder(file: name, codec: codec)
                }
            }
            throw MediaError.noStream(file: name, kind: kind)
        }
        try check(index, "av_find_best_stream")
        guard let st = format.pointee.streams[Int(index)] else { throw MediaError.noStream(file: name, kind: kind) }
        return st
    }
}
