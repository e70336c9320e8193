import XCTest
import Foundation
@testable import Media
import Tensor
import TestSupport

/// CLIP pixels and Whisper log-mel features against transformers (fixtures from scripts/fixtures/media.py).
final class PreprocessTests: XCTestCase {
    func loadImage(_ name: String, _ w: Int, _ h: Int) throws -> RGBImage {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("media/\(name).rgb")))
        return try RGBImage(width: w, height: h, pixels: [UInt8](data))
    }

    func testClipMatchesTransformers() throws {
        let cases = try XCTUnwrap((try Fixtures.json("media/cases.json") as? [String: Any])?["clip"] as? [[String: Any]])
        let ref = try Fixtures.tensors("media/reference.safetensors")
        XCTAssertEqual(cases.count, 3)
        for c in cases {
            let name = try XCTUnwrap(c["name"] as? String)
            let w = try XCTUnwrap(c["width"] as? Int), h = try XCTUnwrap(c["height"] as? Int)
            let size = try XCTUnwrap(c["size"] as? Int), pad = try XCTUnwrap(c["pad"] as? Bool)
            let pre = ClipPreprocessor(size: size, cropSize: size, padToSquare: pad)
            let ours = try pre(try loadImage(name, w, h))
            let expected = try ref.tensor("\(name).pixels")
            XCTAssertEqual(ours.shape, expected.shape, name)
            let a = ours.toArray(), b = expected.toArray()
            let mad = zip(a, b).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(a.count)
            XCTAssertLessThanOrEqual(mad, 0.02, "\(name): MAD \(mad)")
            // Pillow's fixed-point bicubic is reproduced exactly; only float rounding in the normalisation remains.
            XCTAssertLessThanOrEqual(zip(a, b).map { abs($0 - $1) }.max() ?? 1, 1e-5, name)
        }
    }

    func testClipBatchAndShapes() throws {
        let img = try loadImage("small_upscale", 60, 45)
        let pre = ClipPreprocessor(size: 32, cropSize: 24)
        let one = try pre(img)
        XCTAssertEqual(one.shape, [3, 24, 24])
        let batch = try pre.batch([img, img])
        XCTAssertEqual(batch.shape, [2, 3, 24, 24])
        XCTAssertEqual(Array(batch.toArray()[(3 * 24 * 24)...]), one.toArray())
        XCTAssertThrowsError(try ClipPreprocessor(size: 0, cropSize: 24)(img))
    }

    func testPadToSquareUsesMeanColour() throws {
        // A 4×2 white image padded to 4×4: rows 0 and 3 are int(mean·255), normalised.
        let img = try RGBImage(width: 4, height: 2, pixels: [UInt8](repeating: 255, count: 24))
        let t = try ClipPreprocessor(size: 4, cropSize: 4, padToSquare: true)(img).toArray()
        for c in 0..<3 {
            let bg = (Float(Int(ClipPreprocessor.clipMean[c] * 255)) / 255 - ClipPreprocessor.clipMean[c]) / ClipPreprocessor.clipStd[c]
            let white = (1 - ClipPreprocessor.clipMean[c]) / ClipPreprocessor.clipStd[c]
            XCTAssertEqual(t[c * 16 + 0], bg, accuracy: 1e-5)
            XCTAssertEqual(t[c * 16 + 15], bg, accuracy: 1e-5)
            XCTAssertEqual(t[c * 16 + 5], white, accuracy: 1e-5)
        }
    }

    func testLogMelMatchesTransformers() throws {
        let ref = try Fixtures.tensors("media/reference.safetensors")
        let audio = try ref.tensor("audio").toArray()
        let keep = 600
        for bins in [80, 128] {
            let fe = WhisperFeatureExtractor(melBins: bins)
            let windows = fe.windows(audio)
            XCTAssertEqual(windows.count, 1)
            let ours = try fe.logMel(windows[0])
            XCTAssertEqual(ours.shape, [bins, 3000])
            let head = try ref.tensor("logmel\(bins).head").toArray()
            let tail = try ref.tensor("logmel\(bins).tail").toArray()[0]
            let o = ours.toArray()
            var maxDiff: Float = 0
            for m in 0..<bins {
                for f in 0..<3000 {
                    let expected = f < keep ? head[m * keep + f] : tail
                    maxDiff = max(maxDiff, abs(o[m * 3000 + f] - expected))
                }
            }
            XCTAssertLessThanOrEqual(maxDiff, 1e-3, "\(bins) bins: max |diff| \(maxDiff)")
        }
    }

    /// The same audio gives the same bits whatever the kernels' thread count: a decode stage's
    /// answer must not depend on what another thread of the process set it to meanwhile (the
    /// mel filter bank was a BLAS GEMM, whose tiling follows OpenBLAS's thread count).
    func testLogMelBitsDoNotDependOnTheThreadCount() throws {
        let ref = try Fixtures.tensors("media/reference.safetensors")
        let fe = WhisperFeatureExtractor(melBins: 80)
        let window = fe.windows(try ref.tensor("audio").toArray())[0]
        let before = Linear.threads
        defer { Linear.setThreads(before) }
        var results: [[Float]] = []
        for threads in [1, 2, 3] {
            Linear.setThreads(threads)
            results.append(try fe.logMel(window).toArray())
        }
        for (i, r) in results.enumerated().dropFirst() {
            let first = zip(r, results[0]).enumerated().first { $0.element.0.bitPattern != $0.element.1.bitPattern }
            XCTAssertNil(first, "\(i + 1) threads vs 1: first difference at \(first.map { "\($0.offset): \($0.element)" } ?? "")")
        }
    }

    /// The power spectra of two frames per transform against a float64 DFT: the factored path
    /// (400 = 5·80, the log-mel length, and 240 = 5·48) and Bluestein's (401, 30).
    func testRealDFTPowerMatchesADirectDFT() throws {
        XCTAssertEqual(RealDFT.factor(of: 400), 5)
        XCTAssertNil(RealDFT.factor(of: 401))
        var state: UInt64 = 3
        func uniform() -> Float {   // a fixed LCG: the same frames on every run
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24) * 2 - 1
        }
        for n in [400, 240, 401, 30] {
            let dft = try RealDFT(length: n)
            XCTAssertEqual(dft.p > 1, n == 400 || n == 240, "length \(n)")
            let a = (0..<n).map { _ in uniform() }, b = (0..<n).map { _ in uniform() }
            var pa = [Float](repeating: 0, count: n / 2 + 1), pb = pa
            pa.withUnsafeMutableBufferPointer { oa in pb.withUnsafeMutableBufferPointer { ob in
                dft.power(a, b, into: oa.baseAddress!, ob.baseAddress!)
            } }
            for (x, got) in [(a, pa), (b, pb)] {
                var worst = 0.0, peak = 0.0
                for k in 0...(n / 2) {
                    var re = 0.0, im = 0.0
                    for t in 0..<n {
                        let angle = -2 * Double.pi * Double((t * k) % n) / Double(n)
                        re += Double(x[t]) * cos(angle); im += Double(x[t]) * sin(angle)
                    }
                    let want = re * re + im * im
                    peak = max(peak, want)
                    worst = max(worst, abs(Double(got[k]) - want))
                }
                XCTAssertLessThanOrEqual(worst / peak, 1e-5, "length \(n): max |diff| \(worst), peak \(peak)")
            }
        }
    }

    func testWindowsPadAndCap() {
        let fe = WhisperFeatureExtractor()
        let samples = [Float](repeating: 0.5, count: 480000 + 1000)
        let w = fe.windows(samples)
        XCTAssertEqual(w.count, 2)
        XCTAssertEqual(w[1].count, 480000)
        XCTAssertEqual(w[1][999], 0.5)
        XCTAssertEqual(w[1][1000], 0)
        XCTAssertEqual(fe.windows(samples, maxWindows: 1).count, 1)
        XCTAssertEqual(fe.windows([]).count, 0)
        XCTAssertThrowsError(try fe.logMel([Float](repeating: 0, count: 480001)))
    }
}
