import Foundation
import HTTP
import JSON
import SQLite
import Store
import StoreSQLite
import Synchronization
import TestSupport
import Testing

@testable import UsersApp

/// The user routes through the router, without a socket, on a temporary database.
@Suite struct UserRoutesTests {
    let temporary: TemporaryDatabase
    let responder: RouterResponder

    init() async throws {
        temporary = try TemporaryDatabase(name: "usersd-app")
        let application = Application(store: try await temporary.migratedStore())
        responder = application.makeRouter().buildResponder(onError: Application.errorResponse)
    }

    func send(
        _ method: String, _ path: String, json: String? = nil, contentType: String? = "application/json",
        query: String = ""
    ) async -> (Int, JSONValue?, Response) {
        let request = Request(
            method: method, path: path, query: query,
            contentType: json == nil ? nil : contentType,
            body: json.map { Array($0.utf8) } ?? []
        )
        let response = await responder.respond(to: request)
        var bytes: [UInt8] = []
        switch response.body {
        case .bytes(let body): bytes = body
        case .stream(let produce):
            let collector = Collector()
            try? await produce(collector)
            bytes = collector.bytes.withLock { $0 }
        }
        return (response.status.code, bytes.isEmpty ? nil : try? JSONParser.parse(bytes), response)
    }

    @Test func tutorialWalkthrough() async {
        let (status, body, response) = await send(
            "POST", "/add-user", json: #"{"username": "alice", "email": "alice@example.com"}"#)
        #expect(status == 201)
        #expect(body?["message"] == .string("User created"))
        #expect(body?["user"]?["name"] == .string("alice"))
        #expect(response.header("Location") == "/users/1")
        let (getStatus, user, _) = await send("GET", "/user/1")
        #expect(getStatus == 200)
        #expect(
            user
                == .object([
                    "id": .number(1, integer: 1), "name": .string("alice"), "email": .string("alice@example.com"),
                ]))
        let (listStatus, list, _) = await send("GET", "/users")
        #expect(listStatus == 200)
        #expect(list == .array([user!]))
    }

