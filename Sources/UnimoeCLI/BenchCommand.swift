import Foundation
import Options

/// `unimoe bench AREA [options]`: the in-process half of `scripts/bench-AREA`. Each area registers
/// one function in `BenchCommand.areas` (one line per area); the function parses its own options
/// and prints figures as `NAME: ours X UNIT | reference Y UNIT | ratio Z` (see TEAM.md).
public enum BenchCommand: Command {
    public static let name = "bench"
    public static let usage = "bench <area> [options]   (areas: \(areas.keys.sorted().joined(separator: ", ")))"

    /// Area name → benchmark entry point (gets the arguments after the area name).
    /// Add one line per area.
    static let areas: [String: @Sendable ([String]) throws -> Void] = [
        "kernels": BenchKernels.run,
        "lm": BenchLM.run,
        "media": BenchMedia.run,
        "encoders": BenchEncoders.run,
        "train": BenchTrain.run,
    ]

    public static func run(_ args: [String]) throws {
        guard let area = args.first else { throw UsageError("missing benchmark area") }
        guard let body = areas[area] else {
            throw UsageError("unknown benchmark area '\(area)' (areas: \(areas.keys.sorted().joined(separator: ", ")))")
        }
        try body(Array(args.dropFirst()))
    }
}

/// Shared helpers for benchmark areas: timing and the figure line format.
public enum BenchReport {
    /// Seconds per call of `body`: the best of `repeats` timed batches after one warm-up call, each
    /// batch running `body` at least `minSeconds` long. Best, not median: the machine is shared, and
    /// other processes only ever make a batch slower.
    public static func time(repeats: Int = 5, minSeconds: Double = 0.2, _ body: () -> Void) -> Double {
        body()
        var samples: [Double] = []
        for _ in 0..<repeats {
            var calls = 0
            let t0 = DispatchTime.now().uptimeNanoseconds
            var elapsed = 0.0
            repeat {
                body()
                calls += 1
                elapsed = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            } while elapsed < minSeconds
            samples.append(elapsed / Double(calls))
        }
        return samples.min() ?? 0
    }

    /// One figure line: `NAME: ours X UNIT | reference Y UNIT | ratio Z`, ratio = ours / reference.
    public static func line(_ name: String, ours: Double, reference: Double, unit: String, refLabel: String = "") -> String {
        let label = refLabel.isEmpty ? "" : " (\(refLabel))"
        return "\(name): ours \(fmt(ours)) \(unit) | reference\(label) \(fmt(reference)) \(unit) | ratio \(String(format: "%.2f", ours / reference))"
    }

    static func fmt(_ v: Double) -> String {
        v >= 100 ? String(format: "%.0f", v) : (v >= 10 ? String(format: "%.1f", v) : String(format: "%.2f", v))
    }
}
