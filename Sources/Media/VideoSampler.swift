import CFFmpeg

/// A decoded frame and its presentation time in seconds, relative to the stream's first frame.
struct TimedFrame {
    let frame: Frame
    let time: Double
    let pts: Int64
}

/// Picks the frames of a video the `unimoe media frames` contract asks for: frame i is the last one
/// whose presentation time is ≤ t_i = D·(i + 0.5)/N after the first frame. Decodes in order and seeks
/// over whole GOPs when the container's index (or, without one, a probe seek) allows.
final class VideoSampler {
    let input: MediaInput
    let decoder: StreamDecoder
    let orientation: Orientation
    private let timeBase: Double
    private var firstPts: Int64 = 0
    private var lastPts: Int64?
    private var frameStep: Int64 = 1
    private var pending: TimedFrame?

    /// `decoderThreads`: FFmpeg's frame threads for this stream (0: its own choice).
    init(input: MediaInput, decoderThreads: Int32 = 0) throws {
        self.input = input
        let st = try input.bestStream(AVMEDIA_TYPE_VIDEO, kind: "video")
        decoder = try StreamDecoder(input: input, stream: st, threads: decoderThreads)
        orientation = Orientation(displayMatrix: CFFmpeg_stream_display_matrix(st))
        let tb = st.pointee.time_base
        timeBase = tb.den != 0 && tb.num != 0 ? av_q2d(tb) : 1.0 / Double(AV_TIME_BASE)
        let fps = st.pointee.avg_frame_rate
        if fps.num > 0, fps.den > 0, tb.num > 0 {
            frameStep = max(1, Int64((Double(fps.den) / Double(fps.num) / timeBase).rounded()))
        }
    }

    /// For each of `count` samples, the largest frame time (in stream ticks after the first frame)
    /// still on screen at t_i = D·(2i + 1)/(2N): exact integer arithmetic, so a frame exactly at t_i
    /// is chosen, as the contract's "≤" says.
    func targetTicks(count: Int, duration: (num: Int128, den: Int128)) -> [Int64] {
        let tb = decoder.stream.pointee.time_base
        let tbNum = Int128(max(tb.num, 1)), tbDen = Int128(max(tb.den, 1))
        return (0..<count).map { i in
            let num = duration.num * Int128(2 * i + 1) * tbDen
            let den = duration.den * Int128(2 * count) * tbNum
            return Int64(clamping: num / den)
        }
    }

    /// Next frame in presentation order, nil at the end.
    private func decodeNext() throws -> TimedFrame? {
        if let p = pending { pending = nil; return p }
        let f = try Frame(file: input.name)
        guard try decoder.next(into: f) else { return nil }
        return try timed(f)
    }

    /// A frame just decoded, with its time (a missing pts continues the previous frame's by one
    /// frame step); checks the size limit.
    private func timed(_ f: Frame) throws -> TimedFrame {
        var pts = f.pointer.pointee.best_effort_timestamp
        if pts == CFFmpeg_AV_NOPTS_VALUE() { pts = (lastPts ?? firstPts - frameStep) + frameStep }
        if let lastPts, pts > lastPts, pts - lastPts < frameStep || frameStep <= 1 { frameStep = pts - lastPts }
        lastPts = pts
        let pixels = Int(f.pointer.pointee.width) * Int(f.pointer.pointee.height)
        if pixels > input.limits.maxPixels {
            throw MediaError.limitExceeded(file: input.name, reason: "\(f.pointer.pointee.width)x\(f.pointer.pointee.height) frame, more than \(input.limits.maxPixels) pixels")
        }
        return TimedFrame(frame: f, time: seconds(pts - firstPts), pts: pts)
    }

    /// `ticks` in seconds, one correctly rounded division (20992/12800 prints as 1.64, not 1.6400000000000001).
    private func seconds(_ ticks: Int64) -> Double {
        let tb = decoder.stream.pointee.time_base
        guard tb.num > 0, tb.den > 0 else { return Double(ticks) * timeBase }
        return Double(Int128(ticks) * Int128(tb.num)) / Double(tb.den)
    }

