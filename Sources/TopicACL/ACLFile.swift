/// A parsed mosquitto `acl_file`, read with mosquitto 2.0's exact rules, plus two extensions
/// that a plain mosquitto file never contains (so plain files mean the same here):
///
/// - `peer NAME` starts a block of `topic` lines for a paired site (identified by its TLS key,
///   not by MQTT credentials); `pattern` lines never apply to peers.
///
/// Parsing is all or nothing: any bad line rejects the whole file with `file:line`, what is
/// wrong and how to fix it. There is no partial ACL.
public struct ACLFile: Hashable, Sendable {
    /// The name used in locations (usually the path).
    public let source: String
    /// Every rule in file order.
    public let rules: [ACLRule]
    /// Pattern lines without `%c` or `%u` (mosquitto warns about these too).
    public let warnings: [ACLParseWarning]

    public init(parsing text: String, source: String) throws(ACLParseError) {
        var rules: [ACLRule] = []
        var warnings: [ACLParseWarning] = []
        var scope = RuleScope.anonymous
        // Work on bytes, as mosquitto does: Swift Characters would merge "\r\n" or a space
        // followed by a combining mark into one, and split fields differently.
        let bytes = Array(text.utf8)
        var lineNumber = 0
        for rawLine in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let location = SourceLocation(file: source, line: lineNumber)
            // mosquitto strips trailing isspace() (so also \r and \t), then treats a line whose
            // *first* byte is '#' as a comment.
            let line = rawLine.trimmingTrailingSpace()
            if line.isEmpty || line.first == UInt8(ascii: "#") { continue }
            // Fields are separated by spaces only (strtok with " "), so a tab is part of a field.
            let content = line.drop { $0 == UInt8(ascii: " ") }
            if content.isEmpty { continue }
            let (keyword, rest) = content.splitOnce()
            switch keyword.string {
            case "topic", "pattern":
                let isPattern = keyword.string == "pattern"
                let rest = (rest ?? []).drop { $0 == UInt8(ascii: " ") }
                guard !rest.isEmpty else {
                    throw ACLParseError(location, "'\(keyword.string)' has no topic", fix: "write `\(keyword.string) [read|write|readwrite|deny] <topic>`")
                }
                let (first, remainder) = rest.splitOnce()
                let access: RuleAccess
                let filter: String
                if let remainder, !remainder.trimmingSpace().isEmpty {
                    guard let parsed = RuleAccess(rawValue: first.string) else {
                        throw ACLParseError(location, "invalid access type \"\(first.string)\"",
                                            fix: first.contains(UInt8(ascii: "\t")) ? "separate fields with spaces, not tabs"
                                                : "use read, write, readwrite or deny, e.g. `\(keyword.string) read sensors/#`")
                    }
                    access = parsed
                    filter = remainder.trimmingSpace().string
                } else {
                    // One word after the keyword is the topic, with read and write access:
                    // `topic read` is the topic "read" (mosquitto reads it so too).
                    access = .readwrite
                    filter = first.string
                }
                if let violation = TopicFilter.validate(filter) {
                    throw ACLParseError(location, "invalid topic \"\(filter)\": \(violation)", fix: "correct the filter; '+' and '#' must each fill a whole level")
                }
                if filter.utf8.contains(UInt8(ascii: "\t")) {
                    warnings.append(ACLParseWarning(location: location, message: "topic \"\(filter)\" contains a tab; fields are separated by spaces only, so the tab is part of the topic"))
                }
                if isPattern {
                    if !filter.contains("%c") && !filter.contains("%u") {
                        warnings.append(ACLParseWarning(location: location, message: "pattern \"\(filter)\" contains neither %c nor %u, so it applies to every client alike"))
                    }
                    rules.append(ACLRule(scope: .pattern, access: access, filter: filter, location: location))
                } else {
                    rules.append(ACLRule(scope: scope, access: access, filter: filter, location: location))
                }
            case "user", "peer":
                let name = (rest ?? []).trimmingSpace()
                guard !name.isEmpty else {
                    throw ACLParseError(location, "'\(keyword.string)' has no name", fix: "write `\(keyword.string) <name>`")
                }
                scope = keyword.string == "user" ? .user(name.string) : .peer(name.string)
            default:
                if keyword.first == UInt8(ascii: "#") {
                    throw ACLParseError(location, "a comment must start in the first column", fix: "remove the spaces before '#'")
                }
                if keyword.contains(UInt8(ascii: "\t")) {
                    throw ACLParseError(location, "invalid line \"\(line.string)\"", fix: "separate fields with spaces, not tabs, and start lines in the first column")
                }
                throw ACLParseError(location, "invalid line: unknown keyword \"\(keyword.string)\"",
                                    fix: "lines start with user, topic or pattern (peer for a paired site), or # for a comment")
            }
        }
        self.source = source
        self.rules = rules
        self.warnings = warnings
    }

    public var patterns: [ACLRule] { rules.filter { $0.scope == .pattern } }
}

public struct ACLParseWarning: Hashable, Sendable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String
    public var description: String { "\(location): warning: \(message)" }
}

/// A bad line: `file:line: what is wrong — how to fix`.
public struct ACLParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public var location: SourceLocation
    public var problem: String
    public var fix: String

    init(_ location: SourceLocation, _ problem: String, fix: String) {
        self.location = location
        self.problem = problem
        self.fix = fix
    }

    public var description: String { "\(location): \(problem) — \(fix)" }
}

extension ArraySlice<UInt8> {
    /// C's isspace() in the "C" locale, which mosquitto trims with.
    static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }

    func trimmingTrailingSpace() -> ArraySlice<UInt8> {
        var result = self
        while let last = result.last, Self.isSpace(last) { result = result.dropLast() }
        return result
    }

    func trimmingSpace() -> ArraySlice<UInt8> {
        drop { Self.isSpace($0) }.trimmingTrailingSpace()
    }

    /// Splits at the first space: ("topic", "read a/b") for "topic read a/b".
    func splitOnce() -> (ArraySlice<UInt8>, ArraySlice<UInt8>?) {
        guard let index = firstIndex(of: UInt8(ascii: " ")) else { return (self, nil) }
        return (self[startIndex..<index], self[(index + 1)...])
    }

    /// The file is a Swift String, so every slice cut at ASCII bytes is valid UTF-8.
    var string: String { String(decoding: self, as: UTF8.self) }
}
