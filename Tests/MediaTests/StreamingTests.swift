import XCTest
import Media
import TestSupport

/// Decoding bytes that arrive in chunks (4 KiB … 1 MiB, fed by another thread) gives exactly what
/// decoding the file gives.
final class StreamingTests: XCTestCase {
    let chunks = [4096, 65536, 1 << 20]

    func assertFramesEqual(_ file: String, count: Int = 4, line: UInt = #line) throws {
        let fromFile = try MediaDecoder.videoFrames(.file(file), count: count, width: 64, height: 48)
        for c in chunks {
            let streamed = try MediaDecoder.videoFrames(.stream(try TestMedia.stream(file, chunk: c)), count: count, width: 64, height: 48)
            XCTAssertEqual(streamed, fromFile, "\(file) in chunks of \(c)", line: line)
        }
    }

    func assertAudioEqual(_ file: String, line: UInt = #line) throws {
        let fromFile = try MediaDecoder.audio(.file(file))
        for c in chunks {
            let streamed = try MediaDecoder.audio(.stream(try TestMedia.stream(file, chunk: c)))
            XCTAssertEqual(streamed, fromFile, "\(file) in chunks of \(c)", line: line)
        }
    }

    func testMP4WithIndexAtTheEnd() throws { try assertFramesEqual(try TestMedia.h264MoovAtEnd()) }
    func testMP4FastStart() throws { try assertFramesEqual(try TestMedia.h264FastStart()) }
    func testWebM() throws { try assertFramesEqual(try TestMedia.vp9()) }
    func testGIF() throws { try assertFramesEqual(try TestMedia.gif()) }

    func testStills() throws {
        for f in [try TestMedia.image("png"), try TestMedia.image("jpg")] {
            let fromFile = try MediaDecoder.image(.file(f))
            XCTAssertEqual(try MediaDecoder.image(.stream(try TestMedia.stream(f, chunk: 4096))), fromFile, f)
        }
    }

    func testAudio() throws {
        try assertAudioEqual(try TestMedia.audio("mp3"))
        try assertAudioEqual(try TestMedia.audio("ogg", codec: ["-c:a", "libopus"]))
        try assertAudioEqual(try TestMedia.videoWithAudio())
    }

    func testDecodingStartsBeforeTheUploadEnds() throws {
        // An MP3 fed halfway: the decoder is already reading (blocked waiting) before the rest arrives.
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try TestMedia.audio("mp3"))))
        let input = ChunkedInput(name: "live.mp3")
        input.append(bytes[0..<(bytes.count / 2)])
        let done = expectation(description: "decoded")
        nonisolated(unsafe) var result: [Float] = []
        Thread.detachNewThread {
            result = (try? MediaDecoder.audio(.stream(input))) ?? []
            done.fulfill()
        }
        usleep(300_000)
        input.append(bytes[(bytes.count / 2)...])
        input.finish()
        wait(for: [done], timeout: 30)
        XCTAssertEqual(result, try MediaDecoder.audio(.file(try TestMedia.audio("mp3"))))
    }
}
