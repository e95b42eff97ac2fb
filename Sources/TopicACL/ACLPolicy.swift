/// The compiled rules of one identity: its own list (a user's, the anonymous one, or a
/// peer's) and the pattern lines with its client id and username substituted.
///
/// A class: a connection holds one and consults it for every packet, so it is passed by
/// reference rather than copied field by field.
public final class ACLPolicy: Sendable {
    public let identity: Identity
    let own: RuleTrie?
    let ownRules: [ACLRule]
    /// Patterns after substitution, or nil when pattern lines do not apply.
    let patternTrie: RuleTrie?
    /// The pattern lines after substitution, as filters.
    let patterns: RuleFilters
    /// Set when pattern lines exist but must not be applied: mosquitto then denies whatever
    /// the identity's own list did not decide.
    let patternRefusal: ACLReason?
    /// The identity's own rules as filters, for subscribe decisions: parsed once per ACL and
    /// shared by every connection, not per filter (a client can send thousands in one SUBSCRIBE).
    let ownReads: RuleFilters
    let ownDenies: RuleFilters

    init(acl: CompiledACL, identity: Identity) {
        self.identity = identity
        var refusal: ACLReason?
        var substituted: [(ACLRule, TopicFilter)] = []
        let ownList: CompiledACL.CompiledList?
        switch identity {
        case .peer(let name):
            let list = acl.peers[Array(name.utf8)]
            ownList = list
            own = list?.trie
            ownRules = list?.rules ?? []
            // Patterns describe MQTT clients (%c, %u); a peer has neither.
        case .client(let username, let clientID):
            // A username not named in the file gets no list of its own (only patterns).
            let list = username.map { acl.users[Array($0.utf8)] } ?? acl.anonymous
            ownList = list
            own = list?.trie
            ownRules = list?.rules ?? []
            if !acl.patterns.isEmpty {
                // mosquitto refuses identities containing '+' or '#' once patterns exist, so a
                // client cannot name itself "#" to widen a pattern. We also refuse '/', which
                // mosquitto's own comment intends but its code does not check: a username
                // "alice/admin" would otherwise reach into another user's "x/%u/#" subtree.
                if let username, Self.isUnsafe(username) {
                    refusal = .unsafeIdentity(field: "username", value: username)
                } else if let clientID, Self.isUnsafe(clientID) {
                    refusal = .unsafeIdentity(field: "client id", value: clientID)
                } else if let clientID {
                    for rule in acl.patterns {
                        guard let text = Self.substitute(rule.filter, clientID: clientID, username: username),
                              let filter = try? TopicFilter(text) else { continue }
                        substituted.append((rule, filter))
                    }
                } else {
                    refusal = .noClientIdentifier
                }
            }
        }
        patterns = RuleFilters(substituted.map { (rule: $0.0, filter: $0.1) })
        patternTrie = substituted.isEmpty ? nil : RuleTrie(substituted)
        patternRefusal = refusal
        ownReads = ownList?.reads ?? .empty
        ownDenies = ownList?.denies ?? .empty
    }

