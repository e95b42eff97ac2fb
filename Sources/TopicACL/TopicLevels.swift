#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One level of a topic or filter, compared and hashed by its UTF-8 bytes.
///
/// Swift's `String ==` uses canonical equivalence ("é" precomposed equals "e" + combining
/// acute). mosquitto compares bytes, and two different byte strings are two different topics
/// to the broker, so an ACL that merged them would both mismatch mosquitto and open a bypass.
struct Level: Hashable, Sendable {
    let text: Substring

    init(_ text: Substring) { self.text = text }

    static func == (lhs: Level, rhs: Level) -> Bool {
        let a = lhs.text.utf8, b = rhs.text.utf8
        guard a.count == b.count else { return false }
        // Native strings are contiguous: compare with memcmp rather than element by element.
        let fast: Bool?? = a.withContiguousStorageIfAvailable { pa in
            b.withContiguousStorageIfAvailable { pb in
                pa.count == 0 || memcmp(pa.baseAddress!, pb.baseAddress!, pa.count) == 0
            }
        }
        if let fast, let fast { return fast }
        return a.elementsEqual(b)
    }

    func hash(into hasher: inout Hasher) {
        let done: Void? = text.utf8.withContiguousStorageIfAvailable { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        if done == nil {
            for byte in text.utf8 { hasher.combine(byte) }
        }
        hasher.combine(text.utf8.count)
    }

    var isSingleLevelWildcard: Bool { text.utf8.count == 1 && text.utf8.first == UInt8(ascii: "+") }
    var isMultiLevelWildcard: Bool { text.utf8.count == 1 && text.utf8.first == UInt8(ascii: "#") }
    var isWildcard: Bool { isSingleLevelWildcard || isMultiLevelWildcard }
}

/// Splits on "/" keeping empty levels: "/a//b/" is ["", "a", "", "b", ""].
func splitLevels(_ topic: String) -> [Level] {
    var levels: [Level] = []
    var start = topic.utf8.startIndex
    var index = start
    while index != topic.utf8.endIndex {
        if topic.utf8[index] == UInt8(ascii: "/") {
            levels.append(Level(Substring(topic.utf8[start..<index])))
            start = topic.utf8.index(after: index)
        }
        index = topic.utf8.index(after: index)
    }
    levels.append(Level(Substring(topic.utf8[start..<index])))
    return levels
}

/// Whether a topic or filter string begins with '$' (the spec §4.7.2 rule: "#" and "+" at the
/// first level do not match topics beginning with '$').
func startsWithDollar(_ s: String) -> Bool { s.utf8.first == UInt8(ascii: "$") }
