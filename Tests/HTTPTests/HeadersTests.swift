import Testing

@testable import HTTP

@Suite struct HTTPHeadersTests {
    @Test func looksUpByExactLowerCaseName() {
        let headers: HTTPHeaders = ["idempotency-key": "abc", "x-request-id": "r1"]
        #expect(headers["idempotency-key"] == "abc")
        #expect(headers["x-request-id"] == "r1")
        #expect(headers["Idempotency-Key"] == nil)
        #expect(headers["missing"] == nil)
        #expect(headers.count == 2)
    }

    @Test func theLastOfARepeatedNameWins() {
        var headers = HTTPHeaders()
        headers.append(name: "x-token", value: "first")
        headers.append(name: "accept", value: "*/*")
        headers.append(name: "x-token", value: "second")
        #expect(headers["x-token"] == "second")
        #expect(headers.count == 3)
    }

    @Test func settingReplacesEveryHeaderOfTheNameAndNilRemovesThem() {
        var headers = HTTPHeaders()
        headers.append(name: "x-token", value: "first")
        headers.append(name: "x-token", value: "second")
        headers["x-token"] = "third"
        #expect(headers["x-token"] == "third")
        #expect(headers.count == 1)
        headers["x-token"] = nil
        #expect(headers["x-token"] == nil)
        #expect(headers.count == 0)
    }
}
