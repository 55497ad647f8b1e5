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
        var length: UInt32 = 0
        let result = message.withUnsafeBufferPointer { input in
            digest.withUnsafeMutableBufferPointer { output in
                // Reads `count` bytes (none for an empty message, whose base address may be
                // nil) and writes exactly 32.
                EVP_Digest(input.baseAddress, input.count, output.baseAddress, &length, FetchedSHA256.shared.algorithm, nil)
            }
        }
        precondition(result == 1 && length == UInt32(digestBytes), "libcrypto's SHA-256 failed")
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

/// SHA-256 as libcrypto's default provider implements it, looked up once per process. The
/// one-shot `SHA256()` of OpenSSL 3 looks the algorithm up on every call, which cost more
/// than the hashing itself for a ledger row's few blocks (every balance change hashes one,
/// and a first checkpoint hashes one for every row of the ledger).
///
/// `@unchecked Sendable`: a fetched `EVP_MD` is immutable and libcrypto lets threads share
/// it; it is never freed (one per process).
private final class FetchedSHA256: @unchecked Sendable {
    static let shared = FetchedSHA256()
    let algorithm: OpaquePointer

    private init() {
        guard let algorithm = EVP_MD_fetch(nil, "SHA256", nil) else {
            preconditionFailure("libcrypto has no SHA-256")
        }
        self.algorithm = algorithm
    }
}
