import ArgumentParser
import TestSupport
import TopicACL

/// Decisions per second with 10,000 rules and deep / wide topics: the compiled trie against a
/// linear walk of the same rules in mosquitto's order (what mosquitto itself does), same run.
struct ACLBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "acl", abstract: "TopicACL decisions/s with 10k rules (trie vs linear walk).")

    @Option(help: "Seconds per case.")
    var seconds: Double = 1

    @Flag(help: "Skip the linear baseline (for profiling the trie).")
    var trieOnly = false

    func run() throws {
        print("mqbridge ACL benchmark — 10,000 rules, topics 6–12 levels deep, \(seconds)s per case")
        print("")
        // One user holding 10,000 rules over a wide, deep hierarchy, plus patterns.
        var lines = ["user plant"]
        var rng = SeededGenerator(seed: 42)
        for i in 0..<9_500 {
            let site = i % 50, area = (i / 50) % 20, line = i % 10
            let access = ["read", "write", "readwrite", "deny"][Int(rng.next() % 4)]
            switch i % 4 {
            case 0: lines.append("topic \(access) site\(site)/area\(area)/line\(line)/+/sensor\(i % 97)/#")
            case 1: lines.append("topic \(access) site\(site)/area\(area)/line\(line)/cell\(i % 13)/+/value")
            case 2: lines.append("topic \(access) site\(site)/+/line\(line)/cell\(i % 13)/sensor\(i % 97)/raw/#")
            default: lines.append("topic \(access) site\(site)/area\(area)/line\(line)/cell\(i % 13)/sensor\(i % 97)/cal/x\(i)")
            }
        }
        for i in 0..<500 {
            lines.append("pattern \(i % 5 == 0 ? "deny" : "readwrite") site\(i % 50)/devices/%c/\(i % 25)/#")
        }
        let text = lines.joined(separator: "\n")
        let compileStart = ContinuousClock.now
        let acl = try CompiledACL(parsing: text, source: "bench.acl")
        let compile = ContinuousClock.now - compileStart
        let identity = Identity.client(username: "plant", clientID: "gw-17")
        let policyStart = ContinuousClock.now
        let policy = acl.policy(for: identity)
        let policyTime = ContinuousClock.now - policyStart

        var topics: [String] = []
        // Half the topics instantiate a rule's filter (so they match something), half are random.
        let topicRules = acl.file.rules.filter { $0.scope != .pattern }
        for _ in 0..<2048 {
            let rule = topicRules[Int(rng.next() % UInt64(topicRules.count))]
            var levels: [String] = []
            for level in rule.filter.split(separator: "/", omittingEmptySubsequences: false) {
                if level == "+" { levels.append("v\(rng.next() % 7)") } else if level == "#" {
                    for _ in 0..<Int(rng.next() % 4) { levels.append("d\(rng.next() % 5)") }
                } else { levels.append(String(level)) }
            }
            topics.append(levels.joined(separator: "/"))
        }
        for i in 0..<2048 {
            let depth = 6 + Int(rng.next() % 7)
            var levels = ["site\(rng.next() % 50)", "area\(rng.next() % 20)", "line\(rng.next() % 10)", "cell\(rng.next() % 13)", "sensor\(rng.next() % 97)"]
            if i % 8 == 0 { levels = ["site\(rng.next() % 50)", "devices", "gw-17", "\(rng.next() % 25)"] }
            while levels.count < depth { levels.append(["raw", "cal", "value", "x\(rng.next() % 9500)", "t"][Int(rng.next() % 5)]) }
            topics.append(levels.joined(separator: "/"))
        }
        let linear = LinearACL(file: acl.file, identity: identity)
        // Both must agree before their speeds mean anything.
        var agreed = 0
        for topic in topics.prefix(500) {
            for access in [Access.read, .write] {
                precondition(policy.decide(topic: topic, access: access).isAllowed == linear.decide(topic, access), "trie and linear walk disagree on \(topic)")
                agreed += 1
            }
        }
        let allowed = topics.filter { policy.decide(topic: $0, access: .read).isAllowed }.count

        print("rules: \(acl.file.rules.count) (\(acl.file.patterns.count) patterns); compile \(ms(compile)); policy for one identity \(ms(policyTime))")
        print("topics: \(topics.count) distinct, \(allowed) readable; trie and linear walk agree on \(agreed) decisions")
        print("")
        print(pad("case", 40) + pad("decisions/s", 16) + pad("ns/decision", 14))
        print(String(repeating: "-", count: 70))
        let trie = measure(seconds) { i in policy.decide(topic: topics[i & 4095], access: i & 1 == 0 ? .read : .write).isAllowed }
        print(pad("trie (TopicACL policy)", 40) + pad(format(trie, 0), 16) + pad(format(1e9 / trie, 1), 14))
        if trieOnly { return }
        let walk = measure(seconds) { i in linear.decide(topics[i & 4095], i & 1 == 0 ? .read : .write) }
        print(pad("linear walk, mosquitto order (baseline)", 40) + pad(format(walk, 0), 16) + pad(format(1e9 / walk, 1), 14))
        print("")
        print("speed-up: \(format(trie / walk, 0))×")
    }

    func ms(_ d: Duration) -> String {
        let value = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        return "\(format(value, 1)) ms"
    }

    func measure(_ seconds: Double, _ body: (Int) -> Bool) -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start.advanced(by: .milliseconds(Int(seconds * 1000)))
        var count = 0
        var sink = 0
        while clock.now < deadline {
            for _ in 0..<256 {
                if body(count) { sink &+= 1 }
                count += 1
            }
        }
        let elapsed = start.duration(to: clock.now)
        precondition(sink >= 0)
        return Double(count) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}

/// The baseline: mosquitto's algorithm as a list walk (denies first, newest first; then grants
/// in file order), matching each filter in turn.
struct LinearACL {
    let own: [(ACLRule, TopicFilter)]
    let patterns: [(ACLRule, TopicFilter)]

    init(file: ACLFile, identity: Identity) {
        guard case .client(let username, let clientID) = identity else { own = []; patterns = []; return }
        func ordered(_ rules: [ACLRule]) -> [ACLRule] {
            rules.filter { $0.access == .deny }.reversed() + rules.filter { $0.access != .deny }
        }
        own = ordered(file.rules.filter { $0.scope == (username.map(RuleScope.user) ?? .anonymous) }).map { ($0, try! TopicFilter($0.filter)) }
        patterns = ordered(file.patterns).compactMap { rule in
            var text = rule.filter.split(separator: "%c", omittingEmptySubsequences: false).joined(separator: clientID ?? "")
            if let username { text = text.split(separator: "%u", omittingEmptySubsequences: false).joined(separator: username) }
            return (try? TopicFilter(text)).map { (rule, $0) }
        }
    }

    func decide(_ topic: String, _ access: Access) -> Bool {
        let name = TopicName(topic)  // split once, as mosquitto walks one string
        for list in [own, patterns] {
            for (rule, filter) in list where filter.matches(name) {
                if rule.access == .deny { return false }
                if rule.access == .readwrite || rule.access.rawValue == access.rawValue { return true }
            }
        }
        return false
    }
}

