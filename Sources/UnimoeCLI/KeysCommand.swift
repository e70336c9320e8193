import Foundation
import Options
import Wire

/// `unimoe keys [--client]`: new CURVE keys for a pipeline file. Prints the whole `"curve"` object
/// (a server pair, a client pair, the client allowed) to paste into the file; with `--client`, one
/// more client pair, for a peer that gets its own key (add its public key to `allow`).
public enum KeysCommand: Command {
    public static let name = "keys"
    public static let usage = "keys [--client]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: [], flags: ["client"])
        guard a.positional.isEmpty else { throw UsageError("keys takes no arguments") }
        if a.has("client") {
            let pair = try CurveKeys.pair()
            printLine(jsonLine(["client_public": pair.public, "client_secret": pair.secret]))
            return
        }
        let data = try JSONEncoder.sortedPretty.encode(["curve": try CurveSettings.generate()])
        printLine(String(decoding: data, as: UTF8.self))
    }
}

extension JSONEncoder {
    /// Pretty, sorted keys, slashes kept (Z85 keys contain `/`).
    static var sortedPretty: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
