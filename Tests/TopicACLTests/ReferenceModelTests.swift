import TestSupport
import Testing
import TopicACL

/// The trie must decide exactly as a plain walk of mosquitto's list does. This reference is
/// written independently of the trie: the per-user list in mosquitto's order (denies first,
/// most recent first; then grants in file order), then the patterns likewise, first match wins.
struct ReferenceACL {
    let file: ACLFile

    func decide(_ identity: Identity, _ topic: String, _ access: Access) -> (Bool, Int?) {
        func ordered(_ rules: [ACLRule]) -> [ACLRule] {
            rules.filter { $0.access == .deny }.reversed() + rules.filter { $0.access != .deny }
        }
        func walk(_ rules: [(ACLRule, String)]) -> (Bool, Int?)? {
            for (rule, filter) in rules {
                guard let f = try? TopicFilter(filter), f.matches(topic) else { continue }
                if rule.access == .deny { return (false, rule.location.line) }
                let grants = rule.access == .readwrite || rule.access.rawValue == access.rawValue
                if grants { return (true, rule.location.line) }
            }
            return nil
        }
        guard case .client(let username, let clientID) = identity else { return (false, nil) }
        let own = file.rules.filter { rule in
            if let username { if case .user(let n) = rule.scope { return Array(n.utf8) == Array(username.utf8) } else { return false } }
            return rule.scope == .anonymous
        }
        if let result = walk(ordered(own).map { ($0, $0.filter) }) { return result }
        let patterns = file.rules.filter { $0.scope == .pattern }
        if patterns.isEmpty { return (false, nil) }
        let unsafe: (String) -> Bool = { $0.contains("+") || $0.contains("#") || $0.contains("/") }
        if let username, unsafe(username) { return (false, nil) }
        guard let clientID, !unsafe(clientID) else { return (false, nil) }
        let substituted = ordered(patterns).compactMap { rule -> (ACLRule, String)? in
            if username == nil && rule.filter.contains("%u") { return nil }
            var text = rule.filter.replacingOccurrencesOf("%c", with: clientID)
            if let username { text = text.replacingOccurrencesOf("%u", with: username) }
            return (rule, text)
        }
        return walk(substituted) ?? (false, nil)
    }
}

extension String {
    /// Left-to-right replacement of a 2-character token, as mosquitto's substitution scans.
    func replacingOccurrencesOf(_ token: String, with value: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let range = rest.range(of: token) {
            out += rest[rest.startIndex..<range.lowerBound] + value
            rest = rest[range.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    func range(of token: String) -> Range<Substring.Index>? {
        var index = startIndex
        while index < endIndex {
            if self[index...].hasPrefix(token) { return index..<self.index(index, offsetBy: token.count) }
            index = self.index(after: index)
        }
        return nil
    }
}

@Suite("Trie agrees with a list walk")
struct ReferenceModelTests {
    @Test("200 random files × 200 random questions", arguments: 0..<4)
    func randomized(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed &* 7919 &+ 1)
        let levels = ["a", "b", "", "$SYS", "$x", "c1"]
        func topic() -> String { (0..<Int.random(in: 1...4, using: &rng)).map { _ in levels.randomElement(using: &rng)! }.joined(separator: "/") }
        func filter() -> String {
            var parts = (0..<Int.random(in: 1...4, using: &rng)).map { _ in (levels + ["+", "+", "%c", "%u", "x%c"]).randomElement(using: &rng)! }
            if Bool.random(using: &rng) { parts.append("#") }
            return parts.joined(separator: "/")
        }
        for _ in 0..<50 {
            var lines: [String] = []
            for _ in 0..<Int.random(in: 0...14, using: &rng) {
                switch Int.random(in: 0...9, using: &rng) {
                case 0: lines.append("user \(["alice", "bob", "c1"].randomElement(using: &rng)!)")
                case 1, 2: lines.append("pattern \(["read", "write", "readwrite", "deny"].randomElement(using: &rng)!) \(filter())")
                default:
                    let f = filter().replacingOccurrencesOf("%", with: "p")
                    lines.append("topic \(["read", "write", "readwrite", "deny"].randomElement(using: &rng)!) \(f)")
                }
            }
            let text = lines.joined(separator: "\n")
            let compiled = try CompiledACL(parsing: text, source: "r")
            let reference = ReferenceACL(file: compiled.file)
            for _ in 0..<200 {
                let identity = Identity.client(username: [nil, "alice", "bob", "c1", "a/b"].randomElement(using: &rng)!,
                                               clientID: [nil, "c1", "a", "x+"].randomElement(using: &rng)!)
                let t = topic()
                let access = Access.allCases.randomElement(using: &rng)!
                let ours = compiled.decide(identity, topic: t, access: access)
                let theirs = reference.decide(identity, t, access)
                #expect(ours.isAllowed == theirs.0, "\(identity) \(access) \(t)\n\(text)")
                #expect(ours.rule?.location.line == theirs.1, "\(identity) \(access) \(t)\n\(text)")
            }
        }
    }
}
