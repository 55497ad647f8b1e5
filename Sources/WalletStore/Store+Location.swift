import WalletDomain
import WalletPlatform
import CPostgres

extension Store {
    /// `location` as logs and error messages may show it: an SQLite file's path as it is; for
    /// PostgreSQL only the hosts, ports and database name, as libpq parses them (a URI or a
    /// conninfo, several hosts allowed), so that no user, password or other option is ever
    /// written out. A conninfo libpq cannot parse is shown as `postgresql (unparsable
    /// conninfo)`.
    public static func describe(location: String) -> String {
        guard case .postgres(let conninfo) = DatabaseLocation(location) else { return location }
        guard let options = PQconninfoParse(conninfo, nil) else { return "postgresql (unparsable conninfo)" }
        defer { PQconninfoFree(options) }
        var host = ""
        var hostAddress = ""
        var port = ""
        var name = ""
        var option = options
        while let keyword = option.pointee.keyword {
            let value = option.pointee.val.map { String(cString: $0) } ?? ""
            switch String(cString: keyword) {
            case "host": host = value
            case "hostaddr": hostAddress = value
            case "port": port = value
            case "dbname": name = value
            default: break
            }
            option += 1
        }
        let server = host.isEmpty ? hostAddress : host
        let shown = { (value: String) in value.isEmpty ? "(default)" : value }
        return "postgresql host=\(shown(server)) port=\(shown(port)) dbname=\(shown(name))"
    }

    /// Refuses a conninfo that libpq cannot parse, or that carries a password, with a message
    /// of our own: libpq's parse errors quote the text they stumble on, which may be the
    /// password itself, and a password belongs in a password file (`PGPASSFILE`) or a
    /// credential, never in `WALLET_DB`.
    static func checkedConninfo(_ conninfo: String) throws -> String {
        var parseError: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &parseError) else {
            if let parseError { PQfreemem(parseError) }
            throw DatabaseError(code: 0, message: "WALLET_DB is not a PostgreSQL URI or conninfo that libpq can parse", sqlState: "08001")
        }
        defer { PQconninfoFree(options) }
        var option = options
        while let keyword = option.pointee.keyword {
            if String(cString: keyword) == "password", let value = option.pointee.val, value.pointee != 0 {
                throw DatabaseError(
                    code: 0, message: "WALLET_DB carries a password; put it in a password file (PGPASSFILE) or a credential instead",
                    sqlState: "08001")
            }
            option += 1
        }
        return conninfo
    }
}
