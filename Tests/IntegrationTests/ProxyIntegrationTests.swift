import Foundation
import TestSupport
import Testing

/// mqbridge as a real process in front of a real mosquitto, with real clients (paho,
/// mosquitto_pub / mosquitto_sub) through it and an observer connected directly to the broker.
@Suite("Proxy with real processes", .serialized)
struct ProxyIntegrationTests {
    static let aclText = """
    # alice reads sensors and alerts; bob writes them (and secrets nobody may read);
    # mallory owns mallory/# only.
    user alice
    topic readwrite sensors/#
    topic read alerts/#
    user bob
    topic readwrite sensors/#
    topic write alerts/#
    topic write secret/#
    user mallory
    topic readwrite mallory/#
    topic write status/mallory
    pattern readwrite devices/%c/#

    """

    struct Site {
        let broker: MosquittoBroker
        let bridge: BridgeProcess
        let aclPath: String

        init(broker: MosquittoBroker, bridge: BridgeProcess) {
            self.broker = broker
            self.bridge = bridge
            aclPath = ""
        }

        init(acl: String = ProxyIntegrationTests.aclText, metrics: Bool = true, extra: [String] = []) throws {
            broker = try MosquittoBroker()
            aclPath = try TestEnvironment.temporaryFile(acl, name: "site.acl")
            var arguments = ["run", "--listen", "127.0.0.1:0", "--broker", "127.0.0.1:\(broker.port)", "--acl", aclPath]
            if metrics { arguments += ["--metrics", "127.0.0.1:0"] }
            bridge = try BridgeProcess(arguments + extra, expectMetrics: metrics)
        }

        /// From a configuration file whose one proxy has `proxyOptions` (e.g. `max_connections: 2`).
        init(proxyOptions: [String]) throws {
            broker = try MosquittoBroker()
            aclPath = try TestEnvironment.temporaryFile(ProxyIntegrationTests.aclText, name: "site.acl")
            let configuration = """
            acl: \(aclPath)
            metrics: 127.0.0.1:0
            proxies:
              - listen: 127.0.0.1:0
                broker: 127.0.0.1:\(broker.port)\(proxyOptions.map { "\n    \($0)" }.joined())

            """
            bridge = try BridgeProcess(["run", "--config", try TestEnvironment.temporaryFile(configuration, name: "mqbridge.yaml")], expectMetrics: true)
        }

        func stop() {
            bridge.stop()
            broker.stop()
        }
    }

