import Testing
import TopicACL

@Suite("ACL diff for reload audits")
struct DiffTests {
    @Test("Gains and losses per identity; readwrite narrowed to read loses only write")
    func diff() throws {
        let old = try ACLFile(parsing: "user bob\ntopic readwrite cmd/#\ntopic read a\npattern read d/%c/#", source: "old.acl")
        let new = try ACLFile(parsing: "user bob\ntopic read cmd/#\ntopic read a\ntopic deny a/secret\nuser carol\ntopic read c", source: "new.acl")
        let diff = ACLDiff(from: old, to: new)
        #expect(diff.changes.map(\.description) == [
            "patterns lost read on d/%c/# (old.acl:4)",
            "user bob gained a deny on a/secret (new.acl:4)",
            "user bob lost write on cmd/# (old.acl:2)",
            "user carol gained read on c (new.acl:6)",
        ])
    }

    @Test("Reordering lines and comments is no change: decisions cannot differ")
    func reorder() throws {
        let old = try ACLFile(parsing: "user bob\ntopic read a\ntopic deny b", source: "o")
        let new = try ACLFile(parsing: "# reordered\nuser bob\ntopic deny b\ntopic read a\ntopic read a", source: "n")
        #expect(ACLDiff(from: old, to: new).isEmpty)
        #expect(ACLDiff(from: old, to: new).description == "no change in access")
    }
}