    @Test(arguments: [
        (#"{"name": "a", "email": "a@x.io"#, 400),
        (#"["name"]"#, 400),
        (#""just a string""#, 400),
        (#"{"name": 123, "email": "a@x.io"}"#, 400),
        (#"{"name": "a", "email": true}"#, 400),
        (#"{"email": "a@x.io"}"#, 422),
        (#"{"name": null, "email": "a@x.io"}"#, 422),
        (#"{"name": "   ", "email": "a@x.io"}"#, 422),
        (#"{"name": "a"}"#, 422),
        (#"{"name": "a", "email": "a@b"}"#, 422),
        (#"{"name": "a", "email": "a@@b.c"}"#, 422),
        (#"{"name": "a", "email": "@b.c"}"#, 422),
        (#"{"name": "a", "email": "a@b."}"#, 422),
        (#"{"name": "a", "email": "a b@c.d"}"#, 422),
    ])
    func badInputGetsTheRightStatus(_ body: String, _ expected: Int) async {
        let (status, json, _) = await send("POST", "/users", json: body)
        #expect(status == expected)
        if case .string(let message)? = json?["error"] {
            #expect(!message.isEmpty)
        } else {
            Issue.record("no error message")
        }
    }

    @Test func fieldIsNamedInValidationErrors() async {
        let (_, json, _) = await send("POST", "/users", json: #"{"name": "a", "email": "nope"}"#)
        #expect(json?["field"] == .string("email"))
    }

    @Test func nameLengthCountsCodePointsAfterTrimming() async {
        let fifty = String(repeating: "😀", count: 50)
        #expect(await send("POST", "/users", json: #"{"name": "  \#(fifty)  ", "email": "a@x.io"}"#).0 == 201)
        #expect(await send("POST", "/users", json: #"{"name": "\#(fifty)😀", "email": "b@x.io"}"#).0 == 422)
    }

    @Test func contentTypeMustBeJSON() async {
        #expect(
            await send("POST", "/users", json: #"{"name":"a","email":"a@x.io"}"#, contentType: "text/plain").0 == 415)
        #expect(await send("POST", "/users", json: #"{"name":"a","email":"a@x.io"}"#, contentType: nil).0 == 415)
        #expect(
            await send(
                "POST", "/users", json: #"{"name":"a","email":"a@x.io"}"#,
                contentType: "application/json; charset=utf-8"
            ).0 == 201)
        #expect(await send("POST", "/users", json: "", contentType: "application/json").0 == 400)
    }

    @Test func duplicateEmailIs409() async {
        #expect(await send("POST", "/users", json: #"{"name":"a","email":"Bob@X.io"}"#).0 == 201)
        let (status, json, _) = await send("POST", "/add-user", json: #"{"name":"b","email":"bob@x.io"}"#)
        #expect(status == 409)
        #expect(json?["field"] == .string("email"))
    }

    @Test(arguments: ["abc", "0", "-1", "99999999999999999999999", "1.5", "999"])
    func unknownOrInvalidIdsAre404(_ id: String) async {
        let (status, json, _) = await send("GET", "/user/\(id)")
        #expect(status == 404)
        #expect(json == .object(["error": .string("User not found")]))
    }

    @Test func patchAndDelete() async {
        _ = await send("POST", "/users", json: #"{"name":"a","email":"a@x.io"}"#)
        let (status, json, _) = await send("PATCH", "/users/1", json: #"{"name":"renamed"}"#)
        #expect(status == 200)
        #expect(json?["name"] == .string("renamed"))
        #expect(json?["email"] == .string("a@x.io"))
        #expect(await send("PATCH", "/users/1", json: #"{"other":1}"#).0 == 422)
        #expect(await send("PATCH", "/users/2", json: #"{"name":"x"}"#).0 == 404)
        #expect(await send("DELETE", "/users/1").0 == 204)
        #expect(await send("DELETE", "/users/1").0 == 404)
    }

    @Test func cachedListIsNeverStaleAfterAnAcknowledgedWrite() async {
        #expect(await send("GET", "/users").1 == .array([]))
        _ = await send("POST", "/users", json: #"{"name":"a","email":"a@x.io"}"#)
        #expect(await send("GET", "/users").1?.arrayCount == 1)
        _ = await send("PATCH", "/users/1", json: #"{"name":"renamed"}"#)
        #expect(
            await send("GET", "/users").1
                == .array([
                    .object(["id": .number(1, integer: 1), "name": .string("renamed"), "email": .string("a@x.io")])
                ]))
        _ = await send("DELETE", "/users/1")
        #expect(await send("GET", "/users").1 == .array([]))
        // Concurrent writers: each one, once acknowledged, is in every later list.
        let stale = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<40 {
                group.addTask {
                    let (status, json, _) = await send(
                        "POST", "/users", json: #"{"name":"n","email":"c\#(index)@x.io"}"#)
                    guard status == 201, case .number(_, let id?)? = json?["user"]?["id"] else { return true }
                    guard case .array(let users)? = await send("GET", "/users").1 else { return true }
                    return !users.contains { $0["id"] == .number(Double(id), integer: id) }
                }
            }
            var stale = 0
            for await isStale in group where isStale { stale += 1 }
            return stale
        }
        #expect(stale == 0)
    }

    @Test func listPagingAndItsErrors() async {
        for index in 1...5 { _ = await send("POST", "/users", json: #"{"name":"u","email":"u\#(index)@x.io"}"#) }
        let (_, page, _) = await send("GET", "/users", query: "limit=2&after_id=2")
        guard case .array(let users)? = page else {
            Issue.record("not an array")
            return
        }
        #expect(users.map { $0["id"] } == [.number(3, integer: 3), .number(4, integer: 4)])
        #expect(await send("GET", "/users", query: "limit=0").1?["field"] == .string("limit"))
        #expect(await send("GET", "/users", query: "limit=x").0 == 422)
        #expect(await send("GET", "/users", query: "after_id=-1").1?["field"] == .string("after_id"))
    }
}

extension JSONValue {
    var arrayCount: Int? {
        if case .array(let elements) = self { return elements.count }
        return nil
    }
}

/// Collects a streamed body.
final class Collector: BodyWriter {
    let bytes = Mutex<[UInt8]>([])
    func write(_ chunk: [UInt8]) async throws { bytes.withLock { $0.append(contentsOf: chunk) } }
}

@Suite struct UserListCacheTests {
    @Test func servesOnlyTheVersionItWasReadAtAndExpires() {
        let cache = UserListCache()
        cache.store([1, 2], at: 3)
        #expect(cache.body(at: 3) == [1, 2])
        #expect(cache.body(at: 4) == nil)
        cache.store([9], at: 2)  // an older read never replaces a newer one
        #expect(cache.body(at: 3) == [1, 2])
        let expired = UserListCache(lifetimeNanoseconds: 0)
        expired.store([1], at: 1)
        #expect(expired.body(at: 1) == nil)
    }
}

/// The user objects written as literal pieces: exact bytes, and escaping still applied.
@Suite struct UserJSONTests {
    let user = User(
        id: 42, name: "Zoë \"Z\" \\ O'Neil\n", email: "z@example.com",
        createdAt: "2026-11-27T10:00:00.000Z", updatedAt: "2026-11-27T11:00:00.000Z"
    )

    @Test func summaryIsTheTutorialShape() throws {
        var writer = JSONWriter()
        writer.summary(user)
        #expect(
            String(decoding: writer.bytes, as: UTF8.self)
                == #"{"id":42,"name":"Zoë \"Z\" \\ O'Neil\n","email":"z@example.com"}"#)
        let parsed = try JSONParser.parse(writer.bytes)
        #expect(parsed["name"] == .string(user.name))
    }

    @Test func detailAddsTheTimestamps() throws {
        var writer = JSONWriter()
        writer.detail(user)
        let parsed = try JSONParser.parse(writer.bytes)
        #expect(parsed["id"] == .number(42, integer: 42))
        #expect(parsed["name"] == .string(user.name))
        #expect(parsed["email"] == .string("z@example.com"))
        #expect(parsed["created_at"] == .string("2026-11-27T10:00:00.000Z"))
        #expect(parsed["updated_at"] == .string("2026-11-27T11:00:00.000Z"))
        #expect(String(decoding: writer.bytes, as: UTF8.self).hasSuffix(#","updated_at":"2026-11-27T11:00:00.000Z"}"#))
    }
}

/// A full `GET /users` of a table too big for the list cache streams each row once:
/// the pages read while finding out it is big are the start of the stream.
@Suite struct FullListReadsEachRowOnceTests {
    /// The real store, counting the pages read through it.
    final class CountingStore: UserStore {
        let base: SQLiteStore
        let pages = Mutex<[Int64]>([])

        init(base: SQLiteStore) { self.base = base }

        func userSummaryPage(afterID: Int64, limit: Int) async throws -> UserSummaryPage {
            pages.withLock { $0.append(afterID) }
            return try await base.userSummaryPage(afterID: afterID, limit: limit)
        }
        func createUser(name: String, email: String) async throws -> CreatedUser {
            try await base.createUser(name: name, email: email)
        }
        func user(id: Int64) async throws -> User? { try await base.user(id: id) }
        func updateUser(id: Int64, name: String?, email: String?) async throws -> User? {
            try await base.updateUser(id: id, name: name, email: email)
        }
        func deleteUser(id: Int64) async throws -> Bool { try await base.deleteUser(id: id) }
        func ping() async throws { try await base.ping() }
        var changeVersion: UInt64? { base.changeVersion }
    }

    @Test func sixThousandUsersTakeThirteenPageReads() async throws {
        let temporary = try TemporaryDatabase(name: "usersd-list")
        let base = try await temporary.migratedStore()
        let count = UserListCache.maximumRows + 1000
        try await temporary.database.write { connection in
            try connection.execute(
                """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < \(count))
                INSERT INTO users (name, email, email_key, created_at, updated_at)
                SELECT 'u' || i, 'u' || i || '@x.io', 'u' || i || '@x.io', 't', 't' FROM n
                """)
        }
        let store = CountingStore(base: base)
        let responder = Application(store: store).makeRouter().buildResponder()
        let response = await responder.respond(to: Request(method: "GET", path: "/users"))
        guard case .stream(let produce) = response.body else {
            Issue.record("a table this size is streamed")
            return
        }
        let collector = Collector()
        try await produce(collector)
        guard case .array(let users) = try JSONParser.parse(collector.bytes.withLock { $0 }) else {
            Issue.record("not a JSON array")
            return
        }
        #expect(users.count == count)
        #expect(users.last?["id"] == .number(Double(count), integer: Int64(count)))
        // 12 full pages of 500 and the empty one that ends the table: each row read once.
        let pages = store.pages.withLock { $0 }
        #expect(pages.count == count / UserRoutes.pageSize + 1)
        #expect(pages == (0...(count / UserRoutes.pageSize)).map { Int64($0 * UserRoutes.pageSize) })
    }
}
