import WalletDomain
import WalletJSON
import WalletPlatform
import WalletHTTP
import WalletStore
import WalletServices
#if canImport(Glibc)
import Glibc
#endif

/// The responder's command line. Settings shared with the other programs come from the
/// environment (`Settings`); these are only about how this process listens.
struct Options {
    var socketPath: String?
    /// The socket file's mode when this process creates it. 0660 lets the group (nginx's,
    /// in a deployment) connect and nobody else; development stacks pass 0666.
    var socketMode: mode_t = 0o660
    var threads = Limits.acceptThreadsDefault
    var maxThreads = Limits.acceptThreadsMax
    var help = false

    static let usage = """
        usage: wallet-fcgi [--socket PATH [--socket-mode OCTAL]] [--threads N] [--max-threads N]

          --socket PATH        create and listen on this unix socket; without it, serve the
                               listening socket on fd 0 (systemd StandardInput=socket, spawn-fcgi)
                               or fd 3 (systemd LISTEN_FDS)
          --socket-mode OCTAL  the created socket's mode (default 0660)
          --threads N          accept threads at start, each with its own database connection
                               (default \(Limits.acceptThreadsDefault))
          --max-threads N      the most accept threads: the pool grows while every thread holds a
                               connection, as nginx's kept-alive ones do (default \(Limits.acceptThreadsMax))

        Settings come from the environment: WALLET_DB (default var/wallet.db), and the rest of README.
        """

    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    init(arguments: [String]) throws {
        var remaining = arguments[...]
        while let argument = remaining.popFirst() {
            switch argument {
            case "--socket":
                guard let path = remaining.popFirst(), !path.isEmpty else { throw Invalid(description: "--socket needs a path") }
                socketPath = path
            case "--socket-mode":
                guard let text = remaining.popFirst(), let mode = mode_t(text, radix: 8), mode <= 0o777 else {
                    throw Invalid(description: "--socket-mode needs an octal mode such as 0660")
                }
                socketMode = mode
            case "--threads":
                guard let text = remaining.popFirst(), let count = Int(text), (1...64).contains(count) else {
                    throw Invalid(description: "--threads needs a number from 1 to 64")
                }
                threads = count
            case "--max-threads":
                guard let text = remaining.popFirst(), let count = Int(text), (1...1024).contains(count) else {
                    throw Invalid(description: "--max-threads needs a number from 1 to 1024")
                }
                maxThreads = count
            case "-h", "--help":
                help = true
            default:
                throw Invalid(description: "unknown argument \(argument)")
            }
        }
        guard threads <= maxThreads else {
            throw Invalid(description: "--threads (\(threads)) cannot be more than --max-threads (\(maxThreads))")
        }
    }
}
