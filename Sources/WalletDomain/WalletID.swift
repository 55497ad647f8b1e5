/// A wallet's public identifier: a random (version 4) UUID, kept in canonical lower-case form.
public struct WalletID: Hashable, Sendable, CustomStringConvertible {
    public let text: String

    /// Accepts the canonical 8-4-4-4-12 hexadecimal form in either case. Anything else is
    /// not a wallet id (the router then answers 404, as for an unknown wallet).
    public init?(_ text: some StringProtocol) {
        // On the bytes in place: iterating `text.utf8` through the generic protocol cost
        // about 50k instructions an id, and a deposit parses three (its route, twice, and
        // its wallet's row).
        let parsed =
            text.utf8.withContiguousStorageIfAvailable(WalletID.canonical)
            ?? Array(text.utf8).withUnsafeBufferPointer(WalletID.canonical)
        guard let parsed else { return nil }
        self.text = parsed
    }

    /// The lower-case form of a well-formed id, nil for anything else.
    private static func canonical(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        guard bytes.count == 36 else { return nil }
        var valid = true
        let lowered = String(unsafeUninitializedCapacity: 36) { buffer in
            for (index, byte) in bytes.enumerated() {
                if index == 8 || index == 13 || index == 18 || index == 23 {
                    valid = valid && byte == UInt8(ascii: "-")
                    buffer[index] = byte
                } else {
                    switch byte {
                    case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"):
                        buffer[index] = byte
                    case UInt8(ascii: "A")...UInt8(ascii: "F"):
                        buffer[index] = byte + 32
                    default:
                        valid = false
                        buffer[index] = UInt8(ascii: "0")
                    }
                }
            }
            return 36
        }
        return valid ? lowered : nil
    }

    /// A new random id from the system's cryptographic generator.
    public static func random() -> WalletID {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { text.append(UInt8(ascii: "-")) }
            text.append(hex[Int(byte >> 4)])
            text.append(hex[Int(byte & 0x0F)])
        }
        guard let id = WalletID(String(decoding: text, as: UTF8.self)) else {
            preconditionFailure("a generated UUID must parse")
        }
        return id
    }

    public var description: String { text }
}
