import Foundation
import Stages
import Testing
import Wire
@testable import Gateway

/// Bodies read as they arrive: what the `BodyScanner` uploads (received here by a real ZeroMQ
/// ROUTER standing in for the coordinator), the request `ChatRequest` makes of the rest, and the
/// errors (with their statuses) for bad ones. The end-to-end behaviour over real HTTP, with the
/// real pipeline, is in PipelineTests/GatewayTests.swift.
struct ChatRequestTests {
    /// What one body became: the request (or the error) and the upload messages sent on the way.
    struct Scanned {
        var chat: Result<ChatRequest, GatewayError>
        var messages: [Message]

        /// The bytes uploaded for media input `i`, and whether its last chunk said LAST.
        func upload(_ i: Int) -> (bytes: Data, closed: Bool) {
            let chunks = messages.filter { $0.kind == .mediaChunk && $0.layer == Int32(i) }
            return (chunks.reduce(Data()) { $0 + ($1.payload ?? Data()) }, chunks.last?.flags.contains(.last) == true)
        }
    }

    /// Feeds `body` in `piece`-byte pieces (as HTTP delivers it) and reads the skeleton.
    func scan(_ body: Data, piece: Int = 7, roots: [String] = []) throws -> Scanned {
        let dir = NSTemporaryDirectory() + "unimoe-scan-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let coordinator = try Socket(.router)
        defer { coordinator.close() }
        try coordinator.bind("ipc://\(dir)/front")
        let client = try AskClient(endpoint: "ipc://\(dir)/front")
        var scanner = BodyScanner(uploads: client.begin(), fileRoots: roots, maxSkeleton: 1 << 20)
        var i = 0
        while i < body.count {
            let ok = body[i..<min(body.count, i + piece)].withUnsafeBytes { scanner.feed($0) }
            if !ok { break }
            i += piece
        }
        scanner.finish()
        let chat: Result<ChatRequest, GatewayError>
        if let f = scanner.failure { chat = .failure(f) } else {
            do { chat = .success(try ChatRequest(body: Data(scanner.skeleton), fileRoots: roots, streamed: scanner.streamed)) } catch { chat = .failure(error) }
        }
        var messages: [Message] = []
        while let frames = try coordinator.receive(timeout: 0.1) { messages.append(try Message(frames: Array(frames.dropFirst()))) }
        return Scanned(chat: chat, messages: messages)
    }

    func scan(_ json: String, roots: [String] = []) throws -> Scanned { try scan(Data(json.utf8), roots: roots) }

    func status(_ json: String, roots: [String] = []) throws -> Int? {
        if case .failure(let e) = try scan(json, roots: roots).chat { return e.status }
        return nil
    }

    @Test func textAndOptionsMapToTheAskRequest() throws {
        let r = try scan(#"{"model":"x","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":7,"temperature":0.5,"top_p":0.9,"seed":3,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true}}"#).chat.get()
        #expect(r.ask == AskRequest(question: "Be brief.\nHi", maxNewTokens: 7, temperature: 0.5, topP: 0.9, seed: 3))
        #expect(r.stream && r.includeUsage && r.stop == ["\n"])
    }

    @Test func mediaAreUploadedAsTheyArriveInDocumentOrder() throws {
        let wav = Data((0..<100_000).map { UInt8($0 % 253) })  // over one 64 KiB chunk
        let png = Data("png bytes".utf8)
        let file = NSTemporaryDirectory() + "unimoe-scan-clip-\(UInt32.random(in: 0...UInt32.max)).mp4"
        try Data("mp4 bytes".utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        // JSONSerialization writes "\/" for "/": the scanner reads the escaped form too.
        let body = try JSONSerialization.data(withJSONObject: ["messages": [["role": "user", "content": [
            ["type": "video_url", "video_url": ["url": "file://" + file]],
            ["type": "input_audio", "input_audio": ["data": wav.base64EncodedString(options: .lineLength76Characters), "format": "wav"]],
            ["type": "image_url", "image_url": "data:image/png;base64," + png.base64EncodedString()],
            ["type": "text", "text": "What?"]]]]])
        let s = try scan(body, piece: 1000)
        let r = try s.chat.get()
        #expect(r.ask.media == [MediaItem(modality: .video, name: "messages[0].content[0] (video_url)"),
                                MediaItem(modality: .audio, name: "messages[0].content[1] (input_audio)"),
                                MediaItem(modality: .image, name: "messages[0].content[2] (image_url)")])
        #expect(r.ask.question == "What?")
        #expect(s.messages.filter { $0.kind == .mediaOpen }.map(\.layer) == [0, 1, 2])
        #expect(s.upload(0).bytes == Data("mp4 bytes".utf8) && s.upload(0).closed)
        #expect(s.upload(1).bytes == wav && s.upload(1).closed)
        #expect(s.messages.filter { $0.kind == .mediaChunk && $0.layer == 1 }.count == 2)
        #expect(s.upload(2).bytes == png && s.upload(2).closed)
    }

    @Test func badBodiesGetTheirStatus() throws {
        #expect(try status(#"{"messages": [{"role": "user", "content": "hi"}"#) == 400)  // truncated
        #expect(try status(String(repeating: "[", count: 100_000)) == 400)             // nesting bomb
        #expect(try status(#"{"messages": []}"#) == 400)
        #expect(try status(#"{"messages": [{"role": "robot", "content": "hi"}]}"#) == 400)
        #expect(try status(#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}"#) == 400)
        #expect(try status(#"{"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "QUJD="}}]}]}"#) == 400)
        #expect(try status(#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}"#) == 400)
        #expect(try status(#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]}"#) == 400)
        #expect(try status(#"{"messages": [{"role": "user", "content": [{"type": "hologram"}]}]}"#) == 400)
        #expect(try status(#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}"#) == 400)
        #expect(try status(#"{"messages": [{"role": "user", "content": "hi"}], "seed": -1}"#) == 400)
        #expect(try status(#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/hostname"}}]}]}"#, roots: ["/tmp"]) == 400)
        #expect(try status(#"{"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}]}]}"#) == 400)
    }

    @Test func aBadPartStopsTheScanAndClosesItsUpload() throws {
        let s = try scan(#"{"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "QUJDRA==QUJD"}}, {"type": "text", "text": "x"}]}]}"#)
        guard case .failure(let e) = s.chat else { Issue.record("accepted"); return }
        #expect(e == .invalidPart(part: "messages[0].content[0]", reason: "invalid base64 data"))
        #expect(s.upload(0).closed)
    }

    @Test func base64DecodesAsFoundationDoes() {
        for n in 0..<40 {
            let data = Data((0..<n).map { UInt8(($0 * 37) & 0xFF) })
            var d = Base64Decoder()
            var out = Data()
            #expect(data.base64EncodedString().utf8.allSatisfy { d.add($0, into: &out) })
            #expect(n == 0 ? d.finish() == nil : d.finish() != nil && out == data, "\(n) bytes")
        }
        var d = Base64Decoder()
        var out = Data()
        #expect(!"QQ=Q".utf8.allSatisfy { d.add($0, into: &out) })
    }

    @Test func stopStringsAreCutAndTheirPrefixesHeldBack() {
        var m = StopMatcher(["END"])
        #expect(m.feed("abc E") == "abc ")
        #expect(m.feed("N") == "")
        #expect(m.feed("Dxyz") == "")
        #expect(m.stopped)
        var n = StopMatcher(["END"])
        #expect(n.feed("abc E") == "abc ")
        #expect(n.feed("x") == "Ex")
        #expect(n.finish() == "")
        #expect(!n.stopped)
    }
}
