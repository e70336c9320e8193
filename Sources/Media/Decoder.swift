import CFFmpeg

/// An AVPacket owned by Swift: freed in deinit.
final class Packet {
    let pointer: UnsafeMutablePointer<AVPacket>
    init(file: String) throws {
        guard let p = av_packet_alloc() else { throw MediaError.cannotOpen(file: file, reason: "out of memory") }
        pointer = p
    }
    deinit {
        var p: UnsafeMutablePointer<AVPacket>? = pointer
        av_packet_free(&p)
    }
}

/// An AVFrame owned by Swift: freed (with its buffers) in deinit.
final class Frame {
    let pointer: UnsafeMutablePointer<AVFrame>
    init(file: String) throws {
        guard let f = av_frame_alloc() else { throw MediaError.cannotOpen(file: file, reason: "out of memory") }
        pointer = f
    }
    deinit {
        var f: UnsafeMutablePointer<AVFrame>? = pointer
        av_frame_free(&f)
    }
}

/// A codec context opened for one stream of a `MediaInput`, with the packet read loop that feeds it.
/// Owns the AVCodecContext (freed in deinit) and keeps the input alive.
final class StreamDecoder {
    let input: MediaInput
    let stream: UnsafeMutablePointer<AVStream>
    let context: UnsafeMutablePointer<AVCodecContext>
    private let packet: Packet
    private var draining = false
    private(set) var finished = false
    /// Frames or packets the decoder rejected as damaged (skipped).
    private(set) var damagedFrames = 0
    /// Packets whose pts lies before this (stream ticks) are decoded with skip_frame = NONREF: frames
    /// no other frame references are dropped while fast-forwarding to a sample time.
    var skipNonReferenceBefore: Int64?
    /// pts of the packets sent in that mode: each may have produced no frame.
    private(set) var possiblySkipped: [Int64] = []

    /// `threads`: the codec's own threads (frame threading for video); 0 lets FFmpeg choose, as the
    /// ffmpeg program does (one per core plus one).
    init(input: MediaInput, stream: UnsafeMutablePointer<AVStream>, threads: Int32 = 0) throws {
        self.input = input
        self.stream = stream
        let par = stream.pointee.codecpar!
        guard let codec = avcodec_find_decoder(par.pointee.codec_id) else {
            throw MediaError.noDecoder(file: input.name, codec: String(cString: avcodec_get_name(par.pointee.codec_id)))
        }
        guard let ctx = avcodec_alloc_context3(codec) else { throw MediaError.cannotOpen(file: input.name, reason: "out of memory") }
        context = ctx
        packet = try Packet(file: input.name)
        try input.check(avcodec_parameters_to_context(ctx, par), "avcodec_parameters_to_context")
        if par.pointee.codec_type == AVMEDIA_TYPE_VIDEO {
            let w = Int(par.pointee.width), h = Int(par.pointee.height)
            if w * h > input.limits.maxPixels {
                throw MediaError.limitExceeded(file: input.name, reason: "\(w)x\(h) frames, more than \(input.limits.maxPixels) pixels")
            }
            ctx.pointee.max_pixels = Int64(input.limits.maxPixels)
        }
        ctx.pointee.pkt_timebase = stream.pointee.time_base
        ctx.pointee.thread_count = max(0, threads)
        try input.check(avcodec_open2(ctx, codec, nil), "avcodec_open2")
    }

    deinit {
        var c: UnsafeMutablePointer<AVCodecContext>? = context
        avcodec_free_context(&c)
    }

    /// The stream's duration as a fraction of seconds (stream ticks, else the container's microseconds);
    /// nil when neither is known.
    var declaredDuration: (num: Int128, den: Int128)? {
        let st = stream.pointee
        let tb = st.time_base
        if st.duration != CFFmpeg_AV_NOPTS_VALUE(), st.duration > 0, tb.num > 0, tb.den > 0 {
            return (Int128(st.duration) * Int128(tb.num), Int128(tb.den))
        }
        let d = input.format.pointee.duration
        if d != CFFmpeg_AV_NOPTS_VALUE(), d > 0 { return (Int128(d), Int128(AV_TIME_BASE)) }
        return nil
    }

