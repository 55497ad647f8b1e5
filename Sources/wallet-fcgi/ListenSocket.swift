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
            throw Failure(description: "no listening socket: pass --socket PATH, or start under systemd socket activation (StandardInput=socket)")
        }
        return (.inherited(0), 0)
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
