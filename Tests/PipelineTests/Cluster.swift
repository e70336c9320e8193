import Foundation
import Testing
import Stages
import TestSupport
import Wire

/// The repository root (for models/ and samples/), found from this file's location.
let repoRoot: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
}()
let modelDir = repoRoot + "/models/tiny-unimoe"
func sample(_ name: String) -> String { repoRoot + "/samples/" + name }

/// A pipeline of real role processes on ipc:// endpoints in a fresh temporary directory, each
/// process logging to its own file there. `stop()` sends SIGTERM to all and reaps them.
final class Cluster {
    let dir: String
    let pipeline: String
    var processes: [String: Process] = [:]

    init(heartbeat: Double = 0.5, expertGroups: [[Int]] = [[0, 1], [2, 3]], gateway: GatewaySettings? = nil, apiKeys: [String]? = nil,
         model: String = modelDir, maxRequests: Int = 256) throws {
        dir = NSTemporaryDirectory() + "unimoe-pl-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        pipeline = dir + "/pipeline.json"
        var cfg = PipelineConfig(model: model, frontend: "ipc://\(dir)/front", backend: "ipc://\(dir)/back",
                                 experts: "ipc://\(dir)/experts", heartbeat: HeartbeatPolicy(interval: heartbeat, liveness: 6),
                                 requestTimeout: 60, expertTimeout: 30, expertGroups: expertGroups)
        cfg.gateway = gateway
        cfg.maxRequests = maxRequests
        cfg.apiKeys = apiKeys
        let enc = JSONEncoder()
        enc.outputFormatting = .prettyPrinted
        try enc.encode(cfg).write(to: URL(fileURLWithPath: pipeline))
    }

    var frontend: String { "ipc://\(dir)/front" }

    /// Starts `role` (`unimoe-<role>`) with `args`, under `name` (also its log file name), reading
    /// this cluster's pipeline file or `other`.
    func start(_ role: String, _ args: [String] = [], name: String, pipeline other: String? = nil) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Binaries.path("unimoe-\(role)"))
        p.arguments = ["--pipeline", other ?? pipeline, "--name", name] + args
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = "1"
        p.environment = env
        let log = dir + "/\(name).log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        p.standardError = FileHandle(forWritingAtPath: log)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        processes[name] = p
    }

    /// Starts worker `role` with the test as the dispatcher it connects to (a ROUTER bound where
    /// the role looks: the experts endpoint for an expert, the backend for the rest); returns the
    /// socket and the role's routing id once it announced READY, nil (and a recorded issue) if not.
    /// `args` extra options (default: every modality for encode/connect, experts 0 and 1).
    func startPlayingDispatcher(_ role: String, args: [String]? = nil, timeout: Double = 30) throws -> (socket: Socket, peer: [UInt8])? {
        let socket = try Socket(.router)
        try socket.bind(role == "expert" ? "ipc://\(dir)/experts" : "ipc://\(dir)/back")
        let defaults: [String] = switch role {
        case "encode", "connect": ["--modality", "image,video,audio"]
        case "expert": ["--experts", "0,1"]
        default: []
        }
        try start(role, args ?? defaults, name: role)
        guard let (id, _) = try awaitKind(socket, [.ready], timeout: timeout) else {
            Issue.record("\(role) never announced READY")
            return nil
        }
        return (socket, id)
    }

    /// Every role of the default deployment: one worker per stage, two expert groups.
    func startAll(expertGroups: [Int] = [0, 1]) throws {
        try start("coordinator", name: "coordinator")
        try start("decode", name: "decode")
        try start("encode", ["--modality", "image,video,audio"], name: "encode")
        try start("connect", ["--modality", "image,video,audio"], name: "connect")
        try start("router", name: "router")
        for g in expertGroups { try start("expert", ["--group", "\(g)"], name: "expert\(g)") }
    }

    /// Starts `unimoe-gateway` (listening on the port in the pipeline file, 0 for any) and returns
    /// its base URL once it listens.
    func startGateway(name: String = "gateway", pipeline other: String? = nil) throws -> String {
        try start("gateway", name: name, pipeline: other)
        let deadline = Date(timeIntervalSinceNow: 20)
        while Date() < deadline {
            if let r = log(name).range(of: #"http://127\.0\.0\.1:[0-9]+"#, options: .regularExpression) { return String(log(name)[r]) }
            usleep(50_000)
        }
        throw ProcessRunError.launchFailed("unimoe-gateway", "no 'listening on' line in its log: \(log(name))")
    }

    /// Waits (≤ `timeout` s) until process `name`'s log contains `text`; false if it never does.
    @discardableResult
    func waitForLog(_ name: String, _ text: String, timeout: Double = 30) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while !log(name).contains(text) { if Date() > deadline { return false }; usleep(50_000) }
        return true
    }

    func log(_ name: String) -> String { (try? String(contentsOfFile: dir + "/\(name).log", encoding: .utf8)) ?? "" }

    /// kill -9 of process `name` (a crash), reaped.
    func crash(_ name: String) {
        guard let p = processes.removeValue(forKey: name) else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    func stop(_ name: String) {
        guard let p = processes.removeValue(forKey: name) else { return }
        p.terminate()
        p.waitUntilExit()
    }

    func stop() {
        for p in processes.values { p.terminate() }
        let deadline = Date(timeIntervalSinceNow: 5)
        for p in processes.values {
            while p.isRunning && Date() < deadline { usleep(20_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        }
        processes.removeAll()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func client(timeout: Double = 60) throws -> AskClient { try AskClient(endpoint: frontend, timeout: timeout) }
}

/// The three request shapes the acceptance criteria name, with their files.
let textOnly = (AskRequest(question: "What is a mixture of experts?", maxNewTokens: 10), [String]())
let imageText = (AskRequest(question: "What is in the picture?", media: [MediaItem(modality: .image, name: sample("picture.png"))], maxNewTokens: 10),
                 [sample("picture.png")])
let videoAudioText = (AskRequest(question: "What happens, and what do you hear?",
                                 media: [MediaItem(modality: .audio, name: sample("tone.wav")), MediaItem(modality: .video, name: sample("clip.mp4"))],
                                 maxNewTokens: 10),
                      [sample("tone.wav"), sample("clip.mp4")])

/// `unimoe run`'s answer (the in-process pipeline, as the CLI runs it).
func runInProcess(_ pipeline: LocalPipeline, _ r: (AskRequest, [String])) throws -> [Int] {
    try pipeline.ask(r.0, media: r.1.map { .file($0) }).ids
}
