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
    /// A TCP address to create, bind and listen on instead of a unix socket.
    var listenAddress: ListenAddress?
    /// Who may connect when the listening socket is TCP (created or inherited); nil: the
    /// default, loopback only.
    var allowList: PeerAllowList?
    /// The socket file's mode when this process creates it. 0660 lets the group (nginx's,
    /// in a deployment) connect and nobody else; development stacks pass 0666.
    var socketMode: mode_t = 0o660
    var threads = Limits.acceptThreadsDefault
    var maxThreads = Limits.acceptThreadsMax
    /// How writes reach the database; nil: the engine's default (`WriteMode.default(for:)`).
    var writes: WriteMode?
    /// With `--writes connections`, the most write connections open at once.
    var writeConnections = Limits.writeConnectionsDefault
    var help = false

    /// How the responder's writes reach the database.
    enum WriteMode: String {
        /// One writer thread applies every write queued, each in a savepoint, in one
        /// transaction with one commit (`GroupCommitWriter`): SQLite's default, whose writers
        /// take turns anyway.
        case groupCommit = "group-commit"
        /// A transaction per request, on a connection of its own, all at once
        /// (`ConnectionPoolWriter`): PostgreSQL's default, whose commits are made durable
        /// together by the server. SQLite has one writer at a time and refuses it.
        case connections

        static func `default`(for location: DatabaseLocation) -> WriteMode {
            location.isPostgres ? .connections : .groupCommit
        }
    }

    static let usage = """
        usage: wallet-fcgi [--socket PATH [--socket-mode OCTAL] | --listen ADDRESS:PORT] [--allow ADDR[,ADDR...]]
                           [--threads N] [--max-threads N] [--writes group-commit|connections]
                           [--write-connections N]

          --socket PATH        create and listen on this unix socket; without it (and without
                               --listen), serve the listening socket on fd 0 (systemd
                               StandardInput=socket, spawn-fcgi) or fd 3 (systemd LISTEN_FDS)
          --socket-mode OCTAL  the created socket's mode (default 0660)
          --listen ADDR:PORT   create and listen on this TCP address instead: 127.0.0.1:9000,
                               0.0.0.0:9000, [::1]:9000 (numeric addresses only)
          --allow ADDR,...     on a TCP socket (--listen, or inherited), serve only connections
                               from these IPv4/IPv6 addresses (the nginx hosts); others are
                               closed unread (default: loopback only, 127.0.0.0/8 and ::1)
          --threads N          accept threads at start, each with its own database connection
                               (default \(Limits.acceptThreadsDefault))
          --max-threads N      the most accept threads: the pool grows while every thread holds a
                               connection, as nginx's kept-alive ones do (default \(Limits.acceptThreadsMax))
          --writes MODE        group-commit: one writer thread, every write queued in one
                               transaction (the default on SQLite); connections: a transaction
                               per request on a connection of its own, for PostgreSQL only (its
                               default)
          --write-connections N  with --writes connections, the most write connections at once;
                               writes past them wait (default \(Limits.writeConnectionsDefault))

        Settings come from the environment: WALLET_DB (an SQLite file, default var/wallet.db, or a PostgreSQL URI or conninfo), and the rest of README.
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
            case "--listen":
                guard let text = remaining.popFirst(), !text.isEmpty else {
                    throw Invalid(description: "--listen needs ADDRESS:PORT, e.g. 127.0.0.1:9000 or [::1]:9000")
                }
                do { listenAddress = try ListenAddress(parsing: text) } catch { throw Invalid(description: error.description) }
            case "--allow":
                guard let text = remaining.popFirst(), !text.isEmpty else {
                    throw Invalid(description: "--allow needs ADDR[,ADDR...], e.g. 10.0.0.2,10.0.0.3")
                }
                do { allowList = try PeerAllowList(parsing: text) } catch { throw Invalid(description: error.description) }
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
            case "--writes":
                guard let text = remaining.popFirst(), let mode = WriteMode(rawValue: text) else {
                    throw Invalid(description: "--writes needs group-commit or connections")
                }
                writes = mode
            case "--write-connections":
                guard let text = remaining.popFirst(), let count = Int(text), (1...256).contains(count) else {
                    throw Invalid(description: "--write-connections needs a number from 1 to 256")
                }
                writeConnections = count
            case "-h", "--help":
                help = true
            default:
                throw Invalid(description: "unknown argument \(argument)")
            }
        }
        if socketPath != nil, listenAddress != nil {
            throw Invalid(description: "--socket and --listen exclude each other: one listening socket per process")
        }
        if socketPath != nil, allowList != nil {
            throw Invalid(description: "--allow applies to TCP sockets only; a unix socket is guarded by its mode")
        }
        guard threads <= maxThreads else {
            throw Invalid(description: "--threads (\(threads)) cannot be more than --max-threads (\(maxThreads))")
        }
    }
}
