import Foundation
import Media
import Models
import Options
import Stages
import Tensor

/// `unimoe run --model DIR` with `unimoe ask`'s options: the whole pipeline in this process (same
/// stages, same order, same sampler), so its ids equal the distributed pipeline's.
public enum RunCommand: Command {
    public static let name = "run"
    public static let usage = "run --model DIR [--image F]… [--audio F]… [--video F]… [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--json] [--timings] [--routing-stats] [--threads N] QUESTION"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: AskOptions.valued.union(["model", "threads"]), flags: ["json", "timings", "routing-stats"])
        let o = try AskOptions(a)
        if let n = try a.int("threads", range: 1...256) {
            Parallel.setThreads(n)
            Linear.setThreads(n)
        }
        let pipeline = try LocalPipeline(modelDirectory: try a.required("model"))
        let stats = a.has("routing-stats") ? RoutingStats() : nil
        pipeline.router.model.routingStats = stats
        let answer = try pipeline.ask(o.request, media: o.files.map { .file($0) }, onToken: o.onToken)
        o.finish(answer)
        if let stats {
            // One JSON line on stderr (stdout keeps its contract).
            printError(jsonLine(["routing": stats.jsonObject]))
        }
    }
}
