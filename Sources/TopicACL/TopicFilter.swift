/// A syntactically valid MQTT topic filter, with the set operations the ACL needs:
/// matching a topic, intersecting two filters, and testing whether one covers another.
///
/// Matching follows mosquitto 2.0's `mosquitto_topic_matches_sub` exactly: "+" matches one
/// level, which may be empty; "a/#" matches "a" itself; a filter and a topic match only if
/// both or neither begin with '$'.
public struct TopicFilter: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    let levels: [Level]

    /// The longest filter mosquitto accepts (bytes), and its limit on '/' separators
    /// (TOPIC_HIERARCHY_LIMIT).
    public static let maximumLength = 65_535
    public static let maximumSeparators = 200

    public enum Violation: Error, Hashable, Sendable, CustomStringConvertible {
        case empty
        case misplacedSingleLevelWildcard
        case misplacedMultiLevelWildcard
        case tooLong(Int)
        case tooManyLevels(Int)

        public var description: String {
            switch self {
            case .empty: "the topic filter is empty"
            case .misplacedSingleLevelWildcard: "'+' must fill a whole level (write 'a/+/c', not 'a/b+')"
            case .misplacedMultiLevelWildcard: "'#' must be the whole last level (write 'a/#', not 'a/b#' or 'a/#/b')"
            case .tooLong(let n): "the topic filter is \(n) bytes long; the limit is \(TopicFilter.maximumLength)"
            case .tooManyLevels(let n): "the topic filter has \(n) '/' separators; the limit is \(TopicFilter.maximumSeparators)"
            }
        }
    }

    public init(_ text: String) throws(Violation) {
        if let violation = Self.validate(text) { throw violation }
        self.text = text
        self.levels = splitLevels(text)
    }

    /// The checks of mosquitto's `mosquitto_sub_topic_check`, which is what an acl_file topic
    /// and a SUBSCRIBE filter must pass.
    public static func validate(_ text: String) -> Violation? {
        let bytes = text.utf8
        if bytes.isEmpty { return .empty }
        var previous: UInt8 = 0
        var separators = 0
        var iterator = bytes.makeIterator()
        var current = iterator.next()
        while let byte = current {
            let next = iterator.next()
            switch byte {
            case UInt8(ascii: "+"):
                if (previous != 0 && previous != UInt8(ascii: "/")) || (next != nil && next != UInt8(ascii: "/")) {
                    return .misplacedSingleLevelWildcard
                }
            case UInt8(ascii: "#"):
                if (previous != 0 && previous != UInt8(ascii: "/")) || next != nil {
                    return .misplacedMultiLevelWildcard
                }
            case UInt8(ascii: "/"):
                separators += 1
            default:
                break
            }
            previous = byte
            current = next
        }
        if bytes.count > maximumLength { return .tooLong(bytes.count) }
        if separators > maximumSeparators { return .tooManyLevels(separators) }
        return nil
    }

    public var description: String { text }
    public var hasWildcards: Bool { levels.contains { $0.isWildcard } }

    public static func == (lhs: TopicFilter, rhs: TopicFilter) -> Bool { lhs.text.utf8.elementsEqual(rhs.text.utf8) }
    public func hash(into hasher: inout Hasher) { hasher.combine(levels) }

    /// Whether `topic` (a topic name, no wildcards) matches this filter.
    public func matches(_ topic: String) -> Bool {
        guard !topic.isEmpty else { return false }
        return Self.matches(filter: levels, filterDollar: startsWithDollar(text), topic: splitLevels(topic), topicDollar: startsWithDollar(topic))
    }

    static func matches(filter: [Level], filterDollar: Bool, topic: [Level], topicDollar: Bool) -> Bool {
        if filterDollar != topicDollar { return false }
        var index = 0
        for level in filter {
            if level.isMultiLevelWildcard { return true }
            guard index < topic.count else { return false }
            if !level.isSingleLevelWildcard && level != topic[index] { return false }
            index += 1
        }
        return index == topic.count
    }

    /// The filter whose topics are exactly those matched by both, or nil if none are.
    ///
    /// MQTT filters are closed under intersection: level by level, "+" meets anything, "#"
    /// meets the rest, and two literals meet only if equal.
    public func intersection(_ other: TopicFilter) -> TopicFilter? {
        // '$' topics are matched only by filters whose first level is a '$' literal.
        let selfWildFirst = levels[0].isWildcard
        let otherWildFirst = other.levels[0].isWildcard
        if (startsWithDollar(text) && otherWildFirst) || (startsWithDollar(other.text) && selfWildFirst) { return nil }
        var result: [Substring] = []
        var i = 0
        while true {
            let a = i < levels.count ? levels[i] : nil
            let b = i < other.levels.count ? other.levels[i] : nil
            switch (a, b) {
            case (nil, nil):
                return TopicFilter(trusted: result)
            case (let a?, nil):
                // `other` ended: it matches nothing deeper; only "#" here can also end here.
                return a.isMultiLevelWildcard ? TopicFilter(trusted: result) : nil
            case (nil, let b?):
                return b.isMultiLevelWildcard ? TopicFilter(trusted: result) : nil
            case (let a?, let b?):
                if a.isMultiLevelWildcard { return TopicFilter(trusted: result + other.levels[i...].map(\.text)) }
                if b.isMultiLevelWildcard { return TopicFilter(trusted: result + levels[i...].map(\.text)) }
                if a.isSingleLevelWildcard { result.append(b.text) } else if b.isSingleLevelWildcard || a == b { result.append(a.text) } else { return nil }
            }
            i += 1
        }
    }

    /// Whether every topic this filter matches is also matched by `other`.
    public func isCovered(by other: TopicFilter) -> Bool {
        // A '$' literal first level is covered only by a filter starting with the same literal.
        if startsWithDollar(text) && other.levels[0].isWildcard { return false }
        var i = 0
        while true {
            let a = i < levels.count ? levels[i] : nil
            let b = i < other.levels.count ? other.levels[i] : nil
            if let b, b.isMultiLevelWildcard { return true }
            guard let a else { return b == nil }
            guard let b else { return false }
            if a.isMultiLevelWildcard { return false }
            if a.isSingleLevelWildcard { if !b.isSingleLevelWildcard { return false } } else if !b.isSingleLevelWildcard && a != b { return false }
            i += 1
        }
    }

    /// Built from levels known to form a valid filter.
    init(trusted levels: [Substring]) {
        let text = levels.joined(separator: "/")
        self.text = text
        self.levels = splitLevels(text)
    }
}

