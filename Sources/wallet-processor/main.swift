import WalletDomain
import WalletPlatform
import WalletStore
import WalletServices
import CMalloc
#if canImport(Glibc)
import Glibc
#endif

/// wallet-processor: one pass over every withdrawal due, then exit. Exit 0 when the pass
/// did its work (whatever the bank answered), 1 when it could not (database unreachable),
/// 2 for an invalid configuration.
func run() -> Int32 {
    let log = Log(component: "wallet-processor")
    let settings: Settings
    let bankToken: String?
    do {
        let environment = Settings.processEnvironment()
        settings = try Settings(environment: environment)
        try settings.checkDatabaseDirectory()
        bankToken = try BankToken.read(environment: environment, settings: settings)
    } catch {
        log.write(.error, "invalid_configuration", ["message": .string("\(error)")])
        return 2
    }
    signal(SIGPIPE, SIG_IGN)
    keepFreedMemory()
    do {
        let store = try Store.open(location: settings.databasePath, synchronous: settings.synchronous)
        let bank = try CurlBank(
            url: settings.bankURL, bearerToken: bankToken, timeoutMilliseconds: settings.bankTimeoutMilliseconds,
            concurrency: settings.bankConcurrency,
            // Half the lease's grace: an attempt goes out within that long of its claim.
            sendMarginMicroseconds: settings.leaseGraceSeconds * 500_000)
        let pass = ProcessorPass(store: store, bank: bank, settings: settings, log: log, owner: ownerName())
        if let fault = getenv("WALLET_FAULT_POINT").map({ String(cString: $0) }) {
            installFault(fault, on: pass, log: log)
        }
        _ = try pass.run()
        return 0
    } catch {
        log.write(.error, "pass_failed", ["message": .string("\(error)")])
        return 1
    }
}

/// glibc returns the top of the heap to the kernel whenever 128 KiB there are free, and a
/// pass frees and reallocates that much per batch: 4 brk calls and their page faults per
/// withdrawal, a tenth of the pass's time. Keep up to 64 MiB instead (the pass's peak is
/// about 20 MB).
func keepFreedMemory() {
    _ = mallopt(cmalloc_trim_threshold, 64 << 20)
}

/// Names this pass in leases: host, process and a random part, so that no two passes,
/// even on two machines sharing a database by mistake, can hold the same lease.
func ownerName() -> String {
    var host = [CChar](repeating: 0, count: 256)
    gethostname(&host, host.count - 1)
    let hostName = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return "\(hostName):\(getpid()):\(UInt32.random(in: 0...UInt32.max))"
}

/// Test runs only: a fault at a named point, to prove what happens there.
/// - `after-bank-answer`: dies with SIGKILL once the bank has answered (and may have paid),
///   before anything of it is recorded: nothing is lost and nothing is paid twice.
/// - `stall-after-claim`: sleeps `WALLET_FAULT_STALL_MS` (default 3000) after a claim
///   committed, before the bank is called, as a paused process would: an attempt whose
///   lease no longer outlasts the call is not sent.
func installFault(_ point: String, on pass: ProcessorPass, log: Log) {
    switch point {
    case "after-bank-answer":
        pass.beforeRecording = { finished in
            log.write(.warning, "fault_injected", ["fault_point": .string(point), "answers": .integer(Int64(finished.count))])
            kill(getpid(), SIGKILL)
        }
    case "stall-after-claim":
        let milliseconds = getenv("WALLET_FAULT_STALL_MS").flatMap { Int32(String(cString: $0)) } ?? 3_000
        pass.afterClaim = { claimed in
            log.write(.warning, "fault_injected", ["fault_point": .string(point), "claimed": .integer(Int64(claimed.count))])
            usleep(UInt32(max(0, milliseconds)) * 1_000)
        }
    default:
        log.write(.error, "unknown_fault_point", ["fault_point": .string(point)])
    }
}

exit(run())
