/// The users, whatever database holds them. Routes depend on this protocol only.
///
/// What every backend keeps:
/// - A call returns after its change committed (durably, as the backend defines it)
///   and never acknowledges a change that could still be lost.
/// - Emails are unique by `EmailKey.of`, computed by usersd (never by the database),
///   so every backend agrees on which emails collide; a duplicate is
///   `StoreError.duplicateEmail`, and it fails only its own write.
/// - Ids grow; lists are in id order (keyset paging by `afterID`).
/// - A write acknowledged to one client is seen by every later read, from any process
///   serving the same database.
public protocol UserStore: Sendable {
    /// Inserts a user and, in the same transaction, its `welcome` task (see
    /// `WelcomeTask`): both commit, or neither. Returns after the commit.
    func createUser(name: String, email: String) async throws -> CreatedUser
    func user(id: Int64) async throws -> User?
    /// Users with `id > afterID` in id order, at most `limit`, already encoded as
    /// comma-separated `{"id","name","email"}` objects (the list's hot path: no
    /// intermediate values per row). Each call is one short read.
    func userSummaryPage(afterID: Int64, limit: Int) async throws -> UserSummaryPage
    /// Changes the given fields; `nil` when there is no such user.
    func updateUser(id: Int64, name: String?, email: String?) async throws -> User?
    /// `false` when there was no such user.
    func deleteUser(id: Int64) async throws -> Bool
    /// Checks that the database answers.
    func ping() async throws
    /// For caches of user data kept above the store: a number that grows with every
    /// committed change to users, before the change is acknowledged. `nil` when this
    /// process is not the database's only writer (other processes change users too):
    /// then nothing may be cached, since no version would show their changes.
    var changeVersion: UInt64? { get }
}
