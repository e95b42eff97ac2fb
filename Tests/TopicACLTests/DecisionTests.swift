import Testing
import TopicACL

/// Each rule of mosquitto's decision, with an allow and a reject case.
@Suite("Decisions")
struct DecisionTests {
    @Test("Deny by default: no rule, unknown user, empty topic")
    func defaultDeny() throws {
        let a = try acl("user alice\ntopic read a")
        #expect(allowed(a, client("alice"), "a", .read))
        #expect(!allowed(a, client("alice"), "b", .read))
        #expect(!allowed(a, client("mallory"), "a", .read))
        #expect(!allowed(a, client(nil), "a", .read))
        #expect(!allowed(a, client("alice"), "", .read))
        #expect(a.decide(client("alice"), topic: "b", access: .read).reason == .noMatchingRule)
    }

    @Test("read / write / readwrite grant exactly their access")
    func accessKinds() throws {
        let a = try acl("user u\ntopic read r\ntopic write w\ntopic readwrite rw\ntopic both")
        #expect(allowed(a, client("u"), "r", .read))
        #expect(!allowed(a, client("u"), "r", .write))
        #expect(allowed(a, client("u"), "w", .write))
        #expect(!allowed(a, client("u"), "w", .read))
        #expect(allowed(a, client("u"), "rw", .read) && allowed(a, client("u"), "rw", .write))
        #expect(allowed(a, client("u"), "both", .read) && allowed(a, client("u"), "both", .write))
    }

    @Test("deny wins over grants wherever it appears in the block")
    func denyWins() throws {
        let before = try acl("user u\ntopic deny a/secret\ntopic readwrite a/#")
        let after = try acl("user u\ntopic readwrite a/#\ntopic deny a/secret")
        for a in [before, after] {
            #expect(!allowed(a, client("u"), "a/secret", .read))
            #expect(!allowed(a, client("u"), "a/secret", .write))
            #expect(allowed(a, client("u"), "a/public", .read))
        }
    }

    @Test("A read-only match does not stop the search for a write grant")
    func insufficientMatchContinues() throws {
        let a = try acl("user u\ntopic read a/+\ntopic write a/#")
        #expect(allowed(a, client("u"), "a/b", .write))
        let b = try acl("user u\ntopic read a/+")
        #expect(!allowed(b, client("u"), "a/b", .write))
    }

    @Test("a/# matches a itself; a/+ does not")
    func hashMatchesParent() throws {
        let a = try acl("user u\ntopic read a/#")
        #expect(allowed(a, client("u"), "a", .read))
        #expect(allowed(a, client("u"), "a/b/c", .read))
        #expect(!allowed(a, client("u"), "ab", .read))
        let b = try acl("user u\ntopic read a/+")
        #expect(!allowed(b, client("u"), "a", .read))
        #expect(allowed(b, client("u"), "a/x", .read))
    }

    @Test("+ matches an empty level; it never matches two levels")
    func plusEmptyLevel() throws {
        let a = try acl("user u\ntopic read a/+/c\ntopic read +")
        #expect(allowed(a, client("u"), "a//c", .read))
        #expect(!allowed(a, client("u"), "a/b/b/c", .read))
        #expect(allowed(a, client("u"), "x", .read))
        #expect(!allowed(a, client("u"), "/x", .read))
    }

    @Test("Empty levels and leading slashes are levels: /a is not a")
    func emptyLevels() throws {
        let a = try acl("user u\ntopic read /a\ntopic read b/\ntopic read +/+")
        #expect(allowed(a, client("u"), "/a", .read))
        #expect(!allowed(a, client("u"), "a", .read))
        #expect(allowed(a, client("u"), "b/", .read))
        #expect(!allowed(a, client("u"), "b", .read))
        #expect(allowed(a, client("u"), "/", .read))  // +/+ matches "" and ""
        let b = try acl("user u\ntopic read #")
        #expect(allowed(b, client("u"), "/", .read))
        #expect(allowed(b, client("u"), "//x//", .read))
    }

    @Test("$ topics are not matched by a first-level # or +, but by filters starting with $")
    func dollarTopics() throws {
        let a = try acl("user u\ntopic read #\ntopic read +/x")
        #expect(!allowed(a, client("u"), "$SYS/broker/uptime", .read))
        #expect(!allowed(a, client("u"), "$x", .read))
        #expect(!allowed(a, client("u"), "$a/x", .read))
        #expect(allowed(a, client("u"), "a/$x", .read))
        let b = try acl("user u\ntopic read $SYS/#\ntopic read $x/+")
        #expect(allowed(b, client("u"), "$SYS/broker/uptime", .read))
        #expect(allowed(b, client("u"), "$SYS", .read))
        #expect(allowed(b, client("u"), "$x/y", .read))
        #expect(!allowed(b, client("u"), "$y/y", .read))
    }

    @Test("Anonymous block: only clients without a username; a user's block replaces it")
    func anonymous() throws {
        let a = try acl("topic read public\nuser bob\ntopic read private")
        #expect(allowed(a, client(nil), "public", .read))
        #expect(!allowed(a, client(nil), "private", .read))
        #expect(allowed(a, client("bob"), "private", .read))
        #expect(!allowed(a, client("bob"), "public", .read))
        // An empty username is a username, not anonymity.
        #expect(!allowed(a, client(""), "public", .read))
    }

    @Test("Two blocks for the same user merge")
    func merge() throws {
        let a = try acl("user bob\ntopic read a\nuser carol\ntopic read c\nuser bob\ntopic read b\ntopic deny a")
        #expect(allowed(a, client("bob"), "b", .read))
        #expect(!allowed(a, client("bob"), "a", .read))
        #expect(!allowed(a, client("bob"), "c", .read))
    }

