import WalletDomain
#if canImport(Glibc)
import Glibc
#endif

/// The bank's bearer token, sent as `Authorization: Bearer <token>`. It comes from a file,
/// never from the environment or the URL (both show up in `ps`, `systemctl show` and
/// error messages): systemd's credential `$CREDENTIALS_DIRECTORY/bank-token`
/// (`LoadCredential=bank-token:/etc/wallet/bank-token`) when there is one, otherwise the
/// file named by `WALLET_BANK_TOKEN_FILE`. No message ever contains the token itself.
public enum BankToken {
    /// The credential's name in `LoadCredential=` and in `$CREDENTIALS_DIRECTORY`.
    public static let credentialName = "bank-token"

    /// What wallet-processor.service's `SetCredential=` puts in the credential when
    /// /etc/wallet/bank-token does not exist (systemd refuses to start a unit whose
    /// `LoadCredential=` file is missing, unless such a fallback is set). It has spaces, so
    /// it can never be a real token: it means "no token".
    public static let credentialAbsent = "no bank token"

    /// The token for this process, or nil when none is configured (the bank needs none).
    public static func read(environment: [String: String], settings: Settings) throws(Settings.Invalid) -> String? {
        if let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty {
            let path = directory + "/" + credentialName
            if access(path, F_OK) == 0 {
                let bytes = try contents(of: path, bytesMax: Limits.bankTokenBytesMax + 3)
                if bytes != Array(credentialAbsent.utf8) { return try token(fromBytes: bytes, path: path) }
            }
        }
        guard let path = settings.bankTokenFile else { return nil }
        return try token(fromFile: path)
    }

    /// The file's token: one trailing newline (`\n` or `\r\n`) removed, then it must be 1 to
    /// `Limits.bankTokenBytesMax` bytes of visible ASCII, the characters a header value and
    /// a bearer token may carry.
    static func token(fromFile path: String) throws(Settings.Invalid) -> String {
        // Room for the token, a "\r\n" and one byte more, which tells a longer file.
        try token(fromBytes: try contents(of: path, bytesMax: Limits.bankTokenBytesMax + 3), path: path)
    }

    static func token(fromBytes bytes: [UInt8], path: String) throws(Settings.Invalid) -> String {
        guard bytes.count <= Limits.bankTokenBytesMax + 2 else { throw tooLong(path) }
        var token = bytes[...]
        if token.last == UInt8(ascii: "\n") { token = token.dropLast() }
        if token.last == UInt8(ascii: "\r") { token = token.dropLast() }
        guard !token.isEmpty else {
            throw Settings.Invalid(description: "the bank token file \(path) is empty: write the token into it, or remove it")
        }
        guard token.count <= Limits.bankTokenBytesMax else { throw tooLong(path) }
        guard token.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw Settings.Invalid(
                description: "the bank token file \(path) holds characters an HTTP header cannot carry "
                    + "(only visible ASCII, no spaces, and one final newline at most)")
        }
        return String(decoding: token, as: UTF8.self)
    }

    private static func tooLong(_ path: String) -> Settings.Invalid {
        Settings.Invalid(description: "the bank token file \(path) holds more than \(Limits.bankTokenBytesMax) bytes: is it the right file?")
    }

    /// Up to `bytesMax` bytes of the file (more are not needed to tell it is too long).
    static func contents(of path: String, bytesMax: Int) throws(Settings.Invalid) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw Settings.Invalid(description: "the bank token file \(path) cannot be read: \(reason)")
        }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: bytesMax)
        var count = 0
        while count < bytesMax {
            let got = bytes.withUnsafeMutableBytes { buffer in
                Glibc.read(descriptor, buffer.baseAddress! + count, bytesMax - count)
            }
            if got < 0 && errno == EINTR { continue }
            guard got >= 0 else {
                let reason = String(cString: strerror(errno))
                throw Settings.Invalid(description: "the bank token file \(path) cannot be read: \(reason)")
            }
            if got == 0 { break }
            count += got
        }
        return Array(bytes[..<count])
    }
}
