import XCTest
import Options

final class ArgumentsTests: XCTestCase {
    func parse(_ args: [String]) throws -> Arguments {
        try Arguments(args, valued: ["model", "max-tokens", "image", "temperature", "ids"], flags: ["verbose", "json"])
    }

    func assertUsage(_ args: [String], _ phrase: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try parse(args), file: file, line: line) { e in
            guard let u = e as? UsageError else { return XCTFail("not a UsageError: \(e)", file: file, line: line) }
            XCTAssertTrue(u.message.contains(phrase), "'\(u.message)' should mention '\(phrase)'", file: file, line: line)
            XCTAssertEqual("\(u)", u.message, file: file, line: line)
        }
    }

    func testValuesFlagsAndPositionals() throws {
        let a = try parse(["in.txt", "--model", "dir", "--verbose", "--max-tokens=32", "more", "-", "--json"])
        XCTAssertEqual(a.value("model"), "dir")
        XCTAssertEqual(a.value("max-tokens"), "32")
        XCTAssertEqual(try a.int("max-tokens"), 32)
        XCTAssertTrue(a.has("verbose"))
        XCTAssertTrue(a.has("json"))
        XCTAssertEqual(a.positional, ["in.txt", "more", "-"])
        XCTAssertNil(a.value("image"))
        XCTAssertEqual(a.all("image"), [])
        XCTAssertFalse(try parse([]).has("verbose"))
    }

    func testRepeatedOptionsKeepOrderAndLastWins() throws {
        let a = try parse(["--image", "a.png", "--image=b.png", "--image", "c.png", "--model", "x", "--model", "y"])
        XCTAssertEqual(a.all("image"), ["a.png", "b.png", "c.png"])
        XCTAssertEqual(a.value("model"), "y")
    }

    func testInlineValuesMayContainEqualsAndBeEmpty() throws {
        let a = try parse(["--model=a=b", "--image="])
        XCTAssertEqual(a.value("model"), "a=b")
        XCTAssertEqual(a.value("image"), "")
        XCTAssertEqual(try parse(["--model=--odd"]).value("model"), "--odd")
    }

    func testDoubleDashEndsOptions() throws {
        let a = try parse(["--verbose", "--", "--model", "x", "--nope"])
        XCTAssertTrue(a.has("verbose"))
        XCTAssertNil(a.value("model"))
        XCTAssertEqual(a.positional, ["--model", "x", "--nope"])
    }

    func testNegativeNumbersAreValues() throws {
        let a = try parse(["--temperature", "-0.5", "--max-tokens", "-3"])
        XCTAssertEqual(try a.double("temperature"), -0.5)
        XCTAssertEqual(try a.int("max-tokens"), -3)
    }

    func testUnknownOption() {
        assertUsage(["--modle", "x"], "unknown option --modle")
        assertUsage(["--verbose=yes"], "option --verbose takes no value")
    }

    func testMissingValue() {
        assertUsage(["--model"], "option --model needs a value")
        assertUsage(["--model", "--verbose"], "option --model needs a value, got option --verbose")
    }

    func testRequired() throws {
        XCTAssertEqual(try parse(["--model", "m"]).required("model"), "m")
        XCTAssertThrowsError(try parse([]).required("model")) { e in
            XCTAssertEqual((e as? UsageError)?.message, "missing required option --model")
        }
    }

    func testIntegers() throws {
        XCTAssertEqual(try parse([]).int("max-tokens", default: 16), 16)
        XCTAssertNil(try parse([]).int("max-tokens"))
        XCTAssertEqual(try parse(["--max-tokens", "5"]).int("max-tokens", range: 1...10), 5)
        for bad in ["abc", "1.5", "", "0x10", "99999999999999999999", " 3"] {
            XCTAssertThrowsError(try parse(["--max-tokens", bad]).int("max-tokens"), bad) { e in
                XCTAssertEqual((e as? UsageError)?.message, "--max-tokens needs an integer, got '\(bad)'")
            }
        }
        XCTAssertThrowsError(try parse(["--max-tokens", "11"]).int("max-tokens", range: 1...10)) { e in
            XCTAssertEqual((e as? UsageError)?.message, "--max-tokens must be in 1...10, got 11")
        }
    }

    func testDoubles() throws {
        XCTAssertEqual(try parse(["--temperature", "0.7"]).double("temperature"), 0.7)
        XCTAssertEqual(try parse([]).double("temperature", default: 1), 1)
        for bad in ["warm", "nan", "inf", "-inf", ""] {
            XCTAssertThrowsError(try parse(["--temperature", bad]).double("temperature"), bad) { e in
                XCTAssertEqual((e as? UsageError)?.message, "--temperature needs a number, got '\(bad)'")
            }
        }
        XCTAssertThrowsError(try parse(["--temperature", "3"]).double("temperature", range: 0...2)) { e in
            XCTAssertTrue("\(e)".contains("must be in 0.0...2.0, got 3.0"), "\(e)")
        }
    }

    func testIntLists() throws {
        XCTAssertEqual(try parse(["--ids", "1,5, 9"]).intList("ids"), [1, 5, 9])
        XCTAssertEqual(try parse(["--ids", "-2"]).intList("ids"), [-2])
        XCTAssertNil(try parse([]).intList("ids"))
        for (bad, part) in [("1,,2", ""), ("1,x", "x"), ("3,", "")] {
            XCTAssertThrowsError(try parse(["--ids", bad]).intList("ids"), bad) { e in
                XCTAssertEqual((e as? UsageError)?.message, "--ids needs comma-separated integers, got '\(part)'")
            }
        }
    }
}
