import HTTP
import JSON
import Store

/// The user routes: the tutorial's `/add-user`, `/user/<id>`, `/users`, and the
/// REST-style `/users/<id>`.
struct UserRoutes: Sendable {
    let store: any UserStore
    let listCache = UserListCache()
    /// Called after a user was created, with the welcome task committed with it.
    var userCreated: @Sendable (CreatedUser) -> Void = { _ in }
    /// Rows per database read while streaming `GET /users`: one short read
    /// transaction per page, so a long listing never pins the WAL.
    static let pageSize = 500

    func register(on router: inout Router) {
        router.post("/add-user") { request, _ in try await create(request) }
        router.post("/users") { request, _ in try await create(request) }
        router.get("/user/{id}") { _, parameters in try await showSeed(parameters) }
        router.get("/users") { request, _ in try await list(request) }
        router.get("/users/{id}") { _, parameters in try await show(parameters) }
        router.patch("/users/{id}") { request, parameters in try await update(request, parameters) }
        router.delete("/users/{id}") { _, parameters in try await delete(parameters) }
    }

    static let notFound = HTTPError.notFound("User not found")

    func create(_ request: Request) async throws -> Response {
        let members = try RequestBody.object(of: request)
        // Both fields are checked before anything is written; name first.
        let name = try UserValidation.name(in: members, required: true)!
        let email = try UserValidation.email(in: members, required: true)!
        let created = try await store.createUser(name: name, email: email)
        userCreated(created)
        let user = created.user
        return Response.json(.created, headers: [("Location", "/users/\(user.id)")]) { json in
            json.object { object in
                object.field("message", "User created")
                object.field("user") { $0.summary(user) }
            }
        }
    }

    func showSeed(_ parameters: Parameters) async throws -> Response {
        guard let id = UserValidation.id(parameters["id"]), let user = try await store.user(id: id) else {
            throw Self.notFound
        }
        return Response.json(.ok) { $0.summary(user) }
    }

    func show(_ parameters: Parameters) async throws -> Response {
        guard let id = UserValidation.id(parameters["id"]), let user = try await store.user(id: id) else {
            throw Self.notFound
        }
        return Response.json(.ok) { $0.detail(user) }
    }

    func update(_ request: Request, _ parameters: Parameters) async throws -> Response {
        guard let id = UserValidation.id(parameters["id"]) else { throw Self.notFound }
        let members = try RequestBody.object(of: request)
        let name = try UserValidation.name(in: members, required: false)
        let email = try UserValidation.email(in: members, required: false)
        guard name != nil || email != nil else {
            throw HTTPError.invalid("name", "body must contain name or email")
        }
        guard let user = try await store.updateUser(id: id, name: name, email: email) else { throw Self.notFound }
        return Response.json(.ok) { $0.detail(user) }
    }

    func delete(_ parameters: Parameters) async throws -> Response {
        guard let id = UserValidation.id(parameters["id"]), try await store.deleteUser(id: id) else {
            throw Self.notFound
        }
        return Response(status: .noContent)
    }

    /// How a full `GET /users` begins: the whole answer of a small table (cached until
    /// the next user write), or the first pages of a big one, which the stream then
    /// continues from `lastID` (each row is read once).
    enum FullListStart {
        case complete([UInt8])
        /// `json` is `[` and the rows read so far (`{...},{...}`, no closing bracket).
        case partial(json: [UInt8], lastID: Int64)
    }

    func fullListStart() async throws -> FullListStart {
        // No version: other processes change users too, so nothing is cached.
        let version = store.changeVersion
        if let version, let body = listCache.body(at: version) { return .complete(body) }
        var body: [UInt8] = [UInt8(ascii: "[")]
        var cursor: Int64 = 0
        var total = 0
        while true {
            let page = try await store.userSummaryPage(afterID: cursor, limit: Self.pageSize)
            if page.count > 0 {
                if total > 0 { body.append(UInt8(ascii: ",")) }
                body.append(contentsOf: page.json)
            }
            total += page.count
            guard page.count == Self.pageSize, let last = page.lastID else { break }
            cursor = last
            if total >= UserListCache.maximumRows { return .partial(json: body, lastID: cursor) }
        }
        body.append(UInt8(ascii: "]"))
        if let version { listCache.store(body, at: version) }
        return .complete(body)
    }

    /// `GET /users[?limit=N&after_id=K]`: in id order, streamed page by page (one
    /// short read transaction each), so memory stays flat whatever the table size.
    ///
    /// The answer is not marked `X-Accel-Buffering: no`: nginx buffers it (spooling
    /// to a temporary file past its buffers) and so reads it from usersd at full
    /// speed, whatever the client's speed. A client that stops reading costs nginx
    /// disk, not a usersd thread; behind a server that does not buffer, the write
    /// timeout (`--write-timeout`) bounds what a stalled client can hold.
    func list(_ request: Request) async throws -> Response {
        let query = request.queryParameters
        var limit = Int.max
        if let text = query["limit"] {
            guard let value = Int(text), value >= 1 else {
                throw HTTPError.invalid("limit", "limit must be a whole number of at least 1")
            }
            limit = value
        }
        var afterID: Int64 = 0
        if let text = query["after_id"] {
            guard let value = Int64(text), value >= 0 else {
                throw HTTPError.invalid("after_id", "after_id must be a whole number of at least 0")
            }
            afterID = value
        }
        var start: [UInt8] = [UInt8(ascii: "[")]
        if limit == Int.max && afterID == 0 {
            switch try await fullListStart() {
            case .complete(let body): return Response.json(.ok, body)
            case .partial(let json, let lastID): (start, afterID) = (json, lastID)
            }
        }
        let store = self.store
        let (firstAfterID, maximum, prefix) = (afterID, limit, start)
        return Response(
            status: .ok,
            headers: [("Content-Type", Response.jsonContentType)],
            body: .stream { writer in
                var buffer = prefix
                buffer.reserveCapacity(64 * 1024)
                var cursor = firstAfterID
                var remaining = maximum
                var isFirst = prefix.count == 1
                while remaining > 0 {
                    let wanted = min(Self.pageSize, remaining)
                    let page = try await store.userSummaryPage(afterID: cursor, limit: wanted)
                    if page.count > 0 {
                        if !isFirst { buffer.append(UInt8(ascii: ",")) }
                        isFirst = false
                        buffer.append(contentsOf: page.json)
                    }
                    remaining -= page.count
                    guard page.count == wanted, let last = page.lastID else { break }
                    cursor = last
                    if buffer.count >= 32 * 1024 {
                        try await writer.write(buffer)
                        buffer.removeAll(keepingCapacity: true)
                    }
                }
                buffer.append(UInt8(ascii: "]"))
                try await writer.write(buffer)
            }
        )
    }
}

extension JSONWriter {
    /// `{"id","name","email"}`: the tutorial's shape, used by the seed routes and lists.
    /// Written as literal pieces (the keys need no escaping): this is every
    /// `GET /user/<id>` answer, so it skips the object writer's bookkeeping.
    mutating func summary(_ user: User) {
        openUser(user)
        append("}")
    }

    /// The full resource for `/users/<id>`: the summary's members, then the timestamps.
    mutating func detail(_ user: User) {
        openUser(user)
        append(#","created_at":"#)
        string(user.createdAt)
        append(#","updated_at":"#)
        string(user.updatedAt)
        append("}")
    }

    /// `{"id":…,"name":…,"email":…` without the closing brace.
    private mutating func openUser(_ user: User) {
        append(#"{"id":"#)
        integer(user.id)
        append(#","name":"#)
        string(user.name)
        append(#","email":"#)
        string(user.email)
    }
}
