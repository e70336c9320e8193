import XCTest
import Foundation
import Media
import TestSupport

/// `unimoe media frames|audio` per CLI-CONTRACT.md, run as the real executable.
final class MediaCommandTests: XCTestCase {
    func tempPath(_ name: String) -> String { NSTemporaryDirectory() + "unimoe-cli-\(getpid())-\(name)" }

    func testFramesWritesRawRGBAndPrintsTimestamps() throws {
        let file = try TestMedia.h264()
        let out = tempPath("frames.rgb")
        defer { unlink(out) }
        let r = try Binaries.unimoe(["media", "frames", file, "--count", "3", "--size", "40x30", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdoutLines.count, 1)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["frames"] as? Int, 3)
        let ts = try XCTUnwrap(json["timestamps"] as? [Double])
        let frames = try MediaDecoder.videoFrames(.file(file), count: 3, width: 40, height: 30)
        XCTAssertEqual(ts, frames.map(\.timestamp))
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
        XCTAssertEqual(bytes, frames.flatMap(\.image.pixels))
    }

    func testAudioWritesF32LE() throws {
        let file = try TestMedia.audio("flac")
        let out = tempPath("audio.f32")
        defer { unlink(out) }
        let r = try Binaries.unimoe(["media", "audio", file, "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["samples"] as? Int, 32000)
        XCTAssertEqual(json["seconds"] as? Double, 2)
        let data = try Data(contentsOf: URL(fileURLWithPath: out))
        let samples = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(samples, try TestMedia.referenceAudio(file))
    }

    func testUndecodableInputExitsOneWithOneLine() throws {
        let bad = tempPath("bad.mp4")
        try Data("not a video".utf8).write(to: URL(fileURLWithPath: bad))
        defer { unlink(bad) }
        for args in [["media", "frames", bad, "--count", "2", "--size", "8x8", "--out", tempPath("x.rgb")],
                     ["media", "audio", bad, "--out", tempPath("x.f32")],
                     ["media", "audio", "/no/such/file.wav", "--out", tempPath("x.f32")]] {
            let r = try Binaries.unimoe(args)
            XCTAssertEqual(r.status, 1, args.joined(separator: " "))
            XCTAssertEqual(r.stdout, "")
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(args[2]), r.stderr)
        }
    }

    func testUsageErrorsExit64() throws {
        XCTAssertEqual(try Binaries.unimoe(["media", "frames", "x.mp4", "--size", "12", "--out", "o"]).status, 64)
        XCTAssertEqual(try Binaries.unimoe(["media", "frames", "x.mp4"]).status, 64)
        XCTAssertEqual(try Binaries.unimoe(["media", "jump"]).status, 64)
    }
}
