/// SHA-256 as FIPS 180-4 defines it (section 6.2), for hashing API tokens.
///
/// The toolchain's Foundation on Linux has no CryptoKit and the package takes no
/// dependencies, so the hash is written here. It hashes a buffer in one call without
/// touching the heap: the message schedule and the final padded blocks live in
/// temporary stack allocations, so hashing a token on every request costs no malloc.
public enum SHA256 {
    /// A 256-bit digest as four big-endian 64-bit words (the digest's bytes in order).
    ///
    /// Equality (`==`) is the constant-time comparison: it combines every word before
    /// looking at the result, so how long it takes does not depend on where two
    /// digests first differ.
    public struct Digest: Sendable, Hashable, CustomStringConvertible {
        public var words: (UInt64, UInt64, UInt64, UInt64)

        public init(words: (UInt64, UInt64, UInt64, UInt64)) {
            self.words = words
        }

        /// Parses 64 hex digits (either case); `nil` for anything else.
        public init?(hex: some StringProtocol) {
            let utf8 = Array(hex.utf8)
            guard utf8.count == 64 else { return nil }
            var parsed: [UInt64] = [0, 0, 0, 0]
            for (index, byte) in utf8.enumerated() {
                guard let value = HexDigit.value(byte) else { return nil }
                parsed[index / 16] = parsed[index / 16] << 4 | UInt64(value)
            }
            words = (parsed[0], parsed[1], parsed[2], parsed[3])
        }

        /// 64 lower-case hex digits, as `sha256sum` prints them.
        public var hex: String {
            String(unsafeUninitializedCapacity: 64) { buffer in
                for (index, word) in [words.0, words.1, words.2, words.3].enumerated() {
                    HexDigit.write(
                        word, into: UnsafeMutableBufferPointer(rebasing: buffer[(index * 16)..<(index * 16 + 16)]))
                }
                return 64
            }
        }

        public var description: String { hex }

        /// Constant-time equality: no early exit, one branch on the combined difference.
        public static func == (lhs: Digest, rhs: Digest) -> Bool {
            let difference =
                (lhs.words.0 ^ rhs.words.0) | (lhs.words.1 ^ rhs.words.1) | (lhs.words.2 ^ rhs.words.2)
                | (lhs.words.3 ^ rhs.words.3)
            return difference == 0
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(words.0)
            hasher.combine(words.1)
            hasher.combine(words.2)
            hasher.combine(words.3)
        }
    }

