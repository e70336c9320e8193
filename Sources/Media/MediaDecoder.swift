import CFFmpeg
import Tensor

/// The decode stage's entry points: a still image, N video frames sampled by time, or an audio track
/// at 16 kHz mono — from a path or a chunked upload. Each call opens its own FFmpeg contexts and frees
/// them before returning, so calls may run on any thread concurrently.
public enum MediaDecoder {
    /// The first frame of the input's video stream (PNG, JPEG, WebP, BMP, TIFF, GIF, or a video),
    /// upright, as RGB24 at its own size.
    public static func image(_ source: MediaSource, limits: MediaLimits = .default) throws -> RGBImage {
        let input = try MediaInput(source, limits: limits)
        let sampler = try VideoSampler(input: input)
        let first = try sampler.first()
        return try sampler.image(first, converter: FrameConverter(file: input.name), width: nil, height: nil)
    }

    /// `count` frames sampled uniformly by time per the `unimoe media frames` contract, upright and
    /// scaled (bilinear) to `width`×`height` when given. A still image gives `count` copies.
    public static func videoFrames(_ source: MediaSource, count: Int = 8, width: Int? = nil, height: Int? = nil,
                                   limits: MediaLimits = .default) throws -> [VideoFrame] {
        guard count > 0 else { throw MediaError.invalidArgument("frame count must be positive, got \(count)") }
        if let width, let height {
            guard width > 0, height > 0, width * height <= limits.maxPixels else {
                throw MediaError.invalidArgument("output size \(width)x\(height) must be positive and at most \(limits.maxPixels) pixels")
            }
        } else if width != nil || height != nil {
            throw MediaError.invalidArgument("give both width and height, or neither")
        }
        let input = try MediaInput(source, limits: limits)
        // A file can be opened again, so stretches of it in different GOPs can be decoded side by
        // side by single-threaded samplers (see `sampledFrames`; this one finds the first frame
        // and the length, then decodes the first run). An upload is read once, by one sampler
        // with frame threads.
        let threads = max(1, Parallel.threads)
        let reopenable = source.isFile
        let probeThreads = Int32(reopenable ? 1 : threads)
        var sampler = try VideoSampler(input: input, decoderThreads: probeThreads)
        let converter = FrameConverter(file: input.name)
        var first = try sampler.first()
        var duration = sampler.decoder.declaredDuration
        if duration == nil {
            // No declared length (a raw stream): measure it by decoding once, then start over.
            duration = try sampler.measureDuration()
            sampler = try VideoSampler(input: try MediaInput(source, limits: limits), decoderThreads: probeThreads)
            first = try sampler.first()
        }
        let d = duration ?? (0, 1)
        let seconds = Double(d.num) / Double(d.den)
        if seconds > limits.maxDurationSeconds {
            throw MediaError.limitExceeded(file: input.name, reason: "\(seconds) s of video, more than the \(limits.maxDurationSeconds) s allowed")
        }
        let targets = sampler.targetTicks(count: count, duration: d)
        let chosen = reopenable ? try sampledFrames(source, limits: limits, targets: targets, first: first, probe: sampler, threads: threads)
                                : try sampler.frames(at: targets, first: first)
        var out: [VideoFrame] = []
        out.reserveCapacity(count)
        var last: (pts: Int64, image: RGBImage)?
        for f in chosen {
            let image: RGBImage
            if let last, last.pts == f.pts {
                image = last.image   // the same frame on screen at two sample times: convert once
            } else {
                image = try sampler.image(f, converter: converter, width: width, height: height)
            }
            last = (f.pts, image)
            out.append(VideoFrame(image: image, timestamp: f.time))
        }
        return out
    }

    /// The frames at `targets` of a file: its independent runs (`VideoSampler.independentRuns`, at
    /// most one per thread) decoded side by side, one FFmpeg thread each (the first by `probe`, the
    /// others by fresh samplers); a single run with several threads gets a fresh sampler with them
    /// as frame threads. The frames are bit-identical whatever the split: every one is decoded from
    /// its keyframe by the same decoder.
    private static func sampledFrames(_ source: MediaSource, limits: MediaLimits, targets: [Int64], first: TimedFrame,
                                      probe: VideoSampler, threads: Int) throws -> [TimedFrame] {
        // The probe is single-threaded and already at the first frame.
        if threads == 1 { return try probe.frames(at: targets, first: first) }
        let runs = probe.independentRuns(targets, ways: threads)
        return try Parallel.map(tasks: runs.count) { r in
            if r == 0 && runs.count > 1 { return try probe.frames(at: Array(targets[runs[0]]), first: first) }
            let sampler = try VideoSampler(input: try MediaInput(source, limits: limits),
                                           decoderThreads: runs.count == 1 ? Int32(threads) : 1)
            return try sampler.frames(at: Array(targets[runs[r]]), first: sampler.first())
        }.flatMap { $0 }
    }

    /// The input's audio track (the best one; a video's soundtrack too) as 16 kHz mono float32.
    public static func audio(_ source: MediaSource, limits: MediaLimits = .default) throws -> [Float] {
        let input = try MediaInput(source, limits: limits)
        let st = try input.bestStream(AVMEDIA_TYPE_AUDIO, kind: "audio")
        let decoder = try StreamDecoder(input: input, stream: st)
        // A file is decoded on a thread of its own beside the resampling when there are two threads.
        return try AudioResampler.decodeAll(decoder, sampleRate: 16000, maxSeconds: limits.maxDurationSeconds,
                                            decodingBeside: source.isFile && Parallel.threads >= 2)
    }
}
