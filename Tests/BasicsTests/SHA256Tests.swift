import Testing

@testable import Basics

/// SHA-256 against FIPS 180-4's examples and lengths around the padding boundaries,
/// and the digest's constant-time equality.
@Suite struct SHA256Tests {
    /// The NIST examples (FIPS 180-4 / CSRC "SHA256.pdf", "SHA2 additional examples").
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        ),
        (
            "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
        ),
    ])
    func nistExamples(message: String, expected: String) {
        #expect(SHA256.hash(utf8: message).hex == expected)
    }

    @Test func aMillionAs() {
        let message = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        #expect(SHA256.hash(message).hex == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// Lengths where the padding takes one block or spills into a second one
    /// (expected values from Python's hashlib over bytes (i * 7 + 3) % 256).
    @Test(arguments: [
        (55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"),
        (56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"),
        (57, "35df609437dcfea3279283ab79fd554e2bf78f8f7ae2de532d8ee300b09e8f73"),
        (63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"),
        (64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"),
        (65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"),
        (119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"),
        (120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"),
        (128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"),
    ])
    func paddingBoundaries(length: Int, expected: String) {
        let message = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
        #expect(SHA256.hash(message).hex == expected)
    }

    @Test func hexRoundTripsInEitherCase() throws {
        let digest = SHA256.hash(utf8: "abc")
        #expect(SHA256.Digest(hex: digest.hex) == digest)
        #expect(SHA256.Digest(hex: digest.hex.uppercased()) == digest)
    }

    @Test(arguments: [
        "",
        "ba7816bf",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",  // 63 digits
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0",  // 65 digits
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ag",  // not hex
        " a7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015\u{E9}",
    ])
    func malformedHexIsRefused(text: String) {
        #expect(SHA256.Digest(hex: text) == nil)
    }

    /// Equality compares every bit: digests that differ in any one bit of any word
    /// are unequal, and a digest equals only itself.
    @Test func equalityDetectsADifferenceInEveryBit() {
        let digest = SHA256.hash(utf8: "token")
        #expect(digest == SHA256.hash(utf8: "token"))
        for word in 0..<4 {
            for bit in 0..<64 {
                var other = digest
                let flip = UInt64(1) << UInt64(bit)
                switch word {
                case 0: other.words.0 ^= flip
                case 1: other.words.1 ^= flip
                case 2: other.words.2 ^= flip
                default: other.words.3 ^= flip
                }
                #expect(other != digest, "bit \(bit) of word \(word)")
            }
        }
    }
}
