#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address, as its bytes in network order (4 or 16 of them).
///
/// Only numeric addresses: a listener and an allow list name hosts by address, so what
/// is bound and what is checked never depends on the resolver at start-up.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public enum Family: Sendable { case v4, v6 }

    public let family: Family
    public let bytes: [UInt8]

    /// Parses dotted IPv4 (`10.0.0.5`) or IPv6 text (`::1`, `fe80::1`), nothing else: no
    /// names, no brackets, no port, no zone.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(family: .v4, bytes: withUnsafeBytes(of: v4) { Array($0) })
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(family: .v6, bytes: withUnsafeBytes(of: v6) { Array($0) })
            return
        }
        return nil
    }

    public init(family: Family, bytes: [UInt8]) {
        precondition(bytes.count == (family == .v4 ? 4 : 16), "an IP address has 4 or 16 bytes")
        self.family = family
        self.bytes = bytes
    }

    /// The address a peer presents, as `accept` or `getpeername` filled it in; nil for a
    /// unix socket or another family.
    public init?(peer storage: sockaddr_storage) {
        var copy = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let address = withUnsafeBytes(of: &copy) { $0.load(as: sockaddr_in.self) }.sin_addr
            self.init(family: .v4, bytes: withUnsafeBytes(of: address) { Array($0) })
        case AF_INET6:
            let address = withUnsafeBytes(of: &copy) { $0.load(as: sockaddr_in6.self) }.sin6_addr
            self.init(family: .v6, bytes: withUnsafeBytes(of: address) { Array($0) })
        default:
            return nil
        }
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 one (`::ffff:10.0.0.5`), which is how an
    /// IPv4 peer of a dual-stack socket appears; any other address as it is.
    public var unmapped: IPAddress {
        guard family == .v6, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff else { return self }
        return IPAddress(family: .v4, bytes: Array(bytes[12..<16]))
    }

    /// 127.0.0.0/8 or ::1 (mapped IPv4 included).
    public var isLoopback: Bool {
        let address = unmapped
        switch address.family {
        case .v4: return address.bytes[0] == 127
        case .v6: return address.bytes == [UInt8](repeating: 0, count: 15) + [1]
        }
    }

    public var description: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family == .v4 ? AF_INET : AF_INET6, raw.baseAddress, &text, socklen_t(text.count)) != nil
        }
        precondition(ok, "inet_ntop cannot fail on a 4- or 16-byte address with a large enough buffer")
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// `ADDRESS:PORT` for a TCP listener: `127.0.0.1:9000`, `0.0.0.0:9000`, `[::1]:9000`.
public struct ListenAddress: Equatable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let port: UInt16

    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Parses `IPV4:PORT` or `[IPV6]:PORT`; the port is 1 to 65535 (port 0, "any free
    /// port", would leave nginx without a port to name).
    public init(parsing text: String) throws(Invalid) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw Invalid(description: "--listen \(text): an IPv6 address needs the form [ADDRESS]:PORT")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw Invalid(description: "--listen \(text): expected ADDRESS:PORT, e.g. 127.0.0.1:9000 or [::1]:9000")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let address = IPAddress(String(host)) else {
            throw Invalid(description: "--listen \(text): \"\(host)\" is not an IPv4 or IPv6 address (no host names)")
        }
        if text.hasPrefix("["), address.family != .v6 {
            throw Invalid(description: "--listen \(text): brackets are for IPv6 addresses only")
        }
        guard !portText.isEmpty, portText.allSatisfy(\.isASCII), portText.allSatisfy(\.isNumber),
            let port = Int(portText), (1...65535).contains(port)
        else {
            throw Invalid(description: "--listen \(text): the port must be a number from 1 to 65535")
        }
        self.init(address: address, port: UInt16(port))
    }

    public var description: String {
        address.family == .v6 ? "[\(address)]:\(port)" : "\(address):\(port)"
    }
}

/// Which peers may talk FastCGI to a TCP listener. FastCGI is cleartext and carries no
/// credentials, so the listener trusts the network address alone: the nginx hosts.
public struct PeerAllowList: Equatable, Sendable, CustomStringConvertible {
    /// nil: loopback only (127.0.0.0/8 and ::1), the default.
    public let addresses: Set<IPAddress>?

    public static let loopbackOnly = PeerAllowList(addresses: nil)

    public init(addresses: Set<IPAddress>?) {
        self.addresses = addresses
    }

    /// Parses `ADDR[,ADDR...]`: exact IPv4 or IPv6 addresses, no ranges.
    public init(parsing text: String) throws(ListenAddress.Invalid) {
        var parsed = Set<IPAddress>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = item.trimmingSpaces
            guard let address = IPAddress(trimmed) else {
                throw ListenAddress.Invalid(
                    description: "--allow \(text): \"\(trimmed)\" is not an IPv4 or IPv6 address (a list is ADDR,ADDR,...)")
            }
            parsed.insert(address.unmapped)
        }
        self.init(addresses: parsed)
    }

    public func allows(_ peer: IPAddress) -> Bool {
        guard let addresses else { return peer.isLoopback }
        return addresses.contains(peer.unmapped)
    }

    public var description: String {
        guard let addresses else { return "loopback" }
        return addresses.map(\.description).sorted().joined(separator: ",")
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
