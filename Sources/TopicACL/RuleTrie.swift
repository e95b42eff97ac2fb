#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The rules of one list (a user's topics, or an identity's substituted patterns) compiled
/// into a trie over topic levels, so a decision costs O(levels) rather than O(rules).
///
/// mosquitto walks an ordered list in which every deny comes first (most recent deny line
/// first), then the grants in file order, and stops at the first rule that denies, or that
/// matches and grants the requested access. The outcome depends only on *which* rules match,
/// so each trie node keeps, per category, the rule mosquitto would reach first:
/// the deny with the highest line, and the read / write grant with the lowest line.
///
/// Layout: the lookup path touches only plain values, never reference counts. Literal levels
/// are interned to Int32 ids, found by a (per-process seeded) hash of their bytes and checked
/// with memcmp; edges live in one `[UInt64: Int32]` map keyed by (node, level id); per-node
/// data lives in flat arrays indexed by node id. Rules are referred to by their index in
/// `rules` (file order).
final class RuleTrie: Sendable {
    struct Matches: Sendable {
        static let none: Int32 = -1
        var deny: Int32 = none
        var read: Int32 = none
        var write: Int32 = none

        @inline(__always)
        mutating func merge(_ other: Matches) {
            if other.deny > deny { deny = other.deny }
            if other.read != Self.none && (read == Self.none || other.read < read) { read = other.read }
            if other.write != Self.none && (write == Self.none || other.write < write) { write = other.write }
        }

        mutating func add(_ index: Int32, _ access: RuleAccess) {
            switch access {
            case .deny: merge(Matches(deny: index))
            case .read: merge(Matches(read: index))
            case .write: merge(Matches(write: index))
            case .readwrite: merge(Matches(read: index, write: index))
            }
        }
    }

    static let noNode: Int32 = -1
    static let unknownLevel: Int32 = -1

    /// The indexed rules, in file order.
    let rules: [ACLRule]
    /// Interned literal levels: bytes per id, and hash → first id with that hash, chained.
    private let levelBytes: [[UInt8]]
    private let levelByHash: [Int: Int32]
    private let nextLevelWithSameHash: [Int32]
    /// (parent node << 32 | level id) → child node.
    private let edges: [UInt64: Int32]
    private let plusChild: [Int32]
    /// Rules whose filter ends with "#" right below the node.
    private let hashMatches: [Matches]
    /// Rules whose filter ends exactly at the node.
    private let endMatches: [Matches]

    /// - Parameter rules: pairs of a rule and the filter to index it under (for patterns, the
    ///   filter after substitution), in file order.
    init(_ rules: [(rule: ACLRule, filter: TopicFilter)]) {
        var levelBytes: [[UInt8]] = []
        var levelByHash: [Int: Int32] = [:]
        var nextLevel: [Int32] = []
        var edges: [UInt64: Int32] = [:]
        var plusChild: [Int32] = [Self.noNode]
        var hashMatches = [Matches()]
        var endMatches = [Matches()]

        func intern(_ level: Level) -> Int32 {
            let bytes = Array(level.text.utf8)
            let hash = bytes.withUnsafeBytes { Self.hash($0) }
            var candidate = levelByHash[hash] ?? Self.unknownLevel
            while candidate != Self.unknownLevel {
                if levelBytes[Int(candidate)] == bytes { return candidate }
                candidate = nextLevel[Int(candidate)]
            }
            let id = Int32(levelBytes.count)
            levelBytes.append(bytes)
            nextLevel.append(levelByHash[hash] ?? Self.unknownLevel)
            levelByHash[hash] = id
            return id
        }
        func newNode() -> Int32 {
            plusChild.append(Self.noNode)
            hashMatches.append(Matches())
            endMatches.append(Matches())
            return Int32(plusChild.count - 1)
        }

        for (position, (rule, filter)) in rules.enumerated() {
            let index = Int32(position)
            var node: Int32 = 0
            var endsWithHash = false
            for level in filter.levels {
                if level.isMultiLevelWildcard {
                    hashMatches[Int(node)].add(index, rule.access)
                    endsWithHash = true
                    break
                }
                if level.isSingleLevelWildcard {
                    if plusChild[Int(node)] == Self.noNode { plusChild[Int(node)] = newNode() }
                    node = plusChild[Int(node)]
                } else {
                    let key = UInt64(UInt32(bitPattern: node)) << 32 | UInt64(UInt32(bitPattern: intern(level)))
                    if let child = edges[key] {
                        node = child
                    } else {
                        let child = newNode()
                        edges[key] = child
                        node = child
                    }
                }
            }
            if !endsWithHash { endMatches[Int(node)].add(index, rule.access) }
        }
        self.rules = rules.map(\.rule)
        self.levelBytes = levelBytes
        self.levelByHash = levelByHash
        self.nextLevelWithSameHash = nextLevel
        self.edges = edges
        self.plusChild = plusChild
        self.hashMatches = hashMatches
        self.endMatches = endMatches
    }

