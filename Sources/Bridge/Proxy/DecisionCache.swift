#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TopicACL

/// Recent ACL decisions of one connection, keyed by the topic's bytes.
///
/// Legacy clients publish to the same few topics over and over; one hash and a memcmp replace
/// the trie walk. Keys compare by UTF-8 bytes, never by String equality (which would merge
/// canonically equivalent topics the broker treats as different). Bounded: when full it is
/// emptied rather than grown, so a client cycling through unique topics costs nothing extra.
struct DecisionCache {
    static let capacity = 256

    struct Key: Hashable {
        let topic: String

        static func == (lhs: Key, rhs: Key) -> Bool {
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

    /// Only whether access is allowed: what forwarding needs. A denial's details (the rule,
    /// the reason) are asked of the policy again when it is logged; copying the whole
    /// decision out of the cache for every packet cost more than the lookup.
    private var read: [Key: Bool] = [:]
    private var write: [Key: Bool] = [:]
    private var generation = -1

    /// Whether `policy` allows `access` to `topic`, from the cache or from `policy` (then remembered).
    mutating func isAllowed(_ policy: ACLPolicy, generation: Int, topic: String, access: Access) -> Bool {
        if generation != self.generation {
            read.removeAll(keepingCapacity: true)
            write.removeAll(keepingCapacity: true)
            self.generation = generation
        }
        let key = Key(topic: topic)
        switch access {
        case .read:
            if let hit = read[key] { return hit }
            let allowed = policy.decide(topic: topic, access: .read).isAllowed
            if read.count >= Self.capacity { read.removeAll(keepingCapacity: true) }
            read[key] = allowed
            return allowed
        case .write:
            if let hit = write[key] { return hit }
            let allowed = policy.decide(topic: topic, access: .write).isAllowed
            if write.count >= Self.capacity { write.removeAll(keepingCapacity: true) }
            write[key] = allowed
            return allowed
        }
    }
}
