import HTTP
import Testing

@testable import FastCGI

@Suite struct ResponseEncoderTests {
    @Test func writesStatusHeadersAndContentLength() {
        let response = Response.json(.created, Array("{}".utf8), headers: [("Location", "/users/1")])
        let head = String(decoding: ResponseEncoder.head(of: response), as: UTF8.self)
        #expect(
            head == "Status: 201 Created\r\nContent-Type: application/json; charset=utf-8\r\nLocation: /users/1\r\nContent-Length: 2\r\n\r\n"
        )
    }

    @Test func streamedBodiesHaveNoContentLength() {
        let response = Response(status: .ok, headers: [("Content-Type", "application/json")], body: .stream { _ in })
        let head = String(decoding: ResponseEncoder.head(of: response), as: UTF8.self)
        #expect(head == "Status: 200 OK\r\nContent-Type: application/json\r\n\r\n")
    }

    @Test func headersWithLineBreaksAreDropped() {
        let response = Response(status: .ok, headers: [("X-Evil", "a\r\nSet-Cookie: x=1")])
        let head = String(decoding: ResponseEncoder.head(of: response), as: UTF8.self)
        #expect(!head.contains("Set-Cookie"))
    }
}

@Suite struct CGIParamsTests {
    func params(_ values: [String: String]) -> CGIParams { CGIParams { values[$0] } }

    @Test func prefersDocumentURI() {
        #expect(params(["DOCUMENT_URI": "/user/1", "REQUEST_URI": "/other?x=1"]).path == "/user/1")
    }

    @Test func fallsBackToDecodedRequestURIThenScriptNameAndPathInfo() {
        #expect(params(["REQUEST_URI": "/user/%31?x=1"]).path == "/user/1")
        #expect(params(["SCRIPT_NAME": "/api", "PATH_INFO": "/users"]).path == "/api/users")
        #expect(params([:]).path == "/")
    }

    @Test func contentLengthThatDoesNotParseCountsAsTooLarge() {
        #expect(params(["CONTENT_LENGTH": "12"]).contentLength == 12)
        #expect(params(["CONTENT_LENGTH": ""]).contentLength == nil)
        #expect(params(["CONTENT_LENGTH": "99999999999999999999999"]).contentLength == Int.max)
    }

    @Test func headerNamesAreLowercasedWithDashes() {
        #expect(CGIParams.headerName("X_REQUEST_ID") == "x-request-id")
    }

    @Test func requestIDComesFromNginxOrHeaderOrIsGenerated() {
        #expect(params(["REQUEST_ID": "abc123"]).requestID(headers: [:]) == "abc123")
        #expect(params([:]).requestID(headers: ["x-request-id": "from-client"]) == "from-client")
        let generated = params([:]).requestID(headers: ["x-request-id": "bad\"id"])
        #expect(generated.count == 32)
        #expect(generated != params([:]).requestID(headers: [:]))
    }
}
