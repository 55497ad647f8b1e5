import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

@Suite("WalletID")
struct WalletIDTests {
    @Test(
        "the canonical form is accepted in either case and folded to lower case",
        arguments: [
            ("3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b", "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"),
            ("3F1C2A4B-5D6E-4F70-8A9B-0C1D2E3F4A5B", "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"),
            ("3f1C2a4B-5d6E-4f70-8A9b-0c1D2e3F4a5B", "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"),
            ("00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", "ffffffff-ffff-ffff-ffff-ffffffffffff"),
        ])
    func accepted(text: String, canonical: String) {
        #expect(WalletID(text)?.text == canonical)
        #expect(WalletID(text) == WalletID(canonical))
        #expect(WalletID(text)?.description == canonical)
    }

    @Test(
        "malformed forms are refused",
        arguments: [
            "",
            "3f1c2a4b5d6e4f708a9b0c1d2e3f4a5b",  // no hyphens
            "{3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b}",  // braces
            "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5",  // one digit short
            "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b0",  // one digit long
            "3f1c2a4b-5d6e-4f70-8a9b_0c1d2e3f4a5b",  // underscore
            "3f1c2a4b5-d6e-4f70-8a9b-0c1d2e3f4a5b",  // hyphen misplaced
            "3f1c2a4g-5d6e-4f70-8a9b-0c1d2e3f4a5b",  // g is not hexadecimal
            "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5 ",  // trailing space
            " 3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5",  // leading space
            "urn:uuid:3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4",
            "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5é",  // 36 characters, 37 bytes
            "------------------------------------",
        ])
    func refused(text: String) {
        #expect(WalletID(text) == nil)
    }

    @Test("random ids are version 4, variant 10, canonical and parse back")
    func randomIsVersion4() throws {
        for _ in 0..<200 {
            let id = WalletID.random()
            let bytes = Array(id.text.utf8)
            #expect(bytes.count == 36)
            #expect(bytes[14] == UInt8(ascii: "4"))
            #expect([UInt8(ascii: "8"), UInt8(ascii: "9"), UInt8(ascii: "a"), UInt8(ascii: "b")].contains(bytes[19]))
            #expect(id.text == id.text.lowercased())
            #expect(WalletID(id.text) == id)
        }
    }

    @Test("random ids do not repeat over many draws")
    func randomIsUnique() {
        let draws = 5_000
        let ids = Set((0..<draws).map { _ in WalletID.random() })
        #expect(ids.count == draws)
    }
}
