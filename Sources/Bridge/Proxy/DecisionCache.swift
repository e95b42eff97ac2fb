#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TopicACL

/// A topic as a dictionary key that compares by UTF-8 bytes, never by String equality (which
/// would merge canonically equivalent topics the broker treats as different).
struct TopicKey: Hashable {
    let topic: String

    static func == (lhs: TopicKey, rhs: TopicKey) -> Bool {
        let a = lhs.topic.utf8, b = rhs.topic.utf8
        guard a.count == b.count else { return false }
        let fast: Bool?? = a.withContiguousStorageIfAvailable { pa in
            b.withContiguousStorageIfAvailable { pb in pa.count == 0 || memcmp(pa.baseAddress!, pb.baseAddress!, pa.count) == 0 }
        }
        if let fast, let fast { return fast }
        return a.elementsEqual(b)
    }

    func hash(into hasher: inout Hasher) {
        let done: Void? = topic.utf8.withContiguousStorageIfAvailable { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        if done == nil { for byte in topic.utf8 { hasher.combine(byte) } }
    }
}

/// What was worked out for recently seen topics (a decision, a matching rule, a remapped
/// topic). Devices publish to the same few topics over and over; one hash and a memcmp
/// replace the work. Bounded: when full it is emptied rather than grown, so a stream of unique
/// topics costs nothing extra.
struct TopicMemo<Value> {
    static var capacity: Int { 256 }
    private var entries: [TopicKey: Value] = [:]

    mutating func value(for topic: String, orCompute compute: () -> Value) -> Value {
        let key = TopicKey(topic: topic)
        if let hit = entries[key] { return hit }
        let value = compute()
        if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
        entries[key] = value
        return value
    }

    mutating func removeAll() { entries.removeAll(keepingCapacity: true) }
}

/// Recent ACL decisions of one connection, keyed by the topic's bytes: allowed or not, per
/// access, forgotten when the ACL is reloaded.
struct DecisionCache {
    /// Only whether access is allowed: what forwarding needs. A denial's details (the rule,
    /// the reason) are asked of the policy again when it is logged; copying the whole
    /// decision out of the cache for every packet cost more than the lookup.
    private var read = TopicMemo<Bool>()
    private var write = TopicMemo<Bool>()
    private var generation = -1

    /// Whether `policy` allows `access` to `topic`, from the cache or from `policy` (then remembered).
    mutating func isAllowed(_ policy: ACLPolicy, generation: Int, topic: String, access: Access) -> Bool {
        if generation != self.generation {
            read.removeAll()
            write.removeAll()
            self.generation = generation
        }
        switch access {
        case .read: return read.value(for: topic) { policy.decide(topic: topic, access: .read).isAllowed }
        case .write: return write.value(for: topic) { policy.decide(topic: topic, access: .write).isAllowed }
        }
    }
}
