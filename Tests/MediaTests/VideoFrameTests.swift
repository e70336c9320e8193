import XCTest
@testable import Media
import Tensor
import TestSupport

/// Sampled frames against the ffmpeg program: the contract's choice of frame (last pts ≤ t_i),
/// the timestamps, and the pixels (pixel-exact; the acceptance bound is MAD ≤ 1 level).
final class VideoFrameTests: XCTestCase {
    /// Checks `count` frames of `file` at `width`×`height` (nil: the upright native size, exact).
    func assertMatchesFFmpeg(_ file: String, count: Int, width: Int?, height: Int?, nativeSize: (Int, Int)? = nil,
                             file testFile: StaticString = #filePath, line: UInt = #line) throws {
        let frames = try MediaDecoder.videoFrames(.file(file), count: count, width: width, height: height)
        XCTAssertEqual(frames.count, count, file: testFile, line: line)
        let (times, duration) = try TestMedia.probe(file)
        let t0 = times[0]
        var indices: [Int] = []
        for i in 0..<count {
            let t = duration * (Double(i) + 0.5) / Double(count)
            let k = times.lastIndex(where: { $0 - t0 <= t + 1e-9 }) ?? 0
            indices.append(k)
            XCTAssertEqual(frames[i].timestamp, times[k] - t0, accuracy: 1e-6, "timestamp of frame \(i) of \(file)", file: testFile, line: line)
        }
        let w = width ?? frames[0].image.width, h = height ?? frames[0].image.height
        if let nativeSize { XCTAssertEqual([w, h], [nativeSize.0, nativeSize.1], "upright size", file: testFile, line: line) }
        let reference = try TestMedia.referenceFrames(file, indices: indices, width: w, height: h)
        for i in 0..<count {
            XCTAssertEqual(frames[i].image.width, w, file: testFile, line: line)
            XCTAssertEqual(frames[i].image.height, h, file: testFile, line: line)
            let mad = meanAbsDiff(frames[i].image.pixels, reference[i])
            XCTAssertLessThanOrEqual(mad, 1.0, "frame \(i) of \(file) differs from ffmpeg (MAD \(mad))", file: testFile, line: line)
            if width == nil {
                XCTAssertEqual(mad, 0, "no scaling: frame \(i) of \(file) must be pixel-exact", file: testFile, line: line)
            }
        }
    }

    func testH264MP4() throws {
        try assertMatchesFFmpeg(try TestMedia.h264(), count: 8, width: 168, height: 112)
        try assertMatchesFFmpeg(try TestMedia.h264(), count: 3, width: nil, height: nil, nativeSize: (320, 240))
    }

    /// A file's sample times in different GOPs are decoded side by side, one sampler per run: a clip
    /// of several GOPs is really cut into consecutive runs, and the frames are the same bytes with 1,
    /// 2 and 3 threads.
    func testSideBySideRunsGiveTheSameFrames() throws {
        let file = try TestMedia.h264()   // 2 s at 25 fps, a keyframe every 12 frames
        let sampler = try VideoSampler(input: MediaInput(.file(file), limits: .default), decoderThreads: 1)
        _ = try sampler.first()
        let targets = sampler.targetTicks(count: 8, duration: try XCTUnwrap(sampler.decoder.declaredDuration))
        XCTAssertEqual(sampler.independentRuns(targets, ways: 1), [0..<8])
        for ways in [2, 3] {
            let runs = sampler.independentRuns(targets, ways: ways)
            XCTAssertEqual(runs.count, ways, "\(runs)")
            XCTAssertEqual(runs.first?.lowerBound, 0)
            XCTAssertEqual(runs.last?.upperBound, 8)
            XCTAssertTrue(zip(runs, runs.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound && !$0.isEmpty }, "\(runs)")
        }
        let saved = Parallel.threads
        defer { Parallel.setThreads(saved) }
        var results: [[VideoFrame]] = []
        for n in [1, 2, 3] {
            Parallel.setThreads(n)
            results.append(try MediaDecoder.videoFrames(.file(file), count: 8, width: 168, height: 112))
        }
        XCTAssertEqual(results[1], results[0])
        XCTAssertEqual(results[2], results[0])
    }

