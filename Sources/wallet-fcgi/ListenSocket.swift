import WalletDomain
import WalletJSON
import WalletPlatform
import WalletHTTP
import WalletStore
import WalletServices
import CFastCGI
#if canImport(Glibc)
import Glibc
#endif

extension ListenSource: CustomStringConvertible {
    var description: String {
        switch self {
        case .path(let path, _): path
        case .tcp(let address): "tcp \(address)"
        case .inherited(let fd): "inherited fd \(fd)"
        }
    }
}

/// Finding, creating and finally removing the listening socket.
enum ListenSocket {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Connections queued before the accept threads take them: enough for every nginx
    /// worker connection of a burst.
    static let backlog: Int32 = 1024

    static func open(_ options: Options) throws -> (ListenSource, Int32) {
        if let address = options.listenAddress {
            return (.tcp(address), try openTCP(address))
        }
        if let path = options.socketPath {
            let fd = FCGX_OpenSocket(path, backlog)
            guard fd >= 0 else { throw Failure(description: "cannot listen on \(path): \(String(cString: strerror(errno)))") }
            // libfcgi creates the socket with the process umask; nginx must be able to connect.
            guard chmod(path, options.socketMode) == 0 else {
                throw Failure(description: "cannot chmod \(path): \(String(cString: strerror(errno)))")
            }
            // Remember which file we bound: fstat on a socket describes the socket, not the
            // file, so the path's own identity is the only way to know it later.
            var created = stat()
            guard stat(path, &created) == 0 else {
                throw Failure(description: "cannot stat \(path): \(String(cString: strerror(errno)))")
            }
            return (.path(path, file: FileIdentity(device: created.st_dev, inode: created.st_ino)), fd)
        }
        // systemd's LISTEN_FDS protocol: the first socket is fd 3, if it was meant for us.
        if let pid = environmentValue("LISTEN_PID"), Int32(pid) == getpid(),
            let count = environmentValue("LISTEN_FDS"), let number = Int(count), number >= 1, isListeningSocket(3)
        {
            return (.inherited(3), 3)
        }
        guard isListeningSocket(0) else {
            throw Failure(
                description: "no listening socket: pass --socket PATH or --listen ADDRESS:PORT, "
                    + "or start under systemd socket activation (StandardInput=socket)")
        }
        return (.inherited(0), 0)
    }

    /// A TCP socket bound to `address` and listening. SO_REUSEADDR lets a restarted
    /// responder bind again while the old one's connections sit in TIME_WAIT; it does not
    /// let two live listeners share the port (that would be SO_REUSEPORT), so a port in use
    /// is still an error. An IPv6 socket takes IPv6 only: `[::]:9000` and `0.0.0.0:9000`
    /// are two listeners, never one that quietly answers both.
    private static func openTCP(_ address: ListenAddress) throws -> Int32 {
        let family = address.address.family == .v4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "cannot listen on \(address): socket: \(String(cString: strerror(errno)))") }
        do {
            try check(setFlag(fd, SOL_SOCKET, SO_REUSEADDR), address, "SO_REUSEADDR")
            if family == AF_INET6 { try check(setFlag(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY), address, "IPV6_V6ONLY") }
            var storage = sockaddr_storage()
            let length = fill(&storage, address)
            let bound = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
            }
            try check(bound, address, "bind")
            try check(listen(fd, backlog), address, "listen")
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    private static func setFlag(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32 {
        var on: Int32 = 1
        return setsockopt(fd, level, name, &on, socklen_t(MemoryLayout<Int32>.size))
    }

    private static func check(_ result: Int32, _ address: ListenAddress, _ step: String) throws {
        guard result == 0 else {
            throw Failure(description: "cannot listen on \(address): \(step): \(String(cString: strerror(errno)))")
        }
    }

    /// Writes `address` as a sockaddr_in or sockaddr_in6 and returns its length.
    private static func fill(_ storage: inout sockaddr_storage, _ address: ListenAddress) -> socklen_t {
        withUnsafeMutableBytes(of: &storage) { raw in
            switch address.address.family {
            case .v4:
                var v4 = sockaddr_in()
                v4.sin_family = sa_family_t(AF_INET)
                v4.sin_port = address.port.bigEndian
                withUnsafeMutableBytes(of: &v4.sin_addr) { $0.copyBytes(from: address.address.bytes) }
                raw.storeBytes(of: v4, as: sockaddr_in.self)
                return socklen_t(MemoryLayout<sockaddr_in>.size)
            case .v6:
                var v6 = sockaddr_in6()
                v6.sin6_family = sa_family_t(AF_INET6)
                v6.sin6_port = address.port.bigEndian
                withUnsafeMutableBytes(of: &v6.sin6_addr) { $0.copyBytes(from: address.address.bytes) }
                raw.storeBytes(of: v6, as: sockaddr_in6.self)
                return socklen_t(MemoryLayout<sockaddr_in6>.size)
            }
        }
    }

    /// True when `fd` is a TCP (IPv4 or IPv6) socket, created here or inherited from
    /// systemd's `ListenStream=ADDRESS:PORT`: then only allowed peers are served.
    static func isTCP(_ fd: Int32) -> Bool {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return false }
        return Int32(storage.ss_family) == AF_INET || Int32(storage.ss_family) == AF_INET6
    }

    /// Removes the socket file, but only if it is still the one this process created: a
    /// replacement instance may already have bound a new socket at the same path.
    static func close(_ source: ListenSource, fd: Int32) {
        if case .path(let path, let created) = source {
            var onDisk = stat()
            if stat(path, &onDisk) == 0, onDisk.st_ino == created.inode, onDisk.st_dev == created.device {
                unlink(path)
            }
        }
        Glibc.close(fd)
    }

    private static func isListeningSocket(_ fd: Int32) -> Bool {
        var accepting: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0 && accepting != 0
    }

    private static func environmentValue(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
