import Glibc

/// FastCGI records (FastCGI 1.0, §3.3): the ones usersd reads before libfcgi does,
/// and the ones it writes itself, outside libfcgi's streams.
enum Records {
    enum Kind: UInt8 {
        case beginRequest = 1
        case abortRequest = 2
        case endRequest = 3
        case params = 4
        case stdin = 5
        case stdout = 6
        case stderr = 7
        case data = 8
        case getValues = 9
        case getValuesResult = 10
        case unknownType = 11
    }

    /// A record's 8-byte header: version, type, request id, content and padding length.
    struct Header {
        let version: UInt8
        let type: UInt8
        let requestID: UInt16
        let contentLength: Int
        let paddingLength: Int
        /// Where the record starts in the bytes it was read from.
        let start: Int

        var contentRange: Range<Int> { (start + 8)..<(start + 8 + contentLength) }
        /// Where the next record starts.
        var end: Int { start + 8 + contentLength + paddingLength }
        /// The kind, when the type is one FastCGI 1.0 defines.
        var kind: Kind? { Kind(rawValue: type) }
    }

    /// The header of the record at `index` of `bytes`, or `nil` when fewer than 8
    /// bytes are there.
    static func header(in bytes: ArraySlice<UInt8>, at index: Int) -> Header? {
        guard index + 8 <= bytes.endIndex else { return nil }
        return Header(
            version: bytes[index], type: bytes[index + 1],
            requestID: UInt16(bytes[index + 2]) << 8 | UInt16(bytes[index + 3]),
            contentLength: Int(bytes[index + 4]) << 8 | Int(bytes[index + 5]),
            paddingLength: Int(bytes[index + 6]), start: index
        )
    }

    /// The complete records of `bytes`, in order (a record still arriving is left out).
    static func complete(in bytes: ArraySlice<UInt8>) -> [Header] {
        var headers: [Header] = []
        var index = bytes.startIndex
        while let header = header(in: bytes, at: index), header.end <= bytes.endIndex {
            headers.append(header)
            index = header.end
        }
        return headers
    }

    /// One record (content up to 65,535 bytes, no padding).
    static func record(_ kind: Kind, requestID: UInt16, content: [UInt8] = []) -> [UInt8] {
        precondition(content.count <= 0xFFFF, "a FastCGI record holds at most 65,535 bytes")
        let length = UInt16(content.count)
        return [
            1, kind.rawValue, UInt8(requestID >> 8), UInt8(requestID & 0xFF), UInt8(length >> 8), UInt8(length & 0xFF),
            0, 0,
        ]
            + content
    }

    /// The end of a response on a connection that usersd closes next: the end of
    /// stdout, FCGI_END_REQUEST (complete, with `appStatus`), and then one more record.
    ///
    /// nginx (`fastcgi_keep_conn on`) returns a connection to its keep-alive cache as
    /// soon as FCGI_END_REQUEST ends exactly where its read ended, and may send its next
    /// request on it at once. Closing right after the response therefore races that
    /// request, which then fails (502; nginx never retries a POST). When more bytes
    /// follow FCGI_END_REQUEST in the same read, nginx closes the connection instead of
    /// keeping it (`ngx_http_fastcgi_input_filter`, nginx 1.22), so no request is ever
    /// sent on it. The extra record is an empty FCGI_GET_VALUES_RESULT on the management
    /// id 0: "no values", which any FastCGI client may ignore. Write all of it in one
    /// `send`, so that it arrives as one piece.
    ///
    /// Without `extraRecord` (for Apache httpd, see `ConnectionWorker.isApache`) it is
    /// the end of stdout and FCGI_END_REQUEST only.
    static func closingEnd(requestID: UInt16, appStatus: Int32, extraRecord: Bool = true) -> [UInt8] {
        let status = UInt32(bitPattern: appStatus)
        let body: [UInt8] = [
            UInt8(status >> 24), UInt8((status >> 16) & 0xFF), UInt8((status >> 8) & 0xFF), UInt8(status & 0xFF), 0, 0,
            0, 0,
        ]
        return record(.stdout, requestID: requestID)
            + record(.endRequest, requestID: requestID, content: body)
            + (extraRecord ? record(.getValuesResult, requestID: 0) : [])
    }

    /// Writes all of `bytes` to the socket; `false` when the peer is gone.
    @discardableResult
    static func send(_ bytes: [UInt8], to fd: Int32) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }
}
