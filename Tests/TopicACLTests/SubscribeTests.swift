import Testing
import TopicACL

@Suite("Subscribe decisions and narrowing")
struct SubscribeTests {
    @Test("# for a user with read sensors/# and read alerts/+ narrows to exactly those two")
    func issueExample() throws {
        let a = try acl("user u\ntopic read sensors/#\ntopic read alerts/+")
        let decision = a.policy(for: client("u")).subscribe(filter: "#")
        #expect(decision.permittedFilters == ["sensors/#", "alerts/+"])
        guard case .narrowed(let list) = decision else { Issue.record("\(decision)"); return }
        #expect(list.map(\.rule.location.line) == [2, 3])
    }

    @Test("A filter entirely inside a grant is allowed unchanged; one outside every grant is denied")
    func allowedOrDenied() throws {
        let p = try acl("user u\ntopic read sensors/#").policy(for: client("u"))
        #expect(p.subscribe(filter: "sensors/+/temp") == .allowed(filter: "sensors/+/temp", rule: p.decide(topic: "sensors/x", access: .read).rule!))
        #expect(p.subscribe(filter: "sensors") .permittedFilters == ["sensors"])
        #expect(p.subscribe(filter: "alerts/#") == .denied(.noMatchingRule))
    }

    @Test("A write-only grant does not permit subscribing")
    func writeOnly() throws {
        let p = try acl("user u\ntopic write cmd/#").policy(for: client("u"))
        #expect(p.subscribe(filter: "cmd/#") == .denied(.noMatchingRule))
    }

    @Test("A wildcard narrows to the part of a grant inside it: a/+ with read a/b/# gives a/b")
    func partialIntersection() throws {
        let p = try acl("user u\ntopic read a/b/#\ntopic read x/+/y").policy(for: client("u"))
        #expect(p.subscribe(filter: "a/+").permittedFilters == ["a/b"])
        #expect(p.subscribe(filter: "x/#").permittedFilters == ["x/+/y"])
        #expect(p.subscribe(filter: "+/+/y").permittedFilters == ["a/b/y", "x/+/y"])
    }

    @Test("A candidate overlapping a deny is refused, never over-granted")
    func denyOverlap() throws {
        let a = try acl("user u\ntopic read sensors/#\ntopic deny sensors/secret/#\ntopic read alerts/#")
        let p = a.policy(for: client("u"))
        #expect(p.subscribe(filter: "sensors/#") == .denied(.overlapsDeny(a.file.rules[1])))
        #expect(p.subscribe(filter: "#").permittedFilters == ["alerts/#"])
        #expect(p.subscribe(filter: "sensors/public/#").permittedFilters == ["sensors/public/#"])
    }

    @Test("$ topics: # does not narrow into $SYS, and $SYS/# needs a $ grant")
    func dollar() throws {
        let p = try acl("user u\ntopic read #").policy(for: client("u"))
        #expect(p.subscribe(filter: "$SYS/#") == .denied(.noMatchingRule))
        let q = try acl("user u\ntopic read $SYS/broker/#").policy(for: client("u"))
        #expect(q.subscribe(filter: "#") == .denied(.noMatchingRule))
        #expect(q.subscribe(filter: "$SYS/#").permittedFilters == ["$SYS/broker/#"])
    }

    @Test("Pattern grants narrow with the identity substituted; unsafe identities get nothing from patterns")
    func patterns() throws {
        let a = try acl("pattern read devices/%c/#")
        #expect(a.policy(for: client(nil, id: "d1")).subscribe(filter: "devices/#").permittedFilters == ["devices/d1/#"])
        #expect(a.policy(for: client(nil, id: "d+")).subscribe(filter: "devices/#") == .denied(.unsafeIdentity(field: "client id", value: "d+")))
    }

    @Test("Shared subscriptions keep their $share prefix")
    func shared() throws {
        let p = try acl("user u\ntopic read sensors/#\ntopic read alerts/+").policy(for: client("u"))
        #expect(p.subscribe(filter: "$share/g/#").permittedFilters == ["$share/g/sensors/#", "$share/g/alerts/+"])
        #expect(p.subscribe(filter: "$share/g/sensors/a").permittedFilters == ["$share/g/sensors/a"])
    }

    @Test("Invalid filters are denied with the reason")
    func invalid() throws {
        let p = try acl("user u\ntopic read #").policy(for: client("u"))
        guard case .denied(.invalidFilter) = p.subscribe(filter: "a/b#") else { Issue.record("accepted"); return }
    }

    @Test("Redundant candidates collapse: read a/# and read a/b give just a/# for #")
    func redundant() throws {
        let p = try acl("user u\ntopic read a/b\ntopic read a/#").policy(for: client("u"))
        #expect(p.subscribe(filter: "#").permittedFilters == ["a/#"])
    }
}
