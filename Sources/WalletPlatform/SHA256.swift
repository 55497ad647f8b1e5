import WalletDomain
import WalletJSON
import CCrypto

/// SHA-256 and HMAC-SHA256 from OpenSSL's libcrypto. SHA-256 chains the ledger and
/// fingerprints requests, where a collision must not be constructible; HMAC-SHA256 signs
/// what a receiver must be able to authenticate. Checked against the standards' test
/// vectors in the unit tests.
public enum SHA256 {
    /// The digest size in bytes.
    public static let digestBytes = 32

    /// The 32-byte digest of `message`.
    public static func hash(_ message: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: digestBytes)
        message.withUnsafeBufferPointer { input in
            digest.withUnsafeMutableBufferPointer { output in
                // SHA256 reads `count` bytes (none for an empty message, whose base address
                // may be nil) and writes exactly 32; it cannot fail.
                _ = CCrypto.SHA256(input.baseAddress, input.count, output.baseAddress)
            }
        }
        return digest
    }

    /// HMAC-SHA256 of `message` under `key`: 32 bytes.
    public static func hmac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: digestBytes)
        var length: UInt32 = 0
        let result = key.withUnsafeBufferPointer { keyBytes in
            message.withUnsafeBufferPointer { input in
                digest.withUnsafeMutableBufferPointer { output in
                    HMAC(
                        EVP_sha256(), keyBytes.baseAddress, Int32(keyBytes.count), input.baseAddress, input.count,
                        output.baseAddress, &length)
                }
            }
        }
        precondition(result != nil && length == UInt32(digestBytes), "libcrypto's HMAC-SHA256 failed")
        return digest
    }

    /// The digest as lower-case hexadecimal.
    public static func hex(_ message: [UInt8]) -> String {
        hexString(hash(message))
    }

    /// Written straight into the string's storage: every ledger row's hash and every step of
    /// a checkpoint goes through here.
    public static func hexString(_ bytes: [UInt8]) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            for (index, byte) in bytes.enumerated() {
                out[2 * index] = hexDigit(byte >> 4)
                out[2 * index + 1] = hexDigit(byte & 0x0F)
            }
            return bytes.count * 2
        }
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }

    /// Compares two byte strings in time that depends only on their lengths, never on where
    /// they differ: for secrets and their digests.
    public static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        return lhs.withUnsafeBytes { left in
            rhs.withUnsafeBytes { right in CRYPTO_memcmp(left.baseAddress, right.baseAddress, left.count) == 0 }
        }
    }
}
