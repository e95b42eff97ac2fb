import Foundation
import TestSupport
import Testing
import TopicACL

/// TopicACL against the reference: a real mosquitto loaded with the same acl_file, asked by
/// publishing and observing delivery (Scripts/acl_oracle.py, paho clients).
@Suite("TopicACL agrees with a real mosquitto", .serialized)
struct TopicACLMosquittoTests {
    struct Query: Codable {
        var username: String?
        var client_id: String
        var topic: String
        var access: String
    }

    static let observer = "__observer"

    /// Runs the queries against mosquitto with `aclText` (plus an observer block) and returns
    /// mosquitto's answers.
    static func mosquittoDecisions(_ aclText: String, _ queries: [Query]) throws -> [Bool] {
        let observerBlock = "\nuser \(observer)\ntopic readwrite #\ntopic readwrite $x/#\n"
        let broker = try MosquittoBroker(extraConfiguration: ["acl_file $DIR/acl"], files: ["acl": aclText + observerBlock])
        defer { broker.stop() }
        struct Spec: Codable { var port: Int; var observer: String; var queries: [Query] }
        let input = try JSONEncoder().encode(Spec(port: broker.port, observer: observer, queries: queries))
        let result = try TestEnvironment.run(["python3", TestEnvironment.script("acl_oracle.py")], stdin: input)
        guard result.status == 0 else { throw TestError("acl_oracle.py failed (\(result.status)): \(result.stderr)") }
        return try JSONDecoder().decode([Bool].self, from: result.stdout)
    }

    static let identities: [(username: String?, clientID: String)] = [
        (nil, "dev1"), ("alice", "alice"), ("bob", "dev2"), ("c1", "c1"), ("dev+", "d3"), (nil, "dev#"),
    ]

    static func randomCase(seed: UInt64) -> (String, [Query]) {
        var rng = SeededGenerator(seed: seed)
        let levels = ["a", "b", "", "dev1", "dev2", "alice", "c1"]
        func level() -> String { levels.randomElement(using: &rng)! }
        func topic() -> String {
            var parts = (0..<Int.random(in: 1...3, using: &rng)).map { _ in level() }
            if Int.random(in: 0...5, using: &rng) == 0 { parts.insert("$x", at: 0) }
            let t = parts.joined(separator: "/")
            return t.isEmpty ? "a" : t
        }
        func filter(pattern: Bool) -> String {
            var parts = (0..<Int.random(in: 1...3, using: &rng)).map { _ in
                (levels + ["+", "+"] + (pattern ? ["%c", "%u", "%c"] : [])).randomElement(using: &rng)!
            }
            if Int.random(in: 0...6, using: &rng) == 0 { parts.insert("$x", at: 0) }
            if Bool.random(using: &rng) { parts.append("#") }
            return parts.joined(separator: "/")
        }
        // Grants outnumber denies so both outcomes are common.
        let accesses = ["read", "write", "readwrite", "readwrite", "read", "deny"]
        var lines: [String] = []
        for _ in 0..<Int.random(in: 8...16, using: &rng) {
            switch Int.random(in: 0...9, using: &rng) {
            case 0, 1: lines.append("user \(["alice", "bob", "c1", "dev+"].randomElement(using: &rng)!)")
            case 2, 3: lines.append("pattern \(accesses.randomElement(using: &rng)!) \(filter(pattern: true))")
            default: lines.append("topic \(accesses.randomElement(using: &rng)!) \(filter(pattern: false))")
            }
        }
        let queries = (0..<45).map { _ -> Query in
            let identity = identities.randomElement(using: &rng)!
            return Query(username: identity.username, client_id: identity.clientID, topic: topic(), access: Bool.random(using: &rng) ? "read" : "write")
        }
        return (lines.joined(separator: "\n") + "\n", queries)
    }

    static func ours(_ acl: CompiledACL, _ q: Query) -> ACLDecision {
        acl.decide(.client(username: q.username, clientID: q.client_id), topic: q.topic, access: q.access == "read" ? .read : .write)
    }

    /// Asks mosquitto and TopicACL the same queries on `text`, expects the same answers, and
    /// returns mosquitto's.
    @discardableResult
    static func compare(_ text: String, _ queries: [Query], source: String) throws -> [Bool] {
        let acl = try CompiledACL(parsing: text, source: source)
        let theirs = try mosquittoDecisions(text, queries)
        #expect(theirs.count == queries.count)
        for (query, reference) in zip(queries, theirs) {
            let decision = ours(acl, query)
            #expect(decision.isAllowed == reference, "\(query.access) \(query.topic) as \(query.username ?? "-")/\(query.client_id): mosquitto \(reference), ours \(decision)\n\(text)")
        }
        return theirs
    }

