import Foundation
import TestSupport
import Testing

/// `mqbridge acl check` / `acl narrow` / `acl diff` as a user runs them: exact output and exit codes.
@Suite("mqbridge acl CLI")
struct ACLCommandTests {
    static let aclText = "user bob\ntopic read sensors/#\ntopic read alerts/+\ntopic deny sensors/secret\npattern write devices/%c/#\n"

    func mqbridge(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let result = try TestEnvironment.run([TestEnvironment.mqbridgeBinary] + arguments)
        return (result.status, String(decoding: result.stdout, as: UTF8.self), result.stderr)
    }

    @Test("check: ALLOW exits 0 and names the deciding rule")
    func allow() async throws {
        try await TestEnvironment.blocking {
            let acl = try TestEnvironment.temporaryFile(Self.aclText, name: "site.acl")
            let r = try mqbridge(["acl", "check", "--acl", acl, "--username", "bob", "--client-id", "c1", "--topic", "sensors/temp", "--access", "read"])
            #expect(r.status == 0)
            #expect(r.stdout == "ALLOW read sensors/temp for client \"c1\" user \"bob\"\n  ALLOW by \(acl):2 `topic read sensors/#` (user bob)\n")
        }
    }

    @Test("check: DENY exits 1, with the deny rule or default deny")
    func deny() async throws {
        try await TestEnvironment.blocking {
            let acl = try TestEnvironment.temporaryFile(Self.aclText, name: "site.acl")
            let r = try mqbridge(["acl", "check", "--acl", acl, "--username", "bob", "--topic", "sensors/secret", "--access", "read"])
            #expect(r.status == 1)
            #expect(r.stdout.contains("DENY by \(acl):4 `topic deny sensors/secret` (user bob)"))
            let w = try mqbridge(["acl", "check", "--acl", acl, "--username", "bob", "--client-id", "c1", "--topic", "sensors/temp", "--access", "write"])
            #expect(w.status == 1)
            #expect(w.stdout.contains("default deny"))
        }
    }

    @Test("check: patterns use --client-id")
    func pattern() async throws {
        try await TestEnvironment.blocking {
            let acl = try TestEnvironment.temporaryFile(Self.aclText)
            #expect(try mqbridge(["acl", "check", "--acl", acl, "--client-id", "d1", "--topic", "devices/d1/x", "--access", "write"]).status == 0)
            #expect(try mqbridge(["acl", "check", "--acl", acl, "--client-id", "d2", "--topic", "devices/d1/x", "--access", "write"]).status == 1)
        }
    }

    @Test("check --access subscribe: allowed filter exits 0; partly readable exits 1 and lists the narrowing")
    func subscribe() async throws {
        try await TestEnvironment.blocking {
            let acl = try TestEnvironment.temporaryFile(Self.aclText)
            #expect(try mqbridge(["acl", "check", "--acl", acl, "--username", "bob", "--topic", "alerts/+", "--access", "subscribe"]).status == 0)
            let r = try mqbridge(["acl", "check", "--acl", acl, "--username", "bob", "--topic", "#", "--access", "subscribe"])
            #expect(r.status == 1)
            #expect(r.stdout.contains("    alerts/+  ("))
        }
    }

    @Test("narrow prints the permitted filters one a line")
    func narrow() async throws {
        try await TestEnvironment.blocking {
            let acl = try TestEnvironment.temporaryFile("user bob\ntopic read sensors/#\ntopic read alerts/+\n")
            let r = try mqbridge(["acl", "narrow", "--acl", acl, "--username", "bob", "--filter", "#"])
            #expect(r.status == 0)
            #expect(r.stdout == "sensors/#\nalerts/+\n")
            let none = try mqbridge(["acl", "narrow", "--acl", acl, "--username", "eve", "--filter", "#"])
            #expect(none.status == 1)
            #expect(none.stdout == "")
        }
    }

    @Test("Errors exit 2 with the message on stderr: bad file (file:line — fix), missing file, bad usage, wildcard topic")
    func errors() async throws {
        try await TestEnvironment.blocking {
            let bad = try TestEnvironment.temporaryFile("user bob\ntopic raed a\n", name: "bad.acl")
            let r = try mqbridge(["acl", "check", "--acl", bad, "--topic", "a", "--access", "read"])
            #expect(r.status == 2)
            #expect(r.stdout == "")
            #expect(r.stderr == "mqbridge: \(bad):2: invalid access type \"raed\" — use read, write, readwrite or deny, e.g. `topic read sensors/#`\n")
            #expect(try mqbridge(["acl", "check", "--acl", "/nonexistent", "--topic", "a", "--access", "read"]).status == 2)
            #expect(try mqbridge(["acl", "check", "--acl", bad, "--topic", "a"]).status == 2)
            let good = try TestEnvironment.temporaryFile(Self.aclText)
            #expect(try mqbridge(["acl", "check", "--acl", good, "--topic", "a/+", "--access", "read"]).status == 2)
            #expect(try mqbridge(["acl", "narrow", "--acl", good, "--filter", "a/b#"]).status == 2)
        }
    }

    @Test("diff reports gained and lost access per identity")
    func diff() async throws {
        try await TestEnvironment.blocking {
            let old = try TestEnvironment.temporaryFile("user bob\ntopic readwrite cmd/#\n", name: "old.acl")
            let new = try TestEnvironment.temporaryFile("user bob\ntopic read cmd/#\n", name: "new.acl")
            let r = try mqbridge(["acl", "diff", old, new])
            #expect(r.status == 0)
            #expect(r.stdout == "user bob lost write on cmd/# (\(old):2)\n")
        }
    }
}
