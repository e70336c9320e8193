import CFFmpeg
import Foundation

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

    /// Every sample of `decoder`'s stream, resampled. With `decodingBeside`, a thread of its own
    /// decodes while this one resamples (`FrameHandoff`): the same frames reach the same resampler
    /// in the same order, so the samples are the same bits either way. Only for files: an upload's
    /// decoder may wait on the network, and an error here (a limit) must not wait for it.
    static func decodeAll(_ decoder: StreamDecoder, sampleRate: Int32, maxSeconds: Double, decodingBeside: Bool) throws -> [Float] {
        let limit = Int(min(maxSeconds * Double(sampleRate), Double(Int.max / 2)))
        let r = AudioResampler(file: decoder.input.name, rate: sampleRate, maxSamples: limit)
        // Room for the declared length (never past the limit): the samples are not copied as they grow.
        if let d = decoder.declaredDuration {
            let seconds = Double(d.num) / Double(d.den)
            r.samples.reserveCapacity(min(limit, Int(min(seconds * Double(sampleRate), Double(Int.max / 4)))) + Int(sampleRate))
        }
        var decodedAny = false
        if decodingBeside {
            let handoff = FrameHandoff(depth: 64)
            let decoding = DecodingThread(decoder: decoder, handoff: handoff)
            decoding.start()
            // Whatever ends this loop (the end, an error on either side), the decoding thread stops
            // before the decoder can be freed.
            defer { handoff.cancel(); decoding.finished.wait() }
            while let frame = try handoff.take() {
                decodedAny = true
                try r.push(frame.pointer)
            }
        } else {
            let frame = try Frame(file: decoder.input.name)
            while try decoder.next(into: frame) {
                decodedAny = true
                try r.push(frame.pointer)
                av_frame_unref(frame.pointer)
            }
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

/// Decoded frames on their way from the decoding thread to the resampling one: a bounded FIFO, so
/// the decoder runs at most `depth` frames ahead. The decoder's end or error travels behind its
/// frames; `cancel` (the consumer is done, or failed) makes the producer stop at its next frame.
///
/// `@unchecked Sendable`: every stored property is read and written only under `condition`'s lock,
/// and a frame belongs to one thread at a time (the producer until `put`, the consumer after `take`).
final class FrameHandoff: @unchecked Sendable {
    private let condition = NSCondition()
    private let depth: Int
    private var frames: [Frame] = []
    private var head = 0
    private var ended = false
    private var failure: Error?
    private var cancelled = false
    // Who sleeps on `condition`: each side wakes the other only then, and only once half the queue
    // is there to take (or free): a 10 min MP3 is 23k frames, and a wake-up per frame meant 9k
    // context switches, ~12% of the samples.
    private var producerWaits = false, consumerWaits = false

    init(depth: Int) { self.depth = max(2, depth) }

    /// Frames the queue holds a reference to, taken or not (tests check the bound).
    var storedFrames: Int {
        condition.lock()
        defer { condition.unlock() }
        return frames.count
    }

    /// Queues `frame`, waiting while `depth` frames are queued; false once cancelled (stop decoding).
    func put(_ frame: Frame) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while frames.count - head >= depth && !cancelled {
            producerWaits = true
            condition.wait()
        }
        producerWaits = false
        guard !cancelled else { return false }
        frames.append(frame)
        if consumerWaits && frames.count - head >= depth / 2 { condition.broadcast() }
        return true
    }

    /// The decoder has no more frames; `error` if it stopped on one.
    func finish(_ error: Error?) {
        condition.lock()
        ended = true
        failure = error
        condition.broadcast()
        condition.unlock()
    }

    /// The next frame; nil at the end; the decoder's error once its frames before it are taken.
    func take() throws -> Frame? {
        condition.lock()
        defer { condition.unlock() }
        while head == frames.count && !ended {
            consumerWaits = true
            condition.wait()
        }
        consumerWaits = false
        guard head < frames.count else {
            if let failure { throw failure }
            return nil
        }
        let f = frames[head]
        head += 1
        // Taken frames leave the array in batches, so it never holds more than 2·depth of them
        // even while the decoder keeps the queue full.
        if head >= depth || head == frames.count { frames.removeFirst(head); head = 0 }
        if producerWaits && frames.count - head <= depth / 2 { condition.broadcast() }
        return f
    }

    /// The consumer stops: a waiting or later `put` returns false.
    func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
    }
}

/// The thread that runs a `StreamDecoder` into a `FrameHandoff`; `finished` is signalled when it
/// has stopped touching the decoder. `@unchecked Sendable`: after `start` only that thread uses
/// the decoder, until `finished`.
private final class DecodingThread: @unchecked Sendable {
    let decoder: StreamDecoder
    let handoff: FrameHandoff
    let finished = DispatchSemaphore(value: 0)

    init(decoder: StreamDecoder, handoff: FrameHandoff) {
        self.decoder = decoder
        self.handoff = handoff
    }

    func start() {
        let thread = Thread { [self] in
            defer { finished.signal() }
            do {
                while true {
                    let frame = try Frame(file: decoder.input.name)
                    guard try decoder.next(into: frame) else { break }
                    guard handoff.put(frame) else { return }
                }
                handoff.finish(nil)
            } catch {
                handoff.finish(error)
            }
        }
        thread.name = "unimoe-audio-decode"
        thread.start()
    }
}
