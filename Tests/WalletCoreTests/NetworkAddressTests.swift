import Testing
@testable import WalletPlatform

@Suite("Network addresses: --listen and --allow")
struct NetworkAddressTests {
    @Test(
        "listen addresses that parse",
        arguments: [
            ("127.0.0.1:9000", "127.0.0.1", UInt16(9000)),
            ("0.0.0.0:9000", "0.0.0.0", 9000),
            ("10.0.0.5:1", "10.0.0.5", 1),
            ("[::1]:9000", "::1", 9000),
            ("[::]:65535", "::", 65535),
            ("[fe80::1:2]:80", "fe80::1:2", 80),
        ])
    func listenAccepted(text: String, address: String, port: UInt16) throws {
        let parsed = try ListenAddress(parsing: text)
        #expect(parsed.address == IPAddress(address))
        #expect(parsed.port == port)
        #expect(parsed.description == text)
    }

    @Test(
        "listen addresses that are refused, each with a message naming the problem",
        arguments: [
            ("127.0.0.1", "ADDRESS:PORT"),
            ("127.0.0.1:", "port"),
            ("127.0.0.1:0", "port"),
            ("127.0.0.1:65536", "port"),
            ("127.0.0.1:-1", "port"),
            ("127.0.0.1:+80", "port"),
            ("127.0.0.1:9000x", "port"),
            ("1.2.3:9000", "not an IPv4 or IPv6 address"),
            ("256.0.0.1:9000", "not an IPv4 or IPv6 address"),
            ("localhost:9000", "no host names"),
            (":9000", "not an IPv4 or IPv6 address"),
            ("::1:9000", "ADDRESS:PORT"),
            ("[::1]9000", "[ADDRESS]:PORT"),
            ("[::1:9000", "[ADDRESS]:PORT"),
            ("[127.0.0.1]:9000", "IPv6 addresses only"),
            ("[::1]:", "port"),
        ])
    func listenRefused(text: String, mention: String) {
        #expect {
            try ListenAddress(parsing: text)
        } throws: { error in
            let message = (error as? ListenAddress.Invalid)?.description ?? ""
            return message.contains(text) && message.contains(mention)
        }
    }

    @Test("the default allows loopback and nothing else")
    func loopbackDefault() throws {
        let list = PeerAllowList.loopbackOnly
        for allowed in ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "::ffff:127.0.0.1"] {
            #expect(list.allows(try #require(IPAddress(allowed))), "\(allowed)")
        }
        for refused in ["10.0.0.2", "128.0.0.1", "0.0.0.0", "::2", "::", "::ffff:10.0.0.2", "fe80::1"] {
            #expect(!list.allows(try #require(IPAddress(refused))), "\(refused)")
        }
        #expect(list.description == "loopback")
    }

    @Test("an explicit list allows exactly its addresses, IPv4-mapped peers included, and not loopback")
    func explicitList() throws {
        let list = try PeerAllowList(parsing: "10.0.0.2, 10.0.0.3,fd00::7")
        for allowed in ["10.0.0.2", "10.0.0.3", "::ffff:10.0.0.2", "fd00::7", "fd00:0::7"] {
            #expect(list.allows(try #require(IPAddress(allowed))), "\(allowed)")
        }
        for refused in ["10.0.0.4", "127.0.0.1", "::1", "fd00::8", "10.0.0.20"] {
            #expect(!list.allows(try #require(IPAddress(refused))), "\(refused)")
        }
        #expect(list.description == "10.0.0.2,10.0.0.3,fd00::7")
    }

    @Test("allow lists that are refused", arguments: ["", "10.0.0.2,", "10.0.0.0/8", "nginx-1", "10.0.0.2;10.0.0.3", "[::1]"])
    func allowRefused(text: String) {
        #expect(throws: ListenAddress.Invalid.self) { try PeerAllowList(parsing: text) }
    }

    @Test("IPv6 text is written in its canonical form")
    func canonicalText() throws {
        #expect(try #require(IPAddress("FD00:0:0::0007")).description == "fd00::7")
        #expect(try #require(IPAddress("::ffff:10.0.0.2")).unmapped.description == "10.0.0.2")
        #expect(IPAddress("10.0.0.2 ") == nil)
    }
}
