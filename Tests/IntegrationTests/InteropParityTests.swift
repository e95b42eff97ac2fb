import Foundation
import TestSupport
import Testing

/// Interoperability scenarios in the spirit of the Eclipse Paho interop suite (in 3.1, 3.1.1 and 5.0: basic QoS 0/1/2,
/// retained with user properties, will, zero-length client id, offline queueing, overlapping
/// subscriptions, keep-alive, redelivery on reconnect, $ topics, unsubscribe, session expiry,
/// shared subscriptions, topic aliases, v5 properties, subscribe options, flow control,
/// maximum packet size, will delay, large payloads), run by real paho clients once against
/// mosquitto directly and once through mqbridge, at the same time on the same broker: with an
/// ACL that allows everything, mqbridge must be invisible, so both runs must observe the same.
@Suite("Interop parity: the same client scenarios directly and through mqbridge", .serialized)
struct InteropParityTests {
    static let allowAll = "pattern readwrite #\npattern readwrite $dollar/#\n"

    static func json(_ value: Any?) -> String {
        guard let value, let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]) else { return "nil" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Same observations, scenario by scenario; and the direct run itself saw what the
    /// protocol promises (so two equally broken runs cannot pass).
    static func compare(direct: [String: Any], bridged: [String: Any]) {
        #expect(direct.count == 47, "scenarios run: \(direct.keys.sorted())")
        for name in direct.keys.sorted() {
            #expect(json(direct[name]) == json(bridged[name]), "\(name) differs:\n  direct:   \(json(direct[name]))\n  mqbridge: \(json(bridged[name]))")
        }
        for (name, observation) in direct {
            #expect((observation as? [String: Any])?["error"] == nil, "\(name) failed directly: \(json(observation))")
        }
        func messages(_ name: String) -> [[String: Any]] { ((direct[name] as? [String: Any])?["messages"] as? [[String: Any]]) ?? [] }
        for version in ["31", "311", "5"] {
            #expect(messages("basic/\(version)").map { $0["payload"] as? String } == ["qos 0", "qos 1", "qos 2"])
            #expect(messages("will/\(version)").map { $0["payload"] as? String } == ["client not disconnected"])
            #expect(messages("keepalive/\(version)").map { $0["payload"] as? String } == ["keepalive expiry"])
            #expect(json((direct["large/\(version)"] as? [String: Any])?["received"]) == "[[4000,true],[4096,true],[70000,true],[524288,true]]")
        }
        #expect(messages("topic_alias/5").map { $0["topic"] as? String } == ["alias/one", "alias/one", "alias/two", "alias/two"])
        #expect((direct["flow_control/5"] as? [String: Any])?["before acknowledging"] as? Int == 2)
        #expect(json((direct["zero_length_id/311"] as? [String: Any])?["clean=False"]) == "[32,2,0,2]")
        #expect(json((direct["zero_length_id/31"] as? [String: Any])?["clean=False"]) == "[32,2,0,2]")
    }

    // Both tests wait for a while on processes: off Swift's cooperative pool, so that the
    // in-process tests running beside them (which need that pool) are not starved. The
    // expectations are checked back on the test's task, where Swift Testing attributes them.
    @Test("Local proxy: 47 scenarios (3.1, 3.1.1 and 5.0) observe the same through mqbridge as directly")
    func localProxy() async throws {
        try await Self.check(Self.blockingLocalProxy)
    }

    /// Runs `scenarios` (both runs) off the pool, then compares on the test's task.
    static func check(_ scenarios: @escaping @Sendable () throws -> (String, String)) async throws {
        let (direct, bridged) = try await TestEnvironment.offPool(scenarios)
        compare(direct: try ScriptParity.object(direct), bridged: try ScriptParity.object(bridged))
    }

    static func blockingLocalProxy() throws -> (String, String) {
        try ScriptParity.localProxy(acl: Self.allowAll, runBoth)
    }

    /// The scenarios against the broker and through mqbridge at the same time: both outputs.
    static func runBoth(bridgedPort: Int, brokerPort: Int, directory: URL) throws -> (String, String) {
        try ScriptParity.runBoth("interop_parity.py", directPort: brokerPort, bridgedPort: bridgedPort, directory: directory, timeout: 120) { port, run in
            ["\(port)", run]
        }
    }

    @Test("Remote proxy: the same 47 scenarios from site A through the TLS link to site B's broker")
    func remoteProxy() async throws {
        try await Self.check(Self.blockingRemoteProxy)
    }

    static func blockingRemoteProxy() throws -> (String, String) {
        try ScriptParity.remoteProxy(acl: Self.allowAll, runBoth)
    }
}