    func scenario(_ name: String, _ site: Site, _ protocolVersion: String) throws -> [String: Any] {
        let result = try TestEnvironment.python("proxy_scenarios.py", [name, "\(site.bridge.port)", "\(site.broker.port)", protocolVersion])
        guard result.status == 0, let data = result.stdout.data(using: .utf8),
              let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TestError("scenario \(name) failed (\(result.status)): \(result.stderr)\n\(result.stdout)")
        }
        return object
    }

    static func payloads(_ messages: Any?) -> [String] {
        ((messages as? [[String: Any]]) ?? []).compactMap { $0["payload"] as? String }
    }

    @Test("paho through the proxy: QoS 0/1/2 and retained flow; denied publications never reach the broker", arguments: ["311", "5"])
    func flows(protocolVersion: String) async throws {
        try await TestEnvironment.blocking {
            let site = try Site()
            defer { site.stop() }
            let r = try scenario("flows", site, protocolVersion)
            // SUBACK reassembled per requested filter: secret/# refused (0x80 in 3.1.1, 0x87 in 5.0).
            #expect(r["granted"] as? [Int] == [2, 1, protocolVersion == "5" ? 0x87 : 0x80])
            // (The empty payload that clears the retained message at the end is not counted.)
            let alice = ((r["alice"] as? [[String: Any]]) ?? []).filter { ($0["payload"] as? String) != "" }
            let byPayload = Dictionary(alice.map { ($0["payload"] as! String, $0["qos"] as! Int) }, uniquingKeysWith: { a, _ in a })
            #expect(byPayload == ["bob-q0": 0, "bob-q1": 1, "bob-q2": 2, "bob-alert": 1, "bob-retained": 1])
            let observer = Self.payloads(r["observer"])
            for allowed in ["bob-q0", "bob-q1", "bob-q2", "bob-alert", "bob-secret", "mallory-own", "bob-retained"] {
                #expect(observer.contains(allowed), "\(allowed) did not reach the broker")
            }
            #expect(!observer.contains { $0.hasPrefix("mallory-q") }, "a denied publication reached the broker: \(observer)")
            let late = (r["late"] as? [[String: Any]]) ?? []
            #expect(late.first?["payload"] as? String == "bob-retained")
            #expect(late.first?["retain"] as? Bool == true)
            // Every denial was logged as one JSON line naming the deciding rule.
            let denials = site.bridge.lines(event: "denied")
            #expect(denials.filter { $0["kind"] == "publish" && $0["username"] == "mallory" }.count == 3)
            #expect(denials.contains { $0["kind"] == "subscribe" && $0["topic"] == "secret/#" && $0["rule"] == "default deny" })
            #expect(try site.bridge.metric("mqbridge_denials_total{kind=\"publish\"}") == 3)
        }
    }

    @Test("mosquitto_pub / mosquitto_sub through the proxy, QoS 0/1/2 and retained", arguments: ["mqttv311", "mqttv5"])
    func mosquittoClients(version: String) async throws {
        try await TestEnvironment.blocking {
            let site = try Site(metrics: false)
            defer { site.stop() }
            let port = "\(site.bridge.port)"
            let sub = try site.broker.awaitSubscription(to: "sensors/#") {
                try ChildProcess(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", version, "-u", "alice", "-t", "sensors/#", "-q", "2", "-v", "-C", "4"],
                                 log: site.bridge.directory.appendingPathComponent("sub.log"))
            }
            defer { sub.stop() }
            for qos in ["0", "1", "2"] {
                let pub = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", version, "-u", "bob", "-t", "sensors/cli", "-m", "qos\(qos)", "-q", qos])
                #expect(pub.status == 0, "\(pub.stderr)")
            }
            let denied = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", version, "-u", "mallory", "-t", "sensors/cli", "-m", "evil", "-q", "1"])
            // 3.1.1 has no way to refuse a PUBLISH, so mosquitto_pub succeeds (as with mosquitto);
            // 5.0 reports the PUBACK's 0x87.
            #expect(denied.status == 0 || version == "mqttv5")
            let retained = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", version, "-u", "bob", "-t", "sensors/kept", "-m", "kept", "-q", "1", "-r"])
            #expect(retained.status == 0)
            #expect(sub.wait(timeout: 30) != nil, "the subscriber got \(sub.log)")
            #expect(sub.log.split(separator: "\n").sorted() == ["sensors/cli qos0", "sensors/cli qos1", "sensors/cli qos2", "sensors/kept kept"])
            let late = try TestEnvironment.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", version, "-u", "alice", "-t", "sensors/kept", "-C", "1", "-W", "30", "-v"])
            #expect(String(decoding: late.stdout, as: UTF8.self) == "sensors/kept kept\n")
            _ = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", "bob", "-t", "sensors/kept", "-n", "-r"])
        }
    }

    @Test("The packet and byte counters count every packet, per direction and type, and the bytes exactly")
    func packetCounters() async throws {
        try await TestEnvironment.blocking {
            let site = try Site()
            defer { site.stop() }
            let port = "\(site.bridge.port)"
            let count = 200
            let sub = try site.broker.awaitSubscription(to: "sensors/#") {
                try ChildProcess(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv311", "-u", "alice", "-t", "sensors/#", "-q", "1", "-C", "\(count)"],
                                 log: site.bridge.directory.appendingPathComponent("sub.log"))
            }
            defer { sub.stop() }
            // One connection, 200 QoS 1 PUBLISHes of 19 bytes (sensors/n, a packet id, "m000"…).
            let lines = (0..<count).map { String(format: "m%03d", $0) }.joined(separator: "\n") + "\n"
            let pub = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv311", "-u", "bob", "-t", "sensors/n", "-q", "1", "-l"],
                                              stdin: Data(lines.utf8))
            #expect(pub.status == 0, "\(pub.stderr)")
            #expect(sub.wait(timeout: 30) != nil, "the subscriber got \(sub.log.split(separator: "\n").count)")
            func packets(_ direction: String, _ type: String) -> Double? {
                try? site.bridge.metric("mqbridge_packets_total{direction=\"\(direction)\",type=\"\(type)\"}")
            }
            let expected: [(String, String, Double)] = [
                ("client_to_broker", "PUBLISH", Double(count)), ("broker_to_client", "PUBLISH", Double(count)),
                ("client_to_broker", "PUBACK", Double(count)), ("broker_to_client", "PUBACK", Double(count)),
                ("client_to_broker", "CONNECT", 2), ("broker_to_client", "CONNACK", 2),
                ("client_to_broker", "SUBSCRIBE", 1), ("broker_to_client", "SUBACK", 1),
            ]
            // The subscriber's last PUBACK may still be on its way into the bridge.
            let settled = TestEnvironment.waitUntil(timeout: 10) { expected.allSatisfy { packets($0.0, $0.1) == $0.2 } }
            #expect(settled, "\(expected.map { "\($0.0) \($0.1): \(String(describing: packets($0.0, $0.1))) (expected \($0.2))" })")
            // Towards the clients: 200 deliveries of 19 bytes and 200 PUBACKs of 4 to the
            // publisher, two CONNACKs of 4 and a SUBACK of 5 (3.1.1), nothing else.
            #expect(try site.bridge.metric("mqbridge_bytes_total{direction=\"broker_to_client\"}") == Double(count * 19 + count * 4 + 2 * 4 + 5))
            // Towards the broker: the same PUBLISHes and PUBACKs, and two CONNECTs, a SUBSCRIBE and
            // the DISCONNECTs, whose sizes depend on the generated client ids.
            let toBroker = try #require(try site.bridge.metric("mqbridge_bytes_total{direction=\"client_to_broker\"}"))
            #expect(toBroker >= Double(count * 19 + count * 4) && toBroker <= Double(count * 19 + count * 4 + 200), "\(toBroker)")
        }
    }

    /// How many connections the broker has logged.
    static func connections(_ broker: MosquittoBroker) -> Int {
        broker.log.split(separator: "\n").filter { $0.contains("New connection from") }.count
    }

    @Test("No CONNECT within connect_timeout (nothing sent, or half a CONNECT): closed, counted and logged; the broker never hears of it")
    func connectTimeout() async throws {
        try await TestEnvironment.blocking {
            let site = try Site(proxyOptions: ["connect_timeout: 500ms"])
            defer { site.stop() }
            let before = Self.connections(site.broker)
            let start = Date()
            let silent = try TCPTestClient(port: site.bridge.port, timeout: 10)
            let partial = try TCPTestClient(port: site.bridge.port, timeout: 10)
            try partial.send(Array(MQTTTestPackets.connect311(clientID: "slow", username: "bob").prefix(6)))
            let fromSilent = silent.receive()
            let fromPartial = partial.receive()
            let elapsed = Date().timeIntervalSince(start)
            #expect(fromSilent.received.isEmpty && fromPartial.received.isEmpty)
            #expect(fromSilent.ending != .other && fromPartial.ending != .other, "still open after \(elapsed) s")
            #expect(elapsed >= 0.4 && elapsed < 8, "closed after \(elapsed) s")
            #expect(TestEnvironment.waitUntil(timeout: 10) { (try? site.bridge.metric("mqbridge_connect_timeouts_total")) == 2 })
            #expect(site.bridge.lines(event: "connect_timeout").count == 2)
            #expect(Self.connections(site.broker) == before)
            // A client that does send its CONNECT in time is not affected.
            let quick = try TCPTestClient(port: site.bridge.port, timeout: 10)
            try quick.send(MQTTTestPackets.connect311(clientID: "quick", username: "bob"))
            #expect(quick.receive(atMost: 4).received == MQTTTestPackets.connackAccepted311)
        }
    }

    @Test("The broker cannot be reached: CONNACK 'server unavailable' (3.1.1 0x03, 5.0 0x88), then close; counted and logged")
    func brokerUnreachable() async throws {
        try await TestEnvironment.blocking {
            // A port nothing listens on.
            let nowhere = try TestEnvironment.freePort()
            let bridge = try BridgeProcess(["run", "--listen", "127.0.0.1:0", "--broker", "127.0.0.1:\(nowhere)", "--acl",
                                            try TestEnvironment.temporaryFile(Self.aclText, name: "site.acl"), "--metrics", "127.0.0.1:0"], expectMetrics: true)
            defer { bridge.stop() }
            let v311 = try TestEnvironment.tcpExchangeWithEnding(port: bridge.port, send: MQTTTestPackets.connect311(clientID: "u1", username: "bob"), halfClose: false)
            #expect(v311.received == [0x20, 0x02, 0x00, 0x03])
            let v5 = try TestEnvironment.tcpExchangeWithEnding(port: bridge.port, send: MQTTTestPackets.connect5(clientID: "u2", username: "bob"), halfClose: false)
            #expect(v5.received == [0x20, 0x03, 0x00, 0x88, 0x00])
            // Closed after the CONNACK.
            let client = try TCPTestClient(port: bridge.port, timeout: 10)
            try client.send(MQTTTestPackets.connect311(clientID: "u3", username: "bob"))
            let third = client.receive()
            #expect(third.received == [0x20, 0x02, 0x00, 0x03])
            #expect(third.ending != .other)
            #expect(TestEnvironment.waitUntil(timeout: 10) { (try? bridge.metric(#"mqbridge_upstream_errors_total{kind="connect_failed"}"#)) == 3 })
            #expect(bridge.lines(event: "upstream_connect_failed").count == 3)
        }
    }

    @Test("The broker goes away under a connected client: the client's connection is closed, and it is counted")
    func brokerGone() async throws {
        try await TestEnvironment.blocking {
            let site = try Site()
            defer { site.stop() }
            let client = try TCPTestClient(port: site.bridge.port, timeout: 10)
            try client.send(MQTTTestPackets.connect311(clientID: "stays", username: "bob"))
            #expect(client.receive(atMost: 4).received == MQTTTestPackets.connackAccepted311)
            site.broker.stop()
            let rest = client.receive()
            #expect(rest.received.isEmpty)
            #expect(rest.ending != .other, "the client's connection stayed open")
            #expect(TestEnvironment.waitUntil(timeout: 10) { (try? site.bridge.metric(#"mqbridge_upstream_errors_total{kind="closed_by_broker"}"#)) == 1 })
        }
    }

    @Test("Narrowing cannot be used to flood the broker: 2,000 wildcards for a user with 200 grants reach it as 1,000 filters, the connection's limit; the rest are refused, and an UNSUBSCRIBE of them is answered at once")
    func narrowingLimit() async throws {
        try await TestEnvironment.blocking {
            // Each "+/xN/#" narrows to 200 filters (gK/xN/#); without a limit this 23 KB SUBSCRIBE
            // asked mosquitto for 400,000 subscriptions, and the UNSUBSCRIBE kept the proxy busy
            // for minutes.
            let site = try Site(acl: "user bob\n" + (1...200).map { "topic read g\($0)/#" }.joined(separator: "\n") + "\n")
            defer { site.stop() }
            let client = try TCPTestClient(port: site.bridge.port, timeout: 20)
            try client.send(MQTTTestPackets.connect311(clientID: "wide", username: "bob"))
            #expect(client.receive(atMost: 4).received == MQTTTestPackets.connackAccepted311)
            let filters = (0..<2000).map { "+/x\($0)/#" }
            try client.send(MQTTTestPackets.subscribe311(id: 9, filters: filters))
            // SUBACK: remaining length 2,002 (two bytes), id 9, then a code per filter: the first
            // five fill max_narrowed_filters (5 × 200 = 1,000), the others are refused.
            let subAck = client.receive { $0.count >= 2005 }.received
            #expect(subAck.count == 2005)
            #expect(Array(subAck.prefix(5)) == [0x90, 0xD2, 0x0F, 0x00, 0x09])
            #expect(Array(subAck.dropFirst(5)) == Array(repeating: 0x00, count: 5) + Array(repeating: 0x80, count: 1995))
            #expect(TestEnvironment.waitUntil(timeout: 10) { (try? site.bridge.metric(#"mqbridge_denials_total{kind="subscribe"}"#)) == 1995 })
            // What the broker holds: g7/x3/t reaches bob (x3 is among the first five), g7/x9/t
            // does not, although bob may read it.
            _ = try TestEnvironment.run(["mosquitto_pub", "-p", "\(site.broker.port)", "-t", "g7/x9/t", "-m", "not-subscribed", "-q", "1"])
            _ = try TestEnvironment.run(["mosquitto_pub", "-p", "\(site.broker.port)", "-t", "g7/x3/t", "-m", "subscribed", "-q", "1"])
            let delivered = client.receive { $0.count >= 2 && $0.count >= 2 + Int($0[1]) }.received
            #expect(delivered == MQTTTestPackets.packet(0x30, [0x00, 0x07] + Array("g7/x3/t".utf8) + Array("subscribed".utf8)))
            // The connection holds its 1,000: one more wildcard is refused, in a packet of its own too.
            try client.send(MQTTTestPackets.subscribe311(id: 10, filters: ["+/x7/#"]))
            #expect(client.receive(atMost: 5).received == [0x90, 0x03, 0x00, 0x0A, 0x80])
            // Unsubscribing all 2,000: the five held go to the broker, the rest are answered here;
            // then there is room again.
            try client.send(MQTTTestPackets.unsubscribe311(id: 11, filters: filters))
            #expect(client.receive(atMost: 4).received == [0xB0, 0x02, 0x00, 0x0B])
            try client.send(MQTTTestPackets.subscribe311(id: 12, filters: ["+/x7/#"]))
            #expect(client.receive(atMost: 5).received == [0x90, 0x03, 0x00, 0x0C, 0x00])
        }
    }

    @Test("A persistent session cannot grow past the narrowing limit by reconnecting; a clean session starts from zero")
    func narrowingLimitPersistentSession() async throws {
        try await TestEnvironment.blocking {
            let site = try Site(acl: "user bob\n" + (1...200).map { "topic read g\($0)/#" }.joined(separator: "\n") + "\n")
            defer { site.stop() }
            func connect(cleanSession: Bool, expectedConnAck: [UInt8]) throws -> TCPTestClient {
                let client = try TCPTestClient(port: site.bridge.port, timeout: 20)
                try client.send(MQTTTestPackets.connect311(clientID: "keep", username: "bob", cleanSession: cleanSession))
                #expect(client.receive(atMost: 4).received == expectedConnAck)
                return client
            }
            var client = try connect(cleanSession: false, expectedConnAck: [0x20, 0x02, 0x00, 0x00])
            try client.send(MQTTTestPackets.subscribe311(id: 1, filters: (0..<5).map { "+/x\($0)/#" }))
            #expect(client.receive(atMost: 9).received == [0x90, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00])
            // Each reconnection resumes the session (Session Present), with its 1,000 filters.
            for id in UInt8(2)...3 {
                client = try connect(cleanSession: false, expectedConnAck: [0x20, 0x02, 0x01, 0x00])
                try client.send(MQTTTestPackets.subscribe311(id: UInt16(id), filters: ["+/x\(id + 5)/#"]))
                #expect(client.receive(atMost: 5).received == [0x90, 0x03, 0x00, id, 0x80])
            }
            // A clean session: the broker dropped them, and the proxy counts from zero.
            client = try connect(cleanSession: true, expectedConnAck: [0x20, 0x02, 0x00, 0x00])
            try client.send(MQTTTestPackets.subscribe311(id: 4, filters: ["+/x9/#"]))
            #expect(client.receive(atMost: 5).received == [0x90, 0x03, 0x00, 0x04, 0x00])
        }
    }

    @Test("A will is published on abrupt disconnect; a will on a forbidden topic is refused at CONNECT", arguments: ["311", "5"])
    func will(protocolVersion: String) async throws {
        try await TestEnvironment.blocking {
            let site = try Site(metrics: false)
            defer { site.stop() }
            let r = try scenario("will", site, protocolVersion)
            #expect(r["child"] as? String == "connected")
            #expect(Self.payloads(r["observer"]) == ["mallory-died"])
            // paho reports a 3.1.1 return code 0x05 as the 5.0 code 0x87 (135); the exact bytes of
            // both are asserted in ProxySessionTests.
            #expect((r["denied_will_connack"] as? [String: Any])?["rc"] as? Int == 0x87)
        }
    }

    @Test("A persistent session is resumed and its queued messages delivered", arguments: ["311", "5"])
    func persistentSession(protocolVersion: String) async throws {
        try await TestEnvironment.blocking {
            let site = try Site(metrics: false)
            defer { site.stop() }
            let r = try scenario("session", site, protocolVersion)
            #expect((r["first"] as? [String: Any])?["session_present"] as? Bool == false)
            #expect((r["second"] as? [String: Any])?["session_present"] as? Bool == true)
            #expect(Self.payloads(r["messages"]).sorted() == ["queued-0", "queued-1", "queued-2"])
        }
    }

    @Test("Deliveries over max_packet_size are skipped and acknowledged, so a persistent session is never stuck behind one", arguments: ["311", "5"])
    func oversizedDeliveries(protocolVersion: String) async throws {
        try await TestEnvironment.blocking {
            let site = try Site(proxyOptions: ["max_packet_size: 4096"])
            defer { site.stop() }
            let bridge = site.bridge
            let r = try scenario("oversized", site, protocolVersion)
            #expect((r["resumed"] as? [String: Any])?["session_present"] as? Bool == true)
            #expect(Self.payloads(r["first"]) == ["queued-small", "live-small"])
            #expect(Self.payloads(r["again"]).isEmpty)
            if protocolVersion == "311" {
                // 3.1.1: the proxy skipped them (5.0: the broker did, told the limit in CONNECT).
                let refused = bridge.lines(event: "denied").filter { $0["kind"] == "delivery" }
                #expect(refused.count == 2, "\(refused)")
                #expect(refused.first?["reason"]?.contains("larger than max_packet_size (4096)") == true)
            }
        }
    }

    @Test("max_connections: further clients are closed on accept, each counted, logged at most once a second")
    func maxConnections() async throws {
        try await TestEnvironment.blocking {
            let site = try Site(proxyOptions: ["max_connections: 2"])
            defer { site.stop() }
            let bridge = site.bridge
            // 3.1.1 CONNECT of client "m<i>" as alice; the CONNACK says it was accepted.
            func connect(_ i: Int) throws -> TCPTestClient {
                let client = try TCPTestClient(port: bridge.port, timeout: 10)
                try client.send(MQTTTestPackets.connect311(clientID: "m\(i)", username: "alice"))
                return client
            }
            let open = try (0..<2).map { try connect($0) }
            for client in open { #expect(client.receive(atMost: 4).received == MQTTTestPackets.connackAccepted311) }
            // Six more are closed at once, unanswered (a reset when their CONNECT was already
            // there unread: the kernel's answer to closing with unread input).
            for i in 2..<8 {
                let (received, ending) = try connect(i).receive()
                #expect(received == [] && ending != .other)
            }
            #expect(try bridge.metric(#"mqbridge_connections_refused_total{reason="max_connections"}"#) == 6)
            let lines = bridge.lines(event: "max_connections")
            #expect(lines.first?["refused"] == "1")
            #expect(lines.count < 6, "\(lines)")
            // One closes: a new client gets in.
            open[0].close()
            var attempts: [String] = []
            let admitted = TestEnvironment.waitUntil(timeout: 60) {
                do {
                    let (received, ending) = try connect(9).receive(atMost: 4)
                    attempts.append("\(received) \(ending)")
                    return received == MQTTTestPackets.connackAccepted311
                } catch {
                    attempts.append("\(error)")
                    return false
                }
            }
            // (This once failed in about one full run in five: a child process spawned by a parallel
            // test inherited this client's socket and kept the connection open; see ChildProcess.)
            #expect(admitted, "attempts: \(attempts.suffix(5)); active: \(String(describing: try? bridge.metric("mqbridge_connections_active"))); log: \(bridge.lines(event: "max_connections").suffix(3))")
        }
    }

    @Test("A malformed-packet flood is survived while another client keeps working")
    func flood() async throws {
        try await TestEnvironment.blocking {
            let site = try Site()
            defer { site.stop() }
            let result = try TestEnvironment.python("flood.py", ["\(site.bridge.port)", "4"])
            guard result.status == 0, let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
                throw TestError("flood.py failed: \(result.stderr)")
            }
            let sent = object["sent"] as? Int ?? 0
            #expect(sent > 50)
            #expect(object["received"] as? Int == sent, "good client lost messages: \(object["missing"] ?? "")")
            #expect((object["attacks"] as? Int ?? 0) > 100)
            let outcomes = object["outcomes"] as? [String: [String: Int]] ?? [:]
            // Protocol-correct closes: 5.0 errors after CONNECT get a DISCONNECT with the reason,
            // after the CONNACK (a server must not send DISCONNECT before it, MQTT-3.14.0-1).
            #expect(Set(outcomes["v5_wildcard_topic"]?.keys.map { $0 } ?? []) == ["connack 0x00 disconnect 0x82"])
            #expect(Set(outcomes["v5_invalid_utf8_topic"]?.keys.map { $0 } ?? []) == ["connack 0x00 disconnect 0x81"])
            #expect(Set(outcomes["v5_second_connect"]?.keys.map { $0 } ?? []) == ["connack 0x00 disconnect 0x82"])
            #expect(Set(outcomes["v5_truncated_properties"]?.keys.map { $0 } ?? []) == ["connack 0x00 disconnect 0x81"])
            #expect(Set(outcomes["publish_before_connect"]?.keys.map { $0 } ?? []) == ["closed"])
            #expect(Set(outcomes["bad_protocol_name"]?.keys.map { $0 } ?? []) == ["closed"])
            #expect(!site.bridge.process.hasExited)
            let decodeErrors = try site.bridge.metric("mqbridge_decode_errors_total{direction=\"client_to_broker\"}") ?? 0
            #expect(decodeErrors > 50)
        }
    }

    @Test("1,000 concurrent client connections, each with its own broker connection, all working at once")
    func thousandConnections() async throws {
        try await TestEnvironment.blocking {
            let site = try Site()
            defer { site.stop() }
            let result = try TestEnvironment.python("many_connections.py", ["\(site.bridge.port)", "1000"], timeout: 180)
            guard result.status == 0, let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
                throw TestError("many_connections.py failed (\(result.status)): \(result.stderr) \(result.stdout)")
            }
            #expect(object["connacks"] as? Int == 1000)
            #expect(object["pings"] as? Int == 1000)
            #expect(object["pubacks"] as? Int == 1000)
        }
    }

    @Test("SIGHUP reloads the ACL: the diff is logged and existing sessions get the new rules")
    func reload() async throws {
        try await TestEnvironment.blocking {
            let site = try Site(acl: "user alice\ntopic readwrite a/#\n")
            defer { site.stop() }
            let code = """
            import sys, time, os
            sys.path.insert(0, \(String(reflecting: TestEnvironment.repositoryRoot.appendingPathComponent("Tests/IntegrationTests/Scripts").path)))
            from mqtt_helpers import Client
            c = Client(\(site.bridge.port), "reloader", "5", "alice")
            c.connect()
            c.subscribe([("a/#", 1)])
            c.publish("b/x", "before", qos=1)
            print("ready", flush=True)
            sys.stdin.readline()
            # Same connection, new rules: b/# may now be subscribed and published.
            c.subscribe([("b/#", 1)])
            c.publish("b/x", "after", qos=1)
            c.wait_for(1, 3)
            print(",".join(m["payload"] for m in c.received()), flush=True)
            c.close()
            """
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", code]
            let input = Pipe(), output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            let reader = output.fileHandleForReading
            var text = ""
            while !text.contains("ready\n") { text += String(decoding: reader.availableData, as: UTF8.self) }
            try "user alice\ntopic readwrite a/#\ntopic readwrite b/#\n".write(toFile: site.aclPath, atomically: true, encoding: .utf8)
            site.bridge.process.signal(SIGHUP)
            _ = TestEnvironment.waitUntil(timeout: 30) { !site.bridge.lines(event: "acl_change").isEmpty }
            input.fileHandleForWriting.write(Data("go\n".utf8))
            process.waitUntilExit()
            text += String(decoding: reader.readDataToEndOfFile(), as: UTF8.self)
            let changes = site.bridge.lines(event: "acl_change")
            #expect(changes.count == 2)
            #expect(changes.contains { $0["scope"] == "user alice" && $0["change"] == "gained" && $0["access"] == "read" && $0["filter"] == "b/#" })
            // "before" was denied under the old ACL; "after" passes under the new one.
            #expect(text.hasSuffix("ready\nafter\n"))
            #expect(site.bridge.lines(event: "denied").map { "\($0["kind"] ?? "") \($0["topic"] ?? "")" } == ["publish b/x"])
            // A broken file is refused and the current ACL stays.
            try "user alice\ntopic raed b/#\n".write(toFile: site.aclPath, atomically: true, encoding: .utf8)
            site.bridge.process.signal(SIGHUP)
            _ = TestEnvironment.waitUntil(timeout: 10) { !site.bridge.lines(event: "acl_reload_failed").isEmpty }
            #expect(site.bridge.lines(event: "acl_reload_failed").first?["msg"]?.contains("\(site.aclPath):2: invalid access type") == true)
        }
    }

    @Test("SIGTERM drains: a 5.0 client is told the server is shutting down (0x8B), and mqbridge exits 0")
    func gracefulShutdown() async throws {
        try await TestEnvironment.blocking {
            let site = try Site(metrics: false)
            defer { site.broker.stop() }
            let code = """
            import sys
            sys.path.insert(0, \(String(reflecting: TestEnvironment.repositoryRoot.appendingPathComponent("Tests/IntegrationTests/Scripts").path)))
            from mqtt_helpers import Client
            c = Client(\(site.bridge.port), "drainer", "5", "alice")
            c.connect()
            print("ready", flush=True)
            c.disconnected.wait(20)
            print(c.disconnect_reason, flush=True)
            """
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", code]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            var text = ""
            while !text.contains("ready\n") { text += String(decoding: output.fileHandleForReading.availableData, as: UTF8.self) }
            site.bridge.process.signal(SIGTERM)
            let status = site.bridge.process.wait(timeout: 15)
            process.waitUntilExit()
            text += String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(status != nil)
            #expect(site.bridge.process.exitCode == 0)
            #expect(text == "ready\n139\n")
            #expect(site.bridge.lines(event: "stopped").count == 1)
        }
    }
}
