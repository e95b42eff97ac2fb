import Foundation
import TestSupport
import Testing

@Suite("Test support")
struct TestSupportTests {
    /// Tests run in parallel, so any socket or pipe a test holds open when another test spawns
    /// a process would otherwise live on in that child: a closed connection that stays open
    /// for the life of a broker started next door.
    @Test("A spawned child inherits only stdin, stdout and stderr")
    func childInheritsNoDescriptors() throws {
        // A descriptor without FD_CLOEXEC, as a library or a test might leave one.
        let leaky = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(leaky > 2)
        defer { close(leaky) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-fds-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // `ls` itself opens one descriptor for the directory it lists: count only sockets.
        let child = try ChildProcess(["sh", "-c", "ls -l /proc/$$/fd"], log: directory.appendingPathComponent("fds.log"))
        #expect(TestEnvironment.waitUntil(timeout: 10) { child.hasExited })
        let listing = child.log
        #expect(listing.contains(" 0 -> ") && listing.contains(" 1 -> "), "\(listing)")
        #expect(!listing.contains("socket:"), "\(listing)")
    }
}
