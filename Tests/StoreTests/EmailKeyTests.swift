import Foundation
import Testing

@testable import Store

/// Keys compared by their UTF-8 bytes, as SQLite's UNIQUE compares them: `String`'s
/// `==` is canonical equivalence, under which a precomposed and a decomposed `é`
/// are already equal.
func keyBytes(_ email: String) -> [UInt8] { Array(EmailKey.of(email).utf8) }

/// Runs `python3 -c script` and returns its standard output.
func runPython(_ script: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script]
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw CocoaError(.executableLoad) }
    return String(decoding: data, as: UTF8.self)
}

/// Unicode caseless matching (SPEC §2): NFC, full case folding, NFC.
@Suite struct EmailKeyTests {
    /// The pairs an outside review got accepted as two users with `lowercased()` keys.
    @Test(arguments: [
        ("caf\u{E9}@x.io", "cafe\u{301}@x.io"),  // precomposed and decomposed é
        ("STRASSE@x.io", "stra\u{DF}e@x.io"),  // ß folds to ss
        ("STRA\u{1E9E}E@x.io", "strasse@x.io"),  // capital sharp s too
        ("\u{17F}am@x.io", "sam@x.io"),  // long s
        ("\u{FB01}x@x.io", "FIX@x.io"),  // the ﬁ ligature folds to fi
        ("CAF\u{C9}@X.IO", "cafe\u{301}@x.io"),
        // Capital sigma and final sigma both fold to σ.
        (
            "\u{3A3}\u{399}\u{3A3}\u{3A5}\u{3A6}\u{39F}\u{3A3}@x.gr",
            "\u{3C3}\u{3B9}\u{3C3}\u{3C5}\u{3C6}\u{3BF}\u{3C2}@x.gr"
        ),
        ("J\u{30C}@x.io", "\u{1F0}@x.io"),  // folding uncovers a composition
    ])
    func caselessEqualEmailsShareAKey(_ pair: (String, String)) {
        #expect(keyBytes(pair.0) == keyBytes(pair.1), "\(pair.0.debugDescription) \(pair.1.debugDescription)")
    }

    @Test func foldedKeysAreNFC() {
        #expect(keyBytes("CAFE\u{301}@x.io") == Array("caf\u{E9}@x.io".utf8))
        #expect(keyBytes("STRA\u{DF}E@x.io") == Array("strasse@x.io".utf8))
        #expect(keyBytes("\u{130}@x.io") == Array("i\u{307}@x.io".utf8))  // İ: full folding, not Turkic
    }

    /// Different emails stay different: folding is not stripping accents, nor Turkic.
    @Test(arguments: [
        ("sam@x.io", "s\u{101}m@x.io"),
        ("\u{131}@x.io", "i@x.io"),  // dotless i folds to itself
        ("sam@x.io", "sam\u{200B}@x.io"),  // the key keeps format characters (validation refuses them)
        ("\u{FB01}@x.io", "fl@x.io"),
    ])
    func differentEmailsKeepDifferentKeys(_ pair: (String, String)) {
        #expect(keyBytes(pair.0) != keyBytes(pair.1))
    }

    @Test func asciiIsLowerCasedOnly() {
        #expect(EmailKey.of("Sam.O'Neil+Tag@Example.COM") == "sam.o'neil+tag@example.com")
        #expect(EmailKey.of("sam@example.com") == "sam@example.com")
        #expect(EmailKey.of("") == "")
        let ascii = (0..<128).map { Character(Unicode.Scalar(UInt8($0))) }
        let all = String(ascii)
        #expect(EmailKey.of(all) == all.lowercased())
    }

    /// Every Unicode scalar on its own, and every canonical decomposition, keyed as
    /// Python keys it (the definition in SPEC §2). Only characters assigned by both
    /// Python's Unicode and the table's are compared: Python treats later ones as
    /// unassigned, and a table of an older Unicode does not fold them (regenerate it
    /// with scripts/gen_case_folding.py).
    @Test func agreesWithPythonOnEveryScalar() throws {
        let script = #"""
            import unicodedata as u
            def key(s): return u.normalize("NFC", u.normalize("NFC", s).casefold())
            def hexes(s): return " ".join("%x" % ord(c) for c in s)
            print(u.unidata_version)
            for v in range(0x110000):
                if 0xD800 <= v <= 0xDFFF: continue
                c = chr(v)
                if key(c) != c: print("S", "%x" % v, hexes(key(c)), sep="\t")
                d = u.normalize("NFD", c)
                if d != c: print("D", hexes(d), hexes(key(d)), sep="\t")
                if c.casefold() != c:
                    for mark in ("\u0301", "\u0345", "\u0307"):
                        print("D", hexes(c + mark), hexes(key(c + mark)), sep="\t")
            """#
        let lines = try runPython(script).split(separator: "\n")
        func majorMinor(_ version: some StringProtocol) -> (Int, Int)? {
            let parts = version.split(separator: ".").compactMap { Int($0) }
            return parts.count == 3 ? (parts[0], parts[1]) : nil
        }
        let python = try #require(majorMinor(lines[0]))
        let table = try #require(majorMinor(EmailKey.unicodeVersion))
        let known = python < table ? python : table
        func isKnown(_ scalar: Unicode.Scalar) -> Bool {
            guard let age = scalar.properties.age else { return true }  // unassigned in both
            return (age.major, age.minor) <= known
        }

        func scalars(_ hexes: Substring) -> [UInt32] { hexes.split(separator: " ").map { UInt32($0, radix: 16)! } }
        func string(_ values: [UInt32]) -> String {
            var view = String.UnicodeScalarView()
            for value in values { view.append(Unicode.Scalar(value)!) }
            return String(view)
        }
        var singles: [UInt32: [UInt32]] = [:]
        var sequences = 0
        var mismatches: [String] = []
        for line in lines.dropFirst() {
            let fields = line.split(separator: "\t")
            if fields[0] == "S" {
                singles[UInt32(fields[1], radix: 16)!] = scalars(fields[2])
            } else {
                let input = string(scalars(fields[1]))
                guard input.unicodeScalars.allSatisfy(isKnown) else { continue }
                sequences += 1
                let key = EmailKey.of(input).unicodeScalars.map(\.value)
                if key != scalars(fields[2]) { mismatches.append("\(fields[1]) -> \(key) (python \(fields[2]))") }
            }
        }
        #expect(singles.count > 2500 && sequences > 15_000)

        var compared = 0
        for value in UInt32(0)...0x10FFFF {
            guard let scalar = Unicode.Scalar(value) else { continue }
            guard isKnown(scalar) else { continue }
            compared += 1
            let key = EmailKey.of(String(scalar)).unicodeScalars.map(\.value)
            if key != singles[value] ?? [value] {
                mismatches.append("\(String(value, radix: 16)) -> \(key) (python \(singles[value] ?? [value]))")
            }
        }
        #expect(compared > 1_000_000)
        #expect(mismatches.isEmpty, "\(mismatches.count) differ, first: \(mismatches.prefix(20))")
    }
}
