import Foundation
import Stages
import Testing
@testable import Gateway

/// Request bodies read into pipeline requests, and the errors (with their statuses) for bad ones.
/// The end-to-end behaviour over real HTTP is in PipelineTests/GatewayTests.swift.
struct ChatRequestTests {
    func read(_ json: String, roots: [String] = []) throws(GatewayError) -> ChatRequest {
        try ChatRequest(body: Data(json.utf8), fileRoots: roots)
    }

    func status(_ json: String, roots: [String] = []) -> Int? {
        do { _ = try read(json, roots: roots); return nil } catch { return error.status }
    }

    @Test func textAndOptionsMapToTheAskRequest() throws {
        let r = try read(#"{"model":"x","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":7,"temperature":0.5,"top_p":0.9,"seed":3,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true}}"#)
        #expect(r.ask == AskRequest(question: "Be brief.\nHi", maxNewTokens: 7, temperature: 0.5, topP: 0.9, seed: 3))
        #expect(r.stream && r.includeUsage && r.stop == ["\n"])
    }

    @Test func mediaPartsAreOrderedAsTheTemplatePlacesThem() throws {
        let b64 = Data("abc".utf8).base64EncodedString()
        let r = try read(#"{"messages":[{"role":"user","content":[{"type":"video_url","video_url":{"url":"file:///etc/hostname"}},{"type":"input_audio","input_audio":{"data":"\#(b64)","format":"wav"}},{"type":"image_url","image_url":{"url":"data:image/png;base64,\#(b64)"}},{"type":"text","text":"What?"}]}]}"#)
        #expect(r.ask.media.map(\.modality) == [.image, .audio, .video])
        #expect(r.ask.media[0].name == "messages[0].content[2] (image_url)")
        #expect(r.uploads == [.bytes(Data("abc".utf8)), .bytes(Data("abc".utf8)), .file("/etc/hostname")])
    }

    @Test func badBodiesGetTheirStatus() {
        #expect(status(#"{"messages": [{"role": "user", "content": "hi"}"#) == 400)  // truncated
        #expect(status(String(repeating: "[", count: 100_000)) == 400)             // nesting bomb
        #expect(status(#"{"messages": []}"#) == 400)
        #expect(status(#"{"messages": [{"role": "robot", "content": "hi"}]}"#) == 400)
        #expect(status(#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}"#) == 400)
        #expect(status(#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}"#) == 400)
        #expect(status(#"{"messages": [{"role": "user", "content": [{"type": "hologram"}]}]}"#) == 400)
        #expect(status(#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}"#) == 400)
        #expect(status(#"{"messages": [{"role": "user", "content": "hi"}], "seed": -1}"#) == 400)
        #expect(status(#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/hostname"}}]}]}"#, roots: ["/tmp"]) == 400)
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
