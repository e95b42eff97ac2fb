import Bridge
import Foundation
import Testing
import TopicACL

@Suite("ACLStore: atomic reload")
struct ACLStoreTests {
    func temporaryFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("acl-\(UUID().uuidString)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("A valid reload swaps the ACL, bumps the generation and reports the diff")
    func reload() throws {
        let path = try temporaryFile("user bob\ntopic read a\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try ACLStore(path: path)
        #expect(store.current.generation == 0 && store.generation == 0)
        #expect(!store.current.acl.decide(.client(username: "bob", clientID: "c"), topic: "b", access: .read).isAllowed)
        try "user bob\ntopic read a\ntopic read b\n".write(toFile: path, atomically: true, encoding: .utf8)
        let diff = try store.reload()
        #expect(diff.changes.map(\.description) == ["user bob gained read on b (\(path):3)"])
        #expect(store.current.generation == 1 && store.generation == 1)
        #expect(store.current.acl.decide(.client(username: "bob", clientID: "c"), topic: "b", access: .read).isAllowed)
    }

    @Test("An invalid file leaves the current ACL in force, and the error names file:line")
    func invalidReload() throws {
        let path = try temporaryFile("user bob\ntopic read a\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try ACLStore(path: path)
        try "user bob\ntopic read a\ntopic raed b\n".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try store.reload()
            Issue.record("reloaded a bad file")
        } catch let error as ACLLoadError {
            #expect(error.description.hasPrefix("\(path):3: invalid access type"))
        }
        #expect(store.current.generation == 0 && store.generation == 0)
        #expect(store.current.acl.decide(.client(username: "bob", clientID: "c"), topic: "a", access: .read).isAllowed)
    }

    @Test("Missing file and invalid UTF-8 are refused at load")
    func loadErrors() throws {
        #expect(throws: ACLLoadError.self) { try ACLStore(path: "/nonexistent/acl") }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("acl-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: path, contents: Data([0x74, 0x6f, 0x70, 0x69, 0x63, 0x20, 0xff]))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: ACLLoadError.self) { try ACLStore(path: path) }
    }

    @Test("Readers on other threads always see a whole ACL, old or new")
    func concurrentReaders() async throws {
        let old = try CompiledACL(parsing: "user u\ntopic read a", source: "old")
        let new = try CompiledACL(parsing: "user u\ntopic read b", source: "new")
        let store = ACLStore(old)
        await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    for _ in 0..<2000 {
                        let snapshot = store.current
                        let a = snapshot.acl.decide(.client(username: "u", clientID: "c"), topic: "a", access: .read).isAllowed
                        let b = snapshot.acl.decide(.client(username: "u", clientID: "c"), topic: "b", access: .read).isAllowed
                        if a == b { return false }  // a half-swapped ACL would allow both or neither
                    }
                    return true
                }
            }
            group.addTask {
                for i in 0..<500 { store.replace(with: i % 2 == 0 ? new : old) }
                return true
            }
            for await ok in group { #expect(ok) }
        }
    }
}
