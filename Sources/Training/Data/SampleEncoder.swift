import Foundation
import Tokenizer

/// Turns a sample's conversation into token ids and labels with the Vicuna v1 template the model
/// is asked with at inference (`ChatTemplate.vicuna`): the first round is the system line,
/// ` USER: ` + the human turn + ` ASSISTANT:`; the answer follows as the tokenizer splits
/// "prompt answer" (so training sees exactly the tokens generation produces), then EOS. Later rounds
/// start with `USER: `. Only answers and their EOS are learned (labels -100 elsewhere), as the
/// reference's answers-only loss.
public struct SampleEncoder: Sendable {
    public let tokenizer: Tokenizer
    /// Longest sequence kept (tokens, media placeholders counted as one); longer samples are errors.
    public var maxTokens: Int

    public init(tokenizer: Tokenizer, maxTokens: Int = 2048) {
        self.tokenizer = tokenizer
        self.maxTokens = maxTokens
    }

    public func encode(_ s: RawSample) throws -> (ids: [Int], labels: [Int]) {
        guard let eos = tokenizer.eosTokenId else {
            throw TrainingError.unsupportedModel("the tokenizer has no EOS token to end answers with")
        }
        var ids: [Int] = [], labels: [Int] = []
        var i = 0, round = 0
        while i < s.turns.count {
            guard s.turns[i].fromHuman else {
                throw TrainingError.malformedData(file: s.file, line: s.line, reason: "turn \(i): two answers in a row")
            }
            let human = s.turns[i].value
            let prompt = (round == 0 ? ChatTemplate.vicunaSystem + " USER: " : "USER: ") + human + " ASSISTANT:"
            var p = tokenizer.encodeWithPlaceholders(prompt)
            if round > 0, let bos = tokenizer.bosTokenId, p.first == bos { p.removeFirst() }
            ids += p
            labels += [Int](repeating: TrunkBatch.ignoreIndex, count: p.count)
            if i + 1 < s.turns.count {
                let answer = s.turns[i + 1].value
                var pa = tokenizer.encodeWithPlaceholders(prompt + " " + answer)
                if round > 0, let bos = tokenizer.bosTokenId, pa.first == bos { pa.removeFirst() }
                var answerIds: [Int]
                if pa.count >= p.count && Array(pa[0..<p.count]) == p {
                    answerIds = Array(pa[p.count...])
                } else {
                    // The split merged across the boundary: tokenise the answer on its own.
                    answerIds = tokenizer.encode(answer, addSpecialTokens: false)
                }
                answerIds.append(eos)
                ids += answerIds
                labels += answerIds
            }
            i += 2
            round += 1
        }
        guard ids.count <= maxTokens else {
            throw TrainingError.malformedData(file: s.file, line: s.line, reason: "\(ids.count) tokens, more than the limit \(maxTokens)")
        }
        return (ids, labels)
    }
}