    /// The first frame (the time origin).
    func first() throws -> TimedFrame {
        guard let f = try decodeNext() else {
            if let failure = input.readFailure { throw failure }
            let damaged = decoder.damagedFrames > 0 ? " (\(decoder.damagedFrames) damaged packets)" : ""
            throw MediaError.invalidData(file: input.name, reason: "no video frame could be decoded\(damaged)")
        }
        firstPts = f.pts
        return TimedFrame(frame: f.frame, time: 0, pts: f.pts)
    }

    /// The frames on screen at `targets` (ascending; ticks after the first frame, see `targetTicks`).
    /// Where the container has an index, the targets after one keyframe are decoded together from
    /// packets read ahead (`framesFromReadAhead`); otherwise, and wherever that declines, one
    /// target at a time: while fast-forwarding, frames nothing references are not decoded unless
    /// they are within a few frames of the target; if one of those could have been the answer, the
    /// target is decoded again without skipping, so the result never depends on the shortcut.
    func frames(at targets: [Int64], first: TimedFrame) throws -> [TimedFrame] {
        var held = first
        var out: [TimedFrame] = []
        var start = 0
        while start < targets.count {
            let key = keyframe(before: targets[start])
            var end = start + 1
            while end < targets.count, key != nil, keyframe(before: targets[end]) == key { end += 1 }
            if key != nil, readsAhead, let found = try framesFromReadAhead(targets[start..<end]) {
                out += found
                held = found[found.count - 1]
            } else {
                for t in targets[start..<end] {
                    held = try frame(at: t, from: held)
                    out.append(held)
                }
            }
            start = end
        }
        return out
    }

    /// The frame on screen at `t`, decoding on from `held` (or from a keyframe after a seek).
    private func frame(at t: Int64, from start: TimedFrame) throws -> TimedFrame {
        var held = start
        if needsSeek || (t > held.pts - firstPts && shouldSeek(from: held, to: t)) {
            if let landed = try seekBefore(t) {
                held = landed
            } else if needsSeek {
                throw MediaError.invalidData(file: input.name, reason: "cannot seek back after reading ahead")
            }
        }
        // Only where a seek can undo the shortcut (the container has an index).
        if avformat_index_get_entries_count(decoder.stream) > 0 {
            decoder.skipNonReferenceBefore = firstPts &+ t &- 8 * frameStep
        }
        held = try advance(from: held, to: t)
        decoder.skipNonReferenceBefore = nil
        if held.pts < firstPts &+ t, decoder.mayHaveSkipped(in: (held.pts + 1)...(firstPts &+ t)) {
            // The frame on screen may have been dropped: decode this stretch again in full.
            guard let landed = try seekBefore(t) else {
                throw MediaError.invalidData(file: input.name, reason: "cannot seek back to re-decode a dropped frame")
            }
            held = try advance(from: landed, to: t)
        }
        decoder.forgetSkipped(before: held.pts)
        return held
    }

    /// Set once `framesFromReadAhead` has moved the decoder: it must seek before decoding on.
    private var needsSeek = false

    /// Read-ahead stops (and the targets are decoded one at a time) past this many packet bytes: a
    /// 10 s GOP of 1080p at 8 Mbit/s is 10 MB; a request never holds more than this in packets.
    static let readAheadBytes = 64 << 20

    /// Whether `frames(at:first:)` may read ahead (tests turn it off to hold the two ways to the same frames).
    var readsAhead = true

    /// How many target groups `framesFromReadAhead` decoded (tests check that it is really used).
    private(set) var readAheadGroups = 0

    /// The pts of the index's keyframe at or before `t` (ticks after the first frame); nil without one.
    private func keyframe(before t: Int64) -> Int64? {
        guard avformat_index_get_entries_count(decoder.stream) > 0 else { return nil }
        return avformat_index_get_entry_from_timestamp(decoder.stream, ticks(t), AVSEEK_FLAG_BACKWARD)?.pointee.timestamp
    }

