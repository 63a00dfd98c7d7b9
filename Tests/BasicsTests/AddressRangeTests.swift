import Testing

@testable import Basics

@Suite struct AddressRangeTests {
    @Test func loopbackCoversIPv4LoopbackAndIPv6OneAndMappedAddresses() {
        let loopback = AddressRange.loopback
        for allowed in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"] {
            #expect(loopback.allows(allowed), "\(allowed)")
        }
        for refused in [
            "128.0.0.1", "10.0.0.1", "::2", "fe80::1", "::ffff:10.0.0.1", "unix:", "", "localhost", "127.0.0.1 ",
        ] {
            #expect(!loopback.allows(refused), "\(refused)")
        }
        #expect(!loopback.allows(nil))
    }

    @Test func prefixesMaskTheRightBits() {
        let range = AddressRange("10.1.2.3/12")!
        #expect(range.description == "10.0.0.0/12")
        #expect(range.contains("10.15.255.255") && !range.contains("10.16.0.0"))
        #expect(AddressRange("0.0.0.0/0")!.contains("203.0.113.9"))
        #expect(!AddressRange("0.0.0.0/0")!.contains("::1"))
        let six = AddressRange("fd00::/8")!
        #expect(six.contains("fdab::1") && !six.contains("fe00::1"))
        #expect(AddressRange("192.0.2.1")!.contains("192.0.2.1") && !AddressRange("192.0.2.1")!.contains("192.0.2.2"))
    }

    @Test func invalidEntriesAreRejected() {
        for bad in [
            "", "300.1.1.1", "10.0.0.0/33", "::/129", "10.0.0.0/-1", "10.0.0.0/x", "host.example", "1.2.3.4/8/9",
        ] {
            #expect(AddressRange(bad) == nil, "\(bad)")
        }
        #expect(AddressRange.list("127.0.0.1, ::1")?.count == 2)
        #expect(AddressRange.list("127.0.0.1,bad") == nil)
        #expect(AddressRange.list(" , ") == nil)
    }
}
