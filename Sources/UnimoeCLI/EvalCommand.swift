import Foundation
import Models
import Options
import Stages
import Tensor
import Training

/// `unimoe eval`: accuracy per modality and per question family of a model on a data file in the
/// training format (greedy; an answer is right when its exact words appear in the generated text),
/// with a progress bar on stderr; `--json` prints one object with every figure. The model runs in
/// this process (`--model`) or behind a running pipeline (`--pipeline FILE`, as `unimoe ask`), so
/// the two deployments can be compared answer by answer (`--outcomes FILE`: one JSON line a sample).
public enum EvalCommand: Command {
    public static let name = "eval"
    public static let usage = "eval (--model DIR | --pipeline FILE) --data FILE [--media-dir DIR] [--max-new-tokens N] [--limit N] [--threads N] [--outcomes FILE] [--routing-stats FILE] [--json]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["model", "pipeline", "data", "media-dir", "max-new-tokens", "limit", "threads",
                                             "outcomes", "routing-stats"], flags: ["json"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        let data = try a.required("data")
        let maxNew = try a.int("max-new-tokens", default: 8, range: 1...4096) ?? 8
        if let n = try a.int("threads", range: 1...256) { Parallel.setThreads(n); Linear.setThreads(n) }
        guard (a.value("model") == nil) != (a.value("pipeline") == nil) else {
            throw UsageError("give exactly one of --model DIR (in this process) and --pipeline FILE (a running pipeline)")
        }
        if a.value("pipeline") != nil && a.value("routing-stats") != nil {
            throw UsageError("--routing-stats needs --model (the router's counters stay in its process)")
        }
        var samples = try TrainingData.load(path: data, mediaDirectory: a.value("media-dir") ?? (data as NSString).deletingLastPathComponent)
        if let limit = try a.int("limit", range: 1...100_000_000) { samples = Array(samples.prefix(limit)) }
        let stats = a.value("routing-stats") != nil ? RoutingStats() : nil
        let ask: (AskRequest, [String]) throws -> Answer
        if let pipelineFile = a.value("pipeline") {
            let client = try AskClient(endpoint: try PipelineConfig.load(pipelineFile).frontend, timeout: 300)
            ask = { req, files in try client.ask(req, files: files, onToken: { _, _ in }) }
        } else {
            let pipeline = try LocalPipeline(modelDirectory: try a.required("model"))
            pipeline.router.model.routingStats = stats
            ask = { req, files in try pipeline.ask(req, media: files.map { .file($0) }) }
        }
        var eval = Evaluation()
        var outcomes: [String] = []
        let start = Date()
        for (i, s) in samples.enumerated() {
            let (req, files) = Evaluation.request(s, maxNewTokens: maxNew)
            let answer = try ask(req, files)
            eval.record(s, generated: answer.text)
            if let o = eval.outcomes.last {
                outcomes.append(jsonLine(["id": o.id, "family": o.family, "modality": o.modality, "expected": o.expected,
                                          "generated": o.generated, "ids": answer.ids, "correct": o.correct]))
            }
            progress(i + 1, samples.count, eval.overall, since: start)
        }
        if isatty(2) != 0 { FileHandle.standardError.write(Data("\n".utf8)) }
        if let path = a.value("outcomes") {
            try Data(outcomes.map { $0 + "\n" }.joined().utf8).write(to: URL(fileURLWithPath: path))
        }
        if let path = a.value("routing-stats"), let stats {
            try Data((jsonLine(["routing": stats.jsonObject]) + "\n").utf8).write(to: URL(fileURLWithPath: path))
        }
        if a.has("json") {
            func table(_ t: [String: Evaluation.Tally]) -> [String: Any] {
                t.mapValues { ["correct": $0.correct, "total": $0.total, "accuracy": $0.accuracy] }
            }
            printLine(jsonLine(["overall": ["correct": eval.overall.correct, "total": eval.overall.total, "accuracy": eval.overall.accuracy],
                                "modalities": table(eval.byModality), "families": table(eval.byFamily)]))
        } else {
            printLine("modality   accuracy")
            for (m, t) in eval.byModality.sorted(by: { $0.key < $1.key }) { printLine(row(m, t)) }
            printLine("\nfamily     accuracy")
            for (f, t) in eval.byFamily.sorted(by: { $0.key < $1.key }) { printLine(row(f, t)) }
            printLine("\n" + row("overall", eval.overall))
        }
    }

    static func row(_ name: String, _ t: Evaluation.Tally) -> String {
        String(format: "%@  %5.1f%%  (%d/%d)", name.padding(toLength: 18, withPad: " ", startingAt: 0), 100 * t.accuracy, t.correct, t.total)
    }

    /// A redrawn bar on a terminal; elsewhere (logs, CI) one line per tenth of the work.
    static func progress(_ done: Int, _ total: Int, _ t: Evaluation.Tally, since start: Date) {
        let tty = isatty(2) != 0
        if !tty && done != total && done % max(1, total / 10) != 0 { return }
        let width = 30, filled = total == 0 ? width : width * done / total
        let rate = Double(done) / max(Date().timeIntervalSince(start), 1e-9)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = String(format: "%@[%@] %d/%d  %.1f%% correct  %.1f samples/s  ETA %.0fs%@", tty ? "\r" : "", bar, done, total,
                          100 * t.accuracy, rate, Double(total - done) / max(rate, 1e-9), tty ? "" : "\n")
        FileHandle.standardError.write(Data(line.utf8))
    }
}
