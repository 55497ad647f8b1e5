import WalletJSON

/// Every bound the service enforces, in one place, each with the reason for its number.
/// Names end with their unit. Where a limit has a twin elsewhere (nginx, the SQL schema),
/// the comment names it: change both or neither.
public enum Limits {
    /// The largest amount one deposit or withdrawal may carry: 10^15 minor units (ten
    /// trillion in a two-decimal currency). Twin: the `CHECK` on `transactions.amount`.
    public static let amountMinorUnitsMax: Int64 = 1_000_000_000_000_000

    /// A request body larger than this is refused with 413. Twin: nginx's
    /// `client_max_body_size 16k`; the responder checks again so it never trusts nginx alone.
    public static let requestBodyBytesMax = 16 * 1024

    /// Idempotency keys are 1 to 255 printable ASCII characters (openapi.yaml).
    public static let idempotencyKeyBytesMax = 255

    /// How long a stored idempotent answer is kept. The API promises at least 24 hours; two
    /// days leave room for a client retrying across a long outage.
    public static let idempotencyRetentionSeconds: Int64 = 48 * 3600

    /// Page sizes of the transaction list (the API: 1 to 500, default 50).
    public static let pageSizeDefault = 50
    public static let pageSizeMax = 500

    /// JSON nesting deeper than this is refused: no valid request nests more than two levels,
    /// and a recursive parser must not be driven into the stack guard by `[[[[...`.
    public static let jsonDepthMax = 16

    /// How long a connection waits for another process (processor, walletctl) holding the
    /// write lock. Within the responder writers never wait on each other (one writer thread).
    public static let busyTimeoutMilliseconds: Int32 = 5_000

    /// Write requests applied in one transaction and made durable by one sync at most.
    /// Large enough to absorb a burst from every nginx connection, small enough that one
    /// batch stays a few milliseconds of work.
    public static let groupCommitRequestsMax = 256

    /// Withdrawals claimed, debited or recorded in one processor transaction.
    public static let processorBatchMax = 256

    /// The responder's accept threads. Reads gain nothing past about twice the cores
    /// (measured on 2 cores), but a thread waiting for the group commit holds its request, so the
    /// thread count bounds how many writes can share one sync: on the 2-core reference
    /// machine 4 threads gave 1.1k durable deposits/s at 32 connections and 16 gave 3.4k,
    /// as fast as without durable syncs. Each thread costs a stack and an SQLite connection.
    public static let acceptThreadsDefault = 16

    /// The most accept threads the responder grows to. nginx keeps idle FastCGI connections
    /// open (its upstream `keepalive`, per worker), and each one holds a thread; the pool
    /// grows whenever no thread is left to accept, so it needs room for nginx's idle pool
    /// (keepalive × worker_processes) plus the requests in flight.
    public static let acceptThreadsMax = 256

    /// The write connections a responder keeps open at most with `--writes connections`
    /// (PostgreSQL), by default: writers past it wait for one to be free. Each is a server
    /// process; a few writing at once are enough for the server to make their commits
    /// durable together, and many more only queue on the same WAL flush.
    public static let writeConnectionsDefault = 16

    /// The bank's bearer token, in bytes. Real tokens are a few hundred bytes; a file larger
    /// than this is the wrong file (a key, a log), and it would go out in every bank call.
    public static let bankTokenBytesMax = 4_096

    /// An API key's name, in bytes: a label for the operator ("billing-service", "alice's laptop").
    public static let apiKeyNameBytesMax = 64

    /// How stale an API key's "last used" time may get, in seconds: the responder records a
    /// use at most this often per key, so that reads stay reads.
    public static let apiKeyLastUsedIntervalSeconds: Int64 = 60

    /// API key lookups a database connection remembers between two changes to the
    /// database (Store.apiKey(digest:)); past this many (a client inventing keys) it forgets
    /// them all and starts again.
    public static let apiKeyLookupsCachedMax = 1_024

    /// How long one notifier pass claims and sends, in seconds, at most (and by default,
    /// `WALLET_NOTIFY_PASS_SECONDS`): then it records what is in flight and exits, well
    /// before systemd's start timeout (TimeoutStartSec=10min) would kill it mid-window, and
    /// the next pass goes on.
    public static let notifierPassSecondsMax: Int64 = 120

    /// How often a long notifier pass turns new events into deliveries, in seconds.
    public static let notifierFanOutIntervalSeconds: Int64 = 5
}
