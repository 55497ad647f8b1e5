/// An API key's row id: what log lines, `walletctl keys` and the database name a client
/// by. Never the secret, never its digest.
public struct APIKeyID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: Int64

    public init(_ rawValue: Int64) {
        self.rawValue = rawValue
    }

    public var description: String { String(rawValue) }

    public static func < (left: APIKeyID, right: APIKeyID) -> Bool { left.rawValue < right.rawValue }
}

/// Who asks the store for a wallet: a client, which sees only the wallets its API key
/// created (another key's wallet is as absent as one that never existed), or the operator
/// (walletctl, the processor), which sees every wallet.
public enum Caller: Hashable, Sendable {
    case client(APIKeyID)
    case `operator`

    /// The key whose wallets this caller sees, or nil for all of them.
    public var keyFilter: APIKeyID? {
        switch self {
        case .client(let key): key
        case .operator: nil
        }
    }
}

/// The text of an API key as a client presents it in `Authorization: Bearer <key>`.
///
/// Any 32 to 128 characters of `[A-Za-z0-9_-]` are accepted as the shape of a key (so that an
/// operator may import one made elsewhere, e.g. a development key a test harness chose); the
/// keys this service makes are `wsk_` followed by 256 random bits in base64url (43
/// characters), so that secret scanners can recognise a leaked one by its prefix.
public struct APIKeySecret: Sendable, Equatable {
    public static let prefix = "wsk_"
    public static let lengthMin = 32
    public static let lengthMax = 128
    /// The random bytes of a new key: 256 bits.
    public static let randomBytes = 32

    public let text: String

    /// The key if `text` has the shape of one, else nil.
    public init?(_ text: String) {
        let bytes = text.utf8
        guard (APIKeySecret.lengthMin...APIKeySecret.lengthMax).contains(bytes.count),
            bytes.allSatisfy(APIKeySecret.isKeyCharacter)
        else { return nil }
        self.text = text
    }

    /// A new key from the system's cryptographic generator (on Linux, the kernel's
    /// `getrandom`).
    public static func random() -> APIKeySecret {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<randomBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
        guard let key = APIKeySecret(prefix + base64URL(bytes)) else {
            preconditionFailure("a generated API key does not have the shape of one")
        }
        return key
    }

    static func isKeyCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    /// Base64url without padding (RFC 4648, section 5).
    static func base64URL(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            var value: UInt32 = 0
            for (offset, byte) in chunk.enumerated() { value |= UInt32(byte) << (16 - 8 * UInt32(offset)) }
            for position in 0...chunk.count { out.append(alphabet[Int((value >> (18 - 6 * UInt32(position))) & 0x3F)]) }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Why a request was refused authentication: logged for the operator (never with the
/// presented value), while the client sees one `401 unauthenticated` for every reason.
public enum AuthenticationFailure: String, Error, Sendable, Equatable {
    case missing
    case malformed
    case unknown
    case revoked
}

/// An API key as `walletctl keys list` shows it: never its secret, nor its digest.
public struct APIKeyRecord: Sendable, Equatable {
    public var id: APIKeyID
    public var name: String
    public var createdAt: Timestamp
    public var revokedAt: Timestamp?
    public var lastUsedAt: Timestamp?
    /// False for the key a migration made to own the wallets that existed before API keys:
    /// it has no secret, so nobody can authenticate with it.
    public var hasSecret: Bool
    public var wallets: Int64

    public init(
        id: APIKeyID, name: String, createdAt: Timestamp, revokedAt: Timestamp?, lastUsedAt: Timestamp?, hasSecret: Bool, wallets: Int64
    ) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.revokedAt = revokedAt
        self.lastUsedAt = lastUsedAt
        self.hasSecret = hasSecret
        self.wallets = wallets
    }
}
