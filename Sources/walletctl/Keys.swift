import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import WalletHTTP
import WalletServices
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make, list and revoke API keys.",
        discussion: """
            A key is shown once, when it is made; the database keeps only its SHA-256 digest. \
            Rotate a client's key by making a new one, handing it over, moving the client's \
            wallets to it (walletctl wallets assign), and revoking the old one.
            """,
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new API key named NAME and print it, once.",
            discussion: """
                The key is wsk_ and 256 random bits from the kernel. With --stdin the key is read \
                from standard input instead (32 to 128 characters of A-Z a-z 0-9 _ -), for a \
                key chosen elsewhere, such as a development key; it is then not printed.
                """)
        @OptionGroup var common: Common
        @Argument(help: "What the key is for (1 to 64 printable ASCII characters), e.g. billing-service.") var name: String
        @Flag(help: "Read the key from standard input instead of making one.") var stdin = false
        @Flag(help: "With --stdin: succeed when this key is already stored and not revoked.") var existingOk = false

        func validate() throws {
            guard (1...Limits.apiKeyNameBytesMax).contains(name.utf8.count), name.utf8.allSatisfy({ (0x20...0x7E).contains($0) }) else {
                throw ValidationError("the name must be 1 to \(Limits.apiKeyNameBytesMax) printable ASCII characters")
            }
            if existingOk && !stdin { throw ValidationError("--existing-ok goes with --stdin") }
        }

        func run() throws {
            let secret = stdin ? try readKey() : APIKeySecret.random()
            let store = try common.store(writable: true)
            let command = AdminCommand(
                "keys create", ["name": .text(name), "stdin": .flag(stdin), "existing_ok": .flag(existingOk), "key": .secret])
            let outcome: (record: APIKeyRecord, created: Bool) = try administer(store, command) { store, now in
                switch try store.apiKey(digest: secret.digest) {
                case .valid(let id, _):
                    guard existingOk, let record = try store.apiKey(id) else {
                        throw Failed(description: "this key is already stored, as key \(id)", code: "key_exists")
                    }
                    return (record, false)
                case .revoked:
                    throw Failed(description: "this key was revoked; a revoked key cannot be stored again", code: "key_revoked")
                case .unknown:
                    return (try store.createAPIKey(name: name, digest: secret.digest, now: now), true)
                }
            }
            let record = outcome.record
            if common.json {
                var object = record.jsonObject
                if !stdin { object.add("key", secret.text) }
                print(object.result)
            } else if stdin {
                print(outcome.created ? "stored key \(record.id) (\(record.name))" : "key \(record.id) (\(record.name)) is already stored")
            } else {
                print("key \(record.id) (\(record.name)) made. This is the only time it is shown; give it to the client:\n")
                print(secret.text)
            }
        }

        private func readKey() throws -> APIKeySecret {
            guard let line = readLine(strippingNewline: true) else { throw Failed(description: "no key on standard input") }
            guard let key = APIKeySecret(line) else {
                throw Failed(description: "the key on standard input is not 32 to 128 characters of A-Z a-z 0-9 _ -")
            }
            return key
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List API keys (never their secrets).")
        @OptionGroup var common: Common

        func run() throws {
            let keys = try common.store().apiKeys()
            if common.json {
                print(jsonArray(keys.map(\.jsonObject.result)))
                return
            }
            var table = Table("ID", "NAME", "STATE", "WALLETS", "CREATED_AT", "LAST_USED_AT", "REVOKED_AT")
            for key in keys {
                table.add(
                    String(key.id.rawValue), key.name, key.state, String(key.wallets), key.createdAt.rfc3339,
                    key.lastUsedAt?.rfc3339 ?? "-", key.revokedAt?.rfc3339 ?? "-")
            }
            print(table.rendered)
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke API key ID: from the next request on, it is refused.",
            discussion: "Its wallets stay as they are; move them to another key with walletctl wallets assign.")
        @OptionGroup var common: Common
        @Argument(help: "The key's id (walletctl keys list).") var id: Int64

        func run() throws {
            let store = try common.store(writable: true)
            let record = try administer(store, AdminCommand("keys revoke", ["id": .integer(id)])) { store, now in
                guard let record = try store.revokeAPIKey(APIKeyID(id), now: now) else {
                    throw Failed(description: "no API key with id \(id)", code: "not_found")
                }
                return record
            }
            print(common.json ? record.jsonObject.result : "key \(id) (\(record.name)) revoked at \(record.revokedAt?.rfc3339 ?? "-")")
        }
    }
}

extension Wallets {
    struct Assign: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give wallet UUID to API key KEY_ID, with its transactions and history.",
            discussion: """
                For the wallets made before API keys (owned by the key named wallets-before-api-keys, \
                which no client can use), and for moving a client's wallets to its new key when \
                rotating. The previous owner sees the wallet as absent from the next request on.
                """)
        @OptionGroup var common: Common
        @Argument(help: "The wallet's uuid.") var uuid: String
        @Argument(help: "The API key's id (walletctl keys list).") var keyID: Int64

        func run() throws {
            let wallet = try parseWalletID(uuid)
            let store = try common.store(writable: true)
            let command = AdminCommand("wallets assign", ["wallet": .text(wallet.text), "api_key": .integer(keyID)])
            let assigned = try administer(store, command) { store, now in
                switch try store.assignWallet(wallet, to: APIKeyID(keyID), now: now) {
                case .success(let assigned): return assigned
                case .failure(.walletNotFound): throw Failed(description: "no wallet \(uuid)", code: "not_found")
                case .failure(.apiKeyNotFound): throw Failed(description: "no API key with id \(keyID)", code: "not_found")
                case .failure(.apiKeyNotUsable):
                    throw Failed(description: "key \(keyID) is revoked or has no secret; choose a live key", code: "api_key_not_usable")
                }
            }
            print(common.json ? assigned.json : "wallet \(wallet) now belongs to key \(keyID)")
        }
    }
}

extension APIKeyRecord {
    /// `live`, `revoked`, or `no-secret` for the key that owns the wallets made before API keys.
    var state: String {
        if revokedAt != nil { return "revoked" }
        return hasSecret ? "live" : "no-secret"
    }

    var jsonObject: JSONObject {
        var object = JSONObject()
        object.add("id", id.rawValue)
        object.add("name", name)
        object.add("state", state)
        object.add("wallets", wallets)
        object.add("created_at", createdAt.rfc3339)
        object.add("last_used_at", lastUsedAt?.rfc3339)
        object.add("revoked_at", revokedAt?.rfc3339)
        return object
    }
}
