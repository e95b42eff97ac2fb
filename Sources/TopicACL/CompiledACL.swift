/// An acl_file compiled for fast decisions. Immutable and `Sendable`: the bridge swaps the
/// whole value atomically on reload, and connections keep the policy they were given until
/// they ask for a new one.
///
/// Deny by default: an empty file, or a file with no rule for an identity, allows nothing.
public final class CompiledACL: Sendable {
    public let file: ACLFile
    /// A list of rules and its trie. Users and peers are keyed by the bytes of their name:
    /// mosquitto compares usernames with strcmp, while Swift's String equality would merge
    /// canonically equivalent names.
    struct CompiledList: Sendable {
        let rules: [ACLRule]
        let trie: RuleTrie
        /// The read grants and the denies as filters, for subscribe decisions.
        let reads: RuleFilters
        let denies: RuleFilters

        init(_ rules: [ACLRule]) {
            // Filters were validated by the parser.
            let filters = rules.map { (rule: $0, filter: try! TopicFilter($0.filter)) }
            self.rules = rules
            trie = RuleTrie(filters.map { ($0.rule, $0.filter) })
            reads = RuleFilters(filters.filter { $0.rule.access.grants(.read) })
            denies = RuleFilters(filters.filter { $0.rule.access == .deny })
        }
    }

    let anonymous: CompiledList
    let users: [[UInt8]: CompiledList]
    let peers: [[UInt8]: CompiledList]
    let patterns: [ACLRule]

    public init(_ file: ACLFile) {
        self.file = file
        var users: [[UInt8]: [ACLRule]] = [:]
        var peers: [[UInt8]: [ACLRule]] = [:]
        var anonymous: [ACLRule] = []
        var patterns: [ACLRule] = []
        for rule in file.rules {
            switch rule.scope {
            case .anonymous: anonymous.append(rule)
            case .user(let name): users[Array(name.utf8), default: []].append(rule)
            case .peer(let name): peers[Array(name.utf8), default: []].append(rule)
            case .pattern: patterns.append(rule)
            }
        }
        self.anonymous = CompiledList(anonymous)
        self.users = users.mapValues(CompiledList.init)
        self.peers = peers.mapValues(CompiledList.init)
        self.patterns = patterns
    }

    public convenience init(parsing text: String, source: String) throws(ACLParseError) {
        self.init(try ACLFile(parsing: text, source: source))
    }

    /// The rules that apply to one identity, compiled. Build once per connection and reuse:
    /// this substitutes `%c` / `%u` in every pattern (O(patterns)); decisions are O(levels).
    public func policy(for identity: Identity) -> ACLPolicy {
        ACLPolicy(acl: self, identity: identity)
    }

    /// One decision (convenience; builds a policy each time).
    public func decide(_ identity: Identity, topic: String, access: Access) -> ACLDecision {
        policy(for: identity).decide(topic: topic, access: access)
    }
}

/// Why a decision came out as it did.
public enum ACLReason: Hashable, Sendable {
    /// The rule that granted the access.
    case granted(ACLRule)
    /// A `deny` rule matched the topic.
    case denied(ACLRule)
    /// Pattern lines exist, but the username or client id contains a character that would
    /// change what a pattern means after substitution ('+', '#' or '/').
    case unsafeIdentity(field: String, value: String)
    /// Pattern lines could have decided, but the client id is not known.
    case noClientIdentifier
    /// No rule matched, or none granted this access: deny by default.
    case noMatchingRule
}

public struct ACLDecision: Hashable, Sendable, CustomStringConvertible {
    public var isAllowed: Bool
    public var reason: ACLReason

    /// The rule that decided, if one did.
    public var rule: ACLRule? {
        switch reason {
        case .granted(let r), .denied(let r): r
        default: nil
        }
    }

