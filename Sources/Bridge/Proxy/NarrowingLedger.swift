import NIOConcurrencyHelpers

/// Broker filters held through narrowing by persistent sessions, by client id, across
/// connections. The broker keeps a persistent session's subscriptions when its connection
/// ends, so `max_narrowed_filters` counted per connection alone would let a client reconnect
/// and narrow as much again each time. One ledger per listener (or per linked site), shared by
/// its connections on every event loop.
final class NarrowingLedger: Sendable {
    private let counts = NIOLockedValueBox<[String: Int]>([:])

    /// What the broker may hold for `clientID` through narrowing.
    func count(_ clientID: String) -> Int {
        counts.withLockedValue { $0[clientID] ?? 0 }
    }

    /// Adds `delta` (negative when filters go), never below zero.
    func add(_ delta: Int, for clientID: String) {
        guard delta != 0 else { return }
        counts.withLockedValue { counts in
            let value = max(0, (counts[clientID] ?? 0) + delta)
            counts[clientID] = value == 0 ? nil : value
        }
    }

    /// The broker started a new session for `clientID` (CONNACK without Session Present): it
    /// holds nothing for it any more.
    func reset(_ clientID: String) {
        _ = counts.withLockedValue { $0.removeValue(forKey: clientID) }
    }
}
