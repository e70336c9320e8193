import Foundation
import Checkpoint
import Models
import Options
import Wire

/// The bodies of the role executables (`unimoe-decode`, `unimoe-encode`, `unimoe-connect`,
/// `unimoe-router`, `unimoe-expert`, `unimoe-coordinator`): parse options, read the pipeline file,
/// set the thread count, build the stage and serve until SIGTERM/SIGINT. Each main is one call.
public enum RoleMain {
    static let usages: [String: String] = [
        "decode": "unimoe-decode [--pipeline FILE] [--threads N] [--name NAME]",
        "encode": "unimoe-encode --modality image|video|audio[,…] [--pipeline FILE] [--threads N] [--name NAME]",
        "connect": "unimoe-connect --modality image|video|audio[,…] [--pipeline FILE] [--threads N] [--name NAME]",
        "router": "unimoe-router [--pipeline FILE] [--threads N] [--name NAME]",
        "expert": "unimoe-expert (--experts 0,1 | --group N) [--layers 0,2,…] [--train] [--pipeline FILE] [--threads N] [--name NAME]",
        "coordinator": "unimoe-coordinator [--pipeline FILE] [--threads N]",
    ]

    /// Runs `role` with the process arguments; returns the exit code (64 usage, 1 failure).
    public static func main(_ role: String, _ argv: [String]) -> Int32 {
        main(role, usage: usages[role] ?? role, argv) { try run(role, $0) }
    }

    /// The frame of every role's main (`unimoe-gateway`'s too): `--help`, then `body` with the
    /// arguments; a `UsageError` exits 64 with the usage line, any other error 1, both on stderr.
    public static func main(_ role: String, usage: String, _ argv: [String], _ body: ([String]) throws -> Void) -> Int32 {
        let args = Array(argv.dropFirst())
        if args.contains("--help") || args.contains("-h") { print("usage: " + usage); return 0 }
        do {
            try body(args)
            wireLog(role, "stopped")
            return 0
        } catch let e as UsageError {
            FileHandle.standardError.write(Data("unimoe-\(role): \(e.message)\nusage: \(usage)\n".utf8))
            return 64
        } catch {
            FileHandle.standardError.write(Data("unimoe-\(role): \(error)\n".utf8))
            return 1
        }
    }

    static func modalities(_ a: Arguments) throws -> [Modality] {
        let raw = try a.required("modality")
        return try raw.split(separator: ",").map {
            guard let m = Modality(rawValue: String($0).trimmingCharacters(in: .whitespaces)) else {
                throw UsageError("--modality takes image, video or audio (comma-separated), got '\($0)'")
            }
            return m
        }
    }

    static func run(_ role: String, _ args: [String]) throws {
        let a = try Arguments(args, valued: ["pipeline", "threads", "name", "modality", "experts", "layers", "group"], flags: ["train"])
        if let extra = a.positional.first { throw UsageError("unexpected argument '\(extra)'") }
        let config = try PipelineConfig.load(a.value("pipeline") ?? "pipelines/default.json")
        config.applyThreads(role: role, override: try a.int("threads", range: 1...256))
        let stop = StopFlag.onTerminationSignals()
        let pid = ProcessInfo.processInfo.processIdentifier
        let dir = config.model
        func serve(_ services: [String], name: String, endpoint: String, inline: Bool = false,
                   _ make: @escaping @Sendable () throws -> any WorkerHandler) throws {
            let worker = ServiceWorker(endpoint: endpoint, announcement: WorkerAnnouncement(role: role, services: services, name: name),
                                       policy: config.heartbeat)
            worker.computeInline = inline
            wireLog(name, "serving \(services.count <= 4 ? services.joined(separator: " ") : "\(services.count) services") via \(endpoint)")
            try worker.run(stop: stop, makeHandler: make)
        }
        switch role {
        case "decode":
            try serve(["decode"], name: a.value("name") ?? "decode-\(pid)", endpoint: config.backend) {
                DecodeService(stage: DecodeStage(modelDirectory: dir))
            }
        case "encode", "connect":
            let ms = try modalities(a)
            let name = a.value("name") ?? "\(role)-\(ms.map(\.rawValue).joined(separator: "+"))-\(pid)"
            try serve(ms.map { "\(role)/\($0.rawValue)" }, name: name, endpoint: config.backend) {
                if role == "encode" {
                    let s = EncodeStage(modelDirectory: dir)
                    for m in ms { try s.preload(m) }
                    return EncodeService(stage: s)
                }
                let s = ConnectStage(modelDirectory: dir)
                for m in ms { try s.preload(m) }
                return ConnectService(stage: s)
            }
        case "router":
            let endpoint = config.experts, policy = config.heartbeat, timeout = config.expertTimeout
            try serve(["router"], name: a.value("name") ?? "router-\(pid)", endpoint: config.backend) {
                let mc = try ModelConfig.load(directory: dir)
                let model = try LanguageModel(config: mc, checkpoint: Checkpoint(directory: dir), experts: mc.hasMoE ? .remote : .local)
                var remote: RemoteExperts?
                if mc.hasMoE {
                    remote = RemoteExperts(dispatcher: try Dispatcher(bind: endpoint, policy: policy, name: "router"), timeout: timeout)
                }
                return RouterService(stage: RouterStage(model: model, experts: remote), remote: remote)
            }
        case "expert":
            var experts = try a.intList("experts")
            if let g = try a.int("group") {
                guard config.expertGroups.indices.contains(g) else {
                    throw UsageError("--group \(g): the pipeline has \(config.expertGroups.count) expert groups")
                }
                experts = config.expertGroups[g]
            }
            guard let experts else { throw UsageError("give --experts or --group") }
            let layers = try a.intList("layers")
            if a.has("train") {
                // Training: the worker holds trainable copies, made when the trainer configures it; jobs
                // run off the socket thread so heartbeats continue through long optimizer steps.
                let services = try TrainingExpertService.services(modelDirectory: dir, layers: layers, experts: experts)
                let name = a.value("name") ?? "expert-train-\(experts.map(String.init).joined(separator: "+"))-\(pid)"
                try serve(services, name: name, endpoint: config.experts) {
                    TrainingExpertService(modelDirectory: dir, layers: layers, experts: experts)
                }
                return
            }
            let local = try LocalExperts.load(directory: dir, layers: layers, experts: experts)
            let name = a.value("name") ?? "expert-\(experts.map(String.init).joined(separator: "+"))-\(pid)"
            try serve(ExpertService.services(local), name: name, endpoint: config.experts, inline: true) { ExpertService(experts: local) }
        case "coordinator":
            let builder = try PromptBuilder(modelDirectory: dir)
            let c = try Coordinator(builder: builder, frontend: config.frontend, backend: config.backend, policy: config.heartbeat)
            c.requestTimeout = config.requestTimeout
            c.maxRequests = config.maxRequests
            wireLog("coordinator", "clients via \(c.frontendEndpoint), workers via \(c.backend.endpoint)")
            try c.run(stop: stop)
        default:
            throw UsageError("unknown role \(role)")
        }
    }
}
