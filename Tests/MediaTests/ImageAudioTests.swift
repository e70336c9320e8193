import XCTest
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
}
