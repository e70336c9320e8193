import XCTest
import Tensor
import Media
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

    /// An error on either side of the two-thread decode ends it with that error and leaves no thread
    /// behind: the resampler's limit while the decoder is ahead, the decoder's aborted upload while
    /// the resampler waits.
    func testTwoThreadAudioErrorsStopBothThreads() throws {
        let saved = Parallel.threads
        defer { Parallel.setThreads(saved) }
        Parallel.setThreads(2)
        func threadCount() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0 }
        let mp3 = try TestMedia.audio("mp3")
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: mp3)))
        let before = threadCount()
        for i in 0..<20 {
            XCTAssertThrowsError(try MediaDecoder.audio(.file(mp3), limits: MediaLimits(maxDurationSeconds: 0.5))) {
                guard case MediaError.limitExceeded = $0 else { return XCTFail("\($0)") }
            }
            let upload = ChunkedInput(name: "upload-\(i).mp3")
            upload.append(bytes[0..<(bytes.count / 2)])
            Thread.detachNewThread { usleep(20_000); upload.fail("connection reset") }
            XCTAssertThrowsError(try MediaDecoder.audio(.stream(upload))) {
                guard case MediaError.aborted(_, "connection reset") = $0 else { return XCTFail("\($0)") }
            }
        }
        usleep(200_000)
        XCTAssertLessThan(threadCount() - before, 5, "decoding threads outlive their requests")
    }
}
