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
        let args: [String] = switch role {
        case "encode", "connect": ["--modality", "image"]
        case "expert": ["--experts", "0"]
        default: []
        }
        guard let (fake, id) = try c.startPlayingDispatcher(role, args: args, timeout: 20) else { return }
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

    /// `unimoe ask` with nothing listening says so within ~2 s; with a coordinator that answers the
    /// probe but never finishes, `--timeout` bounds the whole request even while tokens stream.
    @Test func askNoticesAMissingCoordinatorAndTimeoutBoundsTheRequest() throws {
        let dir = NSTemporaryDirectory() + "unimoe-ask-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var t0 = monotonicSeconds()
        let none = try Binaries.unimoe(["ask", "--endpoint", "ipc://\(dir)/nobody", "--timeout", "60", "hello?"], timeout: 30)
        #expect(none.status == 1)
        #expect(none.stderr.contains("no coordinator answers at ipc://\(dir)/nobody within 2 s"), "\(none.stderr)")
        #expect(monotonicSeconds() - t0 < 5)

        // A coordinator that echoes heartbeats and streams a token every 0.2 s, forever.
        let stop = ResultBox(count: 1), ready = ResultBox(count: 1), endpoint = "ipc://\(dir)/slow"
        let server = Thread {
            guard let fake = try? Socket(.router), (try? fake.bind(endpoint)) != nil else { ready.set(0, .success([0])); return }
            ready.set(0, .success([1]))
            var client: [UInt8]? = nil, request: UInt64 = 0
            while stop.get(0) == nil {
                if let frames = try? fake.receive(timeout: 0.2), frames.count > 1, let m = try? Message(frames: Array(frames.dropFirst())) {
                    if m.kind == .heartbeat { try? fake.send(Message(.heartbeat, requestID: m.requestID), to: frames[0].bytes) }
                    if m.kind == .ask { client = frames[0].bytes; request = m.requestID }
                } else if let client {
                    try? fake.send(Message(.token, requestID: request, payload: Data(#"{"id":5,"text":"x"}"#.utf8)), to: client)
                }
            }
        }
        server.start()
        defer { stop.set(0, .success([])); Thread.sleep(forTimeInterval: 0.3) }
        while ready.get(0) == nil { usleep(10_000) }
        #expect((try? ready.get(0)?.get()) == [1], "the fake coordinator could not bind")
        t0 = monotonicSeconds()
        let slow = try Binaries.unimoe(["ask", "--endpoint", "ipc://\(dir)/slow", "--timeout", "1.5", "hello?"], timeout: 30)
        let took = monotonicSeconds() - t0
        #expect(slow.status == 1)
        #expect(slow.stderr.contains("within 1.5 s (the request's limit)"), "\(slow.stderr)")
        #expect(took > 1.4 && took < 4, "took \(took) s")
    }

    /// The supervisor does not restart what restarting cannot fix: a usage error ends it at once
    /// (64), a role that dies right after every start is given up after UNIMOE_RESTART_LIMIT tries.
    @Test func runRoleGivesUpOnRolesThatCannotStart() throws {
        let env = ["UNIMOE_BIN": Binaries.directory, "UNIMOE_RESTART_LIMIT": "2"]
        let usage = try runProcess(repoRoot + "/scripts/run-role", ["unimoe-router", "--no-such-option"], environment: env, timeout: 30)
        #expect(usage.status == 64, "\(usage.stderr)")
        #expect(!usage.stderr.contains("restarting"), "\(usage.stderr)")
        let t0 = monotonicSeconds()
        let broken = try runProcess(repoRoot + "/scripts/run-role", ["unimoe-router", "--pipeline", "/nonexistent/pipeline.json"],
                                    environment: env, timeout: 30)
        #expect(broken.status == 1, "\(broken.stderr)")
        #expect(broken.stderr.contains("restarting in 0.5 s"), "\(broken.stderr)")
        #expect(broken.stderr.contains("unimoe-router exited with status 1 2 times in a row within 2 s of starting; giving up"), "\(broken.stderr)")
        #expect(monotonicSeconds() - t0 < 10)
    }

    /// The router dies mid-answer (its KV caches with it): the coordinator prefills the sequence
    /// again on the router that takes over, from its prompt and the tokens so far, and the answer
    /// is the one `unimoe run` gives. (The random initial model: it never stops early.)
    @Test func routerFailoverMidAnswerKeepsTheIds() throws {
        let model = repoRoot + "/models/tiny-unimoe-init"
        let request = (AskRequest(question: "What is in the picture?", media: [MediaItem(modality: .image, name: sample("picture.png"))],
                                  maxNewTokens: 40), [sample("picture.png")])
        let want = try runInProcess(try LocalPipeline(modelDirectory: model), request)
        #expect(want.count == 40)
        let c = try Cluster(model: model)
        defer { c.stop() }
        try c.startAll()
        var streamed = 0
        let got = try c.client().ask(request.0, files: request.1) { _, _ in
            streamed += 1
            if streamed == 10 {
                c.crash("router")
                try? c.start("router", name: "router2")
            }
        }
        #expect(got.ids == want)
        #expect(try c.client().stats()["router_failovers"] == 1)
        #expect(c.log("coordinator").contains("prefilling"), "\(c.log("coordinator"))")
        // And it keeps serving on the new router.
        #expect(try c.client().ask(request.0, files: request.1).ids == want)
    }

    /// 200 concurrent asks against `max_requests` 4: each one is answered (the same ids as alone)
    /// or refused at once with the typed busy error; the coordinator's memory stays bounded and it
    /// serves afterwards.
    @Test func overloadIsRefusedAtOnceAndMemoryStaysBounded() throws {
        let c = try Cluster(maxRequests: 4)
        defer { c.stop() }
        try c.startAll()
        let want = try c.client().ask(imageText.0, files: imageText.1).ids
        let pid = try #require(c.processes["coordinator"]).processIdentifier
        let rssBefore = residentKiB(pid)
        let n = 200
        let results = ResultBox(count: n)
        let refusalMs = ResultBox(count: n)
        let frontend = c.frontend
        let threads = (0..<n).map { i in
            Thread {
                let t0 = monotonicSeconds()
                do {
                    results.set(i, .success(try AskClient(endpoint: frontend, timeout: 60).ask(imageText.0, files: imageText.1).ids))
                } catch {
                    if case StageError.busy = error { refusalMs.set(i, .success([Int((monotonicSeconds() - t0) * 1000)])) }
                    results.set(i, .failure(error))
                }
            }
        }
        for t in threads { t.stackSize = 1 << 20; t.start() }
        let t0 = monotonicSeconds()
        while (0..<n).contains(where: { results.get($0) == nil }) && monotonicSeconds() - t0 < 120 { usleep(50_000) }
        var answered = 0, busy = 0
        for i in 0..<n {
            switch results.get(i) {
            case .success(let ids)?: answered += 1; #expect(ids == want)
            case .failure(StageError.busy)?: busy += 1
            case .failure(let e)?: Issue.record("request \(i): \(e)")
            case nil: Issue.record("request \(i) has no result")
            }
        }
        #expect(answered + busy == n)
        #expect(answered >= 4 && busy > 0, "answered \(answered), busy \(busy)")
        let slowest = (0..<n).compactMap { (try? refusalMs.get($0)?.get())?.first }.max() ?? 0
        #expect(slowest < 5000, "a refusal took \(slowest) ms")
        let rssAfter = residentKiB(pid)
        #expect(rssAfter < rssBefore + 64 << 10, "coordinator RSS \(rssBefore) → \(rssAfter) KiB")
        print("overload: \(n) concurrent asks, max_requests 4: \(answered) answered, \(busy) refused busy; coordinator RSS \(rssBefore) → \(rssAfter) KiB")
        #expect(try c.client().stats()["refused_busy"] == busy)
        #expect(try c.client().ask(imageText.0, files: imageText.1).ids == want)
    }

    @Test func sigtermToForemanStopsEverything() throws {
        let c = try Cluster(gateway: GatewaySettings(listen: "127.0.0.1:0"))
        defer { c.stop() }
        guard let p = try c.startForeman() else { return }
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(try c.client(timeout: 60).ask(textOnly.0, files: []).ids.count > 0)
        let family = descendants(of: p.processIdentifier)
        #expect(family.count >= Cluster.foremanRoles.count, "foreman's children: \(family)")
        c.stopForeman(p)
    }

    /// kill -9 of each role under foreman (coordinator and router included): its supervisor (scripts/run-role) starts it again, foreman
    /// keeps running, and a request in flight when the worker died completes with the same ids. The random initial model answers
    /// its full length, so the trunk's roles are killed mid-answer (after the first streamed token), the decoder while it holds a
    /// half-sent upload, and encode and connect right after the request went out; the answer must not have come back before the kill.
    @Test func aKilledRoleIsRestartedAndItsRequestCompletes() throws {
        let c = try Cluster(gateway: GatewaySettings(listen: "127.0.0.1:0"), model: repoRoot + "/models/tiny-unimoe-init")
        defer { c.stop() }
        let log = c.dir + "/foreman.log"
        guard let p = try c.startForeman(log: log) else { return }
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let request = { var r = videoAudioText; r.0.maxNewTokens = 24; return r }()
        let want = try c.client(timeout: 60).ask(request.0, files: request.1).ids
        #expect(want.count == 24)
        for role in ["unimoe-expert", "unimoe-decode", "unimoe-encode", "unimoe-connect", "unimoe-router", "unimoe-coordinator"] {
            let replicas = rolePIDs(under: p.processIdentifier, role).count
            guard let victim = rolePIDs(under: p.processIdentifier, role).first else {
                Issue.record("no \(role) process under foreman"); continue
            }
            let answer = ResultBox(count: 1), firstToken = ResultBox(count: 1), halfSent = ResultBox(count: 1), killed = ResultBox(count: 1)
            let frontend = c.frontend, decodesBefore = try decodeJobsServed(c)
            let asker = Thread {
                answer.set(0, Result {
                    let client = try AskClient(endpoint: frontend, timeout: 60)
                    let onToken: (Int, String) -> Void = { id, _ in if firstToken.get(0) == nil { firstToken.set(0, .success([id])) } }
                    guard role == "unimoe-decode" else { return try client.ask(request.0, files: request.1, onToken: onToken).ids }
                    // The decoder dies holding a half-sent upload (its stream is open there).
                    let early = client.begin(), bytes = try Data(contentsOf: URL(fileURLWithPath: request.1[0]))
                    try early.open(request.0.media[0])
                    try early.send(bytes.prefix(bytes.count / 2), last: false)
                    halfSent.set(0, .success([]))
                    while killed.get(0) == nil { usleep(1_000) }
                    try early.send(bytes.dropFirst(bytes.count / 2), last: true)
                    return try client.ask(request.0, files: Array(request.1.dropFirst()), after: early, onToken: onToken).ids
                })
            }
            asker.start()
            let t0 = monotonicSeconds()
            switch role {
            case "unimoe-expert", "unimoe-router", "unimoe-coordinator":
                while firstToken.get(0) == nil && answer.get(0) == nil && monotonicSeconds() - t0 < 30 { usleep(1_000) }
            case "unimoe-decode":
                // Until the decoder has acknowledged opening the stream.
                while try answer.get(0) == nil && (halfSent.get(0) == nil || decodeJobsServed(c) == decodesBefore) && monotonicSeconds() - t0 < 30 {
                    usleep(2_000)
                }
            default:
                usleep(5_000)
            }
            let inFlight = answer.get(0) == nil
            kill(victim, SIGKILL)
            killed.set(0, .success([]))
            #expect(inFlight, "the answer came back before kill -9 of \(role)")
            while answer.get(0) == nil && monotonicSeconds() - t0 < 90 { usleep(20_000) }
            switch answer.get(0) {
            case .success(let ids)?: #expect(ids == want, "after kill -9 of \(role)")
            case .failure(let e)?: Issue.record("the request failed after kill -9 of \(role): \(e)")
            case nil: Issue.record("the request did not complete within 90 s after kill -9 of \(role)")
            }
            if role == "unimoe-decode" {
                // Killed while it held the upload's stream: the coordinator uploaded it again (and the
                // second input too when its upload began before the dispatcher saw the decoder gone).
                let stats = try c.client().stats()
                #expect((1...2).contains(stats["decode_failovers"] ?? 0), "\(stats.filter { $0.key.contains("decode") })")
            }
            #expect(p.isRunning, "foreman stopped after kill -9 of \(role)")
            // The answer can come back before the victim has finished dying (a retry that outran
            // its exit): wait for it to be gone, then for its replacement.
            let t1 = monotonicSeconds()
            while monotonicSeconds() - t1 < 10 {
                let pids = rolePIDs(under: p.processIdentifier, role)
                if !pids.contains(victim) && pids.count >= replicas { break }
                usleep(50_000)
            }
            #expect(!rolePIDs(under: p.processIdentifier, role).contains(victim))
            #expect(rolePIDs(under: p.processIdentifier, role).count == replicas, "\(role) was not restarted")
        }
        // Served afterwards too, and the supervisor said what happened.
        #expect(try c.client(timeout: 60).ask(request.0, files: request.1).ids == want)
        let said = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(said.contains("killed by signal 9"), "\(said.suffix(2000))")
        c.stopForeman(p)
    }
}

/// Jobs the coordinator's decode workers have answered so far (an upload's open included).
func decodeJobsServed(_ c: Cluster) throws -> Int {
    try c.client().stats().filter { $0.key.hasPrefix("coordinator/served/decode") }.values.reduce(0, +)
}

/// VmRSS of `pid` in KiB (0 when unreadable).
func residentKiB(_ pid: Int32) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
}

/// Chaos under the real Procfile: waves of 20 concurrent seeded requests (text, image, audio,
/// video; greedy and sampled) while a random process of every role is killed with -9 at random
/// moments, three times per role; every request completes with the ids `unimoe run` gives.
/// (The random initial model: answers run their full length, so the kills land mid-answer.)
@Suite(.serialized) struct ChaosTests {
    @Test func everyRequestCompletesWhileRolesAreKilled() throws {
        let model = repoRoot + "/models/tiny-unimoe-init"
        let shapes = [textOnly, imageText, videoAudioText,
                      (AskRequest(question: "What do you hear?", media: [MediaItem(modality: .audio, name: sample("speech.wav"))]), [sample("speech.wav")])]
        let requests: [(AskRequest, [String])] = (0..<20).map { i in
            var r = shapes[i % shapes.count]
            r.0.maxNewTokens = 24
            if i % 3 == 2 { r.0.temperature = 0.8; r.0.seed = UInt64(100 + i) }
            return r
        }
        let local = try LocalPipeline(modelDirectory: model)
        let want = try requests.map { try runInProcess(local, $0) }
        let c = try Cluster(gateway: GatewaySettings(listen: "127.0.0.1:0"), model: model)
        defer { c.stop() }
        let log = c.dir + "/foreman.log"
        guard let p = try c.startForeman(log: log) else { return }
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(try c.client(timeout: 60).ask(textOnly.0, files: []).ids.count > 0)

        func wave() -> (seconds: Double, results: ResultBox) {
            let results = ResultBox(count: requests.count), frontend = c.frontend
            let t0 = monotonicSeconds()
            let threads = requests.enumerated().map { (i, r) in
                Thread { results.set(i, Result { try AskClient(endpoint: frontend, timeout: 120).ask(r.0, files: r.1).ids }) }
            }
            for t in threads { t.start() }
            return (t0, results)
        }
        func finished(_ r: ResultBox) -> Bool { (0..<requests.count).allSatisfy { r.get($0) != nil } }
        func settle(_ r: ResultBox, _ t0: Double) -> Double {
            while !finished(r) && monotonicSeconds() - t0 < 240 { usleep(20_000) }
            return monotonicSeconds() - t0
        }
        func check(_ r: ResultBox, _ what: String) -> Int {
            var lost = 0
            for i in 0..<requests.count {
                switch r.get(i) {
                case .success(let ids)?: #expect(ids == want[i], "\(what): request \(i)")
                case .failure(let e)?: lost += 1; Issue.record("\(what): request \(i) failed: \(e)")
                case nil: lost += 1; Issue.record("\(what): request \(i) unanswered after 240 s")
                }
            }
            return lost
        }
        // Undisturbed, for the latency the kills add.
        let (c0, calm) = wave()
        let calmSeconds = settle(calm, c0)
        _ = check(calm, "calm")

        let roles = ["unimoe-coordinator", "unimoe-router", "unimoe-expert", "unimoe-decode", "unimoe-encode", "unimoe-connect"]
        var rng = SplitMix(seed: 20261203)
        var kills = 0, lost = 0, chaosSeconds = 0.0, waves = 0
        var pending = roles.flatMap { [$0, $0, $0] }
        while !pending.isEmpty && waves < 6 {
            waves += 1
            let (t0, results) = wave()
            while !finished(results) && !pending.isEmpty {
                usleep(UInt32(50_000 + rng.next() % 250_000))
                let role = pending.remove(at: Int(rng.next() % UInt64(pending.count)))
                let pids = rolePIDs(under: p.processIdentifier, role)
                guard !pids.isEmpty else { pending.append(role); continue }  // restarting: try later
                kill(pids[Int(rng.next() % UInt64(pids.count))], SIGKILL)
                kills += 1
            }
            chaosSeconds += settle(results, t0)
            lost += check(results, "wave \(waves)")
            #expect(p.isRunning, "foreman stopped in wave \(waves)")
        }
        #expect(pending.isEmpty, "kills left undone: \(pending)")
        #expect(lost == 0)
        print("chaos: \(waves) waves of \(requests.count) requests, \(kills) kill -9s over \(roles.count) roles, \(lost) lost; " +
              "a wave took \(String(format: "%.1f", calmSeconds)) s undisturbed, \(String(format: "%.1f", chaosSeconds / Double(waves))) s on average under kills")
        // And the pipeline keeps serving.
        #expect(try c.client(timeout: 60).ask(requests[1].0, files: requests[1].1).ids == want[1])
        c.stopForeman(p)
    }
}

extension Cluster {
    /// The pipeline as the Procfile starts it (each role under scripts/run-role), from foreman;
    /// nil (and a recorded issue) when foreman is missing.
    func startForeman(log: String? = nil) throws -> Process? {
        let foreman = ["/usr/bin/foreman", "/usr/local/bin/foreman"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let foreman else {
            Issue.record("foreman is not installed (scripts/setup installs ruby-foreman)")
            return nil
        }
        let procfile = Cluster.foremanRoles.sorted { $0.key < $1.key }.map { "\($0.key): scripts/run-role \($0.value) --pipeline \(pipeline)" }.joined(separator: "\n")
        try (procfile + "\n").write(toFile: dir + "/Procfile", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: foreman)
        p.arguments = ["start", "-f", dir + "/Procfile", "-d", repoRoot]
        var env = ProcessInfo.processInfo.environment
        env["UNIMOE_BIN"] = Binaries.directory
        p.environment = env
        if let log { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let out = log.flatMap { FileHandle(forWritingAtPath: $0) } ?? FileHandle.nullDevice
        p.standardOutput = out
        p.standardError = out
        try p.run()
        return p
    }

    static let foremanRoles = ["coordinator": "unimoe-coordinator", "decode": "unimoe-decode", "gateway": "unimoe-gateway",
                        "encode": "unimoe-encode --modality image,video,audio", "connect": "unimoe-connect --modality image,video,audio",
                        "router": "unimoe-router", "expert0": "unimoe-expert --group 0", "expert1": "unimoe-expert --group 1"]

    /// SIGTERM to foreman and wait (≤ 5 s) for it and every process it started to end.
    func stopForeman(_ p: Process) {
        let family = descendants(of: p.processIdentifier)
        let t0 = monotonicSeconds()
        kill(p.processIdentifier, SIGTERM)
        while monotonicSeconds() - t0 < 5 && (p.isRunning || family.contains(where: alive)) { usleep(50_000) }
        #expect(!p.isRunning, "foreman still running after 5 s")
        let orphans = family.filter(alive)
        #expect(orphans.isEmpty, "still alive after 5 s: \(orphans)")
        for o in orphans { kill(o, SIGKILL) }
    }
}

/// The live processes under `pid` running the executable named `name`.
func rolePIDs(under pid: Int32, _ name: String) -> [Int32] {
    descendants(of: pid).filter { child in
        guard alive(child), let cmd = FileManager.default.contents(atPath: "/proc/\(child)/cmdline"),
              let first = cmd.split(separator: 0).first else { return false }
        return String(decoding: first, as: UTF8.self).hasSuffix("/" + name)
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
