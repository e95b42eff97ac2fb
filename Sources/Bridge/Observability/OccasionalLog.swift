import NIOCore

/// A failure that can repeat many times a second (a full disk) is said at most once per
/// `interval`, with how many times it happened since it was last said.
struct OccasionalLog {
    let interval: TimeAmount
    private var lastSaid: NIODeadline?
    private var since = 0

    init(interval: TimeAmount) {
        self.interval = interval
    }

    /// Counts one occurrence.
    mutating func occurred() { since += 1 }

    /// When a line is due at `now`: the occurrences since the last one (counting starts anew).
    mutating func due(at now: NIODeadline) -> Int? {
        guard lastSaid.map({ now - $0 >= interval }) ?? true else { return nil }
        lastSaid = now
        defer { since = 0 }
        return since
    }

    /// Whether a line was said since the last `reset`.
    var hasSaid: Bool { lastSaid != nil }

    mutating func reset() { self = OccasionalLog(interval: interval) }
}
