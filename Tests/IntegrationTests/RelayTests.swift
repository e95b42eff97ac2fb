import Foundation
import TestSupport
import Testing

/// Two sites, each with its own mosquitto and its own mqbridge relaying topics to the other.
/// A dials B through `tcp_cutter.py`, so a test can cut the link and restore it.
final class RelayLab: @unchecked Sendable {
    let directory: URL
    /// A test may restart it (on the same port).
    var brokerA: MosquittoBroker
    let brokerB: MosquittoBroker
    var a: BridgeProcess!
    var b: BridgeProcess!
    var cutter: ChildProcess!
    var cutterPort = 0
    var linkPort = 0
    let fingerprintA: String
    let fingerprintB: String

    /// Brokers keep every queued message for a disconnected relay or subscriber.
    static let brokerConfiguration = ["max_queued_messages 0", "persistence false"]

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-relay-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        brokerA = try MosquittoBroker(extraConfiguration: Self.brokerConfiguration)
        brokerB = try MosquittoBroker(extraConfiguration: Self.brokerConfiguration)
        fingerprintA = try TestEnvironment.createIdentity(in: directory.appendingPathComponent("a/identity").path, name: "site-a")
        fingerprintB = try TestEnvironment.createIdentity(in: directory.appendingPathComponent("b/identity").path, name: "site-b")
    }

    func path(_ relative: String) -> String { directory.appendingPathComponent(relative).path }

    /// `relayA` / `relayB`: the body of each site's `relay:` mapping below `broker` (indented two spaces).
    func start(aclA: String, aclB: String, relayA: String, relayB: String) throws {
        try aclA.write(toFile: path("a/acl.conf"), atomically: true, encoding: .utf8)
        try aclB.write(toFile: path("b/acl.conf"), atomically: true, encoding: .utf8)
        let configB = """
        identity: identity
        acl: acl.conf
        metrics: 127.0.0.1:0
        link:
          listen: 127.0.0.1:0
          keepalive: 1s
        peers:
          - name: site-a
            fingerprint: \(fingerprintA)
        relay:
          broker: 127.0.0.1:\(brokerB.port)
        \(relayB)

        """
        try configB.write(toFile: path("b/mqbridge.yaml"), atomically: true, encoding: .utf8)
        b = try BridgeProcess(["run", "--config", path("b/mqbridge.yaml")], expectMetrics: true, readyEvents: ["link_listening", "relay_broker_connected"])
        linkPort = b.port(event: "link_listening")!
        // From now on B always comes back on the same port.
        let fixed = try String(contentsOfFile: path("b/mqbridge.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "listen: 127.0.0.1:0\n", with: "listen: 127.0.0.1:\(linkPort)\n")
        try fixed.write(toFile: path("b/mqbridge.yaml"), atomically: true, encoding: .utf8)
        cutter = try ChildProcess(["python3", TestEnvironment.script("tcp_cutter.py"), "\(linkPort)"], log: directory.appendingPathComponent("cutter.log"))
        cutterPort = try cutter.reportedPort()
        let configA = """
        identity: identity
        acl: acl.conf
        metrics: 127.0.0.1:0
        link:
          keepalive: 1s
          reconnect_max: 500ms
        peers:
          - name: site-b
            fingerprint: \(fingerprintB)
            connect: 127.0.0.1:\(cutterPort)
        relay:
          broker: 127.0.0.1:\(brokerA.port)
        \(relayA)

        """
        try configA.write(toFile: path("a/mqbridge.yaml"), atomically: true, encoding: .utf8)
        try startA()
        try b.waitFor(event: "relay_stream_up")
    }

    func startA() throws {
        a = try BridgeProcess(["run", "--config", path("a/mqbridge.yaml")], expectMetrics: true, readyEvents: ["relay_broker_connected"])
    }

    func startB() throws {
        b = try BridgeProcess(["run", "--config", path("b/mqbridge.yaml")], expectMetrics: true, readyEvents: ["link_listening", "relay_broker_connected"])
    }

    /// A tmpfs of `size` (e.g. "20m") mounted at `relative`, for a disk that fills up; nil
    /// (and said why) where one cannot be mounted. `stop` unmounts it.
    func smallDisk(_ relative: String, size: String) throws -> String? {
        let directory = path(relative)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let mounted = try TestEnvironment.run(["mount", "-t", "tmpfs", "-o", "size=\(size)", "tmpfs", directory])
        guard mounted.status == 0 else {
            print("skipped: cannot mount a tmpfs here (\(mounted.stderr.trimmingCharacters(in: .whitespacesAndNewlines))); a full disk needs a small filesystem")
            return nil
        }
        mounts.append(directory)
        return directory
    }

    private var mounts: [String] = []

    func cutLink() { cutter.signal(SIGUSR1) }
    func restoreLink() { cutter.signal(SIGUSR2) }

    func stop() {
        a?.stop()
        b?.stop()
        cutter?.stop()
        brokerA.stop()
        brokerB.stop()
        for directory in mounts { _ = try? TestEnvironment.run(["umount", "-l", directory]) }
        if ProcessInfo.processInfo.environment["MQBRIDGE_KEEP_LOGS"] != nil { print("kept relay lab: \(directory.path)") } else {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// A mosquitto_sub on `broker`, printing `format` per message into a log; returns once the
    /// broker has the subscription.
    func subscribe(_ broker: MosquittoBroker, _ topic: String, name: String, format: String = "%t %p", extra: [String] = []) throws -> ChildProcess {
        try broker.awaitSubscription(to: topic) {
            try ChildProcess(["mosquitto_sub", "-h", "127.0.0.1", "-p", "\(broker.port)", "-t", topic, "-F", format, "-q", "1"] + extra,
                             log: directory.appendingPathComponent("\(name).log"))
        }
    }

    func publish(_ broker: MosquittoBroker, _ topic: String, _ message: String, qos: Int = 1, extra: [String] = []) throws {
        let r = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", "\(broker.port)", "-t", topic, "-m", message, "-q", "\(qos)"] + extra)
        guard r.status == 0 else { throw TestError("mosquitto_pub: \(r.stderr)") }
    }
}

func lines(_ process: ChildProcess) -> [Substring] { process.log.split(separator: "\n") }

@Suite("Topic relay between two sites (real brokers and bridges)", .serialized)
struct RelayTests {
    /// Publishes `total` messages at A at `qos` and strikes `faults` while they flow to B;
    /// returns what B's subscriber received (payloads in arrival order).
    struct FaultRun: Sendable {
        var received: [String]
        var faults: [String]
        var lab: RelayLab
        var complete: Bool
        var publisherFinished: Bool
        var publisherLog: String
    }

    func relayUnderFaults(total: Int, qos: Int, faults plan: [String]) async throws -> FaultRun {
        try await TestEnvironment.offPool { try Self.blockingRelayUnderFaults(total: total, qos: qos, faults: plan) }
    }

    static func blockingRelayUnderFaults(total: Int, qos: Int, faults plan: [String]) throws -> FaultRun {
        let lab = try RelayLab()
        try lab.start(aclA: "", aclB: "peer site-a\ntopic write load/#\n",
                      relayA: "  rules:\n    - {peer: site-b, filter: load/#, direction: out, qos: \(qos)}",
                      relayB: "  rules:\n    - {peer: site-a, filter: load/#, direction: in, qos: \(qos)}")
        let sub = try lab.subscribe(lab.brokerB, "load/#", name: "received", format: "%p", extra: ["-i", "counter", "-c", "-q", "\(qos)"])
        defer { sub.stop() }
        let publisher = try ChildProcess(["python3", TestEnvironment.script("bulk_publish.py"), "\(lab.brokerA.port)", "load/x", "\(total)",
                                          // mosquitto answers "quota exceeded" beyond 20 incoming QoS 2 exchanges per client.
                                          qos == 2 ? "10" : "200", "\(qos)"],
                                         log: lab.directory.appendingPathComponent("publisher.log"))
        defer { publisher.stop() }
        func arrived() -> Int { lines(sub).count }
        var faults: [String] = []
        func kill(_ bridge: BridgeProcess, pause: useconds_t, restart: () throws -> Void) throws {
            bridge.process.signal(SIGKILL)
            bridge.process.wait(timeout: 5)
            usleep(pause)
            try restart()
        }
        for (index, name) in plan.enumerated() {
            // Each fault strikes while messages are still flowing.
            _ = TestEnvironment.waitUntil(timeout: 20) { arrived() > (index + 1) * total / (plan.count + 3) }
            let at = arrived()
            switch name {
            case "cut": lab.cutLink(); usleep(1_000_000); lab.restoreLink()
            case "kill A": try kill(lab.a, pause: 300_000, restart: lab.startA)
            case "kill B": try kill(lab.b, pause: 300_000, restart: lab.startB)
            default: throw TestError("unknown fault \(name)")
            }
            faults.append("\(name) at \(at)")
        }
        let complete = TestEnvironment.waitUntil(timeout: Double(ProcessInfo.processInfo.environment["RELAY_WAIT"] ?? "240") ?? 240) { Set(lines(sub)).count >= total }
        // Let any late duplicate show before counting.
        _ = TestEnvironment.waitUntil(timeout: 20) { ((try? lab.a.metric("mqbridge_relay_queue_messages")) ?? nil) == 0 }
        usleep(500_000)
        return FaultRun(received: lines(sub).map(String.init), faults: faults, lab: lab, complete: complete,
                        publisherFinished: publisher.log.contains("done \(total)"), publisherLog: publisher.log)
    }

    @Test("100,000 QoS 1 messages A → B while the link is cut three times and each bridge is SIGKILLed and restarted: every message arrives")
    func noLossUnderFaults() async throws {
        let total = 100_000
        let run = try await relayUnderFaults(total: total, qos: 1, faults: ["cut", "kill A", "cut", "kill B", "cut", "kill A"])
        defer { run.lab.stop() }
        let unique = Set(run.received)
        let expected = Set((1...total).map { String(format: "m%06d", $0) })
        let missing = expected.subtracting(unique)
        let duplicates = run.received.count - unique.count
        let suppressed = (try? run.lab.b.metric("mqbridge_relay_duplicates_suppressed_total")) ?? nil
        print("relay fault test QoS 1: \(total) published, \(unique.count) distinct received, \(duplicates) duplicates delivered, "
              + "faults: \(run.faults.joined(separator: "; ")); resends recognised by B since its restart: \(suppressed.map { "\(Int($0))" } ?? "?")")
        #expect(run.complete, "only \(unique.count) of \(total) arrived; first missing: \(missing.sorted().prefix(5))")
        #expect(missing.count == 0)
        #expect(unique.isSubset(of: expected))
        #expect(run.faults.count == 6)
        #expect(run.publisherFinished, "the publisher did not finish: \(run.publisherLog)")
        // Duplicates are what QoS 1 allows across a SIGKILL: what the killed sender had queued
        // but not yet acknowledged to its broker (about one fsync's worth of arrivals; under a
        // loaded test run, thousands), and what the killed receiver had published unrecorded.
        #expect(duplicates < total / 4)
        #expect(((try? run.lab.a.metric("mqbridge_relay_queue_messages")) ?? nil) == 0)
    }

    @Test("QoS 2 across the link is exactly once: 20,000 messages, both bridges SIGKILLed and the link cut, no loss and no duplicate")
    func exactlyOnceUnderFaults() async throws {
        let total = 20_000
        let run = try await relayUnderFaults(total: total, qos: 2, faults: ["kill B", "cut", "kill A", "kill B"])
        defer { run.lab.stop() }
        let unique = Set(run.received)
        print("relay fault test QoS 2: \(total) published, \(unique.count) distinct received, \(run.received.count - unique.count) duplicates, faults: \(run.faults.joined(separator: "; "))")
        #expect(run.complete)
        #expect(run.publisherFinished, "the publisher did not finish: \(run.publisherLog)")
        let expected = Set((1...total).map { String(format: "m%06d", $0) })
        #expect(unique.count == total && unique.isSubset(of: expected), "\(expected.subtracting(unique).count) missing")
        #expect(run.received.count == total, "\(run.received.count - total) duplicates")
    }

    @Test("QoS 0 arriving faster than the relay stream's window lets it out waits for the window, not dropped: 40,000 in a burst arrive whole and in order")
    func qos0Burst() async throws {
        let lab = try RelayLab()
        defer { lab.stop() }
        try lab.start(aclA: "", aclB: "peer site-a\ntopic write burst/#\n",
                      relayA: "  rules:\n    - {peer: site-b, filter: burst/#, direction: out, qos: 0}",
                      relayB: "  rules:\n    - {peer: site-a, filter: burst/#, direction: in, qos: 0}")
        let sub = try lab.subscribe(lab.brokerB, "burst/#", name: "received", format: "%p")
        defer { sub.stop() }
        let total = 40_000
        // 64-byte payloads: 2.6 MB, ten times the window a stream starts with.
        let published = try await TestEnvironment.offPool {
            try TestEnvironment.python("bulk_publish.py", ["\(lab.brokerA.port)", "burst/x", "\(total)", "5000", "0", "64"], timeout: 120)
        }
        #expect(published.stdout.contains("done \(total)"), "\(published.stderr)")
        _ = TestEnvironment.waitUntil(timeout: 60) { lines(sub).count >= total }
        let received = lines(sub).map(String.init)
        let dropped = (try? lab.a.metric("mqbridge_relay_dropped_total{reason=\"qos0_no_link\"}")) ?? nil
        #expect(received.count == total, "\(received.count) of \(total) arrived; site A counted \(dropped.map { "\(Int($0))" } ?? "?") dropped")
        let expected = (1...total).map { String(format: "m%06d", $0) + String(repeating: ".", count: 57) }
        let firstOutOfPlace = zip(received, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(firstOutOfPlace == nil, "message \(firstOutOfPlace.map { "\($0 + 1)" } ?? "") out of place")
    }

    @Test("`both` rules on the same topics at both sites (one relay speaking 5, the other 3.1.1): no loop, no duplicate")
    func bothWithoutLoops() async throws {
        try await TestEnvironment.blocking {
            let lab = try RelayLab()
            defer { lab.stop() }
            try lab.start(aclA: "peer site-b\ntopic write shared/#\n", aclB: "peer site-a\ntopic write shared/#\n",
                          relayA: "  protocol: 5\n  rules:\n    - {peer: site-b, filter: shared/#, direction: both, qos: 1}",
                          relayB: "  protocol: 3.1.1\n  rules:\n    - {peer: site-a, filter: shared/#, direction: both, qos: 1}")
            let atA = try lab.subscribe(lab.brokerA, "shared/#", name: "at-a")
            let atB = try lab.subscribe(lab.brokerB, "shared/#", name: "at-b")
            defer { atA.stop(); atB.stop() }
            for i in 1...5 {
                try lab.publish(lab.brokerA, "shared/a", "from-a-\(i)")
                try lab.publish(lab.brokerB, "shared/b", "from-b-\(i)")
            }
            // The same payload published twice on purpose at one site arrives twice at the other.
            try lab.publish(lab.brokerA, "shared/a", "twice")
            try lab.publish(lab.brokerA, "shared/a", "twice")
            #expect(TestEnvironment.waitUntil(timeout: 15) { lines(atA).count >= 12 && lines(atB).count >= 12 })
            usleep(2_000_000)  // a loop would keep going: give it time to show
            let expected = ((1...5).map { "shared/a from-a-\($0)" } + (1...5).map { "shared/b from-b-\($0)" } + ["shared/a twice", "shared/a twice"]).sorted()
            #expect(lines(atA).map(String.init).sorted() == expected)
            #expect(lines(atB).map(String.init).sorted() == expected)
            // B (3.1.1) recognised its own publications coming back; A (5) asked for No Local.
            #expect(try lab.b.metric("mqbridge_relay_echo_suppressed_total") == 7)
            #expect(try lab.a.metric("mqbridge_relay_echo_suppressed_total") ?? 0 == 0)
        }
    }

    @Test("Prefixes remap topics and the response topic; retained flag and v5 properties cross; the receiving ACL refuses what it does not grant, and a flood of refusals is logged in full without a line each")
    func remappingPropertiesRetainedAndACL() async throws {
        try await TestEnvironment.blocking {
            let lab = try RelayLab()
            defer { lab.stop() }
            let aclB = """
            peer site-a
            topic write from-a/sensors/#
            topic write from-a/commands/#
            topic deny from-a/commands/reboot

            """
            try lab.start(aclA: "", aclB: aclB,
                          relayA: """
                            protocol: 5
                            rules:
                              - {peer: site-b, filter: "sensors/#", direction: out, qos: 1, remote_prefix: site-a/}
                              - {peer: site-b, filter: "commands/#", direction: out, qos: 1, remote_prefix: site-a/}
                              - {peer: site-b, filter: "other/#", direction: out, qos: 1, remote_prefix: site-a/}
                          """,
                          relayB: """
                            protocol: 5
                            rules:
                              - {peer: site-a, filter: "sensors/#", direction: in, qos: 1, remote_prefix: site-a/, local_prefix: from-a/}
                              - {peer: site-a, filter: "commands/#", direction: in, qos: 1, remote_prefix: site-a/, local_prefix: from-a/}
                          """)
            let atB = try lab.subscribe(lab.brokerB, "#", name: "at-b", format: "%t|%p|%r|%C|%D|%R|%P|%E", extra: ["-V", "5"])
            defer { atB.stop() }
            try lab.publish(lab.brokerA, "sensors/t1", "21.5", extra: [
                "-V", "5", "-r",
                "-D", "publish", "content-type", "text/plain",
                "-D", "publish", "correlation-data", "req-42",
                "-D", "publish", "response-topic", "replies/t1",
                "-D", "publish", "user-property", "unit", "celsius",
                "-D", "publish", "message-expiry-interval", "3600",
            ])
            try lab.publish(lab.brokerA, "commands/reboot", "now")   // B's ACL denies
            try lab.publish(lab.brokerA, "other/x", "nobody-wants")   // no `in` rule at B
            try lab.publish(lab.brokerA, "commands/light", "on")
            #expect(TestEnvironment.waitUntil(timeout: 15) { lines(atB).count >= 2 })
            try lab.b.waitFor(event: "relay_refused", matching: ["reason": "no_rule"])
            usleep(500_000)
            let got = lines(atB).map(String.init)
            #expect(got.count == 2, "\(got)")
            let sensor = got.first { $0.hasPrefix("from-a/sensors/t1|") }?.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            #expect(sensor?[1] == "21.5")
            #expect(sensor?[2] == "0")   // a live message: retained, but not marked so for an existing subscription
            #expect(sensor?[3] == "text/plain")
            #expect(sensor?[4] == "req-42")
            // A's `replies/t1` is `site-a/replies/t1` on the wire and `from-a/replies/t1` at B.
            #expect(sensor?[5] == "from-a/replies/t1")
            #expect(sensor?[6] == "unit:celsius")
            #expect(Int(sensor?[7] ?? "") ?? 0 > 3500)
            #expect(got.contains { $0.hasPrefix("from-a/commands/light|on|") })
            let denied = lab.b.lines(event: "relay_refused").first { $0["reason"] == "acl" }
            #expect(denied?["topic"] == "site-a/commands/reboot")
            #expect(denied?["rule"]?.hasSuffix("acl.conf:4") == true)
            #expect(try lab.b.metric("mqbridge_relay_refused_total{by=\"this_site\"}") == 2)
            #expect(TestEnvironment.waitUntil(timeout: 10) { ((try? lab.a.metric("mqbridge_relay_refused_total{by=\"peer\"}")) ?? nil) == 2 })
            // The retained message is kept at B: a new subscriber gets it, marked retained.
            let late = try TestEnvironment.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", "\(lab.brokerB.port)", "-t", "from-a/sensors/#", "-F", "%t|%p|%r", "-C", "1", "-W", "30"])
            #expect(String(decoding: late.stdout, as: UTF8.self) == "from-a/sensors/t1|21.5|1\n")
            // 300 more refusals at once: each counted, the log keeps to about 10 lines a second
            // and reports the rest in `relay_refused_suppressed` lines (the proxy's limit).
            let flood = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", "\(lab.brokerA.port)", "-t", "commands/reboot", "-q", "1", "-l"],
                                                stdin: Data(String(repeating: "again\n", count: 300).utf8))
            #expect(flood.status == 0, "\(flood.stderr)")
            func logged() -> Int { lab.b.loggedCount(event: "relay_refused", suppressedEvent: "relay_refused_suppressed") }
            #expect(TestEnvironment.waitUntil(timeout: 30) { logged() == 302 }, "\(logged()) of 302 refusals logged")
            #expect(try lab.b.metric("mqbridge_relay_refused_total{by=\"this_site\"}") == 302)
            #expect(lab.b.lines(event: "relay_refused").count < 100)
        }
    }

    @Test("Messages larger than the relay stream's flow-control window (600 KiB, 3 MiB) cross intact, in order with small ones; one above 64 MiB is skipped, counted, and holds nothing up")
    func largeMessages() async throws {
        try await TestEnvironment.blocking {
            let lab = try RelayLab()
            defer { lab.stop() }
            try lab.start(aclA: "", aclB: "peer site-a\ntopic write big/#\n",
                          relayA: """
                            rules:
                              - {peer: site-b, filter: "big/#", direction: out, qos: 1}
                          """,
                          relayB: """
                            rules:
                              - {peer: site-a, filter: "big/#", direction: in, qos: 1}
                          """)
            let atB = try lab.subscribe(lab.brokerB, "big/#", name: "at-b", format: "%t %l %x")
            defer { atB.stop() }
            var expected: [String] = []
            for (n, size) in [600 << 10, 100, 3 << 20, 200].enumerated() {
                let file = lab.path("payload-\(n)")
                let byte = UInt8(0x41 + n)
                try Data(repeating: byte, count: size).write(to: URL(fileURLWithPath: file))
                let r = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", "\(lab.brokerA.port)", "-t", "big/\(n)", "-f", file, "-q", "1"])
                #expect(r.status == 0, "\(r.stderr)")
                // mosquitto_sub's %x is the payload in hex: check the first and last bytes.
                expected.append("big/\(n) \(size) \(String(byte, radix: 16))…\(String(byte, radix: 16))")
            }
            #expect(TestEnvironment.waitUntil(timeout: 20) { lines(atB).count >= 4 })
            let got = lines(atB).map { line -> String in
                let parts = line.split(separator: " ")
                guard parts.count == 3 else { return String(line.prefix(80)) }
                return "\(parts[0]) \(parts[1]) \(parts[2].prefix(2))…\(parts[2].suffix(2))"
            }
            #expect(got == expected)
            // Above the relay's limit (64 MiB): skipped and acknowledged at A (3.1.1 cannot tell
            // the broker), counted and logged; what follows it is not held up.
            let huge = lab.path("payload-huge")
            try Data(repeating: 0x48, count: (64 << 20) + 1).write(to: URL(fileURLWithPath: huge))
            for (topic, file) in [("big/huge", huge), ("big/after", lab.path("payload-1"))] {
                let r = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", "\(lab.brokerA.port)", "-t", topic, "-f", file, "-q", "1"])
                #expect(r.status == 0, "\(r.stderr)")
            }
            #expect(TestEnvironment.waitUntil(timeout: 20) { lines(atB).count >= 5 })
            usleep(300_000)
            #expect(lines(atB).dropFirst(4).map { $0.prefix(13) } == ["big/after 100"])
            try lab.a.waitFor(event: "relay_dropped", matching: ["reason": "too_large", "topic": "big/huge"])
            #expect(try lab.a.metric("mqbridge_relay_dropped_total{reason=\"too_large\"}") == 1)
        }
    }

    /// A lab with the link cut (the cutter refuses connections) while the test publishes at A.
    func labDuringOutage(relayA: String) throws -> RelayLab {
        let lab = try RelayLab()
        try lab.start(aclA: "", aclB: "peer site-a\ntopic write out/#\n", relayA: relayA,
                      relayB: "  rules:\n    - {peer: site-a, filter: out/#, direction: in, qos: 1}")
        lab.cutLink()
        try lab.a.waitFor(event: "relay_stream_down")
        return lab
    }

    @Test("After an outage: messages older than max_age and past their v5 expiry are dropped (counted, logged); the rest is replayed at replay_rate")
    func ageExpiryAndPacing() async throws {
        let lab = try labDuringOutage(relayA: """
          protocol: 5
          max_age: 15s
          replay_rate: 40
          rules:
            - {peer: site-b, filter: out/#, direction: out, qos: 1}
        """)
        defer { lab.stop() }
        let atB = try lab.subscribe(lab.brokerB, "out/#", name: "at-b")
        defer { atB.stop() }
        try lab.publish(lab.brokerA, "out/old", "old")
        // Long enough for "old" to pass max_age; the rest stays well below it (A redials
        // within reconnect_max, 500 ms, once the link is back, and the replay takes 1.5 s).
        // max_age leaves ~12 s for a loaded machine: with 8 s, one fresh-clone CI run saw the
        // last 20 of the 60 age out during the replay.
        usleep(15_500_000)
        try lab.publish(lab.brokerA, "out/expiring", "expiring", extra: ["-V", "5", "-D", "publish", "message-expiry-interval", "1"])
        let published = try await TestEnvironment.offPool { try TestEnvironment.python("bulk_publish.py", ["\(lab.brokerA.port)", "out/fresh", "60"]) }
        #expect(published.stdout.contains("done 60"), "\(published.stderr)")
        usleep(1_200_000)  // "expiring" is now older than its 1 s
        let restored = Date()
        lab.restoreLink()
        let arrived = try await TestEnvironment.offPool { TestEnvironment.waitUntil(timeout: 30) { lines(atB).count >= 60 } }
        let took = Date().timeIntervalSince(restored)
        // What A did meanwhile, should it not all arrive: links lost, streams reopened, drops.
        #expect(arrived, "A's relay and link events: \(["link_down", "link_up", "relay_stream_up", "relay_stream_down", "relay_dropped"].flatMap { lab.a.lines(event: $0) })")
        usleep(500_000)
        #expect(lines(atB).map(String.init) == (1...60).map { String(format: "out/fresh m%06d", $0) })
        #expect(try lab.a.metric("mqbridge_relay_dropped_total{reason=\"max_age\"}") == 1)
        #expect(try lab.a.metric("mqbridge_relay_dropped_total{reason=\"message_expiry\"}") == 1)
        #expect(lab.a.lines(event: "relay_dropped").contains { $0["max_age"] == "1" && $0["expired"] == "1" })
        // 60 queued messages at 40/s: about 1.5 s, not the few milliseconds an unpaced replay takes.
        #expect(took > 1.0, "replayed in \(took) s")
        #expect(try lab.a.metric("mqbridge_relay_resent_total") == 60)
    }

    @Test("when_full: block holds messages at the broker (nothing lost); drop_oldest gives up the oldest, counted and logged")
    func queueFullPolicies() async throws {
        for policy in ["block", "drop_oldest"] {
            let lab = try labDuringOutage(relayA: """
              max_queue_bytes: 65536
              when_full: \(policy)
              rules:
                - {peer: site-b, filter: out/#, direction: out, qos: 1}
            """)
            defer { lab.stop() }
            let atB = try lab.subscribe(lab.brokerB, "out/#", name: "at-b", format: "%p")
            defer { atB.stop() }
            // 5,000 queued messages of 46 bytes: three and a half times the queue.
            let published = try await TestEnvironment.offPool {
                try TestEnvironment.python("bulk_publish.py", ["\(lab.brokerA.port)", "out/x", "5000"], timeout: 60)
            }
            #expect(published.stdout.contains("done 5000"), "\(published.stderr)")
            try lab.a.waitFor(event: policy == "block" ? "relay_queue_full" : "relay_dropped")
            if policy == "drop_oldest" {
                // Everything has reached the relay (and the oldest have made room) before the link returns.
                #expect(try await TestEnvironment.offPool { TestEnvironment.waitUntil(timeout: 30) { ((try? lab.a.metric("mqbridge_relay_queued_total")) ?? nil) == 5000 } })
            }
            lab.restoreLink()
            let expected = (1...5000).map { String(format: "m%06d", $0) }
            if policy == "block" {
                #expect(try await TestEnvironment.offPool { TestEnvironment.waitUntil(timeout: 60) { lines(atB).count >= 5000 } })
                usleep(300_000)
                #expect(lines(atB).map(String.init) == expected)
                #expect(try lab.a.metric("mqbridge_relay_dropped_total{reason=\"queue_full\"}") == 0)
            } else {
                let dropped = try #require(try lab.a.metric("mqbridge_relay_dropped_total{reason=\"queue_full\"}"))
                #expect(dropped > 3000)
                #expect(try await TestEnvironment.offPool { TestEnvironment.waitUntil(timeout: 60) { lines(atB).count >= 5000 - Int(dropped) } })
                usleep(500_000)
                // What arrives is the newest messages, in order, and nothing dropped shows up.
                #expect(lines(atB).map(String.init) == Array(expected.suffix(5000 - Int(dropped))))
            }
        }
    }

    /// A real full disk: A's queue directory is a 20 MiB tmpfs, its first 16 MiB segment is
    /// allocated ahead, and 8,000 messages of 4 KiB (32 MiB) come while the link is cut.
    /// Before, every failed batch logged an error and reconnected to the broker at once (4 a
    /// second for as long as the disk stayed full), and each abrupt close lost the PUBACKs the
    /// broker had not read yet, so with a large backlog the same messages came again at every
    /// reconnect (by hand: 1.2 million deliveries for 265,000 messages, not settling; this
    /// test's backlog is too small to show that, its duplicates are bounded below).
    @Test("A full disk under the queue: counted, logged once per streak, the broker held off with backoff, no message sent ahead of the disk meanwhile; when the peer drains it, every message arrives")
    func diskFull() async throws {
        try await TestEnvironment.blocking {
            let lab = try RelayLab()
            defer { lab.stop() }
            guard let queue = try lab.smallDisk("a/queue", size: "20m") else { return }
            try lab.start(aclA: "", aclB: "peer site-a\ntopic write out/#\n", relayA: """
              queue_dir: \(queue)
              rules:
                - {peer: site-b, filter: out/#, direction: out, qos: 1}
            """, relayB: "  rules:\n    - {peer: site-a, filter: out/#, direction: in, qos: 1}")
            lab.cutLink()
            try lab.a.waitFor(event: "relay_stream_down")
            let atB = try lab.subscribe(lab.brokerB, "out/#", name: "at-b", format: "%p", extra: ["-i", "disk-full-counter", "-c"])
            defer { atB.stop() }
            let total = 8000
            let published = try TestEnvironment.python("bulk_publish.py", ["\(lab.brokerA.port)", "out/x", "\(total)", "200", "1", "4096"], timeout: 120)
            #expect(published.stdout.contains("done \(total)"), "\(published.stderr)")
            try lab.a.waitFor(event: "relay_queue_error", timeout: 30)
            // The disk stays full for 4 s: the relay holds off (1 s, then 2 s) instead of
            // reconnecting and failing again 4 times a second (before: 131 error lines, 56
            // reconnects in those 4 s).
            let connectedBefore = lab.a.lines(event: "relay_broker_connected").count
            usleep(4_000_000)
            let errorLines = lab.a.lines(event: "relay_queue_error").count
            let reconnects = lab.a.lines(event: "relay_broker_connected").count - connectedBefore
            #expect(errorLines == 1, "\(errorLines) error lines in 4 s of a full disk")
            #expect(reconnects <= 3, "\(reconnects) broker reconnects in 4 s of a full disk")
            #expect((try lab.a.metric("mqbridge_relay_queue_write_errors_total") ?? 0) >= 1)

            lab.restoreLink()
            let arrived = TestEnvironment.waitUntil(timeout: 180) { Set(lines(atB)).count >= total }
            _ = TestEnvironment.waitUntil(timeout: 20) { ((try? lab.a.metric("mqbridge_relay_queue_messages")) ?? nil) == 0 }
            usleep(500_000)
            let received = lines(atB).map { String($0.prefix(7)) }
            let unique = Set(received)
            print("relay disk-full test: \(total) published, \(unique.count) distinct received, \(received.count - unique.count) duplicates, "
                  + "\(lab.a.lines(event: "relay_queue_error").count) error lines, write errors counted: \(Int((try? lab.a.metric("mqbridge_relay_queue_write_errors_total") ?? 0) ?? 0))")
            #expect(arrived, "\(unique.count) of \(total) arrived")
            #expect(unique == Set((1...total).map { String(format: "m%06d", $0) }))
            // QoS 1 duplicates: messages the broker sends again after a hold, whose PUBACK it
            // had not seen. A bound on their number, not an exact one (11–210 in runs by hand).
            #expect(received.count - unique.count < total / 4, "\(received.count - unique.count) duplicates")
            #expect(!lab.a.lines(event: "relay_queue_recovered").isEmpty)
        }
    }

    /// The receiving side's disk: B's delivery ledger on a 64 KiB tmpfs fills after a few
    /// thousand records. B cannot record what it published, so it must not acknowledge it
    /// (after a restart it would not know it had); A keeps those messages until the disk
    /// takes the records (here: the tmpfs grown to 1 MiB).
    @Test("A full disk under the receiving site's ledger: acknowledgements wait (counted, logged once), the sender keeps the messages, and once the disk has room every one is settled")
    func ledgerDiskFull() async throws {
        try await TestEnvironment.blocking {
            let lab = try RelayLab()
            defer { lab.stop() }
            guard let queue = try lab.smallDisk("b/queue", size: "64k") else { return }
            try lab.start(aclA: "", aclB: "peer site-a\ntopic write out/#\n",
                          relayA: "  rules:\n    - {peer: site-b, filter: out/#, direction: out, qos: 1}",
                          relayB: "  queue_dir: \(queue)\n  rules:\n    - {peer: site-a, filter: out/#, direction: in, qos: 1}")
            let atB = try lab.subscribe(lab.brokerB, "out/#", name: "at-b", format: "%p")
            defer { atB.stop() }
            let total = 8000
            let published = try TestEnvironment.python("bulk_publish.py", ["\(lab.brokerA.port)", "out/x", "\(total)"], timeout: 120)
            #expect(published.stdout.contains("done \(total)"), "\(published.stderr)")
            try lab.b.waitFor(event: "relay_ledger_error", timeout: 30)
            // The ledger holds ~3,800 records: of 8,000, some thousands are held at A (under a
            // loaded run A may still be sending them when the error is logged).
            _ = TestEnvironment.waitUntil(timeout: 30) { ((try? lab.a.metric("mqbridge_relay_queue_messages")) ?? nil).map { $0 >= 1000 } ?? false }
            usleep(2_000_000)
            let waiting = try #require(try lab.a.metric("mqbridge_relay_queue_messages"))
            #expect(waiting >= 1000, "A keeps what B could not record: \(waiting)")
            #expect(lab.b.lines(event: "relay_ledger_error").count == 1)
            #expect((try lab.b.metric("mqbridge_relay_ledger_write_errors_total") ?? 0) >= 2, "retried every second")

            let grown = try TestEnvironment.run(["mount", "-o", "remount,size=1m", queue])
            #expect(grown.status == 0, "\(grown.stderr)")
            #expect(TestEnvironment.waitUntil(timeout: 60) { ((try? lab.a.metric("mqbridge_relay_queue_messages")) ?? nil) == 0 })
            try lab.b.waitFor(event: "relay_ledger_recovered")
            usleep(500_000)
            let received = lines(atB).map(String.init)
            #expect(Set(received) == Set((1...total).map { String(format: "m%06d", $0) }))
            print("relay ledger disk-full test: \(total) published, \(Set(received).count) distinct received at B, \(received.count - Set(received).count) duplicates, "
                  + "\(Int(waiting)) waiting at A while B's disk was full")
        }
    }

    /// mosquitto's default is `persistence false`: a restart forgets the relay's session, its
    /// subscription and what it held for it. The relay must subscribe again and say so.
    @Test("The local broker restarted without persistence: the relay says it lost its session (counted), subscribes again, and relays what comes after")
    func brokerRestartWithoutPersistence() async throws {
        try await TestEnvironment.blocking {
            let lab = try RelayLab()
            defer { lab.stop() }
            try lab.start(aclA: "", aclB: "peer site-a\ntopic write out/#\n",
                          relayA: "  rules:\n    - {peer: site-b, filter: out/#, direction: out, qos: 1}",
                          relayB: "  rules:\n    - {peer: site-a, filter: out/#, direction: in, qos: 1}")
            let atB = try lab.subscribe(lab.brokerB, "out/#", name: "at-b", format: "%p")
            defer { atB.stop() }
            try lab.publish(lab.brokerA, "out/x", "before")
            #expect(TestEnvironment.waitUntil(timeout: 15) { lines(atB) == ["before"] })
            // A fresh start is a new session too, but nothing to warn about.
            #expect(lab.a.lines(event: "relay_broker_session_lost").isEmpty)

            let port = lab.brokerA.port
            lab.brokerA.stop()
            lab.brokerA = try MosquittoBroker(extraConfiguration: RelayLab.brokerConfiguration, port: port)
            try lab.a.waitFor(event: "relay_broker_session_lost", timeout: 30)
            #expect(TestEnvironment.waitUntil(timeout: 15) { lab.brokerA.subscriptions(to: "out/#") > 0 }, "subscribed again")
            try lab.publish(lab.brokerA, "out/x", "after")
            #expect(TestEnvironment.waitUntil(timeout: 15) { lines(atB) == ["before", "after"] }, "\(lines(atB))")
            #expect(try lab.a.metric("mqbridge_relay_broker_sessions_lost_total") == 1)
        }
    }

    @Test("The receiving site's ACL reload (SIGHUP) applies to the relay at once: refused before, accepted after")
    func aclReloadAppliesToRelay() async throws {
        try await TestEnvironment.blocking {
            let lab = try RelayLab()
            defer { lab.stop() }
            try lab.start(aclA: "", aclB: "peer site-a\ntopic write other/#\n",
                          relayA: "  rules:\n    - {peer: site-b, filter: news/#, direction: out, qos: 1}",
                          relayB: "  rules:\n    - {peer: site-a, filter: news/#, direction: in, qos: 1}")
            let atB = try lab.subscribe(lab.brokerB, "news/#", name: "at-b")
            defer { atB.stop() }
            try lab.publish(lab.brokerA, "news/1", "before")
            try lab.b.waitFor(event: "relay_refused", matching: ["reason": "acl", "topic": "news/1"])
            try "peer site-a\ntopic write other/#\ntopic write news/#\n".write(toFile: lab.path("b/acl.conf"), atomically: true, encoding: .utf8)
            lab.b.process.signal(SIGHUP)
            try lab.b.waitFor(event: "acl_change")
            try lab.publish(lab.brokerA, "news/2", "after")
            #expect(TestEnvironment.waitUntil(timeout: 10) { lines(atB).count >= 1 })
            usleep(300_000)
            // The refused message was settled, not retried: only "after" arrives.
            #expect(lines(atB).map(String.init) == ["news/2 after"])
            #expect(lab.b.lines(event: "acl_change").contains { $0["scope"] == "peer site-a" && $0["change"] == "gained" && $0["filter"] == "news/#" })
        }
    }
}
