import WalletDomain
import WalletJSON
#if canImport(Glibc)
import Glibc
#endif

/// A pipe used as a signal between threads: `raise` writes a byte, a waiting thread polls
/// `readFD` and, if the signal is to be reused, `clear`s it. Both ends are non-blocking, so
/// raising never waits (a full pipe is already raised) and clearing never blocks.
public final class SignalPipe: Sendable {
    /// The end to poll for `POLLIN`.
    public let readFD: Int32
    private let writeFD: Int32

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public init() throws {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            throw Failure(description: "cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        readFD = fds[0]
        writeFD = fds[1]
    }

    deinit {
        close(readFD)
        close(writeFD)
    }

    /// Makes `readFD` readable until the next `clear`.
    public func raise() {
        var byte: UInt8 = 1
        _ = write(writeFD, &byte, 1)
    }

    /// Empties the pipe; what it signalled is to be looked up elsewhere.
    public func clear() {
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while withUnsafeMutableBytes(of: &scratch, { read(readFD, $0.baseAddress, $0.count) }) > 0 {}
    }
}
