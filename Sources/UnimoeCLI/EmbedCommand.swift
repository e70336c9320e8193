import Foundation
import Options
import Tensor
import Media
import Models

/// `unimoe embed --model DIR (--image F | --audio F | --video F) --out FILE`: one input through
/// decoding, preprocessing, its encoder and connector; writes the embeddings the language model
/// reads at that placeholder as raw little-endian f32 `[tokens, hidden]` and prints
/// `{"hidden": H, "tokens": T}` (see shared/CLI-CONTRACT.md).
public enum EmbedCommand: Command {
    public static let name = "embed"
    public static let usage = "embed --model DIR (--image F | --audio F | --video F) --out FILE"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["model", "image", "audio", "video", "out"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        let inputs: [(MultimodalModel.Modality, String)] = [(.image, "image"), (.audio, "audio"), (.video, "video")]
            .compactMap { m, key in a.value(key).map { (m, $0) } }
        guard inputs.count == 1, a.all(inputs[0].0.rawValue).count == 1 else {
            throw UsageError("give exactly one of --image, --audio, --video")
        }
        let model = try a.required("model")
        let out = try a.required("out")
        let (modality, file) = inputs[0]
        let m = try MultimodalModel(directory: model, modalities: [modality])
        let e = try m.embed(modality, .file(file))
        let bytes = e.count * 4
        var data = Data(count: bytes)
        data.withUnsafeMutableBytes { raw in
            let dst = raw.bindMemory(to: UInt32.self)
            for i in 0..<e.count { dst[i] = e.floats[i].bitPattern.littleEndian }
        }
        do { try data.write(to: URL(fileURLWithPath: out)) } catch {
            throw EmbedError.cannotWrite(path: out, reason: error.localizedDescription)
        }
        printLine(jsonLine(["tokens": e.shape[0], "hidden": e.shape[1]]))
    }
}

/// Failures of `unimoe embed` outside the model: the output file.
enum EmbedError: Error, CustomStringConvertible {
    case cannotWrite(path: String, reason: String)

    var description: String {
        switch self {
        case .cannotWrite(let path, let reason): return "\(path): cannot write the embeddings: \(reason)"
        }
    }
}
