import WalletDomain
import WalletJSON
#if canImport(Glibc)
import Glibc
#endif

/// An operating-system thread running one closure. The one place that starts threads: it
/// hands the closure to `pthread_create` in a retained box, names the thread (as `top -H`
/// and `/proc/PID/task/*/comm` show it), and joins it.
public struct OSThread: Sendable {
    /// pthread_create refused (`code` is its error number, e.g. EAGAIN past the process's
    /// thread limit).
    public struct StartError: Error, CustomStringConvertible {
        public let code: Int32
        public var description: String { "cannot start a thread: \(String(cString: strerror(code)))" }
    }

    private let handle: pthread_t

    /// Starts `body` on a new thread called `name` (Linux keeps the first 15 bytes). A
    /// detached thread cannot be joined; its resources go back when it returns.
    @discardableResult
    public static func start(name: String, detached: Bool = false, _ body: @escaping @Sendable () -> Void) throws(StartError) -> OSThread {
        let box = Unmanaged.passRetained(ThreadBody(name: name, body: body))
        var handle = pthread_t()
        let status = pthread_create(&handle, nil, threadEntry, box.toOpaque())
        guard status == 0 else {
            box.release()
            throw StartError(code: status)
        }
        if detached { pthread_detach(handle) }
        return OSThread(handle: handle)
    }

    /// Waits for the thread to return. Only for a thread started without `detached`, and at
    /// most once.
    public func join() {
        let status = pthread_join(handle, nil)
        precondition(status == 0, "pthread_join failed: \(status)")
    }
}

/// What a new thread runs: immutable, so handing it to another thread is safe.
private final class ThreadBody: Sendable {
    let name: String
    let body: @Sendable () -> Void

    init(name: String, body: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
    }
}

/// The thread entry point: a plain function, so it is a C function pointer and never
/// inherits an actor's isolation (a closure written in `main.swift` would be inferred
/// main-actor, and Swift 6 traps when such a closure runs on another thread).
private func threadEntry(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let argument else { return nil }
    let box = Unmanaged<ThreadBody>.fromOpaque(argument).takeRetainedValue()
    nameCurrentThread(box.name)
    box.body()
    return nil
}

/// Names the calling thread through /proc (glibc's pthread_setname_np is not visible to
/// Swift). A name is a help for the operator, so a failure is ignored.
private func nameCurrentThread(_ name: String) {
    let descriptor = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    close(descriptor)
}
