import Foundation
import Media
import Options
import Stages
import Wire

/// Options shared by `unimoe ask` and `unimoe run` (CLI-CONTRACT.md): media files in the order the
/// template places them, generation settings, output form.
struct AskOptions {
    var request: AskRequest
    var files: [String]
    var json: Bool
    /// `--timings`: the per-stage timings (ms) as one JSON line on stderr at the end (benchmarks).
    var timings: Bool

    static let valued: Set<String> = ["image", "audio", "video", "max-new-tokens", "temperature", "top-p", "seed"]

    /// Media are placed images first, then audios, then videos (each kind in command-line order),
    /// matching the placeholders the Vicuna template writes.
    init(_ a: Arguments) throws {
        guard !a.positional.isEmpty else { throw UsageError("missing QUESTION") }
        let question = a.positional.joined(separator: " ")
        var media: [MediaItem] = []
        var files: [String] = []
        for m in [Modality.image, .audio, .video] {
            for f in a.all(m.rawValue) {
                media.append(MediaItem(modality: m, name: f))
                files.append(f)
            }
        }
        for f in files where !FileManager.default.isReadableFile(atPath: f) {
            throw StageError.media(file: f, reason: "no such file or not readable")
        }
        request = AskRequest(question: question, media: media,
                             maxNewTokens: try a.int("max-new-tokens", default: 64, range: 0...65536) ?? 64,
                             temperature: try a.double("temperature", default: 0, range: 0...100) ?? 0,
                             topP: try a.double("top-p", default: 1, range: 0.000001...1) ?? 1,
                             seed: UInt64(try a.int("seed", default: 0, range: 0...Int.max) ?? 0))
        self.files = files
        json = a.has("json")
        timings = a.has("timings")
    }

    /// Streams text as it comes (without `--json`), or prints the final JSON object.
    func onToken(_ id: Int, _ text: String) {
        if !json && !text.isEmpty { FileHandle.standardOutput.write(Data(text.utf8)) }
    }

    func finish(_ answer: Answer) {
        if json { printLine(jsonLine(["ids": answer.ids, "text": answer.text])) } else { printLine("") }
        if timings { printError(jsonLine(["timings": answer.timings, "tokens": answer.ids.count])) }
    }
}

/// `unimoe ask [--image F]… [--audio F]… [--video F]… [--max-new-tokens N] [--temperature T]
/// [--seed S] [--json] [--pipeline FILE] QUESTION`: sends the request to the running pipeline,
/// uploading media in chunks, and streams the answer.
public enum AskCommand: Command {
    public static let name = "ask"
    public static let usage = "ask [--image F]… [--audio F]… [--video F]… [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--json] [--timings] [--stats] [--pipeline FILE] [--endpoint E] [--timeout S] QUESTION"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: AskOptions.valued.union(["pipeline", "endpoint", "timeout"]), flags: ["json", "timings", "stats"])
        let endpoint = try a.value("endpoint") ?? PipelineConfig.load(a.value("pipeline") ?? "pipelines/default.json").frontend
        // --timeout bounds the whole request; a pipeline that is not running is reported within 2 s.
        let limit = try a.double("timeout", default: 300, range: 0.1...86400) ?? 300
        let client = try AskClient(endpoint: endpoint, timeout: limit)
        client.requestLimit = limit
        client.probeTimeout = 2
        if a.has("stats") {
            // The pipeline's counters (coordinator, router, expert workers) as one JSON line.
            printLine(jsonLine(try client.stats()))
            return
        }
        let o = try AskOptions(a)
        let answer = try client.ask(o.request, files: o.files, onToken: o.onToken)
        o.finish(answer)
    }
}