    @Test("Usernames are compared by bytes: a canonically equivalent name is another user")
    func bytewiseUsernames() throws {
        let a = try acl("user Jos\u{E9}\ntopic read caf\u{E9}")
        #expect(allowed(a, client("Jos\u{E9}"), "caf\u{E9}", .read))
        #expect(!allowed(a, client("Jose\u{301}"), "caf\u{E9}", .read))
        #expect(!allowed(a, client("Jos\u{E9}"), "cafe\u{301}", .read))
    }

    @Test("Patterns: %c and %u are substituted; they apply to every client, after its own block")
    func patterns() throws {
        let a = try acl("pattern readwrite devices/%c/#\npattern read users/%u/inbox\nuser bob\ntopic read shared")
        #expect(allowed(a, client("bob", id: "dev1"), "devices/dev1/temp", .write))
        #expect(!allowed(a, client("bob", id: "dev1"), "devices/dev2/temp", .write))
        #expect(allowed(a, client("bob", id: "dev1"), "users/bob/inbox", .read))
        #expect(!allowed(a, client("bob", id: "dev1"), "users/alice/inbox", .read))
        #expect(allowed(a, client("bob", id: "dev1"), "shared", .read))
        // Anonymous clients get %c patterns but not %u ones.
        #expect(allowed(a, client(nil, id: "dev9"), "devices/dev9/x", .read))
        #expect(!allowed(a, client(nil, id: "dev9"), "users//inbox", .read))
    }

    @Test("Substitution is anywhere in the string, not only whole levels (mosquitto 2.0)")
    func substringSubstitution() throws {
        let a = try acl("pattern read dev-%c/x")
        #expect(allowed(a, client(nil, id: "7"), "dev-7/x", .read))
        #expect(!allowed(a, client(nil, id: "8"), "dev-7/x", .read))
    }

    @Test("Pattern deny beats pattern grants; a user's own grant beats a pattern deny")
    func patternDeny() throws {
        let a = try acl("pattern read %c/#\npattern deny %c/secret\nuser bob\ntopic read dev/secret")
        #expect(!allowed(a, client(nil, id: "dev"), "dev/secret", .read))
        #expect(allowed(a, client(nil, id: "dev"), "dev/other", .read))
        #expect(allowed(a, client("bob", id: "dev"), "dev/secret", .read))
    }

    @Test("No substitution of a client id or username containing +, # or / once patterns exist", arguments: ["a+b", "#", "a/b"])
    func unsafeIdentities(value: String) throws {
        let a = try acl("pattern read x/%c/#\npattern read y/%u/#\ntopic read anon\nuser bob\ntopic read bob-own")
        let byID = a.decide(client(nil, id: value), topic: "x/\(value)/t", access: .read)
        #expect(!byID.isAllowed)
        #expect(byID.reason == .unsafeIdentity(field: "client id", value: value))
        let byName = a.decide(client(value, id: "ok"), topic: "x/ok/t", access: .read)
        #expect(!byName.isAllowed)
        #expect(byName.reason == .unsafeIdentity(field: "username", value: value))
        // The client's own block still decides first.
        #expect(allowed(a, client(nil, id: value), "anon", .read))
        // A safe identity is fine.
        #expect(allowed(a, client(nil, id: "ok"), "x/ok/t", .read))
        // Without patterns the characters do not matter.
        let plain = try acl("topic read anon")
        #expect(allowed(plain, client(nil, id: value), "anon", .read))
    }

    @Test("Patterns need a client id")
    func patternNeedsID() throws {
        let a = try acl("pattern read all/#\npattern read x/%c")
        #expect(!allowed(a, client(nil, id: nil), "all/x", .read))
        #expect(allowed(a, client(nil, id: "c"), "all/x", .read))
    }

    @Test("Peers: only their own block applies; never patterns or user blocks")
    func peerDecisions() throws {
        let a = try acl("pattern readwrite %c/#\npeer site-b\ntopic write relay/in/#\nuser site-b\ntopic read everything/#")
        #expect(allowed(a, .peer("site-b"), "relay/in/x", .write))
        #expect(!allowed(a, .peer("site-b"), "relay/in/x", .read))
        #expect(!allowed(a, .peer("site-b"), "everything/x", .read))
        #expect(!allowed(a, .peer("site-b"), "site-b/x", .read))
        #expect(!allowed(a, .peer("site-c"), "relay/in/x", .write))
    }

    @Test("Explanations: the deny mosquitto meets first (last deny line), the first grant line")
    func explanations() throws {
        let a = try acl("user u\ntopic read a/#\ntopic readwrite a/b\ntopic deny a/+/secret\ntopic deny a/b/secret/#")
        let grant = a.decide(client("u"), topic: "a/b", access: .read)
        #expect(grant.rule?.location.line == 2)
        #expect(grant.description == "ALLOW by acl.conf:2 `topic read a/#` (user u)")
        let write = a.decide(client("u"), topic: "a/b", access: .write)
        #expect(write.rule?.location.line == 3)
        let deny = a.decide(client("u"), topic: "a/b/secret", access: .read)
        #expect(deny.rule?.location.line == 5)
        #expect(deny.description == "DENY by acl.conf:5 `topic deny a/b/secret/#` (user u)")
        #expect(a.decide(client("u"), topic: "zzz", access: .read).description == "DENY: no rule grants this access (default deny)")
    }
}
