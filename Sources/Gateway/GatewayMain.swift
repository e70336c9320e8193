import Foundation
import HTTP
import Options
import Stages
import Wire

/// The body of `unimoe-gateway`: reads the pipeline file (the coordinator's endpoint, the
/// `"gateway"` section, `"api_keys"`), serves HTTP until SIGTERM/SIGINT. Exit 64 usage, 1 failure.
public enum GatewayMain {
    static let usage = "unimoe-gateway [--pipeline FILE] [--listen HOST:PORT]"

    public static func main(_ argv: [String]) -> Int32 { RoleMain.main("gateway", usage: usage, argv, run) }

    /// `host:port` → its parts; the host must be an IPv4 address.
    static func parseListen(_ s: String) throws -> (host: String, port: UInt16) {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let port = UInt16(parts[1]), parts[0].split(separator: ".").count == 4 else {
            throw UsageError("listen address must be IPv4 HOST:PORT (e.g. 127.0.0.1:8000), got '\(s)'")
        }
        return (String(parts[0]), port)
    }

    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["pipeline", "listen", "name"])
        if let extra = a.positional.first { throw UsageError("unexpected argument '\(extra)'") }
        let config = try PipelineConfig.load(a.value("pipeline") ?? "pipelines/default.json")
        var settings = config.gateway ?? GatewaySettings()
        if let l = a.value("listen") { settings.listen = l }
        let (host, port) = try parseListen(settings.listen)
        let stop = StopFlag.onTerminationSignals()
        let gateway = Gateway(config: config, settings: settings)
        let server = try HTTPServer(host: host, port: port, limits: gateway.limits, handler: gateway)
        wireLog("gateway", "listening on http://\(host):\(server.port) for the coordinator at \(config.frontend)"
                + ((config.apiKeys ?? []).isEmpty ? "" : " (API keys required)"))
        while !stop.isSet { Thread.sleep(forTimeInterval: 0.2) }
        server.stop()
    }
}
