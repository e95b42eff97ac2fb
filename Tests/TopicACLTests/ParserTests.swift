import Testing
import TopicACL

@Suite("acl_file parsing (mosquitto 2.0 rules)")
struct ParserTests {
    @Test("Blocks: topics before the first user are anonymous; user lines start blocks; patterns are global")
    func blocks() throws {
        let file = try ACLFile(parsing: """
        topic read public/#
        # a comment
        user alice
        topic readwrite alice/#

        pattern write devices/%c/up
        user bob
        topic deny bob/secret
        """, source: "acl.conf")
        #expect(file.rules.map(\.scope) == [.anonymous, .user("alice"), .pattern, .user("bob")])
        #expect(file.rules.map(\.access) == [.read, .readwrite, .write, .deny])
        #expect(file.rules.map(\.location.line) == [1, 4, 6, 8])
    }

    @Test("One word after topic is the topic itself with readwrite: `topic read` is the topic \"read\"")
    func singleWord() throws {
        let file = try ACLFile(parsing: "topic read\ntopic sensors/#\ntopic deny", source: "a")
        #expect(file.rules.map(\.filter) == ["read", "sensors/#", "deny"])
        #expect(file.rules.allSatisfy { $0.access == .readwrite })
    }

    @Test("Spaces: leading spaces and runs of spaces are skipped; the topic is the rest of the line, trimmed, spaces inside kept")
    func spaces() throws {
        let file = try ACLFile(parsing: "   topic   read    a b/c   \nuser   john doe  \ntopic write x", source: "a")
        #expect(file.rules[0].filter == "a b/c")
        #expect(file.rules[0].access == .read)
        #expect(file.rules[1].scope == .user("john doe"))
    }

    @Test("CRLF line endings and trailing tabs are trimmed")
    func crlf() throws {
        let file = try ACLFile(parsing: "user bob\r\ntopic read a/b\t\r\n", source: "a")
        #expect(file.rules == [ACLRule(scope: .user("bob"), access: .read, filter: "a/b", location: .init(file: "a", line: 2))])
    }

    @Test("A tab is not a separator: `topic read<TAB>x` is the topic \"read<TAB>x\" (as mosquitto), with a warning")
    func tabInTopic() throws {
        let file = try ACLFile(parsing: "topic read\tx", source: "a")
        #expect(file.rules[0].filter == "read\tx")
        #expect(file.rules[0].access == .readwrite)
        #expect(file.warnings.count == 1)
    }

    @Test("An empty file and a comments-only file are valid and deny everything")
    func empty() throws {
        for text in ["", "# nothing\n\n   \n#topic read #"] {
            let compiled = try acl(text)
            #expect(compiled.file.rules.isEmpty)
            #expect(!allowed(compiled, client("bob"), "a", .read))
        }
    }

    @Test("Errors name file:line, what is wrong and the fix", arguments: [
        ("topic readd a/b", 1, "invalid access type \"readd\""),
        ("\n\ntopic", 3, "'topic' has no topic"),
        ("pattern  ", 1, "'pattern' has no topic"),
        ("topic read a/b#", 1, "invalid topic \"a/b#\""),
        ("topic read sport+", 1, "invalid topic \"sport+\""),
        ("topic read a/#/b", 1, "invalid topic \"a/#/b\""),
        ("user", 1, "'user' has no name"),
        ("user    ", 1, "'user' has no name"),
        ("topc read a", 1, "unknown keyword \"topc\""),
        ("Topic read a", 1, "unknown keyword \"Topic\""),
        ("  # indented comment", 1, "a comment must start in the first column"),
        ("\ttopic read a", 1, "invalid line"),
        ("topic read\twrite a", 1, "invalid access type"),
    ])
    func errors(text: String, line: Int, problem: String) {
        do {
            _ = try ACLFile(parsing: "topic read ok\n" + text, source: "site.acl")
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.location == SourceLocation(file: "site.acl", line: line + 1))
            #expect(error.description.hasPrefix("site.acl:\(line + 1): "))
            #expect(error.problem.contains(problem), "\(error)")
            #expect(error.description.contains(" — "), "no fix in \(error)")
        }
    }

    @Test("Topic length and depth limits (mosquitto: 65535 bytes, 200 separators)")
    func limits() throws {
        #expect(throws: ACLParseError.self) { try ACLFile(parsing: "topic read " + String(repeating: "a/", count: 201) + "a", source: "a") }
        _ = try ACLFile(parsing: "topic read " + String(repeating: "a/", count: 200) + "a", source: "a")
    }

    @Test("A bad line anywhere rejects the whole file: no partial ACL")
    func wholeFile() {
        #expect(throws: ACLParseError.self) { try ACLFile(parsing: "topic read a\ntopic read b\ntopic bad c d\ntopic read d", source: "a") }
    }

    @Test("Patterns without %c or %u parse with a warning")
    func patternWarning() throws {
        let file = try ACLFile(parsing: "pattern read all/#\npattern read x/%c", source: "a")
        #expect(file.warnings.map(\.location.line) == [1])
    }

    @Test("peer blocks (mqbridge extension)")
    func peers() throws {
        let file = try ACLFile(parsing: "peer site-b\ntopic write relay/#\nuser x\ntopic read y", source: "a")
        #expect(file.rules.map(\.scope) == [.peer("site-b"), .user("x")])
    }
}