    static func isUnsafe(_ value: String) -> Bool {
        value.utf8.contains { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") || $0 == UInt8(ascii: "/") }
    }

    /// mosquitto's substitution: every "%c" becomes the client id and every "%u" the
    /// username, anywhere in the string; a pattern with "%u" is skipped for a client without
    /// a username.
    static func substitute(_ pattern: String, clientID: String, username: String?) -> String? {
        let bytes = Array(pattern.utf8)
        if username == nil && pattern.contains("%u") { return nil }
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%") && i + 1 < bytes.count {
                if bytes[i + 1] == UInt8(ascii: "c") {
                    out.append(contentsOf: clientID.utf8)
                    i += 2
                    continue
                }
                if bytes[i + 1] == UInt8(ascii: "u"), let username {
                    out.append(contentsOf: username.utf8)
                    i += 2
                    continue
                }
            }
            out.append(bytes[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// May this identity publish to (`.write`) or receive from (`.read`) `topic`?
    /// O(levels of the topic).
    public func decide(topic: String, access: Access) -> ACLDecision {
        guard !topic.isEmpty else { return ACLDecision(isAllowed: false, reason: .noMatchingRule) }
        func decideWith(_ trie: RuleTrie) -> ACLDecision? {
            let m = trie.matches(topic)
            if let deny = trie.rule(m.deny) { return ACLDecision(isAllowed: false, reason: .denied(deny)) }
            if let grant = trie.rule(access == .read ? m.read : m.write) { return ACLDecision(isAllowed: true, reason: .granted(grant)) }
            return nil
        }
        if let own, let decision = decideWith(own) { return decision }
        if let patternRefusal { return ACLDecision(isAllowed: false, reason: patternRefusal) }
        if let patternTrie, let decision = decideWith(patternTrie) { return decision }
        return ACLDecision(isAllowed: false, reason: .noMatchingRule)
    }

    /// May this identity subscribe to `filter`? Allowed only if every topic the filter can
    /// match is readable; otherwise narrowed to the readable filters it covers, or denied.
    ///
    /// A candidate is a requested filter intersected with one read grant; it is kept only if
    /// no deny rule that could apply overlaps it. The check is sufficient, not exhaustive:
    /// a filter readable only through a union of several grants comes back as those grants
    /// (`narrowed`), and one that overlaps a deny is refused rather than over-granted.
    /// A `$share/{name}/` prefix is kept and the rest decided.
    ///
    /// With `narrowing` false, a filter that is not readable as a whole is refused with
    /// `.narrowingNotAttempted` without working out its readable parts: the caller's way to
    /// bound the work one SUBSCRIBE can ask for (O(rules) per filter instead of O(rules²)).
    public func subscribe(filter requested: String, narrowing: Bool = true) -> SubscribeDecision {
        if let shared = SharedSubscription(requested) {
            switch subscribe(filter: shared.filter, narrowing: narrowing) {
            case .allowed(let f, let rule): return .allowed(filter: shared.prefixed(f), rule: rule)
            case .narrowed(let list): return .narrowed(list.map { (shared.prefixed($0.filter), $0.rule) })
            case .denied(let denial): return .denied(denial)
            }
        }
        let filter: TopicFilter
        do { filter = try TopicFilter(requested) } catch { return .denied(.invalidFilter(error.description)) }

        // The whole filter inside one grant that no deny overlaps: allowed as asked. (The first
        // such grant, own rules before patterns: the one the narrowing below would also find,
        // since a grant covering the filter intersects it in the filter itself.)
        // A pattern line's grant is checked against the own denies and the pattern denies; an
        // own grant against the own denies only. The first overlapping deny, in that order.
        let patterns = self.patterns
        func deny(overlapping f: TopicFilter, pattern: Bool) -> ACLRule? {
            if let i = ownDenies.filters.firstIndex(where: { f.intersection($0) != nil }) { return ownDenies.rules[i] }
            guard pattern else { return nil }
            for i in patterns.filters.indices where patterns.rules[i].access == .deny && f.intersection(patterns.filters[i]) != nil { return patterns.rules[i] }
            return nil
        }
        func patternRead(_ i: Int) -> Bool { patterns.rules[i].access.grants(.read) }
        // Whether a deny overlaps the filter does not depend on the grant: one check each.
        if let i = ownReads.filters.firstIndex(where: { filter.isCovered(by: $0) }), deny(overlapping: filter, pattern: false) == nil {
            return .allowed(filter: requested, rule: ownReads.rules[i])
        }
        if let i = patterns.filters.indices.first(where: { patternRead($0) && filter.isCovered(by: patterns.filters[$0]) }), deny(overlapping: filter, pattern: true) == nil {
            return .allowed(filter: requested, rule: patterns.rules[i])
        }
        guard narrowing else {
            // Tell "partly readable" from "nothing readable" (the latter is an ordinary denial),
            // still without working out the parts.
            let overlapsAGrant = ownReads.filters.contains { filter.intersection($0) != nil }
                || patterns.filters.indices.contains { patternRead($0) && filter.intersection(patterns.filters[$0]) != nil }
            return .denied(overlapsAGrant ? .narrowingNotAttempted : .noMatchingRule)
        }

        var candidates: [(filter: TopicFilter, rule: ACLRule)] = []
        var blockingDeny: ACLRule?
        func consider(_ grant: TopicFilter, _ rule: ACLRule, pattern: Bool) {
            guard let candidate = filter.intersection(grant) else { return }
            if let blocking = deny(overlapping: candidate, pattern: pattern) {
                blockingDeny = blockingDeny ?? blocking
                return
            }
            candidates.append((candidate, rule))
        }
        for i in ownReads.filters.indices { consider(ownReads.filters[i], ownReads.rules[i], pattern: false) }
        for i in patterns.filters.indices where patternRead(i) { consider(patterns.filters[i], patterns.rules[i], pattern: true) }
        // Drop candidates another candidate already covers (keep the first of equals). Only a
        // candidate with the same first level, or a wildcard there, can cover another: grouping
        // by it keeps this near O(candidates) for the usual disjoint grants, not O(candidates²).
        var byFirstLevel: [Substring: [Int]] = [:]
        var wildFirst: [Int] = []
        for (index, candidate) in candidates.enumerated() {
            if candidate.filter.levels[0].isWildcard { wildFirst.append(index) } else { byFirstLevel[candidate.filter.levels[0].text, default: []].append(index) }
        }
        var kept: [(filter: TopicFilter, rule: ACLRule)] = []
        for (index, candidate) in candidates.enumerated() {
            let first = candidate.filter.levels[0]
            let rivals = first.isWildcard ? wildFirst : (byFirstLevel[first.text] ?? []) + wildFirst
            let redundant = rivals.contains { other in
                other != index && candidate.filter.isCovered(by: candidates[other].filter)
                    && (!candidates[other].filter.isCovered(by: candidate.filter) || other < index)
            }
            if !redundant { kept.append(candidate) }
        }
        if !kept.isEmpty {
            return .narrowed(kept.map { ($0.filter.text, $0.rule) })
        }
        if let blockingDeny { return .denied(.overlapsDeny(blockingDeny)) }
        if case .unsafeIdentity(let field, let value) = patternRefusal { return .denied(.unsafeIdentity(field: field, value: value)) }
        return .denied(.noMatchingRule)
    }
}

extension ACLPolicy {
    /// Whether any rule could ever grant this identity read or write access. A client for
    /// which this is false can do nothing, so the proxy refuses it at CONNECT.
    public var grantsAnything: Bool {
        ownRules.contains { $0.access != .deny } || patterns.rules.contains { $0.access != .deny }
    }
}