/// `$share/{name}/{filter}`: the ACL applies to the inner filter; the prefix is kept aside.
public struct SharedSubscription: Hashable, Sendable {
    public var shareName: String
    public var filter: String

    /// Splits a shared subscription, or returns nil for an ordinary filter.
    public init?(_ text: String) {
        guard text.utf8.starts(with: "$share/".utf8) else { return nil }
        let rest = text.utf8.dropFirst(7)
        guard let slash = rest.firstIndex(of: UInt8(ascii: "/")) else { return nil }
        shareName = String(Substring(rest[rest.startIndex..<slash]))
        filter = String(Substring(rest[rest.index(after: slash)...]))
    }

    public func prefixed(_ inner: String) -> String { "$share/\(shareName)/\(inner)" }
}

/// A topic name split into levels once, for checking against many filters.
public struct TopicName: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    let levels: [Level]

    public init(_ text: String) {
        self.text = text
        self.levels = splitLevels(text)
    }

    public var description: String { text }
    public static func == (lhs: TopicName, rhs: TopicName) -> Bool { lhs.text.utf8.elementsEqual(rhs.text.utf8) }
    public func hash(into hasher: inout Hasher) { hasher.combine(levels) }
}

extension TopicFilter {
    /// Whether a pre-split topic name matches this filter.
    public func matches(_ topic: TopicName) -> Bool {
        guard !topic.text.isEmpty else { return false }
        return Self.matches(filter: levels, filterDollar: startsWithDollar(text), topic: topic.levels, topicDollar: startsWithDollar(topic.text))
    }
}
