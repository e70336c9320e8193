import Foundation
import Stages
import Tensor
import TestSupport
import Testing
import Wire

/// Receives until a message of one of `kinds` arrives (skipping heartbeats), or nil after `timeout`.
func awaitKind(_ s: Socket, _ kinds: Set<MessageKind>, timeout: Double = 10) throws -> (id: [UInt8], message: Message)? {
    let deadline = monotonicSeconds() + timeout
    while monotonicSeconds() < deadline {
        guard let frames = try s.receive(timeout: deadline - monotonicSeconds()) else { return nil }
        let routed = s.kind == .router
        guard let m = try? Message(frames: Array(frames.dropFirst(routed ? 1 : 0))) else { continue }
        if kinds.contains(m.kind) { return (routed ? frames[0].bytes : [], m) }
    }
    return nil
}

@Suite(.serialized) struct RobustnessTests {
    @Test func undecodableFileIsNamedAndThePipelineGoesOn() throws {
        let c = try Cluster()
        defer { c.stop() }
        try c.startAll()
        let bad = c.dir + "/broken-upload.mp4"
        try Data("this is not a video".utf8).write(to: URL(fileURLWithPath: bad))
        let client = try c.client()
        do {
            _ = try client.ask(AskRequest(question: "what?", media: [MediaItem(modality: .video, name: bad)], maxNewTokens: 4), files: [bad])
            Issue.record("an undecodable file was accepted")
        } catch let StageError.stage(text) {
            #expect(text.contains(bad), "\(text)")
        }
        let ok = try client.ask(imageText.0, files: imageText.1)
        #expect(ok.ids.count == imageText.0.maxNewTokens || ok.ids.count > 0)
    }

    @Test(arguments: ["decode", "encode", "connect", "router", "expert"])
    func workerRoleRejectsMalformedMessagesAndStaysUp(role: String) throws {
        let c = try Cluster()
        defer { c.stop() }
        // The test plays the dispatcher this role connects to.
        let fake = try Socket(.router)
        try fake.bind(role == "expert" ? "ipc://\(c.dir)/experts" : "ipc://\(c.dir)/back")
        let args: [String] = switch role {
        case "encode", "connect": ["--modality", "image"]
        case "expert": ["--experts", "0"]
        default: []
        }
        try c.start(role, args, name: role)
        guard let (id, _) = try awaitKind(fake, [.ready], timeout: 20) else { Issue.record("\(role) never announced READY"); return }
        try fake.send([.bytes(id), .bytes([0xde, 0xad, 0xbe, 0xef])])
        let r1 = try awaitKind(fake, [.error])
        #expect(r1?.message.payloadText.contains("bad magic") == true || r1?.message.payloadText.contains("header") == true, "\(String(describing: r1?.message.payloadText))")
        var lying = Message(.encode, requestID: 42, tensors: [Tensor1.make()]).frames()
        lying.removeLast()
        try fake.send([.bytes(id)] + lying)
        let r2 = try awaitKind(fake, [.error])
        #expect(r2?.message.requestID == 42)
        #expect(r2?.message.payloadText.contains("frames") == true)
        // A well-formed message the role cannot serve is answered with an error too…
        try fake.send(Message(role == "router" ? .expertForward : .trunkStep, requestID: 43), to: id)
        #expect(try awaitKind(fake, [.error])?.message.requestID == 43)
        // …and the role still serves: a stats query is answered.
        try fake.send(Message(.stats, requestID: 44), to: id)
        #expect(try awaitKind(fake, [.statsReply])?.message.requestID == 44)
        #expect(c.processes[role]?.isRunning == true)
        #expect(c.log(role).contains("rejected"))
    }

    @Test func coordinatorRejectsMalformedClientMessagesAndStaysUp() throws {
        let c = try Cluster()
        defer { c.stop() }
        try c.startAll()
        let raw = try Socket(.dealer)
        try raw.connect(c.frontend)
        try raw.send([.bytes([1, 2, 3])])
        #expect(try awaitKind(raw, [.error]) != nil)
        try raw.send(Message(.ask, requestID: 5, payload: Data("{not json".utf8)))
        #expect(try awaitKind(raw, [.error])?.message.requestID == 5)
        try raw.send(Message(.mediaChunk, requestID: 6, payload: Data([1])))
        #expect(try awaitKind(raw, [.error])?.message.requestID == 6)
        #expect(try c.client().ask(textOnly.0, files: []).ids.count > 0)
        #expect(c.log("coordinator").contains("rejected"))
    }

    @Test func sigtermToForemanStopsEverything() throws {
        let foreman = ["/usr/bin/foreman", "/usr/local/bin/foreman"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let foreman else {
            Issue.record("foreman is not installed (scripts/setup installs ruby-foreman)")
            return
        }
        let c = try Cluster(gateway: GatewaySettings(listen: "127.0.0.1:0"))
        defer { c.stop() }
        let roles = ["coordinator": "unimoe-coordinator", "decode": "unimoe-decode", "gateway": "unimoe-gateway", "encode": "unimoe-encode --modality image,video,audio",
                     "connect": "unimoe-connect --modality image,video,audio", "router": "unimoe-router",
                     "expert0": "unimoe-expert --group 0", "expert1": "unimoe-expert --group 1"]
        let procfile = roles.sorted { $0.key < $1.key }.map { "\($0.key): scripts/run-role \($0.value) --pipeline \(c.pipeline)" }.joined(separator: "\n")
        try (procfile + "\n").write(toFile: c.dir + "/Procfile", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: foreman)
        p.arguments = ["start", "-f", c.dir + "/Procfile", "-d", repoRoot]
        var env = ProcessInfo.processInfo.environment
        env["UNIMOE_BIN"] = Binaries.directory
        p.environment = env
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(try c.client(timeout: 60).ask(textOnly.0, files: []).ids.count > 0)
        let family = descendants(of: p.processIdentifier)
        #expect(family.count >= roles.count, "foreman's children: \(family)")
        let t0 = monotonicSeconds()
        kill(p.processIdentifier, SIGTERM)
        while monotonicSeconds() - t0 < 5 && (p.isRunning || family.contains(where: alive)) { usleep(50_000) }
        #expect(!p.isRunning, "foreman still running after 5 s")
        let orphans = family.filter(alive)
        #expect(orphans.isEmpty, "still alive after 5 s: \(orphans)")
        for o in orphans { kill(o, SIGKILL) }
    }
}

/// A tiny f32 tensor for malformed-message tests.
enum Tensor1 {
    static func make() -> Tensor { (try? Tensor(shape: [2], values: [1, 2])) ?? Tensor(zeros: [2]) }
}

/// Every live descendant of `pid`, from /proc.
func descendants(of pid: Int32) -> [Int32] {
    var parent: [Int32: Int32] = [:]
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let p = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 2, let pp = Int32(fields[1]) { parent[p] = pp }
    }
    var out: [Int32] = []
    var frontier = [pid]
    while let x = frontier.popLast() {
        for (child, pp) in parent where pp == x { out.append(child); frontier.append(child) }
    }
    return out
}

/// True while `pid` exists and is not a zombie.
func alive(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
    return stat[stat.index(after: close)...].split(separator: " ").first != "Z"
}
