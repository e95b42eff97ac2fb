import Foundation
import TestSupport
import Testing

@Suite("Test support")
struct TestSupportTests {
    @TaskLocal static var marker = "outside"

    /// A blocking test body must not hold one of Swift's few cooperative threads (the in-process
    /// async tests stall behind it), yet its expectations must still count for its test.
    @Test("TestEnvironment.blocking runs the body on a thread of its own, in the test's own task")
    func blockingRunsOffThePool() async throws {
        let (dedicated, seen) = try await Self.$marker.withValue("inside") {
            try await TestEnvironment.blocking { (DedicatedThreadExecutor.onDedicatedThread, Self.marker) }
        }
        #expect(dedicated, "the body ran on the executor's own thread")
        #expect(seen == "inside", "task-locals (the test's context among them) reach the body")
        #expect(!DedicatedThreadExecutor.onDedicatedThread, "and the test's task is back on the pool afterwards")
    }

    /// Tests run in parallel, so any socket or pipe a test holds open when another test spawns
    /// a process would otherwise live on in that child: a closed connection that stays open
    /// for the life of a broker started next door.
    @Test("A spawned child inherits only stdin, stdout and stderr")
    func childInheritsNoDescriptors() async throws {
        try await TestEnvironment.blocking {
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
}