    /// The digest of `bytes`.
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> Digest {
        var state = initialState
        let whole = bytes.count / 64
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { schedule in
            for block in 0..<whole {
                compress(&state, UnsafeRawBufferPointer(rebasing: bytes[block * 64..<block * 64 + 64]), schedule)
            }
            // The rest, the 0x80 marker, zeros and the message length in bits as a
            // big-endian 64-bit number: one block, or two when fewer than 9 bytes
            // remain for the marker and the length (FIPS 180-4 section 5.1.1).
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 128) { tail in
                let rest = bytes.count - whole * 64
                let blocks = rest + 9 <= 64 ? 1 : 2
                let padded = UnsafeMutableRawBufferPointer(
                    rebasing: UnsafeMutableRawBufferPointer(tail)[0..<blocks * 64])
                padded.initializeMemory(as: UInt8.self, repeating: 0)
                if rest > 0 {
                    padded.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[whole * 64..<bytes.count]))
                }
                padded[rest] = 0x80
                let bitLength = UInt64(bytes.count) &* 8
                for index in 0..<8 {
                    padded[blocks * 64 - 1 - index] = UInt8(truncatingIfNeeded: bitLength >> UInt64(8 * index))
                }
                for block in 0..<blocks {
                    compress(
                        &state, UnsafeRawBufferPointer(rebasing: padded[block * 64..<block * 64 + 64]), schedule)
                }
            }
        }
        return Digest(
            words: (
                UInt64(state.0) << 32 | UInt64(state.1), UInt64(state.2) << 32 | UInt64(state.3),
                UInt64(state.4) << 32 | UInt64(state.5), UInt64(state.6) << 32 | UInt64(state.7)
            ))
    }

    /// The digest of the bytes of `bytes`.
    public static func hash(_ bytes: some Sequence<UInt8>) -> Digest {
        let array = Array(bytes)
        return array.withUnsafeBytes { hash($0) }
    }

    /// The digest of a string's UTF-8.
    public static func hash(utf8 text: String) -> Digest {
        var text = text
        return text.withUTF8 { hash(UnsafeRawBufferPointer($0)) }
    }

    typealias State = (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)

    /// H(0): the first 32 bits of the fractional parts of the square roots of the
    /// first eight primes (section 5.3.3).
    static let initialState: State = (
        0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19
    )

    /// K: the first 32 bits of the fractional parts of the cube roots of the first
    /// 64 primes (section 4.2.2).
    static let roundConstants: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]

    /// One 64-byte block into the state (section 6.2.2, steps 1-4).
    private static func compress(
        _ state: inout State, _ block: UnsafeRawBufferPointer, _ schedule: UnsafeMutableBufferPointer<UInt32>
    ) {
        for index in 0..<16 {
            schedule[index] =
                UInt32(block[index * 4]) << 24 | UInt32(block[index * 4 + 1]) << 16
                | UInt32(block[index * 4 + 2]) << 8 | UInt32(block[index * 4 + 3])
        }
        for index in 16..<64 {
            let w15 = schedule[index - 15]
            let w2 = schedule[index - 2]
            let sigma0 = rotate(w15, 7) ^ rotate(w15, 18) ^ (w15 >> 3)
            let sigma1 = rotate(w2, 17) ^ rotate(w2, 19) ^ (w2 >> 10)
            schedule[index] = schedule[index - 16] &+ sigma0 &+ schedule[index - 7] &+ sigma1
        }
        var (a, b, c, d, e, f, g, h) = state
        roundConstants.withUnsafeBufferPointer { constants in
            // Eight rounds per pass, each naming the working variables in the order
            // the previous one left them, so no round moves them around.
            var index = 0
            while index < 64 {
                round(a, b, c, &d, e, f, g, &h, constants[index] &+ schedule[index])
                round(h, a, b, &c, d, e, f, &g, constants[index + 1] &+ schedule[index + 1])
                round(g, h, a, &b, c, d, e, &f, constants[index + 2] &+ schedule[index + 2])
                round(f, g, h, &a, b, c, d, &e, constants[index + 3] &+ schedule[index + 3])
                round(e, f, g, &h, a, b, c, &d, constants[index + 4] &+ schedule[index + 4])
                round(d, e, f, &g, h, a, b, &c, constants[index + 5] &+ schedule[index + 5])
                round(c, d, e, &f, g, h, a, &b, constants[index + 6] &+ schedule[index + 6])
                round(b, c, d, &e, f, g, h, &a, constants[index + 7] &+ schedule[index + 7])
                index += 8
            }
        }
        state = (
            state.0 &+ a, state.1 &+ b, state.2 &+ c, state.3 &+ d, state.4 &+ e, state.5 &+ f, state.6 &+ g,
            state.7 &+ h
        )
    }

    /// One round (section 6.2.2 step 3) with the working variables passed in their
    /// current roles: `d` and `h` are the two it changes.
    @inline(__always)
    private static func round(
        _ a: UInt32, _ b: UInt32, _ c: UInt32, _ d: inout UInt32, _ e: UInt32, _ f: UInt32, _ g: UInt32,
        _ h: inout UInt32, _ constantAndWord: UInt32
    ) {
        let choose = (e & f) ^ (~e & g)
        let majority = (a & b) ^ (a & c) ^ (b & c)
        let temp1 = h &+ (rotate(e, 6) ^ rotate(e, 11) ^ rotate(e, 25)) &+ choose &+ constantAndWord
        let temp2 = (rotate(a, 2) ^ rotate(a, 13) ^ rotate(a, 22)) &+ majority
        d = d &+ temp1
        h = temp1 &+ temp2
    }

    @inline(__always)
    private static func rotate(_ value: UInt32, _ count: UInt32) -> UInt32 {
        (value &>> count) | (value &<< (32 &- count))
    }
}
