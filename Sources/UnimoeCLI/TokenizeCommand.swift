import Foundation
import Options
import Tokenizer

/// `unimoe tokenize --tokenizer DIR --text TEXT [--no-special]`: prints `{"ids": [...]}`, the ids the
/// `tokenizers` library gives for the text (BOS and other template tokens unless `--no-special`).
public enum TokenizeCommand: Command {
    public static let name = "tokenize"
    public static let usage = "tokenize --tokenizer DIR --text TEXT [--no-special]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["tokenizer", "text"], flags: ["no-special"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        let dir = try a.required("tokenizer")
        let text = try a.required("text")
        let tokenizer = try Tokenizer(directory: dir)
        printLine(jsonLine(["ids": tokenizer.encode(text, addSpecialTokens: !a.has("no-special"))]))
    }
}

/// `unimoe detokenize --tokenizer DIR --ids 1,306,... [--keep-special]`: prints `{"text": "..."}`.
/// Special tokens are skipped (as `tokenizers`' decode does by default) unless `--keep-special`.
public enum DetokenizeCommand: Command {
    public static let name = "detokenize"
    public static let usage = "detokenize --tokenizer DIR --ids 1,306,... [--keep-special]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["tokenizer", "ids"], flags: ["keep-special"])
        guard a.positional.isEmpty else { throw UsageError("unexpected argument '\(a.positional[0])'") }
        let dir = try a.required("tokenizer")
        guard let ids = try a.intList("ids") else { throw UsageError("missing required option --ids") }
        let tokenizer = try Tokenizer(directory: dir)
        printLine(jsonLine(["text": tokenizer.decode(ids, skipSpecialTokens: !a.has("keep-special"))]))
    }
}
