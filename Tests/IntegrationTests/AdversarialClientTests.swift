import Foundation
import TestSupport
import Testing

/// MQTT 5.0 and 3.1.1 packets that break a rule of the spec, each sent by a raw client on its
/// own connection, once to mosquitto directly and once through mqbridge (allow-all ACL, same
/// broker, at the same time). mqbridge must close each broken one (5.0: with the DISCONNECT
/// reason the spec names; 3.1.1 has no DISCONNECT from the server, as mosquitto does) and
/// forward nothing of it; what is valid must get the broker's own answer.
@Suite("Adversarial clients: protocol-correct closes, nothing forwarded", .serialized)
struct AdversarialClientTests {
    /// What a client sees through mqbridge: a DISCONNECT with its reason code, then the close.
    static let closes: [String: String] = [
        "alias_zero": "e00194|EOF",                      // Topic Alias invalid (MQTT-3.3.2-8)
        "alias_above_maximum": "e00194|EOF",
        "alias_unset_empty_topic": "e00182|EOF",          // Protocol Error (MQTT-3.3.2-12)
        "empty_topic_no_alias": "e00182|EOF",
        "subscription_id_in_publish": "e00182|EOF",       // MQTT-3.3.4-6
        "payload_format_2": "e00182|EOF",                 // a value other than 0 or 1
        "content_type_twice": "e00182|EOF",               // a property given twice
        "response_topic_wildcard": "e00182|EOF",          // MQTT-3.3.2-14
        "maximum_packet_size_in_publish": "e00182|EOF",   // not a PUBLISH property
        "unknown_property": "e00181|EOF",
        "qos1_packet_id_zero": "e00181|EOF",              // MQTT-2.2.1-3
        "qos0_with_dup": "e00181|EOF",                    // MQTT-3.3.1-2
        "pubrel_flags_zero": "e00181|EOF",                // MQTT-3.6.1-1
        "subscribe_reserved_options": "e00181|EOF",       // MQTT-3.8.3-5
        "subscribe_no_local_shared": "e00182|EOF",        // MQTT-3.8.3-4
        "subscribe_no_filters": "e00182|EOF",             // MQTT-3.8.3-2
        "unsubscribe_no_filters": "e00182|EOF",           // MQTT-3.10.3-2
        "auth_unexpected": "e00182|EOF",                  // §4.12: no Authentication Method in CONNECT
        "disconnect_with_will": "|EOF",
    ]
    /// 3.1.1: a wildcard, NUL or invalid UTF-8 in a topic, QoS 3, packet id 0, a second CONNECT,
    /// wrong fixed-header flags, empty SUBSCRIBE / UNSUBSCRIBE, a five-byte length, packet
    /// type 0, a server-only packet: each only closes the connection.
    static let closes311 = ["wildcard_topic", "nul_in_topic", "invalid_utf8_topic", "qos3", "qos1_packet_id_zero", "second_connect",
                            "pubrel_flags_zero", "subscribe_flags_zero", "subscribe_qos3", "subscribe_no_filters", "unsubscribe_no_filters",
                            "five_byte_length", "reserved_type_0", "connack_from_client"].map { "311/" + $0 }
    /// Valid, if odd: the broker's answer must come back unchanged.
    static let forwarded = ["payload_format_1_not_utf8", "pubrel_unknown_id", "puback_unknown_id", "311/valid_qos1"]

    @Test("Local proxy: 37 broken or odd 5.0 and 3.1.1 packets get the right close; only the valid PUBLISHes reach the broker")
    func localProxy() async throws {
        try await Self.check(Self.blockingLocalProxy)
    }

    @Test("Remote proxy: the same from site A through the TLS link, decided at site B")
    func remoteProxy() async throws {
        try await Self.check(Self.blockingRemoteProxy)
    }

    /// A client that floods QoS 1 PUBLISHes it may not write (each answered by mqbridge itself)
    /// and reads none of the answers: mqbridge must stop reading it, not queue the answers; and
    /// its denials are all in the log without a line each (`DenialLogLimit`).
    @Test("A client that sends without reading is stopped, not buffered; once it reads, every denied PUBLISH has its PUBACK", arguments: ["local", "remote"])
    func unreadAnswers(path: String) async throws {
        let (output, logged) = try await TestEnvironment.offPool { try Self.blockingUnreadAnswers(remote: path == "remote") }
        let result = try ScriptParity.object(output)
        // Blocked once the kernel's buffers were full (about 10 MB here), far below the 40 MB at
        // which the script gives up: without the stop, mqbridge read on and queued the answers.
        #expect(result["blocked"] as? Bool == true, "\(result)")
        let publishes = result["publishes"] as? Int ?? 0
        #expect(publishes > 100_000, "\(result)")
        #expect(result["pubacks"] as? Int == publishes, "\(result)")
        #expect(result["in_order"] as? Bool == true, "\(result)")
        #expect(result["pingresp"] as? Bool == true, "\(result)")
        // Every denial is in the log: a line each for the first 10 of each second, the rest
        // counted in `denials_suppressed` lines.
        #expect(logged.total == publishes, "\(logged) for \(publishes) denials")
        #expect(logged.lines < 2_000, "\(logged)")
    }

