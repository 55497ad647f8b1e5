import WalletDomain
#if canImport(Glibc)
import Glibc
#endif

/// The webhook master key, from which each endpoint's signing secret is derived, so that the
/// database never holds a secret in clear. Read like the bank token (`BankToken`): systemd's
/// credential `$CREDENTIALS_DIRECTORY/webhook-master-key`
/// (`LoadCredential=webhook-master-key:/etc/wallet/webhook-master-key`) when there is one,
/// otherwise the file named by `WALLET_WEBHOOK_KEY_FILE`. Without either, the responder
/// refuses to create endpoints (503 `webhooks_unavailable`) and the notifier sends nothing.
public enum WebhookMasterKey {
    public static let credentialName = "webhook-master-key"
    /// What the units' `SetCredential=` fallback holds when the file does not exist: "none".
    public static let credentialAbsent = "no webhook master key"
    /// At least 32 bytes (256 bits; `head -c 32 /dev/urandom | xxd -p -c 64` makes 64 hex
    /// characters), at most 4 KiB.
    public static let bytesMin = 32
    public static let bytesMax = 4_096

    public static func read(environment: [String: String], settings: Settings) throws(Settings.Invalid) -> [UInt8]? {
        if let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty {
            let path = directory + "/" + credentialName
            if access(path, F_OK) == 0 {
                let bytes = try BankToken.contents(of: path, bytesMax: bytesMax + 3)
                if bytes != Array(credentialAbsent.utf8) { return try key(fromBytes: bytes, path: path) }
            }
        }
        guard let path = settings.webhookKeyFile else { return nil }
        return try key(fromBytes: try BankToken.contents(of: path, bytesMax: bytesMax + 3), path: path)
    }

    static func key(fromBytes bytes: [UInt8], path: String) throws(Settings.Invalid) -> [UInt8] {
        var key = bytes[...]
        if key.last == UInt8(ascii: "\n") { key = key.dropLast() }
        if key.last == UInt8(ascii: "\r") { key = key.dropLast() }
        guard key.count >= bytesMin, key.count <= bytesMax else {
            throw Settings.Invalid(
                description: "the webhook master key file \(path) must hold \(bytesMin) to \(bytesMax) bytes "
                    + "(make one with: head -c 32 /dev/urandom | xxd -p -c 64)")
        }
        return Array(key)
    }
}

/// Signing secrets and signatures of webhook deliveries (README, "Webhooks").
public enum WebhookSigning {
    public static let secretPrefix = "whsec_"

    /// An endpoint's secret: `whsec_` and the hex of HMAC-SHA256(master key,
    /// "webhook-endpoint:<id>:<nonce>"). The nonce is random and stored with the endpoint, so a
    /// database restored from a backup, which hands out endpoint ids again, never gives a new
    /// endpoint the secret of an old one.
    public static func secret(masterKey: [UInt8], endpointID: Int64, nonce: String) -> String {
        secretPrefix + SHA256.hexString(SHA256.hmac(key: masterKey, message: Array("webhook-endpoint:\(endpointID):\(nonce)".utf8)))
    }

    /// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, the key being the
    /// secret's text exactly as the endpoint's creation answered it (prefix included).
    public static func signature(secret: String, timestamp: Int64, body: [UInt8]) -> String {
        var message = Array("\(timestamp).".utf8)
        message += body
        return "t=\(timestamp),v1=" + SHA256.hexString(SHA256.hmac(key: Array(secret.utf8), message: message))
    }

    /// A random nonce for a new endpoint: 128 bits in hex.
    public static func nonce() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<16).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return String(byte >> 4, radix: 16) + String(byte & 0x0F, radix: 16)
        }.joined()
    }
}
