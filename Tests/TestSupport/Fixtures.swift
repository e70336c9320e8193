import Foundation
import Tensor
import Checkpoint

/// Locates and reads the committed reference data that `scripts/make-fixtures` generates.
public enum Fixtures {
    /// `Tests/Fixtures`, found from this source file's location so tests work from any directory.
    public static let root: String = {
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path
    }()

    public static func path(_ relative: String) -> String { (root as NSString).appendingPathComponent(relative) }

    /// Tensors of a fixture safetensors file, by name.
    public static func tensors(_ relative: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(path: path(relative))
    }

    /// A JSON fixture.
    public static func json(_ relative: String) throws -> Any {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(relative)))
        return try JSONSerialization.jsonObject(with: data)
    }
}

/// Maximum relative error, max|a−b| / max(max|b|, tiny): the figure the acceptance tolerances use.
public func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "length \(a.count) vs \(b.count)")
    var num: Float = 0, den: Float = 1e-30
    for i in 0..<a.count {
        num = max(num, abs(a[i] - b[i]))
        den = max(den, abs(b[i]))
    }
    return num / den
}