    @Test("Random acl_files: 4 files × 45 publish/subscribe decisions", arguments: [11, 23, 37, 41] as [UInt64])
    func randomFiles(seed: UInt64) async throws {
        try await TestEnvironment.blocking {
            // Skip generated files that would allow (or deny) nearly everything: they test little.
            var attempt = seed
            var (text, queries) = Self.randomCase(seed: attempt)
            while true {
                let model = try CompiledACL(parsing: text, source: "random.acl")
                let allows = queries.filter { Self.ours(model, $0).isAllowed }.count
                if (8...37).contains(allows) { break }
                attempt &+= 1000
                (text, queries) = Self.randomCase(seed: attempt)
            }
            let theirs = try Self.compare(text, queries, source: "random.acl")
            // The generated cases must exercise both outcomes to mean anything.
            let allowedCount = theirs.filter { $0 }.count
            #expect(allowedCount > 0 && allowedCount < queries.count)
        }
    }

    @Test("The edge rules, one file: deny precedence, a/# vs a, + vs empty level, $ topics, patterns, dangerous ids")
    func edges() async throws {
        try await TestEnvironment.blocking {
            let text = """
            topic read public/#
            topic readwrite anon/+/x
            pattern readwrite dev/%c/#
            pattern read inbox/%u
            pattern deny dev/%c/locked
            user alice
            topic readwrite alice/#
            topic deny alice/secret
            topic read +/+
            topic read #
            topic write $x/alice/#
            user bob
            topic read /lead
            topic read bob/+
            topic write a//b

            """
            let q: [(String?, String, String, String)] = [
                (nil, "dev1", "public", "read"), (nil, "dev1", "public/x/y", "read"), (nil, "dev1", "public", "write"),
                (nil, "dev1", "anon//x", "read"), (nil, "dev1", "anon//x", "write"), (nil, "dev1", "anon/a/b/x", "read"),
                (nil, "dev1", "dev/dev1", "write"), (nil, "dev1", "dev/dev1/t", "write"), (nil, "dev1", "dev/dev2/t", "write"),
                (nil, "dev1", "dev/dev1/locked", "write"), (nil, "dev1", "inbox/", "read"),
                ("alice", "alice", "alice", "read"), ("alice", "alice", "alice/x", "write"), ("alice", "alice", "alice/secret", "read"),
                ("alice", "alice", "alice/secret/deeper", "read"), ("alice", "alice", "zz/yy", "read"), ("alice", "alice", "q", "read"),
                ("alice", "alice", "$x/alice/1", "write"), ("alice", "alice", "$x/alice/1", "read"), ("alice", "alice", "$x", "read"),
                ("alice", "alice", "inbox/alice", "read"), ("alice", "alice", "public", "read"), ("alice", "alice", "dev/alice/z", "write"),
                ("bob", "dev2", "/lead", "read"), ("bob", "dev2", "lead", "read"), ("bob", "dev2", "bob/", "read"), ("bob", "dev2", "bob", "read"),
                ("bob", "dev2", "a//b", "write"), ("bob", "dev2", "a/b", "write"), ("bob", "dev2", "inbox/bob", "read"),
                ("bob", "dev2", "dev/dev2/q", "read"), ("bob", "dev2", "public", "read"),
                ("b+d", "bd", "inbox/bd", "read"), ("b+d", "bd", "dev/bd/x", "read"), (nil, "e#", "dev/e/x", "read"), (nil, "e#", "public", "read"),
            ]
            let queries = q.map { Query(username: $0.0, client_id: $0.1, topic: $0.2, access: $0.3) }
            try Self.compare(text, queries, source: "edges.acl")
        }
    }

    @Test("Documented divergence: a username containing '/' gets no pattern access here; mosquitto 2.0.11 substitutes it")
    func slashDivergence() async throws {
        try await TestEnvironment.blocking {
            let text = "pattern read home/%u/#\n"
            let queries = [Query(username: "alice/admin", client_id: "aa", topic: "home/alice/admin/x", access: "read"),
                           Query(username: "alice", client_id: "ab", topic: "home/alice/x", access: "read")]
            let theirs = try Self.mosquittoDecisions(text, queries)
            let acl = try CompiledACL(parsing: text, source: "slash.acl")
            #expect(theirs == [true, true])
            #expect(Self.ours(acl, queries[0]).reason == .unsafeIdentity(field: "username", value: "alice/admin"))
            #expect(Self.ours(acl, queries[1]).isAllowed)
        }
    }

