import XCTest
import Foundation
import TestSupport
import Tokenizer
@testable import Training

/// Modality-grouped, seeded batches; and the sample encoder's ids and answers-only labels against
/// the prompt inference builds.
final class BatcherAndEncoderTests: XCTestCase {
    func sample(_ i: Int, images: Int = 0, audios: Int = 0, videos: Int = 0, turns: [Turn]? = nil) -> RawSample {
        RawSample(id: "s\(i)", file: "data.jsonl", line: i + 1,
                  images: (0..<images).map { "img\($0).png" }, audios: (0..<audios).map { "a\($0).wav" },
                  videos: (0..<videos).map { "v\($0).mp4" },
                  turns: turns ?? [Turn(fromHuman: true, value: "q\(i)"), Turn(fromHuman: false, value: "a\(i)")], family: nil)
    }

    /// 23 samples over five modality groups, interleaved.
    lazy var mixed: [RawSample] = (0..<23).map { i in
        switch i % 5 {
        case 0: return sample(i)
        case 1: return sample(i, images: 1)
        case 2: return sample(i, audios: 1)
        case 3: return sample(i, videos: 1)
        default: return sample(i, images: 1, audios: 1)
        }
    }

    // MARK: ModalityBatcher

    func testEveryBatchHoldsOneGroupAndEverySampleAppearsOncePerEpoch() {
        for batchSize in [1, 2, 3, 4, 7, 50] {
            let b = ModalityBatcher(samples: mixed, batchSize: batchSize, seed: 42)
            XCTAssertEqual(Set(b.groups.keys), ["text", "image", "audio", "video", "image+audio"])
            for epoch in 0..<4 {
                let batches = b.batches(epoch: epoch)
                for batch in batches {
                    XCTAssertFalse(batch.isEmpty)
                    XCTAssertLessThanOrEqual(batch.count, batchSize)
                    XCTAssertEqual(Set(batch.map { mixed[$0].modalityGroup }).count, 1, "batch \(batch) mixes groups")
                }
                XCTAssertEqual(batches.flatMap { $0 }.sorted(), Array(0..<23), "epoch \(epoch), batch \(batchSize)")
                // Only a group's last batch may be short.
                let short = batches.filter { $0.count < batchSize }
                XCTAssertLessThanOrEqual(short.count, b.groups.count)
                XCTAssertEqual(Set(short.map { mixed[$0[0]].modalityGroup }).count, short.count)
            }
        }
    }

    func testOrderDependsOnlyOnSeedAndEpoch() {
        let b = ModalityBatcher(samples: mixed, batchSize: 2, seed: 42)
        let again = ModalityBatcher(samples: mixed, batchSize: 2, seed: 42)
        for epoch in 0..<5 { XCTAssertEqual(b.batches(epoch: epoch), again.batches(epoch: epoch)) }
        XCTAssertEqual(b.batches(epoch: 3), b.batches(epoch: 3))
        let epochs = (0..<5).map { b.batches(epoch: $0) }
        XCTAssertEqual(Set(epochs.map { "\($0)" }).count, 5, "every epoch has its own order")
        XCTAssertNotEqual(b.batches(epoch: 0), ModalityBatcher(samples: mixed, batchSize: 2, seed: 43).batches(epoch: 0))
        // Shuffled, not in data order.
        XCTAssertNotEqual(b.batches(epoch: 0).flatMap { $0 }, b.batches(epoch: 0).flatMap { $0 }.sorted())
    }

    /// `--media-words-only` skips the text group: the other groups' batches keep their order.
    func testSkippedGroupsLeaveTheOthersInOrder() {
        let all = ModalityBatcher(samples: mixed, batchSize: 2, seed: 42)
        let media = ModalityBatcher(samples: mixed, batchSize: 2, seed: 42, skipping: ["text"])
        for epoch in 0..<3 {
            let kept = media.batches(epoch: epoch)
            XCTAssertEqual(kept, all.batches(epoch: epoch).filter { mixed[$0[0]].modalityGroup != "text" })
            XCTAssertFalse(kept.isEmpty)
            XCTAssertFalse(kept.contains { mixed[$0[0]].modalityGroup == "text" })
        }
    }

    func testBatchesAreFixedForAGivenSeed() {
        // Pins the generator (Xoshiro256 + Fisher–Yates): a change of shuffling would make a run
        // resumed from an older checkpoint see other batches than the run it continues.
        let b = ModalityBatcher(samples: (0..<6).map { sample($0) }, batchSize: 2, seed: 0)
        let e0 = b.batches(epoch: 0), e1 = b.batches(epoch: 1)
        XCTAssertEqual(e0, [[1, 0], [3, 4], [5, 2]])
        XCTAssertEqual(e1, [[2, 4], [0, 1], [3, 5]])
        XCTAssertEqual(e0, ModalityBatcher(samples: (0..<6).map { sample($0) }, batchSize: 2, seed: 0).batches(epoch: 0))
        XCTAssertNotEqual(e0, e1)
    }

    // MARK: SampleEncoder

    static let tokenizer: Tokenizer = try! Tokenizer(directory: TrainFixture.model)

