import Foundation
import Checkpoint
import JSON
import Models
import Tensor

/// Resumable checkpoints (`OUT/checkpoints/step-NNNNNN/`: the trainable tensors, the AdamW moments
/// and `state.json`, written aside and renamed into place, so a kill at any moment leaves the last
/// complete one) and the final model directory.
extension TrainingRun {
    static func checkpointRoot(_ out: String) -> String { (out as NSString).appendingPathComponent("checkpoints") }

    /// The newest complete checkpoint under `out`, if any.
    static func latestCheckpoint(in out: String) throws -> String? {
        let root = checkpointRoot(out)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { return nil }
        let complete = byStep(names).filter {
            FileManager.default.fileExists(atPath: (root as NSString).appendingPathComponent("\($0)/state.json"))
        }
        return complete.last.map { (root as NSString).appendingPathComponent($0) }
    }

    /// The `step-N` directory names among `names`, by step number (not as text: `step-1000000`
    /// comes after `step-999999`).
    static func byStep(_ names: [String]) -> [String] {
        names.compactMap { n in n.hasPrefix("step-") ? Int(n.dropFirst("step-".count)).map { ($0, n) } : nil }
            .sorted { $0.0 < $1.0 }.map(\.1)
    }

    func saveCheckpoint() throws {
        let root = Self.checkpointRoot(options.out)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let name = String(format: "step-%06d", state.step)
        let final = (root as NSString).appendingPathComponent(name)
        let tmp = (root as NSString).appendingPathComponent(".tmp-" + name)
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let remote = try remoteExperts?.state() ?? []
        let isMoment = { (n: String) in n.hasPrefix("exp_avg.") || n.hasPrefix("exp_avg_sq.") }
        try SafeTensorsWriter.write(path: (tmp as NSString).appendingPathComponent("trainable.safetensors"),
                                    tensors: model.params.trainable.map { ($0.name, $0.value) } + remote.filter { !isMoment($0.0) })
        try SafeTensorsWriter.write(path: (tmp as NSString).appendingPathComponent("optimizer.safetensors"),
                                    tensors: optimizer.stateTensors() + remote.filter { isMoment($0.0) })
        let stateData = try StepRecord.encoder.encode(state)
        try stateData.write(to: URL(fileURLWithPath: (tmp as NSString).appendingPathComponent("state.json")))
        try? FileManager.default.removeItem(atPath: final)
        try FileManager.default.moveItem(atPath: tmp, toPath: final)
        // Keep the two newest.
        let all = Self.byStep((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
        for old in all.dropLast(2) { try? FileManager.default.removeItem(atPath: (root as NSString).appendingPathComponent(old)) }
        log("saved checkpoint \(final)")
    }

    func restore(from dir: String) throws {
        let statePath = (dir as NSString).appendingPathComponent("state.json")
        guard let data = FileManager.default.contents(atPath: statePath),
              let saved = try? JSONDecoder().decode(RunState.self, from: data) else {
            throw TrainingError.badCheckpoint(path: statePath, reason: "unreadable run state")
        }
        guard saved.stage == state.stage, saved.seed == state.seed, saved.batchSize == state.batchSize,
              saved.accumulation == state.accumulation, saved.config == state.config, saved.world == state.world else {
            throw TrainingError.badCheckpoint(path: dir, reason: "was written by a run with another stage, seed, batch size, accumulation, replica count or model; resume with the same settings")
        }
        guard saved.data == state.data else {
            throw TrainingError.badCheckpoint(path: dir, reason: "was written for other training data (\(saved.data ?? "?") samples:hash, this run has \(state.data ?? "?")); resume with the same data file")
        }
        guard saved.mediaWords == state.mediaWords else {
            throw TrainingError.badCheckpoint(path: dir, reason: "was written with --media-words \(saved.mediaWords ?? 0), this run asks for \(state.mediaWords ?? 0); resume with the same weight")
        }
        guard saved.learningRate == state.learningRate else {
            throw TrainingError.badCheckpoint(path: dir, reason: "was written with learning rate \(saved.learningRate ?? 0), this run asks for \(state.learningRate ?? 0); resume with the same --lr")
        }
        let file = try SafeTensorsFile(path: (dir as NSString).appendingPathComponent("trainable.safetensors"))
        let trainable = model.params.trainable
        let remoteNames = Set(try remoteExperts?.state().map(\.0).filter { !$0.hasPrefix("exp_avg") } ?? [])
        guard Set(file.names) == Set(trainable.map(\.name)).union(remoteNames) else {
            throw TrainingError.badCheckpoint(path: dir, reason: "holds other trainable tensors than this run trains")
        }
        for p in trainable {
            let t = try file.tensor(p.name)
            guard t.shape == p.shape, t.dtype == .f32 else { throw TrainingError.badCheckpoint(path: dir, reason: "\(p.name) has shape \(t.shape)") }
            Vec.copy(p.value, at: 0, from: t)
        }
        let opt = try SafeTensorsFile(path: (dir as NSString).appendingPathComponent("optimizer.safetensors"))
        var tensors: [String: Tensor] = [:]
        for n in opt.names { tensors[n] = try opt.tensor(n) }
        let own = Set(trainable.flatMap { ["exp_avg." + $0.name, "exp_avg_sq." + $0.name] })
        optimizer.restore(step: saved.step, tensors: tensors.filter { own.contains($0.key) })
        if let remote = remoteExperts {
            for n in remoteNames { tensors[n] = try file.tensor(n) }
            try remote.restore(step: saved.step, tensors: tensors)
        }
        state.step = saved.step
        state.epoch = saved.epoch
        state.cursor = saved.cursor
        state.totalSteps = max(state.totalSteps, saved.totalSteps)
        // The schedule must run over the total actually trained (the checkpoint's, when it is larger
        // than this invocation's --steps), or the cosine runs past its end and the rate climbs again.
        schedule = LearningRateSchedule(peak: options.effectiveLearningRate, warmupRatio: options.warmupRatio,
                                        totalSteps: state.totalSteps)
        log("resuming from \(dir) at step \(saved.step)")
    }

    /// config.json of the trained model: the source config with the MoE keys of `config` (upcycling).
    static func configJSON(_ config: ModelConfig, directory: String) throws -> String {
        let path = (directory as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: path),
              var obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TrainingError.badCheckpoint(path: path, reason: "unreadable config.json")
        }
        if config.hasMoE {
            obj["model_type"] = config.modelType
            if config.modelType == "mixtral" { obj["num_local_experts"] = config.experts } else { obj["num_experts"] = config.experts }
            obj["num_experts_per_tok"] = config.expertsPerToken
            if let l = config.moeLayers { obj["moe_layers"] = l }
        }
        let out = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
        return String(decoding: out, as: UTF8.self)
    }

    /// Writes the trained model as a model directory `unimoe run/ask/generate` load: config.json,
    /// model.safetensors (LoRA merged, or kept in adapter.safetensors with `saveAdapters`),
    /// tokenizer files and the (frozen) towers.
    public func exportModel(to out: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: out, withIntermediateDirectories: true)
        try state.config.write(toFile: (out as NSString).appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let params = model.params.ordered
        let remote = try remoteExperts?.export(mergeLoRA: !options.saveAdapters) ?? []
        let isLoRA = { (n: String) in n.contains(".lora_A.") || n.contains(".lora_B.") }
        let lora = params.filter { isLoRA($0.name) }.map { ($0.name, $0.value) } + remote.filter { isLoRA($0.0) }
        var base: [(String, Tensor)] = remote.filter { !isLoRA($0.0) }
        // Tower tensors go to the towers' directories; the media-words head is training scaffolding.
        let notExported = Set((model.visionTower?.params.ordered ?? []).map(\.name) + (model.audioTower?.params.ordered ?? []).map(\.name)
                             + [MediaWordsOp.weightName, MediaWordsOp.biasName])
        for p in params where !p.name.contains(".lora_") && !notExported.contains(p.name) {
            let stem = String(p.name.dropLast(".weight".count))
            if !options.saveAdapters, p.name.hasSuffix(".weight"), let a = model.params[stem + ".lora_A.weight"],
               let b = model.params[stem + ".lora_B.weight"] {
                base.append((p.name, LoRA(a: a, b: b, scale: model.loraScale).merged(into: p.value)))
            } else {
                base.append((p.name, p.value))
            }
        }
        base.sort { $0.0 < $1.0 }
        try SafeTensorsWriter.write(path: (out as NSString).appendingPathComponent("model.safetensors"), tensors: base,
                                    metadata: ["format": "pt", "producer": "unimoe train stage \(options.stage.rawValue)"])
        let adapterFile = (out as NSString).appendingPathComponent(AdapterConfig.weightsFile)
        if options.saveAdapters && !lora.isEmpty {
            try SafeTensorsWriter.write(path: adapterFile, tensors: lora)
            let rank = lora.first { $0.0.hasSuffix(".lora_A.weight") }?.1.shape[0] ?? options.loraRank
            try AdapterConfig(rank: rank, alpha: Double(model.loraScale) * Double(rank),
                              targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]).write(directory: out)
        } else {
            try? fm.removeItem(atPath: adapterFile)
            try? fm.removeItem(atPath: (out as NSString).appendingPathComponent(AdapterConfig.configFile))
        }
        let src = options.model
        guard (src as NSString).standardizingPath != (out as NSString).standardizingPath else { return }
        for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
            try Self.link(from: (src as NSString).appendingPathComponent(f), to: (out as NSString).appendingPathComponent(f))
        }
        if let mm = model.multimodal {
            // Trained towers get their new weights; the others (and every config file) are linked.
            let trained: [String: [(String, Tensor)]] = [
                mm.visionTower ?? "": try model.visionTower?.exportTensors() ?? [],
                mm.audioTower ?? "": model.audioTower?.exportTensors() ?? [],
            ].filter { !$0.key.isEmpty && !$0.value.isEmpty }
            for tower in [mm.visionTower, mm.audioTower].compactMap({ $0 }) where !tower.hasPrefix("/") {
                let from = (src as NSString).appendingPathComponent(tower), to = (out as NSString).appendingPathComponent(tower)
                guard let files = try? fm.contentsOfDirectory(atPath: from) else { continue }
                try fm.createDirectory(atPath: to, withIntermediateDirectories: true)
                for f in files {
                    let target = (to as NSString).appendingPathComponent(f)
                    if let tensors = trained[tower], f.hasSuffix(".safetensors") {
                        try? fm.removeItem(atPath: target)
                        if f == "model.safetensors" { try SafeTensorsWriter.write(path: target, tensors: tensors.sorted { $0.0 < $1.0 }) }
                        continue
                    }
                    try Self.link(from: (from as NSString).appendingPathComponent(f), to: target)
                }
            }
        }
    }

    /// Copies a file (hard link when the file system allows), replacing the target; missing sources are skipped.
    static func link(from: String, to: String) throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: from) else { return }
        try? fm.removeItem(atPath: to)
        do { try fm.linkItem(atPath: from, toPath: to) } catch { try fm.copyItem(atPath: from, toPath: to) }
    }
}
