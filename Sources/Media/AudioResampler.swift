import CFFmpeg

/// A SwrContext converting decoded audio to mono float32 at one rate with libswresample's default
/// options — the same ones the ffmpeg program's auto-inserted `aresample` uses for
/// `-ar 16000 -ac 1 -f f32le`. Rebuilt (after draining) when the input format changes mid-stream.
/// Owns the context (freed in deinit).
final class AudioResampler {
    let file: String
    let rate: Int32
    private var swr: OpaquePointer?
    private var inputKey: [Int64] = []
    private(set) var samples: [Float] = []
    private let maxSamples: Int

    init(file: String, rate: Int32, maxSamples: Int) {
        self.file = file
        self.rate = rate
        self.maxSamples = maxSamples
    }

    deinit { swr_free(&swr) }

    /// Every sample of `decoder`'s stream, resampled.
    static func decodeAll(_ decoder: StreamDecoder, sampleRate: Int32, maxSeconds: Double) throws -> [Float] {
        let limit = Int(min(maxSeconds * Double(sampleRate), Double(Int.max / 2)))
        let r = AudioResampler(file: decoder.input.name, rate: sampleRate, maxSamples: limit)
        let frame = try Frame(file: decoder.input.name)
        var decodedAny = false
        while try decoder.next(into: frame) {
            decodedAny = true
            try r.push(frame.pointer)
            av_frame_unref(frame.pointer)
        }
        try r.drain()
        guard decodedAny else {
            if let failure = decoder.input.readFailure { throw failure }
            let damaged = decoder.damagedFrames > 0 ? " (\(decoder.damagedFrames) damaged packets)" : ""
            throw MediaError.invalidData(file: decoder.input.name, reason: "no audio could be decoded\(damaged)")
        }
        return r.samples
    }

    func push(_ f: UnsafeMutablePointer<AVFrame>) throws {
        let n = f.pointee.nb_samples
        guard n > 0 else { return }
        let key: [Int64] = [Int64(f.pointee.format), Int64(f.pointee.sample_rate), Int64(f.pointee.ch_layout.nb_channels),
                            Int64(f.pointee.ch_layout.order.rawValue), Int64(bitPattern: f.pointee.ch_layout.u.mask)]
        if key != inputKey {
            try drain()
            try configure(f)
            inputKey = key
        }
        let outCapacity = swr_get_out_samples(swr, n)
        try convert(input: UnsafeRawPointer(f.pointee.extended_data).map { $0.assumingMemoryBound(to: UnsafePointer<UInt8>?.self) },
                    count: n, capacity: outCapacity)
    }

    /// Flushes what the resampler still holds (its filter delay) at the end or before a format change.
    func drain() throws {
        guard swr != nil else { return }
        while true {
            let capacity = max(swr_get_out_samples(swr, 0), 0) + 32
            let before = samples.count
            try convert(input: nil, count: 0, capacity: capacity)
            if samples.count == before { break }
        }
    }

    private func configure(_ f: UnsafeMutablePointer<AVFrame>) throws {
        swr_free(&swr)
        var inLayout = AVChannelLayout()
        if f.pointee.ch_layout.order == AV_CHANNEL_ORDER_UNSPEC || f.pointee.ch_layout.nb_channels <= 0 {
            av_channel_layout_default(&inLayout, max(1, f.pointee.ch_layout.nb_channels))
        } else {
            try check(av_channel_layout_copy(&inLayout, &f.pointee.ch_layout), "av_channel_layout_copy", file: file)
        }
        defer { av_channel_layout_uninit(&inLayout) }
        var outLayout = AVChannelLayout()
        av_channel_layout_default(&outLayout, 1)
        try check(swr_alloc_set_opts2(&swr, &outLayout, AV_SAMPLE_FMT_FLT, rate,
                                      &inLayout, AVSampleFormat(f.pointee.format), f.pointee.sample_rate, 0, nil),
                  "swr_alloc_set_opts2", file: file)
        try check(swr_init(swr), "swr_init", file: file)
    }

    private func convert(input: UnsafePointer<UnsafePointer<UInt8>?>?, count: Int32, capacity: Int32) throws {
        guard capacity > 0 else { return }
        let start = samples.count
        samples.append(contentsOf: repeatElement(0, count: Int(capacity)))
        let produced = samples.withUnsafeMutableBufferPointer { buf -> Int32 in
            var out: UnsafeMutablePointer<UInt8>? = UnsafeMutableRawPointer(buf.baseAddress! + start).assumingMemoryBound(to: UInt8.self)
            return withUnsafeMutablePointer(to: &out) { outPtr in
                swr_convert(swr, outPtr, capacity, UnsafeMutablePointer(mutating: input), count)
            }
        }
        samples.removeLast(Int(capacity) - Int(max(produced, 0)))
        try check(produced, "swr_convert", file: file)
        if samples.count > maxSamples {
            throw MediaError.limitExceeded(file: file, reason: "more than \(maxSamples / Int(rate)) s of audio")
        }
    }
}
