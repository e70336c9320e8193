import Foundation
import Tensor
import Wire

/// A deployment described by `pipelines/*.json`: the model directory, where the coordinator and
/// the router listen, which experts each expert worker group serves, heartbeat and timeouts, and
/// how many threads each role may use (so the processes together do not oversubscribe the cores).
public struct PipelineConfig: Codable, Sendable, Equatable {
    /// Model directory; relative paths are taken from the current directory, else from the
    /// pipeline file's parent directory's parent (the repository root for `pipelines/*.json`).
    public var model: String
    /// Clients connect here (`unimoe ask`).
    public var frontend: String
    /// Stage workers (decode, encode, connect, router) connect here.
    public var backend: String
    /// Expert workers connect here (the router binds it).
    public var experts: String
    public var heartbeat: HeartbeatPolicy
    public var requestTimeout: Double
    public var expertTimeout: Double
    /// Requests the coordinator holds at once (uploading, waiting or generating); past it a new
    /// request is refused at once with a "busy" error instead of queueing without bound.
    public var maxRequests: Int = 256
    /// Expert indices per worker group (`unimoe-expert --group N`).
    public var expertGroups: [[Int]]
    /// Kernel threads per role (`decode`, `encode`, `connect`, `router`, `expert`, `coordinator`).
    public var threads: [String: Int]
    /// Where data-parallel trainers meet to sum gradients (`unimoe train --world`); rank 0 binds it.
    public var allreduce: String?
    /// The HTTP gateway (`unimoe-gateway`): where it listens and its limits; defaults when absent.
    public var gateway: GatewaySettings?
    /// Bearer tokens the gateway accepts; none (absent or empty) means no check.
    public var apiKeys: [String]?
    /// CURVE keys: when present every tcp socket is authenticated and encrypted (docs/PIPELINE.md).
    public var curve: CurveSettings?

    enum CodingKeys: String, CodingKey {
        case model, frontend, backend, experts, heartbeat, threads, allreduce, gateway, curve
        case apiKeys = "api_keys"
        case requestTimeout = "request_timeout"
        case maxRequests = "max_requests"
        case expertTimeout = "expert_timeout"
        case expertGroups = "expert_groups"
    }

    public init(model: String, frontend: String, backend: String, experts: String,
                heartbeat: HeartbeatPolicy = .standard, requestTimeout: Double = 300, expertTimeout: Double = 60,
                expertGroups: [[Int]] = [], threads: [String: Int] = [:]) {
        self.model = model
        self.frontend = frontend
        self.backend = backend
        self.experts = experts
        self.heartbeat = heartbeat
        self.requestTimeout = requestTimeout
        self.expertTimeout = expertTimeout
        self.expertGroups = expertGroups
        self.threads = threads
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decode(String.self, forKey: .model)
        frontend = try c.decode(String.self, forKey: .frontend)
        backend = try c.decode(String.self, forKey: .backend)
        experts = try c.decode(String.self, forKey: .experts)
        heartbeat = try c.decodeIfPresent(HeartbeatPolicy.self, forKey: .heartbeat) ?? .standard
        requestTimeout = try c.decodeIfPresent(Double.self, forKey: .requestTimeout) ?? 300
        expertTimeout = try c.decodeIfPresent(Double.self, forKey: .expertTimeout) ?? 60
        maxRequests = try c.decodeIfPresent(Int.self, forKey: .maxRequests) ?? 256
        expertGroups = try c.decodeIfPresent([[Int]].self, forKey: .expertGroups) ?? []
        threads = try c.decodeIfPresent([String: Int].self, forKey: .threads) ?? [:]
        allreduce = try c.decodeIfPresent(String.self, forKey: .allreduce)
        gateway = try c.decodeIfPresent(GatewaySettings.self, forKey: .gateway)
        apiKeys = try c.decodeIfPresent([String].self, forKey: .apiKeys)
        curve = try c.decodeIfPresent(CurveSettings.self, forKey: .curve)
    }

