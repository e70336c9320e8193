import Checkpoint
import Foundation
import Models
import Options
import Tensor
import Tokenizer

/// `unimoe quantize --model DIR --out DIR --type q8_0`: writes a copy of a trunk directory whose
/// linear weights (`Architecture.isQuantizable`, 2-D, columns divisible by 32) are q8_0 — I8 quants
/// + F16 `.q8_scales`, docs/MODEL-DIRECTORY.md "Quantised directories" — and everything else as
/// stored; then compares the two models on one text and prints
/// `{"tensors", "quantized", "bytes_before", "bytes_after", "logit_max_rel_err", "argmax_agreement",
/// "perplexity_source", "perplexity_q8_0", "positions"}`.
public enum QuantizeCommand: Command {
    public static let name = "quantize"
    public static let usage = "quantize --model DIR --out DIR --type q8_0 [--threads N]"

    /// The text the drift is measured on (tokenised with the directory's tokenizer.json; without
    /// one, `fallbackIDs`).
    static let probeText = "The quick brown fox jumps over the lazy dog. A mixture of experts routes every token to a few feed-forward networks, and the router learns which ones."

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["model", "out", "type", "threads"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        let dir = try a.required("model")
        let out = try a.required("out")
        let type = try a.required("type")
        guard type.lowercased() == "q8_0" else { throw UsageError("--type must be q8_0, got '\(type)'") }
        if let t = try a.int("threads", range: 1...256) { Linear.setThreads(t) }
        let summary = try quantize(from: dir, to: out)
        let drift = try Drift.measure(source: dir, quantized: out)
        printLine(jsonLine([
            "tensors": summary.tensors, "quantized": summary.quantized,
            "bytes_before": weightBytes(dir), "bytes_after": weightBytes(out),
            "logit_max_rel_err": drift.maxRelativeError, "argmax_agreement": drift.argmaxAgreement,
            "perplexity_source": drift.perplexitySource, "perplexity_q8_0": drift.perplexityQuantized,
            "positions": drift.positions,
        ]))
    }

    /// Writes the q8_0 directory (the source is first loaded strictly, as `convert` does).
    @discardableResult
    public static func quantize(from dir: String, to out: String) throws -> ReleasedCheckpoint.Summary {
        let arch = try Architecture.forConfig(ModelConfig.load(directory: dir))
        return try HuggingFaceImport.convert(from: dir, to: out, quantize: { name, shape in
            arch.isQuantizable(name) && shape.count == 2 && shape[1] % Q8.block == 0
        }, verify: { _ = try LanguageModel.load(directory: $0) })
    }

    /// Bytes of the directory's safetensors files.
    static func weightBytes(_ dir: String) -> Int {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return files.filter { $0.hasSuffix(".safetensors") }.reduce(0) { sum, f in
            let attrs = try? FileManager.default.attributesOfItem(atPath: (dir as NSString).appendingPathComponent(f))
            return sum + ((attrs?[.size] as? NSNumber)?.intValue ?? 0)
        }
    }

    /// How far the quantised model's logits are from the source's on one sequence.
    public struct Drift: Sendable {
        /// max |q − s| / max |s| over every logit of every position.
        public var maxRelativeError: Double
        /// Fraction of positions whose argmax (greedy next token) is the same.
        public var argmaxAgreement: Double
        /// exp(mean negative log-likelihood of each next id) under each model.
        public var perplexitySource: Double
        public var perplexityQuantized: Double
        public var positions: Int

        /// Runs both directories over `probeText` (or fixed ids when there is no tokenizer).
        public static func measure(source: String, quantized: String) throws -> Drift {
            let src = try LanguageModel.load(directory: source)
            let q = try LanguageModel.load(directory: quantized)
            let tok = (source as NSString).appendingPathComponent("tokenizer.json")
            var ids = FileManager.default.fileExists(atPath: tok) ? try Tokenizer(directory: source).encode(probeText) : []
            ids = ids.filter { (0..<src.vocab).contains($0) }
            if ids.count < 2 { ids = (0..<32).map { ($0 * 7919 + 3) % src.vocab } }
            return compare(try src.logits(ids: ids).toArray(), try q.logits(ids: ids).toArray(), ids: ids, vocab: src.vocab)
        }

        /// The figures for logits `[ids.count, vocab]` of a source and a quantised model.
        static func compare(_ s: [Float], _ q: [Float], ids: [Int], vocab: Int) -> Drift {
            var maxDiff = 0.0, maxRef = 0.0, agree = 0, nllS = 0.0, nllQ = 0.0
            for i in 0..<s.count { maxDiff = max(maxDiff, Double(abs(q[i] - s[i]))); maxRef = max(maxRef, Double(abs(s[i]))) }
            for p in 0..<ids.count {
                let rs = Array(s[p * vocab ..< (p + 1) * vocab]), rq = Array(q[p * vocab ..< (p + 1) * vocab])
                if rs.indices.max(by: { rs[$0] < rs[$1] }) == rq.indices.max(by: { rq[$0] < rq[$1] }) { agree += 1 }
                if p + 1 < ids.count { nllS += nll(rs, ids[p + 1]); nllQ += nll(rq, ids[p + 1]) }
            }
            let n = Double(max(ids.count - 1, 1))
            return Drift(maxRelativeError: maxRef > 0 ? maxDiff / maxRef : maxDiff, argmaxAgreement: Double(agree) / Double(ids.count),
                         perplexitySource: exp(nllS / n), perplexityQuantized: exp(nllQ / n), positions: ids.count)
        }

        /// −log softmax(row)[target], in f64.
        static func nll(_ row: [Float], _ target: Int) -> Double {
            let m = Double(row.max() ?? 0)
            let lse = m + log(row.reduce(0.0) { $0 + exp(Double($1) - m) })
            return lse - Double(row[target])
        }
    }
}
