@testable import TopicACL
import TestSupport
import Testing

/// Subscribe decisions on random files against references: the straightforward algorithm the
/// policy used before it was made cheaper per SUBSCRIBE (rules parsed per call, every pair of
/// candidates compared), and the topics each filter can match in a small universe.
@Suite("Subscribe decisions agree with the reference algorithm")
struct SubscribeModelTests {
    /// Narrowing as first written: candidates = filter ∩ each read grant not overlapping a deny,
    /// the whole filter allowed if inside a candidate, else candidates no other one covers.
    static func reference(_ p: ACLPolicy, _ requested: String) -> SubscribeDecision {
        guard SharedSubscription(requested) == nil else { return p.subscribe(filter: requested) }
        guard let filter = try? TopicFilter(requested) else { return p.subscribe(filter: requested) }
        let ownDenies = p.ownRules.filter { $0.access == .deny }.map { ($0, try! TopicFilter($0.filter)) }
        let ownReads = p.ownRules.filter { $0.access.grants(.read) }.map { ($0, try! TopicFilter($0.filter)) }
        let substituted = zip(p.patterns.rules, p.patterns.filters).map { (rule: $0, filter: $1) }
        let patternDenies = substituted.filter { $0.rule.access == .deny }
        let patternReads = substituted.filter { $0.rule.access.grants(.read) }
        var candidates: [(filter: TopicFilter, rule: ACLRule)] = []
        var blockingDeny: ACLRule?
        func consider(_ grant: (ACLRule, TopicFilter), denies: [(ACLRule, TopicFilter)]) {
            guard let candidate = filter.intersection(grant.1) else { return }
            if let deny = denies.first(where: { candidate.intersection($0.1) != nil }) {
                blockingDeny = blockingDeny ?? deny.0
                return
            }
            candidates.append((candidate, grant.0))
        }
        for grant in ownReads { consider(grant, denies: ownDenies) }
        if p.patternRefusal == nil {
            for grant in patternReads { consider(grant, denies: ownDenies + patternDenies) }
        }
        if let whole = candidates.first(where: { filter.isCovered(by: $0.filter) }) {
            return .allowed(filter: requested, rule: whole.rule)
        }
        var kept: [(filter: TopicFilter, rule: ACLRule)] = []
        for (index, candidate) in candidates.enumerated() {
            let redundant = candidates.enumerated().contains { other in
                other.offset != index && candidate.filter.isCovered(by: other.element.filter)
                    && (!other.element.filter.isCovered(by: candidate.filter) || other.offset < index)
            }
            if !redundant { kept.append(candidate) }
        }
        if !kept.isEmpty { return .narrowed(kept.map { ($0.filter.text, $0.rule) }) }
        if let blockingDeny { return .denied(.overlapsDeny(blockingDeny)) }
        if case .unsafeIdentity(let field, let value) = p.patternRefusal { return .denied(.unsafeIdentity(field: field, value: value)) }
        return .denied(.noMatchingRule)
    }

    @Test("Random files × random filters: the same decision as the reference; checked whole, the same or a refusal to narrow; nothing granted that is not readable",
          arguments: 0..<4)
    func randomized(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed &* 104_729 &+ 3)
        let levels = ["a", "b", "c1", "$x"]
        func filter(rule: Bool) -> String {
            var parts = (0..<Int.random(in: 1...3, using: &rng)).map { _ in (levels + ["+", "+"] + (rule ? ["%c"] : [])).randomElement(using: &rng)! }
            if Bool.random(using: &rng) { parts.append("#") }
            return parts.joined(separator: "/")
        }
        // Every topic of up to three levels over the alphabet: where soundness is checked.
        var universe: [String] = []
        for a in levels { universe.append(a); for b in levels { universe.append("\(a)/\(b)"); for c in levels { universe.append("\(a)/\(b)/\(c)") } } }
        var narrowedSeen = 0, allowedSeen = 0
        for _ in 0..<40 {
            var lines: [String] = []
            for _ in 0..<Int.random(in: 1...16, using: &rng) {
                switch Int.random(in: 0...9, using: &rng) {
                case 0: lines.append("user \(["alice", "bob"].randomElement(using: &rng)!)")
                case 1, 2: lines.append("pattern \(["read", "readwrite", "deny", "read"].randomElement(using: &rng)!) \(filter(rule: true))")
                default: lines.append("topic \(["read", "readwrite", "deny", "read", "write"].randomElement(using: &rng)!) \(filter(rule: false))")
                }
            }
            let text = lines.joined(separator: "\n")
            let compiled = try CompiledACL(parsing: text, source: "r")
            for identity in [Identity.client(username: nil, clientID: "c1"), .client(username: "alice", clientID: "c1"), .client(username: "bob", clientID: "x+")] {
                let p = compiled.policy(for: identity)
                for _ in 0..<60 {
                    let f = filter(rule: false)
                    let decision = p.subscribe(filter: f)
                    #expect(decision == Self.reference(p, f), "\(identity) \(f)\n\(text)")
                    // Checked whole only: the allowed ones unchanged, the rest refused.
                    let whole = p.subscribe(filter: f, narrowing: false)
                    switch decision {
                    case .allowed: #expect(whole == decision, "\(identity) \(f)\n\(text)"); allowedSeen += 1
                    case .narrowed: #expect(whole == .denied(.narrowingNotAttempted), "\(identity) \(f)\n\(text)"); narrowedSeen += 1
                    case .denied: #expect(whole.permittedFilters.isEmpty, "\(identity) \(f)\n\(text)")
                    }
                    // Sound: every topic a permitted filter matches is readable, and inside f.
                    let requested = try TopicFilter(f)
                    for permitted in decision.permittedFilters {
                        let g = try TopicFilter(permitted)
                        for t in universe where g.matches(t) {
                            #expect(requested.matches(t) && p.decide(topic: t, access: .read).isAllowed, "\(identity) \(f) → \(permitted) lets through \(t)\n\(text)")
                        }
                    }
                }
            }
        }
        // The generated cases must exercise narrowing and whole grants to mean anything.
        #expect(narrowedSeen > 20 && allowedSeen > 20)
    }
}
