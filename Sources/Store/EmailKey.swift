/// The key emails are unique by (SPEC §2): Unicode caseless matching, the same on every
/// backend.
///
/// The key is NFC, then full case folding (CaseFolding.txt statuses C and F), then NFC
/// again: `unicodedata.normalize("NFC", unicodedata.normalize("NFC", s).casefold())` in
/// Python. So `café` written precomposed or decomposed, `STRASSE` and `straße`, `ſam`
/// and `sam` are one email. Lower-casing is not enough: it leaves `ß` and `ſ` as they
/// are, and compares code points, not canonically equivalent text. The first NFC gives
/// canonically equivalent spellings one form before folding; the second composes what
/// folding decomposed or uncovered (`J` + combining caron folds to `ǰ`, one scalar).
///
/// The folding comes from a table generated from Python (`CaseFoldingTable`, Unicode
/// 14.0): on Linux the toolchain has no full case folding. Foundation's
/// `folding(options: .caseInsensitive, locale: nil)` lower-cases Cherokee (case
/// folding maps it to capitals) and leaves U+1C80–U+1C88 as they are; the standard
/// library maps case (lower-casing), it does not fold. NFC is the standard library's
/// own normaliser, the one `String` comparison uses (`_nfcCodeUnits`): it agrees with
/// Foundation's `precomposedStringWithCanonicalMapping` and with Python on every
/// character of Unicode 14, and is about four times faster than Foundation's.
///
/// The stored email itself is never changed: only this key is folded.
public enum EmailKey {
    /// The Unicode version of the case-folding table.
    public static let unicodeVersion = CaseFoldingTable.unicodeVersion

    /// The key of `email`.
    ///
    /// ASCII text is already NFC and folds by lower-casing A–Z, so an ASCII email (the
    /// common case, on every POST /add-user and PATCH) is read once, in place, and
    /// returned as it is when it has no capital, else lower-cased with one allocation.
    public static func of(_ email: String) -> String {
        // A native string's bytes are contiguous: scanned in place, not through the
        // UTF-8 view's generic iterator.
        let kind = email.utf8.withContiguousStorageIfAvailable(asciiKind) ?? asciiKind(Array(email.utf8))
        switch kind {
        case .lowercaseASCII: return email
        case .ascii: return email.lowercased()
        case .unicode: return unicodeKey(email)
        }
    }

    private enum Kind { case lowercaseASCII, ascii, unicode }

    private static func asciiKind<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> Kind {
        var hasCapital = false
        for byte in bytes {
            if byte >= 0x80 { return .unicode }
            if byte &- UInt8(ascii: "A") < 26 { hasCapital = true }
        }
        return hasCapital ? .ascii : .lowercaseASCII
    }

    /// The key of any text: NFC, full case folding, NFC.
    static func unicodeKey(_ text: String) -> String {
        let composed = nfc(text)
        var folded = String.UnicodeScalarView()
        var changed = false
        for scalar in composed.unicodeScalars {
            changed = appendFolding(of: scalar, to: &folded) || changed
        }
        return changed ? nfc(String(folded)) : composed
    }

    static func nfc(_ text: String) -> String {
        String(decoding: text._nfcCodeUnits, as: UTF8.self)
    }

    /// Appends the full case folding of `scalar`; `true` when it is not `scalar` itself.
    static func appendFolding(of scalar: Unicode.Scalar, to output: inout String.UnicodeScalarView) -> Bool {
        guard let index = tableIndex(of: scalar.value) else {
            output.append(scalar)
            return false
        }
        var packed = CaseFoldingTable.targets[index]
        while packed != 0 {
            // The generator packs only scalar values (asserted there), so this never fails.
            if let folded = Unicode.Scalar(UInt32(truncatingIfNeeded: packed & 0x1F_FFFF)) { output.append(folded) }
            packed >>= 21
        }
        return true
    }

    /// The index of `value` in the table's sorted sources (binary search).
    static func tableIndex(of value: UInt32) -> Int? {
        let sources = CaseFoldingTable.sources
        guard value >= sources[0], value <= sources[sources.count - 1] else { return nil }
        var low = 0
        var high = sources.count
        while low < high {
            let middle = (low + high) / 2
            if sources[middle] < value { low = middle + 1 } else { high = middle }
        }
        return low < sources.count && sources[low] == value ? low : nil
    }
}