    func testImageSampleMatchesTheInferencePrompt() throws {
        let tok = Self.tokenizer
        let eos = try XCTUnwrap(tok.eosTokenId)
        let s = sample(0, images: 1, turns: [Turn(fromHuman: true, value: "<image>\nWhat colour is the shape?"),
                                             Turn(fromHuman: false, value: "red")])
        let (ids, labels) = try SampleEncoder(tokenizer: tok).encode(s)
        XCTAssertEqual(ids.count, labels.count)
        let prompt = tok.encodeWithPlaceholders(ChatTemplate.vicuna(query: "What colour is the shape?", images: 1))
        XCTAssertEqual(Array(ids.prefix(prompt.count)), prompt, "training sees the prompt inference builds")
        XCTAssertEqual(ids.first, tok.bosTokenId)
        XCTAssertEqual(ids.filter { $0 == Placeholder.image.rawValue }.count, 1)
        XCTAssertTrue(labels.prefix(prompt.count).allSatisfy { $0 == TrunkBatch.ignoreIndex })
        let answer = Array(ids[prompt.count...]), answerLabels = Array(labels[prompt.count...])
        XCTAssertEqual(answerLabels, answer, "the answer and its EOS are learned")
        XCTAssertEqual(answer.last, eos)
        XCTAssertEqual(ids.last, eos)
        XCTAssertGreaterThan(answer.count, 1)
        XCTAssertFalse(answer.dropLast().contains(eos))
        XCTAssertEqual(tok.decode(Array(answer.dropLast())).trimmingCharacters(in: .whitespaces), "red")
        // The answer tokens are those generation would produce after the prompt.
        let full = tok.encodeWithPlaceholders(ChatTemplate.vicuna(query: "What colour is the shape?", images: 1) + " red")
        XCTAssertEqual(Array(ids.dropLast()), full)
    }

    func testTwoRoundsLearnBothAnswersOnly() throws {
        let tok = Self.tokenizer
        let eos = try XCTUnwrap(tok.eosTokenId)
        let s = sample(0, images: 1, turns: [Turn(fromHuman: true, value: "<image>\nWhat colour is the shape?"),
                                             Turn(fromHuman: false, value: "red"),
                                             Turn(fromHuman: true, value: "And its size?"),
                                             Turn(fromHuman: false, value: "small")])
        let (ids, labels) = try SampleEncoder(tokenizer: tok).encode(s)
        XCTAssertEqual(ids.count, labels.count)
        // Learned positions form exactly two runs, each an answer ending in EOS, with the label equal to the id.
        var runs: [[Int]] = [], current: [Int] = []
        for (id, label) in zip(ids, labels) {
            if label == TrunkBatch.ignoreIndex {
                if !current.isEmpty { runs.append(current); current = [] }
            } else {
                XCTAssertEqual(label, id)
                current.append(id)
            }
        }
        if !current.isEmpty { runs.append(current) }
        XCTAssertEqual(runs.count, 2, "\(labels)")
        guard runs.count == 2 else { return }
        XCTAssertEqual(runs.map(\.last), [eos, eos])
        XCTAssertEqual(runs.map { tok.decode(Array($0.dropLast())).trimmingCharacters(in: .whitespaces) }, ["red", "small"])
        XCTAssertEqual(labels.last, eos)
        // The second round's prompt ("USER: … ASSISTANT:", no BOS) sits between the answers, unlearned.
        let first = tok.encodeWithPlaceholders(ChatTemplate.vicuna(query: "What colour is the shape?", images: 1))
        var second = tok.encodeWithPlaceholders("USER: And its size? ASSISTANT:")
        if second.first == tok.bosTokenId { second.removeFirst() }
        XCTAssertEqual(ids.count, first.count + runs[0].count + second.count + runs[1].count)
        let secondStart = first.count + runs[0].count
        XCTAssertEqual(Array(ids[secondStart..<secondStart + second.count]), second)
        XCTAssertEqual(ids.filter { $0 == tok.bosTokenId }.count, 1)
    }

    func testAudioAndVideoPlaceholdersAndLimits() throws {
        let tok = Self.tokenizer
        let s = sample(0, audios: 1, videos: 1, turns: [Turn(fromHuman: true, value: "<audio>\n<video>\nWhat?"),
                                                        Turn(fromHuman: false, value: "a dog")])
        let (ids, labels) = try SampleEncoder(tokenizer: tok).encode(s)
        let prompt = tok.encodeWithPlaceholders(ChatTemplate.vicuna(query: "What?", audios: 1, videos: 1))
        XCTAssertEqual(Array(ids.prefix(prompt.count)), prompt)
        XCTAssertEqual(ids.filter { $0 == Placeholder.audio.rawValue }.count, 1)
        XCTAssertEqual(ids.filter { $0 == Placeholder.video.rawValue }.count, 1)
        XCTAssertFalse(labels.contains { $0 < 0 && $0 != TrunkBatch.ignoreIndex }, "placeholders are never learned")
        // Too long for the limit: a data error naming the sample.
        let e = trainingError { _ = try SampleEncoder(tokenizer: tok, maxTokens: ids.count - 1).encode(s) }
        guard case .malformedData("data.jsonl", 1, _)? = e else { return XCTFail("got \(String(describing: e))") }
        XCTAssertNoThrow(try SampleEncoder(tokenizer: tok, maxTokens: ids.count).encode(s))
    }

    func testTwoAnswersInARowIsADataError() throws {
        let s = sample(3, turns: [Turn(fromHuman: true, value: "q"), Turn(fromHuman: false, value: "a"), Turn(fromHuman: false, value: "b")])
        let e = trainingError { _ = try SampleEncoder(tokenizer: Self.tokenizer).encode(s) }
        guard case .malformedData("data.jsonl", 4, _)? = e else { return XCTFail("got \(String(describing: e))") }
    }
}
