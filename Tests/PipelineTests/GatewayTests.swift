import Foundation
import Stages
import TestSupport
import Testing
import Wire

/// `unimoe-gateway` in front of a real pipeline, driven by real HTTP clients over loopback: curl,
/// python sockets for the hostile cases, and the `openai` package when scripts/test could install it.
@Suite(.serialized) struct GatewayTests {
    static let key = "sk-test-\(UInt32.random(in: 0...UInt32.max))"
    static let settings = GatewaySettings(listen: "127.0.0.1:0", maxBody: 16 << 20, idleTimeout: 2, maxRequests: 64,
                                          fileRoots: [repoRoot + "/samples"])

    /// A pipeline with a gateway in front, for one test.
    struct Pipeline {
        let cluster: Cluster
        let url: String
        /// `unimoe run`'s ids for the three request shapes.
        let want: [[Int]]
    }

    /// `unimoe run`'s answers (in-process), computed once: the suite is serialized.
    nonisolated(unsafe) static var wanted: [[Int]]?

    /// `model`: the random initial model for tests that need an answer that does not end (the
    /// trained default says one word and stops); `want` is then meaningless.
    static func withPipeline(heartbeat: Double = 0.5, model: String = modelDir, _ body: (Pipeline) throws -> Void) throws {
        if wanted == nil {
            let local = try LocalPipeline(modelDirectory: modelDir)
            wanted = try [textOnly, imageText, videoAudioText].map { try runInProcess(local, $0) }
        }
        let c = try Cluster(heartbeat: heartbeat, gateway: settings, apiKeys: [key], model: model)
        defer { c.stop() }
        try c.startAll()
        try body(Pipeline(cluster: c, url: try c.startGateway(), want: wanted!))
    }

    // MARK: - clients

    /// curl with the API key; returns (HTTP status, body).
    static func curl(_ url: String, _ args: [String] = [], body: Data? = nil, key: String? = GatewayTests.key,
                     contentType: String = "application/json", timeout: Double = 60) throws -> (status: Int, body: String) {
        var a = ["-s", "-N", "-o", "-", "-w", "\n%{http_code}", url]
        if let key { a += ["-H", "Authorization: Bearer \(key)"] }
        if body != nil { a += ["-H", "Content-Type: \(contentType)", "--data-binary", "@-"] }
        let r = try runProcess("/usr/bin/curl", a + args, stdin: body, timeout: timeout)
        var lines = r.stdout.components(separatedBy: "\n")
        let status = Int(lines.removeLast()) ?? -1
        return (status, lines.joined(separator: "\n"))
    }

    static func chat(_ parts: [[String: Any]], maxTokens: Int = 10, stream: Bool = false) -> Data {
        let body: [String: Any] = ["model": "tiny-unimoe", "messages": [["role": "user", "content": parts]], "max_tokens": maxTokens,
                                   "stream": stream, "stream_options": ["include_usage": true]]
        return try! JSONSerialization.data(withJSONObject: body)
    }

    static func dataURL(_ file: String, _ type: String) -> String {
        "data:\(type);base64," + FileManager.default.contents(atPath: file)!.base64EncodedString()
    }

    /// The three request shapes of the pipeline tests as OpenAI parts: a text, an image as a data:
    /// URL, audio as input_audio and the video as a file:// URL.
    nonisolated(unsafe) static let shapes: [[[String: Any]]] = [
        [["type": "text", "text": textOnly.0.question]],
        [["type": "image_url", "image_url": ["url": dataURL(sample("picture.png"), "image/png")]], ["type": "text", "text": imageText.0.question]],
        [["type": "text", "text": videoAudioText.0.question],
         ["type": "video_url", "video_url": ["url": "file://" + sample("clip.mp4")]],
         ["type": "input_audio", "input_audio": ["data": FileManager.default.contents(atPath: sample("tone.wav"))!.base64EncodedString(), "format": "wav"]]],
    ]

