import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices
#if canImport(Glibc)
import Glibc
#endif

@Suite("SignalPipe")
struct SignalPipeTests {
    private func readable(_ pipe: SignalPipe) -> Bool {
        var descriptor = pollfd(fd: pipe.readFD, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) == 1
    }

    @Test("raised it is readable until cleared, however often it was raised; clearing never blocks")
    func raiseAndClear() throws {
        let pipe = try SignalPipe()
        #expect(!readable(pipe))
        pipe.clear()
        pipe.raise()
        #expect(readable(pipe))
        for _ in 0..<100_000 { pipe.raise() }  // past the pipe's capacity: raising never waits
        #expect(readable(pipe))
        pipe.clear()
        #expect(!readable(pipe))
    }
}
