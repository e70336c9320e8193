import Foundation
import Media
import Models
import Stages
import Tensor
import TestSupport
import Testing
import Wire

let tinyModel: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("models/tiny-unimoe").path
}()
let samplesDir = (tinyModel as NSString).deletingLastPathComponent.replacingOccurrences(of: "/models", with: "/samples")

@Suite struct StagesTests {
    @Test func stitchingPutsMediaRowsAtTheSentinels() throws {
        let b = try PromptBuilder(modelDirectory: tinyModel)
        let req = AskRequest(question: "Compare them.", media: [MediaItem(modality: .audio, name: "a"), MediaItem(modality: .image, name: "i")])
        let ids = b.promptIds(req)
        // Template order: the image placeholder comes before the audio one.
        let img = try #require(ids.firstIndex(of: -200)), aud = try #require(ids.firstIndex(of: -300))
        #expect(img < aud)
        let audioRows = try Tensor(shape: [3, b.hidden], values: (0..<(3 * b.hidden)).map { Float($0) })
        let imageRows = try Tensor(shape: [2, b.hidden], values: (0..<(2 * b.hidden)).map { -Float($0) })
        let x = try b.stitch(ids: ids, request: req, embeddings: [audioRows, imageRows])
        #expect(x.shape == [ids.count - 2 + 5, b.hidden])
        #expect(x.rows(img..<(img + 2)).toArray() == imageRows.toArray())
        #expect(x.rows((aud + 1)..<(aud + 4)).toArray() == audioRows.toArray())  // after the image's extra row
        #expect(x.rows(0..<1).toArray() == (try b.embed(ids[0])).toArray())
        #expect(throws: StageError.self) { try b.stitch(ids: ids, request: req, embeddings: [audioRows]) }
    }

    @Test func batchedRouterStepEqualsSeparateSteps() throws {
        let b = try PromptBuilder(modelDirectory: tinyModel)
        let one = try LocalPipeline(modelDirectory: tinyModel).router
        let two = try LocalPipeline(modelDirectory: tinyModel).router
        let p1 = try b.stitch(ids: b.promptIds(AskRequest(question: "first")), request: AskRequest(question: "first"), embeddings: [])
        let p2 = try b.stitch(ids: b.promptIds(AskRequest(question: "a second one")), request: AskRequest(question: "a second one"), embeddings: [])
        let a1 = try one.step([(1, p1)])[0], a2 = try one.step([(2, p2)])[0]
        let both = try two.step([(1, p1), (2, p2)])
        // Batched GEMMs may round differently from single-sequence ones (≤ 1e-4 relative, the
        // team's f32 tolerance); the chosen tokens are the same.
        #expect(relativeError(both[0].toArray(), a1.toArray()) <= 1e-4)
        #expect(relativeError(both[1].toArray(), a2.toArray()) <= 1e-4)
        // `floats` is a raw pointer: keep both tensors alive while argmax reads it (ARC may end
        // their lifetime right after the last use, freeing the storage under the pointer).
        withExtendedLifetime((both, a1)) {
            #expect(Sampler.argmax(both[0].floats, count: both[0].count) == Sampler.argmax(a1.floats, count: a1.count))
        }
        // Then a decode step of sequence 1, from the batched and the single caches.
        let t = try b.embed(5)
        #expect(relativeError(try one.step([(1, t)])[0].toArray(), try two.step([(1, t)])[0].toArray()) <= 1e-4)
        two.release([1])
        #expect(two.liveSequences == 1)
    }

    @Test func decodingAStreamedUploadEqualsDecodingTheFile() throws {
        let stage = DecodeStage(modelDirectory: tinyModel)
        let service = DecodeService(stage: stage)
        for (modality, file) in [(Modality.image, "picture.png"), (.video, "clip.mp4"), (.audio, "tone.wav")] {
            let path = samplesDir + "/" + file
            let want = try stage.decode(modality, .file(path))
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            var replies = service.handle([try Message.json(.mediaOpen, MediaItem(modality: modality, name: path), stream: 9)])
            #expect(replies[0].kind == .ack)
            let chunk = 4096
            var seq: UInt32 = 0
            for start in stride(from: 0, to: bytes.count, by: chunk) {
                let last = start + chunk >= bytes.count
                replies = service.handle([Message(.mediaChunk, stream: 9, sequence: seq, flags: last ? .last : [],
                                                  payload: bytes.subdata(in: start..<min(bytes.count, start + chunk)))])
                seq += 1
            }
            #expect(replies[0].kind == .decoded, "\(replies[0].payloadText)")
            #expect(replies[0].tensors.first?.shape == want.shape, "\(modality)")
            // Compared as one Bool so that a failure names the modality and the first difference
            // instead of printing both tensors.
            let got = replies[0].tensors.first?.toArray() ?? [], ref = want.toArray()
            let firstDifference = zip(got, ref).enumerated().first { $0.element.0 != $0.element.1 }
            #expect(got == ref, "\(modality): \(got.count) vs \(ref.count) values, first difference \(String(describing: firstDifference))")
        }
        let bad = service.handle([Message(.mediaChunk, stream: 77, payload: Data([1]))])
        #expect(bad[0].kind == .error && bad[0].payloadText.contains("unknown upload"))
    }
}