    static func object(_ s: String) -> [String: Any]? { try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any] }

    /// The `data:` events of an SSE body, and whether it ended with `[DONE]`.
    static func events(_ body: String) -> (events: [[String: Any]], done: Bool) {
        let datas = body.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
        return (datas.compactMap(object), datas.last == "[DONE]")
    }

    static func streamedIDs(_ events: [[String: Any]]) -> [Int] {
        events.flatMap { (($0["choices"] as? [[String: Any]])?.first?["token_ids"] as? [Int]) ?? [] }
    }

    // MARK: - tests

    @Test func answersEqualUnimoeRunStreamingAndNot() throws {
        try Self.withPipeline { p in
            for (i, parts) in Self.shapes.enumerated() {
                let r = try Self.curl(p.url + "/v1/chat/completions", body: Self.chat(parts))
                #expect(r.status == 200, "\(r.body)")
                let o = Self.object(r.body)
                let choice = (o?["choices"] as? [[String: Any]])?.first
                #expect(choice?["token_ids"] as? [Int] == p.want[i], "shape \(i): \(r.body.prefix(300))")
                #expect((choice?["message"] as? [String: Any])?["role"] as? String == "assistant")
                #expect(choice?["finish_reason"] as? String == (p.want[i].count == 10 ? "length" : "stop"))
                let usage = o?["usage"] as? [String: Int]
                #expect(usage?["completion_tokens"] == p.want[i].count)
                #expect((usage?["prompt_tokens"] ?? 0) > 0)

                let s = try Self.curl(p.url + "/v1/chat/completions", body: Self.chat(parts, stream: true))
                #expect(s.status == 200)
                let (events, done) = Self.events(s.body)
                #expect(done, "\(s.body.suffix(300))")
                #expect(Self.streamedIDs(events) == p.want[i], "shape \(i) streamed")
                #expect((events.last?["usage"] as? [String: Int])?["completion_tokens"] == p.want[i].count)
            }
            let models = try Self.curl(p.url + "/v1/models")
            #expect(models.status == 200 && models.body.contains("\"tiny-unimoe\""))
            let health = try Self.curl(p.url + "/health", key: nil)
            #expect(health.status == 200, "\(health.body)")
        }
    }

    @Test func theOpenAIPythonPackageGetsTheSameIDs() throws {
        guard let python = ProcessInfo.processInfo.environment["UNIMOE_OPENAI_PYTHON"], !python.isEmpty else {
            print("skipped: UNIMOE_OPENAI_PYTHON is not set (scripts/test sets it when the openai package installs)")
            return
        }
        try Self.withPipeline { p in
            let script = """
                import json, sys, openai
                client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
                out = []
                for parts in json.loads(sys.stdin.read()):
                    r = client.chat.completions.create(model="tiny-unimoe", messages=[{"role": "user", "content": parts}], max_tokens=10)
                    ids = r.choices[0].model_extra["token_ids"]
                    streamed = []
                    for chunk in client.chat.completions.create(model="tiny-unimoe", messages=[{"role": "user", "content": parts}], max_tokens=10, stream=True):
                        if chunk.choices and (chunk.choices[0].model_extra or {}).get("token_ids"):
                            streamed += chunk.choices[0].model_extra["token_ids"]
                    out.append({"ids": ids, "streamed": streamed, "text": r.choices[0].message.content})
                try:
                    openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="wrong").models.list()
                    out.append("no error")
                except openai.AuthenticationError:
                    out.append("401")
                print(json.dumps(out))
                """
            let input = try JSONSerialization.data(withJSONObject: Self.shapes)
            let r = try runProcess(python, ["-c", script, p.url, Self.key], stdin: input, timeout: 120)
            #expect(r.status == 0, "\(r.stderr)")
            let out = try JSONSerialization.jsonObject(with: r.stdoutData) as? [Any]
            for i in 0..<3 {
                let o = out?[i] as? [String: Any]
                #expect(o?["ids"] as? [Int] == p.want[i], "openai shape \(i)")
                #expect(o?["streamed"] as? [Int] == p.want[i], "openai streamed shape \(i)")
            }
            #expect(out?.last as? String == "401")
        }
    }

    @Test func hostileRequestsGetTheirStatusAndTheGatewayKeepsServing() throws {
        try Self.withPipeline { p in
            let chat = p.url + "/v1/chat/completions"
            func expectError(_ r: (status: Int, body: String), _ status: Int, _ code: String, _ what: String) {
                #expect(r.status == status, "\(what): \(r.body.prefix(300))")
                let e = Self.object(r.body)?["error"] as? [String: Any]
                #expect(e?["code"] as? String == code, "\(what): \(r.body.prefix(300))")
                #expect((e?["message"] as? String)?.isEmpty == false && e?["type"] != nil, "\(what)")
            }
            expectError(try Self.curl(chat, body: Data(#"{"messages": [{"role": "user", "content": "hi"#.utf8)), 400, "invalid_json", "truncated JSON")
            expectError(try Self.curl(chat, body: Data(repeating: UInt8(ascii: "["), count: 10 << 20)), 400, "invalid_json", "10 MB of nested arrays")
            expectError(try Self.curl(chat, body: Self.chat(Self.shapes[0]), contentType: "text/plain"), 415, "unsupported_content_type", "content type")
            let badB64: [[String: Any]] = [["type": "image_url", "image_url": ["url": "data:image/png;base64,not*base64!"]]]
            expectError(try Self.curl(chat, body: Self.chat(badB64)), 400, "invalid_content_part", "bad base64")
            let junk: [[String: Any]] = [["type": "text", "text": "?"], ["type": "input_audio", "input_audio": ["data": Data((0..<4000).map { UInt8($0 % 251) }).base64EncodedString(), "format": "mp3"]]]
            let undecodable = try Self.curl(chat, body: Self.chat(junk))
            expectError(undecodable, 415, "undecodable_media", "undecodable audio")
            #expect(undecodable.body.contains("messages[0].content[1]"), "names the part: \(undecodable.body)")
            let outside: [[String: Any]] = [["type": "image_url", "image_url": ["url": "file:///etc/passwd"]]]
            expectError(try Self.curl(chat, body: Self.chat(outside)), 400, "invalid_content_part", "file outside file_roots")
            expectError(try Self.curl(chat, ["-H", "Content-Length: 99999999999"], body: Data("{}".utf8)), 413, "request_too_large", "declared length")
            expectError(try Self.curl(chat, ["-H", "Transfer-Encoding: chunked"], body: Data(count: 20 << 20)), 413, "request_too_large", "chunked body")
            expectError(try Self.curl(chat, body: Self.chat(Self.shapes[0]), key: nil), 401, "invalid_api_key", "no key")
            expectError(try Self.curl(chat, body: Self.chat(Self.shapes[0]), key: "sk-wrong"), 401, "invalid_api_key", "wrong key")
            expectError(try Self.curl(p.url + "/v2/nothing"), 404, "not_found", "unknown path")

            // Slow-loris: headers that never end are cut off after the idle timeout (2 s here), and
            // other clients are served meanwhile.
            let port = p.url.split(separator: ":").last!
            let loris = """
                import socket, time
                s = socket.create_connection(("127.0.0.1", \(port)))
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\n")
                t = time.time()
                s.settimeout(20)
                try:
                    data = s.recv(1000)
                except OSError:
                    data = b""
                print("closed after %.1f s" % (time.time() - t), data[:40])
                """
            let slow = Thread.detachNewThreadResult { try? runProcess("/usr/bin/env", ["python3", "-c", loris], timeout: 30) }
            Thread.sleep(forTimeInterval: 0.3)
            let during = try Self.curl(chat, body: Self.chat(Self.shapes[0]))
            #expect(during.status == 200)
            let lorisOut = slow.wait()??.stdout ?? ""
            let seconds = Double(lorisOut.split(separator: " ").dropFirst(2).first ?? "") ?? 99
            #expect(seconds < 10, "slow-loris connection: \(lorisOut)")

            let after = try Self.curl(chat, body: Self.chat(Self.shapes[0]))
            #expect(after.status == 200)
            #expect((Self.object(after.body)?["choices"] as? [[String: Any]])?.first?["token_ids"] as? [Int] == p.want[0])
            #expect(p.cluster.processes["gateway"]?.isRunning == true)
        }
    }

    @Test func aLargeBodyIsDecodedWhileItArrives() throws {
        // 30 s of 16 kHz 16-bit audio (~1.3 MB of base64), sent in two halves with a pause between.
        let samples = (0..<480_000).map { Int16(8000 * sin(Double($0) * 0.05) + 2000 * sin(Double($0) * 0.31)) }
        var wav = Data("RIFF".utf8)
        func le<T: FixedWidthInteger>(_ v: T) -> Data { withUnsafeBytes(of: v.littleEndian) { Data($0) } }
        wav += le(UInt32(36 + samples.count * 2)) + Data("WAVEfmt ".utf8) + le(UInt32(16)) + le(UInt16(1)) + le(UInt16(1))
        wav += le(UInt32(16000)) + le(UInt32(32000)) + le(UInt16(2)) + le(UInt16(16)) + Data("data".utf8) + le(UInt32(samples.count * 2))
        for s in samples { wav += le(s) }
        let file = NSTemporaryDirectory() + "unimoe-gw-long-\(UInt32.random(in: 0...UInt32.max)).wav"
        try wav.write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let request = AskRequest(question: "What do you hear?", media: [MediaItem(modality: .audio, name: file)], maxNewTokens: 8)
        let want = try runInProcess(LocalPipeline(modelDirectory: modelDir), (request, [file]))
        try Self.withPipeline { p in
            let body = try JSONSerialization.data(withJSONObject: ["max_tokens": 8, "messages": [["role": "user", "content": [
                ["type": "input_audio", "input_audio": ["data": wav.base64EncodedString(), "format": "wav"]],
                ["type": "text", "text": "What do you hear?"]]]]] as [String: Any])
            let bodyFile = file + ".json"
            try body.write(to: URL(fileURLWithPath: bodyFile))
            defer { try? FileManager.default.removeItem(atPath: bodyFile) }
            let client = """
                import socket, sys
                body = open(sys.argv[2], "rb").read()
                s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer %s\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % (sys.argv[3].encode(), len(body)))
                half = len(body) // 2
                s.sendall(body[:half])
                print("half", flush=True)
                sys.stdin.readline()
                s.sendall(body[half:])
                data = b""
                while True:
                    more = s.recv(65536)
                    if not more: break
                    data += more
                    if b"\\r\\n\\r\\n" in data and data.rstrip().endswith(b"}"): break
                print(data.decode(errors="replace"))
                """
            let py = Process()
            py.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            py.arguments = ["python3", "-c", client, String(p.url.split(separator: ":").last!), bodyFile, Self.key]
            let input = Pipe(), output = Pipe()
            py.standardInput = input
            py.standardOutput = output
            try py.run()
            defer { if py.isRunning { py.terminate() } }
            #expect(String(decoding: output.fileHandleForReading.readData(ofLength: 5), as: UTF8.self) == "half\n")
            // Half the body is in: the decode worker already took the upload's first chunks.
            let ask = try p.cluster.client()
            let deadline = Date(timeIntervalSinceNow: 10)
            var served = 0
            while served == 0 && Date() < deadline {
                served = try ask.stats()["coordinator/served/decode", default: 0]
                if served == 0 { Thread.sleep(forTimeInterval: 0.05) }
            }
            #expect(served > 0, "nothing reached the decode stage while the body was arriving")
            input.fileHandleForWriting.write(Data("go\n".utf8))
            let reply = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            py.waitUntilExit()
            #expect(reply.hasPrefix("HTTP/1.1 200"), "\(reply.prefix(400))")
            let json = reply.components(separatedBy: "\r\n\r\n").dropFirst().joined()
            let ids = (Self.object(json)?["choices"] as? [[String: Any]])?.first?["token_ids"] as? [Int]
            #expect(ids == want, "\(json.prefix(400))")

            // The same body cut off at half by a client that hangs up: its uploads are cancelled.
            let quitter = try runProcess("/usr/bin/env", ["python3", "-c", client.replacingOccurrences(of: "sys.stdin.readline()", with: "s.close(); sys.exit(0)"),
                                                         String(p.url.split(separator: ":").last!), bodyFile, Self.key], timeout: 30)
            #expect(quitter.status == 0, "\(quitter.stderr)")
            var stats: [String: Int] = [:]
            let until = Date(timeIntervalSinceNow: 10)
            repeat {
                stats = try ask.stats()
                Thread.sleep(forTimeInterval: 0.05)
            } while stats["cancelled", default: 0] == 0 && Date() < until
            #expect(stats["cancelled"] == 1 && stats["live_requests"] == 0, "\(stats)")
        }
    }

    @Test func fiftyConcurrentStreamsComplete() throws {
        try Self.withPipeline { p in
            let body = Self.chat(Self.shapes[0], maxTokens: 6, stream: true)
            let url = p.url + "/v1/chat/completions"
            let results = ResultBox(count: 50)
            DispatchQueue.concurrentPerform(iterations: 50) { i in
                do {
                    let r = try Self.curl(url, body: body, timeout: 120)
                    let (events, done) = Self.events(r.body)
                    results.set(i, r.status == 200 && done ? .success(Self.streamedIDs(events)) : .failure(StageError.stage("status \(r.status): \(r.body.suffix(200))")))
                } catch { results.set(i, .failure(error)) }
            }
            let want = Array(p.want[0].prefix(6))
            for i in 0..<50 {
                switch results.get(i) {
                case .success(let ids)?: #expect(ids == want, "client \(i)")
                case .failure(let e)?: Issue.record("client \(i): \(e)")
                case nil: Issue.record("client \(i) gave no result")
                }
            }
        }
    }

    @Test func aClientThatDisconnectsCancelsItsSequenceAndBusyIs429() throws {
        // Long heartbeats: the expert workers are paused below and must not be declared dead.
        // The random initial model: its answer does not end before the experts are paused.
        try Self.withPipeline(heartbeat: 3, model: repoRoot + "/models/tiny-unimoe-init") { p in
            let experts = ["expert0", "expert1"].compactMap { p.cluster.processes[$0]?.processIdentifier }
            // A second gateway that lets one request generate at a time.
            var cfg = try JSONDecoder().decode(PipelineConfig.self, from: Data(contentsOf: URL(fileURLWithPath: p.cluster.pipeline)))
            cfg.gateway?.maxRequests = 1
            let single = p.cluster.dir + "/single.json"
            try JSONEncoder().encode(cfg).write(to: URL(fileURLWithPath: single))
            let url = try p.cluster.startGateway(name: "gateway1", pipeline: single)
            // A client that reads the first token, freezes the experts mid-sequence, sees a second
            // request refused as busy, and hangs
            // up: the gateway can learn of it only from its keep-alive writes.
            let client = """
                import os, signal, socket, sys
                def ask(port):
                    s = socket.create_connection(("127.0.0.1", port))
                    body = b'{"messages":[{"role":"user","content":"Talk."}],"max_tokens":65536,"stream":true}'
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer %s\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % (sys.argv[2].encode(), len(body)) + body)
                    return s
                s = ask(int(sys.argv[1]))
                data = b""
                while b"token_ids" not in data:
                    more = s.recv(4096)
                    if not more: sys.exit("the stream ended before a token")
                    data += more
                for pid in sys.argv[3:]: os.kill(int(pid), signal.SIGSTOP)
                busy = ask(int(sys.argv[1])).recv(4096)
                if not busy.startswith(b"HTTP/1.1 429"): sys.exit("a second request was not refused: %r" % busy[:200])
                s.close()
                """
            let port = String(url.split(separator: ":").last!)
            let r = try runProcess("/usr/bin/env", ["python3", "-c", client, port, Self.key] + experts.map(String.init), timeout: 60)
            #expect(r.status == 0, "\(r.stderr)")
            Thread.sleep(forTimeInterval: 3)
            for pid in experts { kill(pid, SIGCONT) }
            let ask = try p.cluster.client()
            var stats: [String: Int] = [:]
            let deadline = Date(timeIntervalSinceNow: 15)
            repeat {
                stats = try ask.stats()
                Thread.sleep(forTimeInterval: 0.1)
            } while (stats["cancelled", default: 0] < 1 || stats["router/live_sequences"] != 0) && Date() < deadline
            #expect(stats["cancelled"] == 1 && stats["answered", default: 0] == 0, "\(stats)\n\(p.cluster.log("gateway1"))")
            #expect(stats["live_requests"] == 0 && stats["router/live_sequences"] == 0, "\(stats)")
        }
    }
}

extension Thread {
    /// Runs `body` on a new thread; `wait()` returns its result.
    static func detachNewThreadResult<T>(_ body: @escaping @Sendable () -> T) -> ThreadResult<T> {
        let r = ThreadResult<T>()
        Thread.detachNewThread { r.set(body()) }
        return r
    }
}

/// A value produced on another thread. `@unchecked Sendable`: guarded by `condition`.
final class ThreadResult<T>: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: T?
    private var isSet = false
    func set(_ v: T) { condition.lock(); value = v; isSet = true; condition.broadcast(); condition.unlock() }
    func wait() -> T? {
        condition.lock()
        defer { condition.unlock() }
        while !isSet { condition.wait() }
        return value
    }
}
