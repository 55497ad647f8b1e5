import WalletDomain

extension APIKeySecret {
    /// What the database keeps of a key: the lower-case hex SHA-256 of its text. A key has
    /// 256 random bits, so a plain hash is enough: nobody can search that space, and a
    /// stolen table yields no key.
    public var digest: String {
        SHA256.hex(Array(text.utf8))
    }
}
