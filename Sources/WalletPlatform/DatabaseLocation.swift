/// Where the database is, as `WALLET_DB` says: a PostgreSQL connection URI
/// (`postgresql://...` or `postgres://...`) or a libpq conninfo string (`key=value` pairs),
/// or else the path of an SQLite file (the default). A password never belongs in it:
/// libpq reads one from its password file (`PGPASSFILE`, or `passfile=`).
public enum DatabaseLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(conninfo: String)

    public init(_ text: String) {
        let isURI = text.hasPrefix("postgresql://") || text.hasPrefix("postgres://")
        self = isURI || text.contains("=") ? .postgres(conninfo: text) : .sqlite(path: text)
    }

    public var isPostgres: Bool {
        if case .postgres = self { return true }
        return false
    }
}