    /// "ALLOW by acl.conf:4 `topic read sensors/#` (user bob)" / "DENY: no rule matches (default deny)".
    public var description: String {
        switch reason {
        case .granted(let rule): "ALLOW by \(rule) (\(rule.scope))"
        case .denied(let rule): "DENY by \(rule) (\(rule.scope))"
        case .unsafeIdentity(let field, let value):
            "DENY: \(field) \"\(value)\" contains '+', '#' or '/', so pattern lines are not applied to it"
        case .noClientIdentifier: "DENY: pattern lines need the client id, which is not known"
        case .noMatchingRule: "DENY: no rule grants this access (default deny)"
        }
    }
}

/// The outcome of asking to subscribe to a filter.
public enum SubscribeDecision: Hashable, Sendable, CustomStringConvertible {
    /// Every topic the filter can match is readable; forward it unchanged.
    case allowed(filter: String, rule: ACLRule)
    /// Only part of the filter is readable: subscribe to these filters instead (each fully
    /// readable, each within the requested filter, most general first).
    case narrowed([(filter: String, rule: ACLRule)])
    /// Nothing under the filter is fully readable.
    case denied(SubscribeDenial)

    public static func == (lhs: SubscribeDecision, rhs: SubscribeDecision) -> Bool {
        switch (lhs, rhs) {
        case (.allowed(let a, let r), .allowed(let b, let s)): a == b && r == s
        case (.narrowed(let a), .narrowed(let b)): a.map(\.filter) == b.map(\.filter) && a.map(\.rule) == b.map(\.rule)
        case (.denied(let a), .denied(let b)): a == b
        default: false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .allowed(let f, let r): hasher.combine(0); hasher.combine(f); hasher.combine(r)
        case .narrowed(let list): hasher.combine(1); for item in list { hasher.combine(item.filter); hasher.combine(item.rule) }
        case .denied(let d): hasher.combine(2); hasher.combine(d)
        }
    }

    /// The filters to subscribe to at the broker, in order; empty when denied.
    public var permittedFilters: [String] {
        switch self {
        case .allowed(let filter, _): [filter]
        case .narrowed(let list): list.map(\.filter)
        case .denied: []
        }
    }

    public var description: String {
        switch self {
        case .allowed(let filter, let rule): "ALLOW \(filter) by \(rule)"
        case .narrowed(let list): "NARROW to " + list.map { "\($0.filter) (by \($0.rule.location))" }.joined(separator: ", ")
        case .denied(let denial): "DENY: \(denial)"
        }
    }
}

public enum SubscribeDenial: Hashable, Sendable, CustomStringConvertible {
    case invalidFilter(String)
    /// Some readable part exists, but every candidate overlaps this deny rule.
    case overlapsDeny(ACLRule)
    case unsafeIdentity(field: String, value: String)
    case noMatchingRule
    /// Not readable as a whole, and the caller asked not to work out the readable parts.
    case narrowingNotAttempted

    public var description: String {
        switch self {
        case .invalidFilter(let why): "invalid topic filter: \(why)"
        case .overlapsDeny(let rule): "the readable part overlaps \(rule)"
        case .unsafeIdentity(let field, let value): "\(field) \"\(value)\" contains '+', '#' or '/'"
        case .noMatchingRule: "no rule grants read access to any part of the filter (default deny)"
        case .narrowingNotAttempted: "the filter is not readable as a whole, and its readable parts were not worked out"
        }
    }
}

/// Rules and their filters in two parallel arrays: a subscribe decision walks the filters
/// alone, and reading a filter out of a (rule, filter) pair copied the rule too, whose
/// retains and releases were most of the cost of a large SUBSCRIBE.
struct RuleFilters: Sendable {
    let rules: [ACLRule]
    let filters: [TopicFilter]

    init(_ pairs: [(rule: ACLRule, filter: TopicFilter)]) {
        rules = pairs.map(\.rule)
        filters = pairs.map(\.filter)
    }

    static let empty = RuleFilters([])
}