    /// The line TopicACL names when it refuses `text` (nil: accepted).
    static func refusedLine(_ text: String) -> Int? {
        do {
            _ = try CompiledACL(parsing: text, source: "quirk.acl")
            return nil
        } catch {
            return error.location.line  // typed throws: an ACLParseError
        }
    }

    /// Whether mosquitto refuses to start with `aclText` as its acl_file (it exits at once).
    static func mosquittoRefuses(_ aclText: String) throws -> Bool {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-aclrefuse-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = chmod(directory.path, 0o777)
        try aclText.write(to: directory.appendingPathComponent("acl"), atomically: true, encoding: .utf8)
        let conf = directory.appendingPathComponent("mosquitto.conf")
        try "listener \(try TestEnvironment.freePort()) 127.0.0.1\nallow_anonymous true\nlog_dest stdout\nacl_file \(directory.path)/acl\n"
            .write(to: conf, atomically: true, encoding: .utf8)
        // A file it accepts leaves it running: the timeout ends that case.
        let r = try TestEnvironment.run(["timeout", "5", "mosquitto", "-c", conf.path])
        return r.status != 0 && r.status != 124
    }

    @Test("acl_file layout quirks: the files mosquitto reads get its decisions, the ones it refuses are refused with their line")
    func layoutQuirks() async throws {
        try await TestEnvironment.blocking {
            // Read by mosquitto 2.0.11 (checked by hand, and here): extra spaces, trailing spaces,
            // CRLF, no access word (readwrite), spaces inside names and topics, blank lines in a
            // block, a user's block written twice, empty topic levels.
            let accepted: [(String, [(String?, String, String, String)])] = [
                ("  user alice\n   topic read a/#\n", [("alice", "alice", "a/b", "read"), ("alice", "alice", "a/b", "write")]),
                ("user alice \ntopic read a/# \npattern read %c/x \n", [("alice", "alice", "a/b", "read"), ("alice ", "c2", "a/b", "read"), (nil, "dev1", "dev1/x", "read")]),
                ("user alice\r\ntopic read a/#\r\n", [("alice", "alice", "a/b", "read"), ("alice", "alice", "a/b", "write")]),
                ("user alice\ntopic a/#\n", [("alice", "alice", "a/b", "read"), ("alice", "alice", "a/b", "write")]),
                ("user al ice\ntopic read a b/#\n", [("al ice", "c1", "a b/c", "read"), ("al", "c2", "a b/c", "read"), ("al ice", "c3", "a/c", "read")]),
                ("user alice\n\ntopic  read  a/#\npattern  write  %c/x\n", [("alice", "alice", "a/b", "read"), ("alice", "a2", "a2/x", "write"), (nil, "dev1", "dev1/x", "write")]),
                ("user alice\ntopic read a/#\nuser bob\ntopic read b/#\nuser alice\ntopic read c/#\n",
                 [("alice", "alice", "a/x", "read"), ("alice", "a2", "c/x", "read"), ("bob", "bob", "c/x", "read")]),
                ("user alice\ntopic read +/+\ntopic write /#\ntopic read a/\n",
                 [("alice", "alice", "/x", "read"), ("alice", "a2", "//", "write"), ("alice", "a3", "a", "read"), ("alice", "a4", "a/", "read")]),
            ]
            for (text, q) in accepted {
                try Self.compare(text, q.map { Query(username: $0.0, client_id: $0.1, topic: $0.2, access: $0.3) }, source: "quirk.acl")
            }
            // Refused by mosquitto ("Error opening acl file"); refused here, naming the line.
            let refused: [(String, Int)] = [
                ("user\talice\ntopic read a\n", 1),
                ("user alice\ntopic read a/# # a comment\n", 2),
                ("user alice\nTopic read a/#\n", 2),
                ("user\ntopic read a/#\n", 1),
                ("user alice\n  # indented comment\ntopic read b\n", 2),
            ]
            for (text, line) in refused {
                let refusedByMosquitto = try Self.mosquittoRefuses(text)
                #expect(refusedByMosquitto, "mosquitto accepted:\n\(text)")
                #expect(Self.refusedLine(text) == line, "\(text)")
            }
        }
    }
}