    /// Reads and checks a pipeline file, resolving the model directory, and adopts its CURVE keys
    /// (if any) for this process's tcp sockets from now on (`WireSecurity`): every process of a
    /// deployment, clients included, reads the pipeline file before it opens a socket.
    public static func load(_ path: String) throws -> PipelineConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StageError.badRequest("cannot read the pipeline file \(path)")
        }
        var c: PipelineConfig
        do { c = try JSONDecoder().decode(PipelineConfig.self, from: data) } catch {
            throw StageError.badRequest("\(path): not a valid pipeline description: \(error)")
        }
        guard c.heartbeat.interval > 0, c.heartbeat.liveness > 0 else {
            throw StageError.badRequest("\(path): heartbeat interval and liveness must be positive")
        }
        do { try WireSecurity.use(c.curve) } catch { throw StageError.badRequest("\(path): \(error)") }
        guard c.maxRequests >= 1 else { throw StageError.badRequest("\(path): max_requests must be at least 1, not \(c.maxRequests)") }
        if !c.model.hasPrefix("/") {
            let fm = FileManager.default
            let cwd = (fm.currentDirectoryPath as NSString).appendingPathComponent(c.model)
            let besideFile = (((path as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent as NSString)
                .appendingPathComponent(c.model)
            c.model = fm.fileExists(atPath: cwd) ? cwd : besideFile
        }
        return c
    }

    /// Applies this role's thread count to the kernels (worker pool and OpenBLAS).
    public func applyThreads(role: String, override: Int?) {
        let n = max(1, override ?? threads[role] ?? 1)
        Parallel.setThreads(n)
        Linear.setThreads(n)
    }
}

/// The `"gateway"` section of a pipeline file: the OpenAI-compatible HTTP front door's address and
/// the limits that keep hostile clients from exhausting it (docs/HTTP.md).
public struct GatewaySettings: Codable, Sendable, Equatable {
    /// `host:port` to listen on (IPv4); port 0 picks a free one (logged at start).
    public var listen: String
    /// Largest request body accepted (bytes); larger bodies, declared or sent, get 413.
    public var maxBody: Int
    /// Seconds a connection may stay silent while sending its request (slow clients are cut off).
    public var idleTimeout: Int
    /// Open connections at most; more are refused by the HTTP library.
    public var maxConnections: Int
    /// Requests generating at once at most; more get 429.
    public var maxRequests: Int
    /// Directories `file://` media must lie in; empty allows any readable file.
    public var fileRoots: [String]

    enum CodingKeys: String, CodingKey {
        case listen
        case maxBody = "max_body"
        case idleTimeout = "idle_timeout"
        case maxConnections = "max_connections"
        case maxRequests = "max_requests"
        case fileRoots = "file_roots"
    }

    public init(listen: String = "127.0.0.1:8000", maxBody: Int = 64 << 20, idleTimeout: Int = 15, maxConnections: Int = 256,
                maxRequests: Int = 64, fileRoots: [String] = []) {
        self.listen = listen
        self.maxBody = maxBody
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.maxRequests = maxRequests
        self.fileRoots = fileRoots
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = GatewaySettings()
        listen = try c.decodeIfPresent(String.self, forKey: .listen) ?? d.listen
        maxBody = try c.decodeIfPresent(Int.self, forKey: .maxBody) ?? d.maxBody
        idleTimeout = try c.decodeIfPresent(Int.self, forKey: .idleTimeout) ?? d.idleTimeout
        maxConnections = try c.decodeIfPresent(Int.self, forKey: .maxConnections) ?? d.maxConnections
        maxRequests = try c.decodeIfPresent(Int.self, forKey: .maxRequests) ?? d.maxRequests
        fileRoots = try c.decodeIfPresent([String].self, forKey: .fileRoots) ?? d.fileRoots
    }
}
