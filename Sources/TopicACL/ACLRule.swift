/// Where a rule came from, for explanations and errors: `acl.conf:12`.
public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }
    public var description: String { "\(file):\(line)" }
}

/// The access a rule grants, as written after `topic` / `pattern`.
public enum RuleAccess: String, Hashable, Sendable, CaseIterable {
    case read, write, readwrite, deny

    func grants(_ access: Access) -> Bool {
        switch (self, access) {
        case (.readwrite, _), (.read, .read), (.write, .write): true
        default: false
        }
    }
}

/// What a client asks to do with a topic.
public enum Access: String, Hashable, Sendable, CaseIterable {
    /// Receive messages published on the topic.
    case read
    /// Publish to the topic.
    case write
}

/// Whose rules a block of the file holds.
public enum RuleScope: Hashable, Sendable, CustomStringConvertible {
    /// `topic` lines before the first `user` line: clients without a username.
    case anonymous
    /// `topic` lines after `user NAME`.
    case user(String)
    /// `topic` lines after `peer NAME` (mqbridge extension): a paired site, identified by TLS.
    case peer(String)
    /// `pattern` lines: every client, with `%c` / `%u` substituted.
    case pattern

    public var description: String {
        switch self {
        case .anonymous: "anonymous clients"
        case .user(let name): "user \(name)"
        case .peer(let name): "peer \(name)"
        case .pattern: "patterns"
        }
    }
}

/// One `topic` or `pattern` line.
public struct ACLRule: Hashable, Sendable, CustomStringConvertible {
    public var scope: RuleScope
    public var access: RuleAccess
    /// The filter as written (for patterns: before substitution).
    public var filter: String
    public var location: SourceLocation

    public init(scope: RuleScope, access: RuleAccess, filter: String, location: SourceLocation) {
        self.scope = scope
        self.access = access
        self.filter = filter
        self.location = location
    }

    /// The line as mosquitto would read it, e.g. `topic read sensors/#`.
    public var text: String { "\(scope == .pattern ? "pattern" : "topic") \(access.rawValue) \(filter)" }
    public var description: String { "\(location) `\(text)`" }
}
