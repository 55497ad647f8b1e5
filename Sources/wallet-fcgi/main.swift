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

/// wallet-fcgi: the FastCGI responder. Everything it owns lives in `run()`'s locals.
func run() -> Int32 {
    let log = Log(component: "wallet-fcgi")
    let options: Options
    do {
        options = try Options(arguments: Array(CommandLine.arguments.dropFirst()))
    } catch {
        printError("wallet-fcgi: \(error)\n\(Options.usage)")
        return 2
    }
    if options.help {
        print(Options.usage)
        return 0
    }
    let settings: Settings
    let webhookMasterKey: [UInt8]?
    do {
        let environment = Settings.processEnvironment()
        settings = try Settings(environment: environment)
        try settings.checkDatabaseDirectory()
        webhookMasterKey = try WebhookMasterKey.read(environment: environment, settings: settings)
    } catch {
        log.write(.error, "invalid_configuration", ["message": .string("\(error)")])
        printError("wallet-fcgi: \(error)")
        return 2
    }
    let location = DatabaseLocation(settings.databasePath)
    let writes = options.writes ?? .default(for: location)
    guard writes == .groupCommit || location.isPostgres else {
        printError("wallet-fcgi: --writes connections needs PostgreSQL: SQLite has one writer at a time")
        return 2
    }

    // Block the stop signals before any thread starts, so that every thread inherits the
    // mask and only the main thread, in sigwait, ever sees them.
    var stopSignals = sigset_t()
    sigemptyset(&stopSignals)
    sigaddset(&stopSignals, SIGTERM)
    sigaddset(&stopSignals, SIGINT)
    pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
    // A client that hangs up mid-answer must not kill the process.
    signal(SIGPIPE, SIG_IGN)

    let writerStore: Store
    var readers: [Store] = []
    do {
        writerStore = try Store.open(location: settings.databasePath, synchronous: settings.synchronous)
        for _ in 0..<options.threads {
            readers.append(try Store.open(location: settings.databasePath, queryOnly: true))
        }
    } catch {
        // The location as logs may show it: for PostgreSQL, its hosts, ports and database only.
        let database = Store.describe(location: settings.databasePath)
        log.write(.error, "database_unavailable", ["database": .string(database), "message": .string("\(error)")])
        printError("wallet-fcgi: cannot open \(database): \(error)")
        return 1
    }

    guard FCGX_Init() == 0 else {
        printError("wallet-fcgi: FCGX_Init failed")
        return 1
    }
    let source: ListenSource
    let listenFD: Int32
    do {
        (source, listenFD) = try ListenSocket.open(options)
    } catch {
        log.write(.error, "socket_unavailable", ["message": .string("\(error)")])
        printError("wallet-fcgi: \(error)")
        return 1
    }

    // FastCGI has no authentication: on TCP, the peer's address is the only credential.
    let peers: PeerAllowList?
    if ListenSocket.isTCP(listenFD) {
        peers = options.allowList ?? .loopbackOnly
    } else if options.allowList != nil {
        printError("wallet-fcgi: --allow applies to TCP sockets only; the inherited socket is a unix socket")
        return 1
    } else {
        peers = nil
    }

    let metrics = Metrics()
    let writer: any WriteExecutor
    var groupCommit: GroupCommitWriter?
    switch writes {
    case .groupCommit:
        let batches = GroupCommitWriter(store: writerStore, onBatch: { metrics.recordBatch(size: $0) })
        batches.start()
        (writer, groupCommit) = (batches, batches)
    case .connections:
        let path = settings.databasePath
        writer = ConnectionPoolWriter(capacity: options.writeConnections, idle: [writerStore], open: { try Store.open(location: path) })
    }
    let context: ServerContext
    do {
        context = try ServerContext(
            api: WalletAPI(
                writer: writer, metrics: metrics, webhookMasterKey: webhookMasterKey, webhookAllowsHTTP: settings.webhookAllowsHTTP),
            settings: settings, log: log, listenFD: listenFD, peers: peers,
            maxThreads: options.maxThreads)
    } catch {
        printError("wallet-fcgi: \(error)")
        return 1
    }
    for reader in readers {
        guard context.addThread(reader: reader) else {
            printError("wallet-fcgi: cannot start \(options.threads) accept threads")
            return 1
        }
    }
    log.write(
        .info, "started",
        [
            "threads": .integer(Int64(options.threads)), "max_threads": .integer(Int64(options.maxThreads)),
            "database": .string(Store.describe(location: settings.databasePath)),
            "socket": .string(source.description), "allow": .string(peers?.description),
            "synchronous": .string(settings.synchronous.rawValue), "writes": .string(writes.rawValue),
            "write_connections": .string(writes == .connections ? String(options.writeConnections) : nil),
            "webhooks": .string(webhookMasterKey == nil ? "off (no master key)" : "on"),
        ])

    var received: Int32 = 0
    sigwait(&stopSignals, &received)
    log.write(.info, "stopping", ["signal": .integer(Int64(received))])
    drain(context, source: source)
    groupCommit?.stop()
    ListenSocket.close(source, fd: listenFD)
    log.write(.info, "stopped", [:])
    return 0
}

/// Lets requests in flight finish, within a deadline, after which the process exits anyway
/// (nginx answers 502 for what is cut, and idempotency keys make those safe to retry).
func drain(_ context: ServerContext, source: ListenSource) {
    context.stopping.store(true, ordering: .releasing)
    context.stopSignal.raise()
    FCGX_ShutdownPending()
    if source.isOwned {
        // Our own socket: wake every thread blocked in accept(). A shared socket must not
        // be shut down: it would break it for the sibling or the next instance too.
        shutdown(context.listenFD, Int32(SHUT_RDWR))
    }
    let deadline = Timestamp.now().adding(seconds: 10)
    while Timestamp.now() < deadline {
        let idle = context.active.load(ordering: .acquiring) == 0
        let threadsDone = context.running.load(ordering: .acquiring) == 0
        if source.isOwned, threadsDone { return }
        if case .inherited = source, idle {
            // Threads blocked in accept() on a shared socket stay there; give one that has
            // just accepted a moment to count itself, then go.
            usleep(50_000)
            if context.active.load(ordering: .acquiring) == 0 { return }
        }
        usleep(5_000)
    }
}

func printError(_ message: String) {
    Log.writeLine(message)
}

exit(run())
