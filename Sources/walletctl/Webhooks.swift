import WalletDomain
import WalletJSON
import WalletPlatform
import WalletStore
import ArgumentParser

struct Webhooks: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect webhook deliveries and queue one again.", subcommands: [Deliveries.self, Redeliver.self])

    struct Deliveries: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List webhook deliveries, newest first.")
        @OptionGroup var common: Common
        @Flag(help: "Only deliveries given up, and pending ones whose last attempt did not deliver.") var failed = false
        @Option(help: "At most this many deliveries.") var limit = 100

        func run() throws {
            let deliveries = try common.store().deliveries(failedOnly: failed, limit: limit)
            if common.json {
                print(jsonArray(deliveries.map(\.json)))
                return
            }
            var table = Table("ID", "ENDPOINT", "EVENT", "TYPE", "STATE", "ATTEMPTS", "NEXT_ATTEMPT_AT", "LAST_STATUS", "LAST_ERROR")
            for delivery in deliveries {
                table.add(
                    String(delivery.id), "\(delivery.endpointID) \(Settings.redactedURL(delivery.url))", String(delivery.eventID),
                    delivery.eventType.rawValue, delivery.state.rawValue, String(delivery.attempts), delivery.nextAttemptAt?.rfc3339 ?? "-",
                    delivery.lastStatus.map { String($0) } ?? "-", delivery.lastError ?? "-")
            }
            print(table.rendered)
        }
    }

    struct Redeliver: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queue a delivery again, due now (it goes out before its endpoint's later pending ones).")
        @OptionGroup var common: Common
        @Argument(help: "The delivery's id (walletctl webhooks deliveries).") var id: Int64

        func run() throws {
            let store = try common.store(writable: true)
            try administer(store, AdminCommand("webhooks redeliver", ["id": .integer(id)])) { store, now in
                guard try store.redeliver(id, now: now) else {
                    throw Failed(
                        description: "no delivery \(id) to queue again (unknown, already pending, or its endpoint was deleted)",
                        code: "not_found")
                }
            }
            print(common.json ? "{\"redelivered\": \(id)}" : "delivery \(id) queued again")
        }
    }
}
