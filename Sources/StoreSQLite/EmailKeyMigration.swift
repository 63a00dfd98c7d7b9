import SQLite
import Store

/// Rebuilds every stored `users.email_key` with `EmailKey` (migration 7; reusable if
/// the key function ever changes again, e.g. a case-folding table of a newer Unicode).
enum EmailKeyMigration {
    /// A user whose key changes.
    struct Change {
        let id: Int64
        let email: String
        let key: String
    }

    /// Computes every user's key and writes those that changed. Two users whose new keys
    /// are equal would break `email_key`'s UNIQUE; neither is dropped nor renamed: this
    /// throws `EmailKeyCollision` naming them before anything is written, and the
    /// caller's transaction rolls back.
    static func rebuildKeys(on connection: Connection) throws {
        var changes: [Change] = []
        try connection.prepare("SELECT id, email, email_key FROM users ORDER BY id").forEachRow { row in
            let email = row.text(1)
            let key = EmailKey.of(email)
            // By bytes: `String`'s `==` is canonical equivalence, so a decomposed old
            // key would equal its NFC replacement.
            if !row.withText(2, { $0.elementsEqual(key.utf8) }) {
                changes.append(Change(id: row.integer(0), email: email, key: key))
            }
        }
        guard !changes.isEmpty else { return }

        // The users under each new key: those whose key changes to it, and one whose
        // unchanged key already is it. (Keys in NFC are canonically equivalent only when
        // their bytes are equal, so `String` keys group them exactly.)
        let changing = Set(changes.map(\.id))
        var holders: [String: [EmailKeyCollision.User]] = [:]
        for change in changes {
            holders[change.key, default: []].append(EmailKeyCollision.User(id: change.id, email: change.email))
        }
        let holder = try connection.prepare("SELECT id, email FROM users WHERE email_key = ?")
        for key in holders.keys {
            try holder.bind([.text(key)])
            if try holder.step(), !changing.contains(holder.integer(0)) {
                holders[key, default: []].append(EmailKeyCollision.User(id: holder.integer(0), email: holder.text(1)))
            }
            holder.reset()
        }
        let groups = holders.values.filter { $0.count > 1 }.map { $0.sorted { $0.id < $1.id } }
        guard groups.isEmpty else {
            throw EmailKeyCollision(groups: groups.sorted { $0[0].id < $1[0].id }, databasePath: connection.path)
        }

        // UNIQUE is checked row by row, so a user's new key may still be another changing
        // user's old key (after an operator changed that user's email with sqlite3):
        // every changing key is first parked on a value no email key can be (it has a
        // control character and no `@`), then set.
        let update = try connection.prepare("UPDATE users SET email_key = ?1 WHERE id = ?2")
        for change in changes {
            try update.bind([.text("\u{1}parked \(change.id)"), .integer(change.id)]).run()
        }
        for change in changes {
            try update.bind([.text(change.key), .integer(change.id)]).run()
        }
    }
}

/// Existing users whose emails are one email under the new key: the email-key
/// migration refuses rather than drop or rename any of them.
public struct EmailKeyCollision: Error, CustomStringConvertible {
    public struct User: Sendable, Equatable {
        public let id: Int64
        public let email: String
    }

    /// Each group: two or more users with one key, by id.
    public let groups: [[User]]
    let databasePath: String

    /// Groups named in `description`; a longer list would not fit one log line (the
    /// rest appear once these are fixed).
    static let groupsShown = 50

    /// One line (it goes into a logfmt field): the users, then how to fix it.
    public var description: String {
        let shown = groups.prefix(Self.groupsShown).map { group in
            "users " + group.map { "\($0.id) \(Self.quoted($0.email))" }.joined(separator: " and ")
        }
        var text =
            "migration 7 (email keys under Unicode caseless matching) refused: emails are now unique under"
            + " Unicode caseless matching (NFC + case folding), and these users' emails are one email: "
            + shown.joined(separator: "; ")
        if groups.count > Self.groupsShown { text += "; and \(groups.count - Self.groupsShown) more groups" }
        let example = groups[0].last!.id
        text +=
            ". Nothing was changed: the database keeps the schema version it had."
            + " To fix: with usersd stopped, give all but one user of each group another email, or delete them,"
            + " with sqlite3, e.g. sqlite3 \(Self.shellQuoted(databasePath))"
            + " \"UPDATE users SET email = 'another@example.com' WHERE id = \(example)\""
            + " or \"DELETE FROM users WHERE id = \(example)\"; then start usersd (or run usersd migrate) again."
        return text
    }

    /// The email in angle brackets (no quotes to escape in a log line), with what cannot
    /// be seen written as `\u{…}`: combining marks (so a decomposed `é` differs from a
    /// precomposed one), format characters, separators and controls; `>` and `\` escaped.
    static func quoted(_ email: String) -> String {
        var text = "<"
        for scalar in email.unicodeScalars {
            switch scalar.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
                .decimalNumber, .letterNumber, .otherNumber, .connectorPunctuation, .dashPunctuation,
                .openPunctuation, .closePunctuation, .initialPunctuation, .finalPunctuation, .otherPunctuation,
                .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
                if scalar == ">" || scalar == "\\" { text.append("\\") }
                text.unicodeScalars.append(scalar)
            default:
                text += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            }
        }
        return text + ">"
    }

    /// `path` in single quotes for a POSIX shell.
    static func shellQuoted(_ path: String) -> String {
        "'" + path.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }
}