    @inline(__always)
    private static func hash(_ bytes: UnsafeRawBufferPointer) -> Int {
        var hasher = Hasher()
        hasher.combine(bytes: bytes)
        return hasher.finalize()
    }

    /// The interned id of a level, or `unknownLevel` if no rule names it literally.
    @inline(__always)
    private func levelID(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        var candidate = levelByHash[Self.hash(bytes)] ?? Self.unknownLevel
        while candidate != Self.unknownLevel {
            let known = levelBytes[Int(candidate)]
            if known.count == bytes.count && known.withUnsafeBytes({ bytes.count == 0 || memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0 }) {
                return candidate
            }
            candidate = nextLevelWithSameHash[Int(candidate)]
        }
        return Self.unknownLevel
    }

    func rule(_ index: Int32) -> ACLRule? { index == Matches.none ? nil : rules[Int(index)] }

    /// Every rule matching `topic`, reduced to what mosquitto would reach first.
    func matches(_ topic: String) -> Matches {
        var topic = topic
        return topic.withUTF8 { bytes in
            let raw = UnsafeRawBufferPointer(bytes)
            // Level ids on the stack: at most 201 levels can match any valid filter (200 '/'),
            // and a longer topic can only be matched by '#', which the walk handles at depth 0.
            let levelCount = min(raw.reduce(1) { $0 + ($1 == UInt8(ascii: "/") ? 1 : 0) }, TopicFilter.maximumSeparators + 2)
            return withUnsafeTemporaryAllocation(of: Int32.self, capacity: levelCount) { ids in
                var start = 0
                var count = 0
                for i in 0...raw.count where count < levelCount && (i == raw.count || raw[i] == UInt8(ascii: "/")) {
                    ids[count] = levelID(UnsafeRawBufferPointer(rebasing: raw[start..<i]))
                    count += 1
                    start = i + 1
                }
                let totalLevels = raw.reduce(1) { $0 + ($1 == UInt8(ascii: "/") ? 1 : 0) }
                var result = Matches()
                collect(0, UnsafeBufferPointer(ids), 0, totalLevels: totalLevels, dollar: raw.first == UInt8(ascii: "$"), into: &result)
                return result
            }
        }
    }

    private func collect(_ node: Int32, _ ids: UnsafeBufferPointer<Int32>, _ index: Int, totalLevels: Int, dollar: Bool, into result: inout Matches) {
        // '$' topics are not matched by a first-level wildcard (spec §4.7.2, mosquitto).
        let wildcardsAllowed = !(dollar && index == 0)
        if wildcardsAllowed { result.merge(hashMatches[Int(node)]) }  // "a/#" also matches "a"
        guard index < totalLevels else {
            result.merge(endMatches[Int(node)])
            return
        }
        // Deeper than any filter can reach without '#': nothing more can match.
        guard index < ids.count else { return }
        let id = ids[index]
        if id != Self.unknownLevel, let child = edges[UInt64(UInt32(bitPattern: node)) << 32 | UInt64(UInt32(bitPattern: id))] {
            collect(child, ids, index + 1, totalLevels: totalLevels, dollar: dollar, into: &result)
        }
        let plus = plusChild[Int(node)]
        if wildcardsAllowed && plus != Self.noNode {
            collect(plus, ids, index + 1, totalLevels: totalLevels, dollar: dollar, into: &result)
        }
    }
}
