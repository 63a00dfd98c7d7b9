import CPostgres

/// One libpq connection, used by one thread at a time (libpq connections are not
/// thread-safe; `PostgresPool` gives each its own thread).
///
/// Statements run in pipeline mode (libpq 15, "Pipeline Mode"): a batch of prepared
/// statements is sent at once, each followed by a sync point, so each runs in its own
/// implicit transaction and one failing does not abort the others; the results are
/// then read in order. A batch of n statements costs one round trip instead of n, and
/// a statement's first use on the connection sends its `Parse` in the same trip.
public final class PostgresConnection {
    private let handle: OpaquePointer
    /// Statements prepared on this connection, by name.
    private var prepared: Set<String> = []
    /// Set when results came out of order: the connection is not used again.
    private var isBroken = false

    /// Connects with `uri` handed to libpq unchanged (`expand_dbname`), so every libpq
    /// feature works: unix-socket hosts, several hosts with `target_session_attrs`,
    /// `sslmode`, `PGPASSFILE` and the `PG*` environment. `defaults` are keywords the
    /// URI may override (libpq: "subsequent parameters ... override" the expanded
    /// dbname's, "earlier parameters are overridden", so they go first).
    public init(uri: String, defaults: [(String, String)] = PostgresConnection.defaults) throws(PostgresError) {
        let keywords = defaults.map(\.0) + ["dbname"]
        let values = defaults.map(\.1) + [uri]
        let connection = Self.withCStrings(keywords) { keywordPointers in
            Self.withCStrings(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let connection else { throw PostgresError(.connection(wasSent: false), "out of memory") }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.message(PQerrorMessage(connection))
            PQfinish(connection)
            throw PostgresError(.connection(wasSent: false), "cannot connect: \(message)")
        }
        handle = connection
        usersd_pq_silence_notices(connection)
    }

    /// Settings every usersd connection starts from (the URI may override each): a
    /// connect attempt gives up after 5 s, a TCP connection whose data goes unacknowledged
    /// for 15 s counts as lost (`tcp_user_timeout`, so a cut link fails queries instead of
    /// hanging them for the kernel's minutes), text is UTF-8, and the server shows
    /// `usersd` in `pg_stat_activity`.
    public static let defaults: [(String, String)] = [
        ("connect_timeout", "5"), ("tcp_user_timeout", "15000"), ("client_encoding", "UTF8"),
        ("fallback_application_name", "usersd"),
    ]

    deinit {
        PQfinish(handle)
    }

    public var isConnected: Bool { !isBroken && PQstatus(handle) == CONNECTION_OK }

    /// The server's process id for this connection (`pg_backend_pid()`).
    public var backendPID: Int32 { PQbackendPID(handle) }

    /// Reads whatever the server sent while the connection was idle (a notice, or the
    /// goodbye of a server that shut down or ended this session) and answers whether
    /// the connection is still usable. Called before each batch, so a connection the
    /// server closed is replaced before a statement is sent on it, not after.
    public func isUsableAfterIdle() -> Bool {
        guard isConnected else { return false }
        if usersd_pq_socket_readable(handle) != 0 {
            _ = PQconsumeInput(handle)
        }
        return isConnected
    }

    /// Runs `sql` (one or more statements, no parameters) with the simple query
    /// protocol: for `BEGIN`, `COMMIT`, schema changes.
    public func execute(_ sql: String) throws(PostgresError) {
        guard let result = PQexec(handle, sql) else { throw connectionError(wasSent: true) }
        defer { PQclear(result) }
        try check(result)
    }

    /// Runs `sql` once with `parameters` (unnamed statement, not kept) and decodes its rows.
    public func query<T>(
        sql: String, _ parameters: [String?] = [], _ decode: (PostgresRows) throws -> T
    ) throws -> T {
        let result = Self.withParameters(parameters) { values in
            PQexecParams(handle, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        guard let result else { throw connectionError(wasSent: true) }
        defer { PQclear(result) }
        try check(result)
        return try decode(PostgresRows(result))
    }

    /// Runs a prepared statement and decodes its rows (a pipeline of one).
    public func query<T>(
        _ statement: PreparedStatement, _ parameters: [String?], _ decode: (PostgresRows) throws -> T
    ) throws -> T {
        var outcome: Result<T, any Error>?
        pipeline([[(statement, parameters)]]) { _, result in
            outcome = Result { try decode(try result.get()) }
        }
        return try outcome!.get()
    }

    /// Sends every statement with a sync point after each (each its own transaction),
    /// then reads the results and calls `each` once per statement, in order, with its
    /// rows or its error.
    public func pipeline(
        _ statements: [(PreparedStatement, [String?])],
        each: (Int, Result<PostgresRows, PostgresError>) -> Void
    ) {
        pipeline(statements.map { [$0] }, each: each)
    }

    /// Sends every transaction (statements that run in one implicit transaction: libpq's
    /// pipeline mode ends it at the sync point sent after its last statement) at once,
    /// then reads the results and calls `each` once per transaction, in order, with the
    /// rows of its last statement, or the first error (the transaction then changed
    /// nothing). The rows are valid only during that call. A lost connection fails the
    /// transactions whose results had not arrived.
    public func pipeline(
        _ transactions: [[(PreparedStatement, [String?])]],
        each: (Int, Result<PostgresRows, PostgresError>) -> Void
    ) {
        guard !transactions.isEmpty else { return }
        var delivered = 0
        func failRest(_ error: PostgresError) {
            while delivered < transactions.count {
                each(delivered, .failure(error))
                delivered += 1
            }
        }
        // A C string ends at its first NUL, and PostgreSQL text cannot hold one: such a
        // value would be cut short, so its transaction is refused and not sent.
        let refused = transactions.map { $0.contains { $0.1.contains { $0?.utf8.contains(0) == true } } }
        guard PQenterPipelineMode(handle) == 1 else {
            return failRest(connectionError(wasSent: false))
        }
        // Statements whose Parse goes out in this batch (once per name), by position.
        var preparing: [[Bool]] = []
        var parsing: Set<String> = []
        // libpq may flush earlier statements while later ones are queued: once one was
        // queued, a failure may come after some reached the server.
        var queuedAny = false
        for (index, transaction) in transactions.enumerated() {
            var parses: [Bool] = []
            defer { preparing.append(parses) }
            guard !refused[index] else { continue }
            for (statement, parameters) in transaction {
                let needsParse = !prepared.contains(statement.name) && parsing.insert(statement.name).inserted
                parses.append(needsParse)
                if needsParse {
                    guard PQsendPrepare(handle, statement.name, statement.sql, Int32(parameters.count), nil) == 1
                    else { return failRest(connectionError(wasSent: queuedAny)) }
                }
                let sent = Self.withParameters(parameters) { values in
                    PQsendQueryPrepared(handle, statement.name, Int32(parameters.count), values, nil, nil, 0)
                }
                guard sent == 1 else { return failRest(connectionError(wasSent: queuedAny)) }
                queuedAny = true
            }
            guard PQpipelineSync(handle) == 1 else { return failRest(connectionError(wasSent: true)) }
        }
        for (index, transaction) in transactions.enumerated() {
            if refused[index] {
                each(index, .failure(Self.nulError))
                delivered += 1
                continue
            }
            var firstError: PostgresError?
            var last: OpaquePointer?
            for (position, (statement, _)) in transaction.enumerated() {
                if preparing[index][position] {
                    guard let parse = PQgetResult(handle) else { return failRest(connectionError(wasSent: true)) }
                    if PQresultStatus(parse) == PGRES_COMMAND_OK {
                        prepared.insert(statement.name)
                    } else if firstError == nil {
                        firstError = resultError(parse)
                    }
                    PQclear(parse)
                    guard PQgetResult(handle) == nil else { return failRest(protocolError()) }
                }
                guard let result = PQgetResult(handle) else { return failRest(connectionError(wasSent: true)) }
                let status = PQresultStatus(result)
                if status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK && firstError == nil {
                    firstError = resultError(result)
                }
                if let previous = last { PQclear(previous) }
                last = result
                guard PQgetResult(handle) == nil else {
                    PQclear(result)
                    return failRest(protocolError())
                }
            }
            if let firstError {
                each(index, .failure(firstError))
            } else if let last {
                each(index, .success(PostgresRows(last)))
            }
            if let last { PQclear(last) }
            delivered += 1
            guard let sync = PQgetResult(handle) else { return failRest(connectionError(wasSent: true)) }
            let synced = PQresultStatus(sync) == PGRES_PIPELINE_SYNC
            PQclear(sync)
            guard synced else { return failRest(protocolError()) }
        }
        _ = PQexitPipelineMode(handle)
    }

    // MARK: - Errors

    static let nulError = PostgresError(
        .server, sqlState: "22021", "text contains the character U+0000, which PostgreSQL text cannot store")

    private func check(_ result: OpaquePointer) throws(PostgresError) {
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY else {
            throw resultError(result)
        }
    }

    /// The error a failed result carries; a connection error when the connection broke.
    private func resultError(_ result: OpaquePointer) -> PostgresError {
        let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        var message = Self.message(PQresultErrorMessage(result))
        if message.isEmpty { message = Self.message(PQerrorMessage(handle)) }
        // A FATAL error ends the session: the server closes the connection after it (an
        // administrator's or a shutdown's termination, 57P01). The statement it answers
        // did not take effect: a statement that committed gets its own result first.
        let severity = PQresultErrorField(result, Int32(UInt8(ascii: "V"))).map { String(cString: $0) }
        if severity == "FATAL" || severity == "PANIC" {
            isBroken = true
            return PostgresError(.connection(wasSent: false), sqlState: state, message)
        }
        if !isConnected { return PostgresError(.connection(wasSent: true), sqlState: state, message) }
        return PostgresError(.server, sqlState: state, message)
    }

    private func connectionError(wasSent: Bool) -> PostgresError {
        let message = Self.message(PQerrorMessage(handle))
        return PostgresError(.connection(wasSent: wasSent), message.isEmpty ? "connection lost" : message)
    }

    /// The results did not come in the order pipeline mode promises: the connection
    /// cannot be trusted any more (the pool replaces it).
    private func protocolError() -> PostgresError {
        isBroken = true
        return PostgresError(.connection(wasSent: true), "unexpected result order in pipeline; connection dropped")
    }

    private static func message(_ text: UnsafePointer<CChar>?) -> String {
        guard let text else { return "" }
        var message = String(cString: text)
        while message.last?.isWhitespace == true { message.removeLast() }
        return message
    }

    // MARK: - C strings

    /// Calls `body` with a NULL-terminated array of C strings.
    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
        withParameters(strings + [nil]) { body($0!) }
    }

    /// Calls `body` with an array of C strings (NULL for a SQL NULL), all stored in one
    /// buffer; `nil` when there are none.
    static func withParameters<R>(_ values: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
        guard !values.isEmpty else { return body(nil) }
        var storage: [CChar] = []
        var offsets: [Int?] = []
        offsets.reserveCapacity(values.count)
        for value in values {
            guard let value else {
                offsets.append(nil)
                continue
            }
            offsets.append(storage.count)
            storage.append(contentsOf: value.utf8.map { CChar(bitPattern: $0) })
            storage.append(0)
        }
        storage.append(0)
        return storage.withUnsafeBufferPointer { buffer in
            let base = buffer.baseAddress!
            let pointers: [UnsafePointer<CChar>?] = offsets.map { $0.map { base + $0 } }
            return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
        }
    }
}

@available(*, unavailable)
extension PostgresConnection: Sendable {}