    /// The frames on screen at `targets` (ascending, all after the same keyframe), decoded from
    /// packets read ahead. Seeks to the keyframe and reads packets until one's dts passes the last
    /// target (no later packet can be shown before it), so each answer — the largest pts ≤ t — is
    /// known before anything is decoded. Then decodes the packets up to the last one shown by the
    /// last target, dropping every frame nothing references except the answers, and drains the
    /// decoder: no frame near a target or after the last one is decoded only to be thrown away.
    ///
    /// Declines (nil; the caller decodes the targets one at a time) whenever the packets do not
    /// allow this: no pts or dts, timestamps out of order, the end of the data (which the other way
    /// checks for truncation), more than `readAheadBytes`, a damaged packet, or an answer that does
    /// not come out of the decoder with its pts.
    private func framesFromReadAhead(_ targets: ArraySlice<Int64>) throws -> [TimedFrame]? {
        guard let firstTarget = targets.first, let lastTarget = targets.last, decoder.seek(to: ticks(firstTarget)) else { return nil }
        needsSeek = true
        pending = nil
        let none = CFFmpeg_AV_NOPTS_VALUE()
        var packets: [Packet] = [], bytes = 0
        while true {
            let p = try Packet(file: input.name)
            guard try decoder.read(into: p) else { return nil }
            let pts = p.pointer.pointee.pts, dts = p.pointer.pointee.dts
            guard pts != none, dts != none, dts <= pts, dts >= (packets.last?.pointer.pointee.dts ?? .min) else { return nil }
            if packets.isEmpty {
                guard p.pointer.pointee.flags & AV_PKT_FLAG_KEY != 0, pts <= ticks(firstTarget) else { return nil }
            }
            if dts > ticks(lastTarget) { break }
            bytes += Int(p.pointer.pointee.size)
            guard bytes <= Self.readAheadBytes else { return nil }
            packets.append(p)
        }
        let times = packets.map { $0.pointer.pointee.pts }
        guard Set(times).count == times.count else { return nil }
        let answers = targets.map { t in times.filter { $0 <= ticks(t) }.max()! }   // the keyframe's pts is ≤ every target
        let wanted = Set(answers)
        let lastShown = times.lastIndex { $0 <= ticks(lastTarget) }!
        let damaged = decoder.damagedFrames
        var found: [Int64: TimedFrame] = [:]
        var scratch = try Frame(file: input.name)
        func collect() throws -> Bool {   // false once the decoder has given out everything
            while true {
                switch try decoder.receive(into: scratch) {
                case .needsPacket: return true
                case .end: return false
                case .frame:
                    let f = try timed(scratch)
                    if wanted.contains(f.pts) { found[f.pts] = f; scratch = try Frame(file: input.name) }
                }
            }
        }
        for (p, pts) in zip(packets[...lastShown], times) {
            guard try decoder.send(p, skippingNonReference: !wanted.contains(pts)) else { return nil }
            _ = try collect()
        }
        try decoder.drain()
        while try collect() {}
        guard decoder.damagedFrames == damaged, answers.allSatisfy({ found[$0] != nil }) else { return nil }
        readAheadGroups += 1
        return answers.map { found[$0]! }
    }

    /// Splits the ascending `targets` into at most `ways` consecutive runs that separate samplers can
    /// decode side by side: a run may only start at a target whose keyframe lies after the previous
    /// target (so no decoding is shared across the cut), and the cuts balance the frames each run
    /// decodes (from the keyframe, or from the previous target in the same GOP). One run when the
    /// container has no index.
    func independentRuns(_ targets: [Int64], ways: Int) -> [Range<Int>] {
        let st = decoder.stream
        guard ways > 1, targets.count > 1, avformat_index_get_entries_count(st) > 0 else { return [0..<targets.count] }
        var work: [Int64] = [], canStart: [Bool] = []
        for (i, t) in targets.enumerated() {
            let key = avformat_index_get_entry_from_timestamp(st, ticks(t), AVSEEK_FLAG_BACKWARD)?.pointee.timestamp ?? firstPts
            let fresh = i == 0 || key > ticks(targets[i - 1])
            canStart.append(fresh)
            work.append(max(1, fresh ? ticks(t) - key : t - targets[i - 1]))
        }
        var prefix: [Int64] = [0]   // prefix[i]: the work of targets 0..<i
        for w in work { prefix.append(prefix.last! + w) }
        let total = prefix.last!
        var runs: [Range<Int>] = [], start = 0
        for i in 1..<targets.count where canStart[i] && runs.count < ways - 1 {
            // Cut before i unless the next possible cut comes closer to the next equal share.
            let share = total * Int64(runs.count + 1) / Int64(ways)
            let next = ((i + 1)..<targets.count).first { canStart[$0] }.map { prefix[$0] } ?? total
            if abs(next - share) >= abs(prefix[i] - share) { runs.append(start..<i); start = i }
        }
        runs.append(start..<targets.count)
        return runs
    }

