#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import WalletJSON
@testable import WalletDomain
@testable import WalletPlatform
@testable import WalletStore
@testable import WalletHTTP
@testable import WalletServices

@Suite("OSThread")
struct OSThreadTests {
    @Test("a thread runs its body once, under its name, and join waits for it")
    func runsNamedAndJoins() throws {
        let seen = Shared<[String]>([])
        let thread = try OSThread.start(name: "a-long-thread-name-cut") {
            sleepMilliseconds(20)
            let comm = (try? readTextFile("/proc/thread-self/comm")) ?? ""
            seen.update { $0.append(comm.trimmingCharacters(in: "\n")) }
        }
        thread.join()
        #expect(seen.current == ["a-long-thread-n"])
    }

    @Test("a detached thread runs too")
    func detached() throws {
        let ran = Shared(false)
        try OSThread.start(name: "detached", detached: true) { ran.update { $0 = true } }
        #expect(waitUntil { ran.current })
    }
}

private extension String {
    func trimmingCharacters(in characters: Character) -> String {
        String(reversed().drop { $0 == characters }.reversed())
    }
}