    /// Runs `unread_answers.py` through the local proxy or from site A to site B; returns its
    /// JSON line and, once they add up to every PUBLISH it sent, the `denied` lines the proxy
    /// logged and the denials its log accounts for in all (those lines and the counts of its
    /// `denials_suppressed` lines).
    static func blockingUnreadAnswers(remote: Bool) throws -> (String, (lines: Int, total: Int)) {
        let acl = "user alice\ntopic read x\n"
        func run(port: Int, bridge: BridgeProcess) throws -> (String, (lines: Int, total: Int)) {
            let r = try TestEnvironment.python("unread_answers.py", ["\(port)", "alice", "40"], timeout: 600)
            guard r.status == 0, let line = r.stdout.split(separator: "\n").last else { throw TestError("unread_answers.py failed: \(r.stderr)") }
            let publishes = try ScriptParity.object(String(line))["publishes"] as? Int ?? 0
            func logged() -> Int { bridge.loggedCount(event: "denied", suppressedEvent: "denials_suppressed") }
            // The last count is logged when the connection closes, after the script has ended.
            _ = TestEnvironment.waitUntil(timeout: 30) { logged() >= publishes }
            return (String(line), (bridge.lines(event: "denied").count, logged()))
        }
        if remote {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            lab.aclText = acl
            try lab.start()
            return try run(port: lab.remotePort("broker"), bridge: lab.b)
        }
        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let bridge = try BridgeProcess(["run", "--listen", "127.0.0.1:0", "--broker", "127.0.0.1:\(broker.port)",
                                        "--acl", try TestEnvironment.temporaryFile(acl, name: "unread.acl")])
        defer { bridge.stop() }
        return try run(port: bridge.port, bridge: bridge)
    }

    /// Runs both (off the pool), then checks on the test's task.
    static func check(_ runs: @escaping @Sendable () throws -> (String, String)) async throws {
        let (directLine, bridgedLine) = try await TestEnvironment.offPool(runs)
        let direct = try ScriptParity.object(directLine), bridged = try ScriptParity.object(bridgedLine)
        #expect(direct.count == Self.closes.count + Self.closes311.count + Self.forwarded.count + 1, "cases run: \(direct.keys.sorted())")
        for (name, expected) in Self.closes.merging(Self.closes311.map { ($0, "|EOF") }, uniquingKeysWith: { a, _ in a }) {
            #expect(bridged[name] as? String == expected, "\(name): through mqbridge \(String(describing: bridged[name])), directly \(String(describing: direct[name]))")
        }
        for name in Self.forwarded {
            #expect(bridged[name] as? String == direct[name] as? String, "\(name): through mqbridge \(String(describing: bridged[name])), directly \(String(describing: direct[name]))")
        }
        // The PUBLISHes mosquitto accepted answer with a PUBACK both ways.
        #expect(direct["payload_format_1_not_utf8"] as? String == "40020001")
        #expect(direct["311/valid_qos1"] as? String == "40020001")
        // A witness on the broker: directly, mosquitto let several broken PUBLISHes through
        // (which shows the witness works); through mqbridge only the valid ones arrived.
        let valid = ["311_valid_qos1", "payload_format_1_not_utf8"]
        #expect(Set(direct["witness"] as? [String] ?? []).isSuperset(of: valid))
        #expect((direct["witness"] as? [String] ?? []).count > valid.count)
        #expect(bridged["witness"] as? [String] == valid)
    }

    static func blockingLocalProxy() throws -> (String, String) {
        try ScriptParity.localProxy(acl: "pattern readwrite #\n", runBoth)
    }

    static func blockingRemoteProxy() throws -> (String, String) {
        try ScriptParity.remoteProxy(acl: "pattern readwrite #\n", runBoth)
    }

    /// Both runs at the same time, on one broker: the JSON line each printed.
    static func runBoth(bridgedPort: Int, brokerPort: Int, directory: URL) throws -> (String, String) {
        try ScriptParity.runBoth("adversarial_clients.py", directPort: brokerPort, bridgedPort: bridgedPort, directory: directory, timeout: 60) { port, run in
            ["\(port)", "\(brokerPort)", run]
        }
    }
}