    /// Decodes the next frame of this stream into `frame`; false at the end of the stream.
    func next(into frame: Frame) throws -> Bool {
        while true {
            switch try receive(into: frame) {
            case .frame: return true
            case .end: finished = true; return false
            case .needsPacket:
                if draining { finished = true; return false }
                // Feed one packet of our stream (or the end-of-stream signal).
                guard try read(into: packet) else { try drain(); continue }
                defer { av_packet_unref(packet.pointer) }
                let pts = packet.pointer.pointee.pts
                let skip = skipNonReferenceBefore.map { pts != CFFmpeg_AV_NOPTS_VALUE() && pts < $0 } ?? false
                if skip { possiblySkipped.append(pts) }
                try send(packet, skippingNonReference: skip)
            }
        }
    }

    /// What `receive` found.
    enum Received { case frame, needsPacket, end }

    /// Takes the next decoded frame, if one is ready; a damaged frame is skipped (and counted) as
    /// the ffmpeg program does.
    func receive(into frame: Frame) throws -> Received {
        while true {
            let r = avcodec_receive_frame(context, frame.pointer)
            if r >= 0 { return .frame }
            if r == CFFmpeg_AVERROR_EOF() { return .end }
            if r == CFFmpeg_AVERROR_INVALIDDATA() { damagedFrames += 1; continue }
            if r != CFFmpeg_AVERROR_EAGAIN() { try input.check(r, "avcodec_receive_frame") }
            return .needsPacket
        }
    }

    /// Reads the next packet of this stream into `packet` (the caller unrefs it); false at the end
    /// of the data. A failed read throws; a cut file ends like an EOF, as the ffmpeg program has it.
    func read(into packet: Packet) throws -> Bool {
        while true {
            let read = av_read_frame(input.format, packet.pointer)
            if read < 0 {
                if read != CFFmpeg_AVERROR_EOF(), let failure = input.readFailure { throw failure }
                if read != CFFmpeg_AVERROR_EOF() && read != CFFmpeg_AVERROR(EIO) { try input.check(read, "av_read_frame") }
                return false
            }
            if packet.pointer.pointee.stream_index == stream.pointee.index { return true }
            av_packet_unref(packet.pointer)
        }
    }

    /// Decodes `packet`; with `skippingNonReference`, a frame no other frame references is dropped
    /// (skip_frame = NONREF). A damaged packet is skipped (and counted); real failures (memory,
    /// limits) throw. False when the decoder took nothing (EAGAIN: frames are waiting to be received).
    @discardableResult
    func send(_ packet: Packet, skippingNonReference: Bool) throws -> Bool {
        context.pointee.skip_frame = skippingNonReference ? AVDISCARD_NONREF : AVDISCARD_DEFAULT
        let s = avcodec_send_packet(context, packet.pointer)
        if s == CFFmpeg_AVERROR_INVALIDDATA() { damagedFrames += 1 }
        if s < 0 && s != CFFmpeg_AVERROR_INVALIDDATA() && s != CFFmpeg_AVERROR_EAGAIN() {
            try input.check(s, "avcodec_send_packet")
        }
        return s != CFFmpeg_AVERROR_EAGAIN()
    }

    /// Signals the end of the input: the decoder hands out the frames it still holds, then `.end`.
    /// Only a seek makes it decode again.
    func drain() throws {
        draining = true
        let s = avcodec_send_packet(context, nil)
        if s < 0 && s != CFFmpeg_AVERROR_INVALIDDATA() && s != CFFmpeg_AVERROR_EOF() { try input.check(s, "avcodec_send_packet") }
    }

    /// True when a packet sent in skip mode had its pts in `range` (its frame may have been dropped).
    func mayHaveSkipped(in range: ClosedRange<Int64>) -> Bool { possiblySkipped.contains { range.contains($0) } }

    /// Forgets skip-mode packets before `pts`.
    func forgetSkipped(before pts: Int64) { possiblySkipped.removeAll { $0 < pts } }

    /// Seeks the container so decoding resumes at the keyframe at or before `timestamp` (stream time
    /// base) and drops the decoder's buffered frames. False when the container cannot seek.
    func seek(to timestamp: Int64) -> Bool {
        let r = avformat_seek_file(input.format, stream.pointee.index, Int64.min, timestamp, timestamp, 0)
        guard r >= 0 else { return false }
        avcodec_flush_buffers(context)
        draining = false
        finished = false
        return true
    }
}
