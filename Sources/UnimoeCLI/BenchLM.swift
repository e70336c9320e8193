import Foundation
import Models
import Options
import Tensor

/// `unimoe bench lm --model DIR`: the in-process half of `scripts/bench-lm`. Measures prefill and
/// decode speed of the trunk with local experts and the memory-bandwidth ceiling for decode, and
/// prints one JSON object (the script sets them beside transformers, measured in the same run).
enum BenchLM {
    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["model", "prompt-tokens", "decode-tokens", "threads", "repeats"])
        let dir = try a.required("model")
        let promptTokens = try a.int("prompt-tokens", default: 128, range: 1...100_000) ?? 128
        let decodeTokens = try a.int("decode-tokens", default: 64, range: 1...100_000) ?? 64
        let threads = try a.int("threads", default: 2, range: 1...256) ?? 2
        let repeats = try a.int("repeats", default: 3, range: 1...100) ?? 3
        Linear.setThreads(threads)
        let t0 = DispatchTime.now().uptimeNanoseconds
        let model = try LanguageModel.load(directory: dir)
        let loadSeconds = seconds(since: t0)
        // Deterministic prompt ids away from the special ids.
        var rng = Xoshiro256(seed: 1)
        let ids = (0..<promptTokens).map { _ in 3 + Int(rng.next() % UInt64(max(model.vocab - 3, 1))) }
        let prompt = try model.embed(ids: ids)
        // The decode loop keeps its input row, step array, id array and logits (no allocation a step).
        let step = Tensor(zeros: [1, model.hidden])
        let logits = Tensor(zeros: [1, model.vocab])
        var nextId = [0]

        // Warm-up: one full prefill + a few steps touch every mapped weight page.
        var best = (prefill: Double.infinity, decode: Double.infinity)
        var bandwidthAfterRounds = 0.0
        for r in 0...repeats {
            let cache = model.makeCache(capacity: promptTokens + decodeTokens)
            let p0 = DispatchTime.now().uptimeNanoseconds
            try model.forward([SequenceStep(cache: cache, embeddings: prompt)], allPositions: false, into: logits)
            let prefill = seconds(since: p0)
            let items = [SequenceStep(cache: cache, embeddings: step)]
            let d0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<(r == 0 ? 4 : decodeTokens) {
                nextId[0] = Sampler.argmax(logits.floats, count: model.vocab)
                try model.embed(ids: nextId, into: step.floats)
                try model.forward(items, allPositions: false, into: logits)
            }
            let decode = seconds(since: d0)
            if r > 0 {
                best = (min(best.prefill, prefill), min(best.decode, decode))
                bandwidthAfterRounds = max(bandwidthAfterRounds, MemoryBandwidth.read(threads: threads, repeats: 3))
            }
        }
        // The ceiling: the best read bandwidth of passes taken after each timed round (a shared VM's
        // neighbours only ever lower a measurement, so the highest is the machine's).
        let bandwidth = max(bandwidthAfterRounds, MemoryBandwidth.read(threads: threads))
        let bytes = model.weightBytesPerToken
        let out: [String: Any] = [
            "prefill_tokens_per_s": Double(promptTokens) / best.prefill,
            "decode_tokens_per_s": Double(decodeTokens) / best.decode,
            "bandwidth_bytes_per_s": bandwidth,
            "weight_bytes_per_token": bytes,
            "ceiling_tokens_per_s": bandwidth / Double(bytes),
            "load_s": loadSeconds,
            "threads": threads,
            "dtype": model.lmHead.dtype.rawValue,
            "blas_core": OpenBLASCore.current,
        ]
        printLine(jsonLine(out))
    }

    static func seconds(since t0: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9 }
}