    /// Decodes forward while frames are ≤ t; returns the last such frame (the next one is kept pending).
    private func advance(from start: TimedFrame, to t: Int64) throws -> TimedFrame {
        var held = start
        var reachedEnd = true
        while let next = try decodeNext() {
            if next.pts - firstPts <= t { held = next } else { pending = next; reachedEnd = false; break }
        }
        if reachedEnd { try checkNotTruncated() }
        return held
    }

    private func ticks(_ t: Int64) -> Int64 { firstPts &+ t }

    /// Seeking pays when a keyframe lies between what we hold and the target; without an index we
    /// only try it for gaps of over two seconds and check where we landed.
    private func shouldSeek(from held: TimedFrame, to t: Int64) -> Bool {
        let st = decoder.stream
        if avformat_index_get_entries_count(st) > 0 {
            guard let entry = avformat_index_get_entry_from_timestamp(st, ticks(t), AVSEEK_FLAG_BACKWARD) else { return false }
            return entry.pointee.timestamp > held.pts + 2 * frameStep
        }
        return Double(t - (held.pts - firstPts)) * timeBase > 2.0
    }

    /// Seeks to a keyframe at or before `t` and returns the last frame ≤ t decoded from there
    /// (the caller keeps decoding); nil when the container cannot seek (decoding just goes on).
    private func seekBefore(_ t: Int64) throws -> TimedFrame? {
        var target = ticks(t)
        for _ in 0..<4 {
            pending = nil
            guard decoder.seek(to: target) else { return nil }
            needsSeek = false
            guard let f = try decodeNext() else { try checkNotTruncated(); break }
            if f.pts - firstPts <= t { return f }
            // Landed after t (keyframe pts past its dts, or an imprecise container): go one keyframe back.
            target = min(target, f.pts) - 1
        }
        // Give up seeking: restart from the beginning, which is always correct.
        pending = nil
        guard decoder.seek(to: Int64.min + 1) || decoder.seek(to: 0) else { return nil }
        needsSeek = false
        guard let f = try decodeNext() else { throw MediaError.invalidData(file: input.name, reason: "video ends after seeking back") }
        return f
    }

    /// At the end of the data: when the container's index lists frames past the last one decoded
    /// (an MP4 or WebM cut short after its index), the file is truncated.
    private func checkNotTruncated() throws {
        let st = decoder.stream
        let n = avformat_index_get_entries_count(st)
        guard n > 0, let last = avformat_index_get_entry(st, n - 1), let lastPts else { return }
        if last.pointee.timestamp > lastPts + 4 * frameStep {
            let have = Double(lastPts - firstPts) * timeBase, want = Double(last.pointee.timestamp - firstPts) * timeBase
            throw MediaError.invalidData(file: input.name, reason: String(format: "truncated: data ends at %.2f s, the index lists frames up to %.2f s", have, want))
        }
    }

    /// Decodes to the end and returns the last frame's time plus its duration: the length of a
    /// stream whose container declares none.
    func measureDuration() throws -> (num: Int128, den: Int128) {
        var end: Int64 = 0
        while let f = try decodeNext() {
            let d = f.frame.pointer.pointee.pkt_duration
            end = max(end, f.pts - firstPts + (d > 0 ? d : frameStep))
        }
        let tb = decoder.stream.pointee.time_base
        return (Int128(end) * Int128(max(tb.num, 1)), Int128(max(tb.den, 1)))
    }

    func image(_ f: TimedFrame, converter: FrameConverter, width: Int?, height: Int?) throws -> RGBImage {
        try converter.convert(f.frame, orientation: orientation, width: width, height: height)
    }
}
