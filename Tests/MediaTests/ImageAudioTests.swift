import XCTest
import Tensor
@testable import Media
import TestSupport

/// Stills and audio tracks against the ffmpeg program.
final class ImageAudioTests: XCTestCase {
    func assertImageMatches(_ file: String, line: UInt = #line) throws {
        let image = try MediaDecoder.image(.file(file))
        let ref = [UInt8](try TestMedia.ffmpeg(["-i", file, "-frames:v", "1", "-vf", "scale=flags=bilinear",
                                                "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]))
        let r = try runProcess("/usr/bin/ffprobe", ["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                                                     "-of", "csv=p=0", file])
        XCTAssertEqual("\(image.width),\(image.height)", r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), file, line: line)
        XCTAssertEqual(image.pixels.count, ref.count, file, line: line)
        XCTAssertEqual(meanAbsDiff(image.pixels, ref), 0, "\(file) must be pixel-exact", line: line)
    }

    func testPNG() throws { try assertImageMatches(try TestMedia.image("png")) }
    func testJPEG() throws { try assertImageMatches(try TestMedia.image("jpg")) }
    func testWebP() throws { try assertImageMatches(try TestMedia.image("webp", codec: ["-c:v", "libwebp"])) }
    func testBMPAndTIFF() throws {
        try assertImageMatches(try TestMedia.image("bmp"))
        try assertImageMatches(try TestMedia.image("tiff"))
    }

    func testGIFFirstFrame() throws {
        let image = try MediaDecoder.image(.file(try TestMedia.gif()))
        let ref = [UInt8](try TestMedia.ffmpeg(["-i", try TestMedia.gif(), "-frames:v", "1", "-vf", "scale=flags=bilinear",
                                                "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]))
        XCTAssertEqual(image.pixels, ref)
    }

    func assertAudioMatches(_ file: String, line: UInt = #line) throws {
        let samples = try MediaDecoder.audio(.file(file))
        let ref = try TestMedia.referenceAudio(file)
        XCTAssertEqual(samples.count, ref.count, file, line: line)
        XCTAssertGreaterThan(ref.count, 30000, line: line)
        let maxDiff = zip(samples, ref).map { abs($0 - $1) }.max() ?? 1
        XCTAssertLessThanOrEqual(maxDiff, 1e-4, "\(file): max |diff| \(maxDiff)", line: line)
    }

    func testWAV() throws { try assertAudioMatches(try TestMedia.audio("wav")) }
    func testMP3() throws { try assertAudioMatches(try TestMedia.audio("mp3")) }
    func testOggOpus() throws { try assertAudioMatches(try TestMedia.audio("ogg", codec: ["-c:a", "libopus"])) }
    func testFLAC() throws { try assertAudioMatches(try TestMedia.audio("flac")) }

    /// With two threads one decodes while the other resamples; the samples are the same bits as
    /// with one thread, for every codec here.
    func testDecodingBesideResamplingGivesTheSameSamples() throws {
        let saved = Parallel.threads
        defer { Parallel.setThreads(saved) }
        for file in [try TestMedia.audio("wav"), try TestMedia.audio("mp3"), try TestMedia.audio("flac"),
                     try TestMedia.audio("ogg", codec: ["-c:a", "libopus"])] {
            Parallel.setThreads(1)
            let alone = try MediaDecoder.audio(.file(file))
            Parallel.setThreads(2)
            let beside = try MediaDecoder.audio(.file(file))
            XCTAssertEqual(alone.count, beside.count, file)
            XCTAssertTrue(alone.withUnsafeBytes { a in beside.withUnsafeBytes { a.elementsEqual($0) } }, "\(file): the bits differ")
        }
    }

    /// An error on the resampling side of the two-thread decode (the duration limit, while the
    /// decoder runs ahead) ends it with that error and leaves no thread behind; an upload, which may
    /// wait on the network, is decoded on the calling thread and fails as before.
    func testTwoThreadAudioErrorsStopTheDecodingThread() throws {
        let saved = Parallel.threads
        defer { Parallel.setThreads(saved) }
        Parallel.setThreads(2)
        func threadCount() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0 }
        let mp3 = try TestMedia.audio("mp3")
        let before = threadCount()
        for _ in 0..<20 {
            XCTAssertThrowsError(try MediaDecoder.audio(.file(mp3), limits: MediaLimits(maxDurationSeconds: 0.5))) {
                guard case MediaError.limitExceeded = $0 else { return XCTFail("\($0)") }
            }
        }
        usleep(200_000)
        XCTAssertLessThan(threadCount() - before, 5, "decoding threads outlive their requests")
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: mp3)))
        let upload = ChunkedInput(name: "upload.mp3")
        upload.append(bytes[0..<(bytes.count / 2)])
        Thread.detachNewThread { usleep(20_000); upload.fail("connection reset") }
        XCTAssertThrowsError(try MediaDecoder.audio(.stream(upload))) {
            guard case MediaError.aborted(_, "connection reset") = $0 else { return XCTFail("\($0)") }
        }
    }

    /// The queue between the two audio threads: frames come out in order, the producer's error
    /// only after its frames, a full queue holds the producer back, and `cancel` releases it.
    func testFrameHandoffOrderErrorAndCancel() throws {
        struct Stop: Error {}
        let handoff = FrameHandoff(depth: 4)
        nonisolated(unsafe) let frames = try (0..<10).map { i -> Frame in
            let f = try Frame(file: "test")
            f.pointer.pointee.pts = Int64(i)
            return f
        }
        let producerDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            for f in frames { _ = handoff.put(f) }
            handoff.finish(Stop())
            producerDone.signal()
        }
        var taken: [Int64] = []
        XCTAssertThrowsError(try { while let f = try handoff.take() { taken.append(f.pointer.pointee.pts) } }()) {
            XCTAssertTrue($0 is Stop, "\($0)")
        }
        XCTAssertEqual(taken, Array(0..<10))
        XCTAssertEqual(producerDone.wait(timeout: .now() + 5), .success)

        // A decoder that keeps the queue full: taken frames are still let go of.
        let busy = FrameHandoff(depth: 4)
        Thread.detachNewThread {
            for i in 0..<200 { _ = busy.put(frames[i % frames.count]) }
            busy.finish(nil)
        }
        var count = 0, most = 0
        while try busy.take() != nil {
            count += 1
            most = max(most, busy.storedFrames)
            usleep(200)
        }
        XCTAssertEqual(count, 200)
        XCTAssertLessThanOrEqual(most, 8, "the queue holds on to frames already taken")

        let full = FrameHandoff(depth: 2)
        let result = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var accepted: [Bool] = []
        Thread.detachNewThread {
            for f in frames.prefix(3) { accepted.append(full.put(f)) }
            result.signal()
        }
        XCTAssertEqual(result.wait(timeout: .now() + 0.2), .timedOut, "a full queue did not hold its producer back")
        full.cancel()
        XCTAssertEqual(result.wait(timeout: .now() + 5), .success, "cancel did not release the producer")
        XCTAssertEqual(accepted, [true, true, false])
    }
}
