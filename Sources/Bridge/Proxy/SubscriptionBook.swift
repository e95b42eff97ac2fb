import MQTTCodec
import TopicACL

/// What the client subscribed to, what the broker was actually asked for, and how to answer.
///
/// A requested filter may reach the broker unchanged, narrowed to several filters, or not at
/// all. Broker filters are reference-counted, because two requested filters can narrow to the
/// same one (`#` and `sensors/#` both need `sensors/#`): unsubscribing one must not remove the
/// other's subscription at the broker.
struct SubscriptionBook {
    /// How one requested filter maps onto the SUBSCRIBE sent to the broker.
    enum Component: Equatable {
        /// Indices into the broker SUBSCRIBE's filter list.
        case forwarded([Int])
        /// Answered here with this code (not authorized, or over the narrowing limit).
        case refused(ReasonCode)
    }

    struct PendingSubscribe {
        var requested: [String]
        var components: [Component]
        var brokerFilters: [String]
        /// How many of `brokerFilters` narrowing produced.
        var narrowed = 0
    }

    struct PendingUnsubscribe {
        var requested: [String]
        /// Per requested filter: indices into the broker UNSUBSCRIBE, or nil if answered here.
        var components: [[Int]?]
        /// The code for filters answered here (per requested filter).
        var localCodes: [ReasonCode?]
    }

    private(set) var pendingSubscribes: [UInt16: PendingSubscribe] = [:]
    private(set) var pendingUnsubscribes: [UInt16: PendingUnsubscribe] = [:]
    /// Requested filter → the broker filters it holds.
    private(set) var active: [String: [String]] = [:]
    /// Broker filter → how many requested filters hold it.
    private(set) var references: [String: Int] = [:]
    /// Broker filters held through narrowed requested filters, and asked for in SUBSCRIBEs
    /// not yet answered: what counts against max_narrowed_filters.
    private(set) var narrowedHeld = 0
    private(set) var narrowedPending = 0

    /// The broker filters `requested` holds because it was narrowed (0 if held unchanged).
    func narrowedCount(of requested: String) -> Int {
        guard let held = active[requested], held != [requested] else { return 0 }
        return held.count
    }

    mutating func subscribeSent(packetIdentifier: UInt16, _ pending: PendingSubscribe) {
        if let replaced = pendingSubscribes.updateValue(pending, forKey: packetIdentifier) { narrowedPending -= replaced.narrowed }
        narrowedPending += pending.narrowed
    }

    /// Builds the client's SUBACK codes from the broker's and records the subscriptions that
    /// took effect. Returns nil if no SUBSCRIBE with this id is pending.
    mutating func subAckReceived(packetIdentifier: UInt16, brokerCodes: [ReasonCode], deniedCode: ReasonCode) -> [ReasonCode]? {
        guard let pending = pendingSubscribes.removeValue(forKey: packetIdentifier) else { return nil }
        narrowedPending -= pending.narrowed
        var codes: [ReasonCode] = []
        for (filter, component) in zip(pending.requested, pending.components) {
            switch component {
            case .refused(let code):
                codes.append(code)
            case .forwarded(let indices):
                let results = indices.map { $0 < brokerCodes.count ? brokerCodes[$0] : .unspecifiedError }
                let granted = indices.indices.filter { !results[$0].isFailure }
                // The highest QoS granted to any part: the client may receive that much.
                if let best = granted.map({ results[$0] }).max(by: { $0.rawValue < $1.rawValue }) {
                    codes.append(best)
                    hold(filter, granted.map { pending.brokerFilters[indices[$0]] })
                } else {
                    codes.append(results.first ?? deniedCode)
                }
            }
        }
        return codes
    }

    /// Records that `requested` now holds `brokerFilters` (replacing what it held before, as a
    /// repeated SUBSCRIBE replaces the subscription).
    private mutating func hold(_ requested: String, _ brokerFilters: [String]) {
        narrowedHeld -= narrowedCount(of: requested)
        for old in active[requested] ?? [] { release(old) }
        active[requested] = brokerFilters
        narrowedHeld += narrowedCount(of: requested)
        for filter in brokerFilters { references[filter, default: 0] += 1 }
    }

    /// Drops one reference; true when nobody holds the broker filter any more.
    @discardableResult
    private mutating func release(_ brokerFilter: String) -> Bool {
        let count = (references[brokerFilter] ?? 1) - 1
        if count <= 0 {
            references[brokerFilter] = nil
            return true
        }
        references[brokerFilter] = count
        return false
    }

    /// Plans an UNSUBSCRIBE: which broker filters to remove, and which requested filters are
    /// answered here. `unknownFilterTargets` gives, for a filter this session never subscribed
    /// (a resumed persistent session), the broker filters it would map to now.
    mutating func planUnsubscribe(packetIdentifier: UInt16, requested: [String], unknownFilterTargets: (String) -> [String])
        -> (brokerFilters: [String], pending: PendingUnsubscribe) {
        var brokerFilters: [String] = []
        // Position of each broker filter in `brokerFilters`: a filter held by several requested
        // ones is sent once, and finding it must not cost a scan per target (an UNSUBSCRIBE of
        // many narrowed filters took minutes of one event loop with `firstIndex(of:)`).
        var positions: [String: Int] = [:]
        var components: [[Int]?] = []
        var localCodes: [ReasonCode?] = []
        for filter in requested {
            let targets: [String]
            let wasHeld: Bool
            if let held = active[filter] {
                narrowedHeld -= narrowedCount(of: filter)
                active[filter] = nil
                wasHeld = true
                targets = held.filter { release($0) }
            } else {
                wasHeld = false
                // Not subscribed in this session: remove what it would map to, unless another
                // requested filter of this session still needs it.
                targets = unknownFilterTargets(filter).filter { references[$0] == nil }
            }
            if targets.isEmpty {
                components.append(nil)
                // Still held at the broker for another requested filter: done as far as this
                // filter goes. Never subscribed: say so.
                localCodes.append(wasHeld ? .success : .noSubscriptionExisted)
            } else {
                var indices: [Int] = []
                for target in targets {
                    if let existing = positions[target] { indices.append(existing) } else {
                        positions[target] = brokerFilters.count
                        indices.append(brokerFilters.count)
                        brokerFilters.append(target)
                    }
                }
                components.append(indices)
                localCodes.append(nil)
            }
        }
        let pending = PendingUnsubscribe(requested: requested, components: components, localCodes: localCodes)
        if !brokerFilters.isEmpty { pendingUnsubscribes[packetIdentifier] = pending }
        return (brokerFilters, pending)
    }

    /// The client's UNSUBACK codes (5.0) from the broker's.
    mutating func unsubAckReceived(packetIdentifier: UInt16, brokerCodes: [ReasonCode]) -> [ReasonCode]? {
        guard let pending = pendingUnsubscribes.removeValue(forKey: packetIdentifier) else { return nil }
        return Self.codes(for: pending, brokerCodes: brokerCodes)
    }

    static func codes(for pending: PendingUnsubscribe, brokerCodes: [ReasonCode]) -> [ReasonCode] {
        zip(pending.components, pending.localCodes).map { component, local in
            if let local { return local }
            let results = (component ?? []).map { $0 < brokerCodes.count ? brokerCodes[$0] : .success }
            return results.first { !$0.isFailure } ?? results.first ?? .success
        }
    }
}