    /// Sample times after one keyframe are decoded together from packets read ahead, and give the
    /// frames (pts and pixels) that decoding one target at a time gives: one sample per GOP, several,
    /// and more samples than frames (repeats).
    func testReadAheadGivesTheFramesOfOneAtATime() throws {
        let file = try TestMedia.h264()   // 2 s at 25 fps, a keyframe every 12 frames, B-frames
        for count in [3, 8, 20, 60] {
            var results: [[(pts: Int64, pixels: [UInt8])]] = []
            for readsAhead in [true, false] {
                let input = try MediaInput(.file(file), limits: .default)
                let sampler = try VideoSampler(input: input, decoderThreads: 1)
                sampler.readsAhead = readsAhead
                let first = try sampler.first()
                let targets = sampler.targetTicks(count: count, duration: try XCTUnwrap(sampler.decoder.declaredDuration))
                let frames = try sampler.frames(at: targets, first: first)
                let converter = FrameConverter(file: file)
                results.append(try frames.map { ($0.pts, try sampler.image($0, converter: converter, width: nil, height: nil).pixels) })
                if readsAhead {
                    XCTAssertGreaterThan(sampler.readAheadGroups, 0, "\(count) samples never read ahead")
                } else {
                    XCTAssertEqual(sampler.readAheadGroups, 0)
                }
            }
            XCTAssertEqual(results[0].map(\.pts), results[1].map(\.pts), "\(count) samples")
            XCTAssertTrue(zip(results[0], results[1]).allSatisfy { $0.pixels == $1.pixels }, "\(count) samples: pixels differ")
        }
    }

    /// An MP4 whose index lists frames past where its data ends: reading ahead meets the end, leaves
    /// the target to the one-at-a-time way, which reports the truncation.
    func testReadAheadLeavesATruncatedFileToTheTruncationCheck() throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try TestMedia.h264FastStart())))
        let cut = FileManager.default.temporaryDirectory.appendingPathComponent("unimoe-readahead-cut-\(getpid()).mp4")
        try Data(bytes[0..<(bytes.count * 7 / 10)]).write(to: cut)
        defer { try? FileManager.default.removeItem(at: cut) }
        XCTAssertThrowsError(try MediaDecoder.videoFrames(.file(cut.path), count: 8)) { error in
            XCTAssertTrue("\(error)".contains("truncated"), "\(error)")
        }
    }

    func testVP9WebM() throws { try assertMatchesFFmpeg(try TestMedia.vp9(), count: 5, width: 224, height: 224) }

    func testHEVCMatroska() throws { try assertMatchesFFmpeg(try TestMedia.hevc(), count: 4, width: nil, height: nil) }

    func testAV1Matroska() throws { try assertMatchesFFmpeg(try TestMedia.av1(), count: 4, width: 96, height: 96) }

    func testAnimatedGIF() throws { try assertMatchesFFmpeg(try TestMedia.gif(), count: 4, width: nil, height: nil) }

    func testTenBit() throws { try assertMatchesFFmpeg(try TestMedia.tenBit(), count: 4, width: 160, height: 120) }

    func testOddSize() throws {
        try assertMatchesFFmpeg(try TestMedia.odd(), count: 5, width: nil, height: nil, nativeSize: (333, 217))
        try assertMatchesFFmpeg(try TestMedia.odd(), count: 3, width: 336, height: 336)
    }

    func testVariableFrameRate() throws { try assertMatchesFFmpeg(try TestMedia.vfr(), count: 8, width: nil, height: nil) }

    func testRotated() throws {
        let src = try TestMedia.odd()
        try assertMatchesFFmpeg(try TestMedia.rotated(90, source: src), count: 3, width: nil, height: nil, nativeSize: (217, 333))
        try assertMatchesFFmpeg(try TestMedia.rotated(270, source: src), count: 2, width: 100, height: 150)
        try assertMatchesFFmpeg(try TestMedia.rotated(180, source: src), count: 2, width: nil, height: nil, nativeSize: (333, 217))
    }

    func testVideoWithAudioGivesBothTracks() throws {
        let f = try TestMedia.videoWithAudio()
        try assertMatchesFFmpeg(f, count: 2, width: 64, height: 48)
        let samples = try MediaDecoder.audio(.file(f))
        let reference = try TestMedia.referenceAudio(f)
        XCTAssertEqual(samples.count, reference.count)
        XCTAssertLessThanOrEqual(zip(samples, reference).map { abs($0 - $1) }.max() ?? 1, 1e-4)
    }

    func testStillImageGivesCopies() throws {
        let frames = try MediaDecoder.videoFrames(.file(try TestMedia.image("png")), count: 3, width: 32, height: 32)
        XCTAssertEqual(frames.count, 3)
        XCTAssertEqual(frames.map(\.timestamp), [0, 0, 0])
        XCTAssertEqual(frames[0].image, frames[2].image)
    }

    func testMoreSamplesThanFramesRepeatsFrames() throws {
        let frames = try MediaDecoder.videoFrames(.file(try TestMedia.av1()), count: 25, width: 16, height: 16)
        XCTAssertEqual(frames.count, 25)
        XCTAssertEqual(Set(frames.map(\.timestamp)).count, 10)   // 1 s at 10 fps: each frame chosen at least twice
    }

    func testBadArguments() {
        XCTAssertThrowsError(try MediaDecoder.videoFrames(.file("/nonexistent.mp4"), count: 0)) { e in
            guard case MediaError.invalidArgument = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try MediaDecoder.videoFrames(.file("/nonexistent.mp4"), count: 1, width: 10, height: nil))
    }
}
