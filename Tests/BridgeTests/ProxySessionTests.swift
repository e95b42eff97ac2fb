@testable import Bridge
import MQTTCodec
import NIOCore
import TestSupport
import Testing
import TopicACL

/// The proxy's decisions, packet by packet, with exact bytes.
@Suite("ProxySession")
struct ProxySessionTests {
    static let aclText = """
    user alice
    topic readwrite sensors/#
    topic read alerts/+
    topic deny sensors/secret
    topic write status/alice
    user nobody
    topic deny #
    pattern readwrite devices/%c/#
    """

    func session(_ acl: String = aclText, configuration: ProxySession.Configuration = .init()) throws -> ProxySession {
        ProxySession(configuration: configuration, aclStore: ACLStore(try CompiledACL(parsing: acl, source: "acl.conf")))
    }

    func frame(_ packet: MQTTPacket, _ version: ProtocolVersion) -> MQTTFrame {
        try! MQTTFrame(validating: packet.encode(version: version))
    }

    func hexOf(_ buffer: ByteBuffer) -> String { hex(buffer) }

    /// The bytes of every toClient / toBroker effect, for exact comparisons.
    func wire(_ action: ProxySession.Action) -> [String] {
        guard case .effects(let effects) = action else { return ["forward"] }
        return effects.compactMap { effect in
            switch effect {
            case .toClient(let b): "client: " + hexOf(b)
            case .toBroker(let b): "broker: " + hexOf(b)
            case .closeBoth: "close"
            case .openUpstream: "open"
            case .denied(let e): "denied \(e.kind.rawValue) \(e.topic)"
            case .clientProtocolError(let e): "client error \(e.kind)"
            case .brokerProtocolError(let e): "broker error \(e.kind)"
            }
        }
    }

    /// A session past CONNECT / CONNACK for alice (or another identity).
    func connected(_ version: ProtocolVersion, username: String? = "alice", clientID: String = "c1",
                   connectProperties: Properties = [], connAckProperties: Properties = []) throws -> ProxySession {
        var s = try session()
        let connect = Connect(protocolVersion: version, cleanStart: true, keepAlive: 60, properties: version == .v5 ? connectProperties : [],
                              clientIdentifier: clientID, username: username)
        guard case .effects(let effects) = s.clientFrame(frame(.connect(connect), version)), case .openUpstream = effects.first else {
            Issue.record("CONNECT refused")
            return s
        }
        let ack = ConnAck(sessionPresent: false, returnCode: 0, properties: version == .v5 ? connAckProperties : nil)
        #expect(s.brokerFrame(frame(.connAck(ack), version)) == .forward)
        return s
    }

    // MARK: CONNECT

    @Test("CONNECT with rules for the identity opens the upstream with the CONNECT's original bytes")
    func connectForwarded() throws {
        var s = try session()
        let bytes = MQTTPacket.connect(Connect(protocolVersion: .v3_1_1, cleanStart: true, keepAlive: 30, clientIdentifier: "c1", username: "alice",
                                               password: ByteBuffer(string: "pw"))).encode(version: .v3_1_1)
        #expect(s.clientFrame(try MQTTFrame(validating: bytes)) == .effects([.openUpstream(connect: bytes)]))
    }

    @Test("CONNECT refused (no rule grants anything): 3.1.1 CONNACK 0x05, 5.0 CONNACK 0x87, nothing to the broker")
    func connectRefused() throws {
        for (version, expected) in [(ProtocolVersion.v3_1_1, "client: 20 02 00 05"), (.v5, "client: 20 03 00 87 00")] {
            var s = try session("user alice\ntopic read a\nuser nobody\ntopic deny #")
            let connect = Connect(protocolVersion: version, cleanStart: true, keepAlive: 30, clientIdentifier: "x", username: "nobody")
            #expect(wire(s.clientFrame(frame(.connect(connect), version))) == ["denied connect ", expected, "close"])
        }
    }

    @Test("CONNECT with a will on a topic the client may not write is refused")
    func willDenied() throws {
        var s = try session()
        let denied = Connect(protocolVersion: .v3_1_1, cleanStart: true, keepAlive: 30, clientIdentifier: "c1",
                             will: .init(topic: "alerts/x", payload: ByteBuffer(string: "bye"), qos: .atMostOnce, retain: false), username: "alice")
        #expect(wire(s.clientFrame(frame(.connect(denied), .v3_1_1))) == ["denied will alerts/x", "client: 20 02 00 05", "close"])
        var t = try session()
        let allowed = Connect(protocolVersion: .v3_1_1, cleanStart: true, keepAlive: 30, clientIdentifier: "c1",
                              will: .init(topic: "status/alice", payload: ByteBuffer(string: "bye"), qos: .atMostOnce, retain: false), username: "alice")
        #expect(wire(t.clientFrame(frame(.connect(allowed), .v3_1_1))) == ["open"])
    }

    @Test("allow_anonymous false refuses clients without a username")
    func anonymousRefused() throws {
        var s = try session("topic read #\npattern read devices/%c/#", configuration: .init(allowAnonymous: false))
        let connect = Connect(protocolVersion: .v3_1_1, cleanStart: true, keepAlive: 30, clientIdentifier: "c1")
        #expect(wire(s.clientFrame(frame(.connect(connect), .v3_1_1))) == ["denied connect ", "client: 20 02 00 05", "close"])
    }

    @Test("An empty client id gets an auto- id in the forwarded CONNECT, and %c patterns use it; 5.0 CONNACK carries it")
    func assignedClientID() throws {
        var s = try session()
        let connect = Connect(protocolVersion: .v5, cleanStart: true, keepAlive: 30, clientIdentifier: "")
        guard case .effects(let effects) = s.clientFrame(frame(.connect(connect), .v5)), case .openUpstream(let forwarded) = effects[0] else {
            Issue.record("not opened"); return
        }
        guard case .connect(let sent) = try MQTTPacket.decode(bytes: forwarded, version: .v5) else { Issue.record("not CONNECT"); return }
        #expect(sent.clientIdentifier.hasPrefix("auto-"))
        #expect(sent.clientIdentifier == s.assignedClientIdentifier)
        let ack = s.brokerFrame(frame(.connAck(ConnAck(sessionPresent: false, returnCode: 0, properties: [])), .v5))
        guard case .effects(let ackEffects) = ack, case .toClient(let ackBytes) = ackEffects[0],
              case .connAck(let rebuilt) = try MQTTPacket.decode(bytes: ackBytes, version: .v5) else { Issue.record("no CONNACK"); return }
        #expect(rebuilt.properties == [.assignedClientIdentifier(sent.clientIdentifier)])
        // %c patterns now apply to the assigned id.
        let own = frame(.publish(Publish(qos: .atMostOnce, topic: "devices/\(sent.clientIdentifier)/t", packetIdentifier: nil, payload: ByteBuffer())), .v5)
        #expect(s.clientFrame(own) == .forward)
    }

    @Test("An empty client id without Clean Session (3.1.1), or in 3.1: CONNACK 0x02 as the broker would send, nothing to the broker")
    func emptyClientIDRejected() throws {
        for (version, clean) in [(ProtocolVersion.v3_1_1, false), (.v3_1, true)] {
            var s = try session("pattern readwrite #")
            let connect = Connect(protocolVersion: version, cleanStart: clean, keepAlive: 30, clientIdentifier: "")
            #expect(wire(s.clientFrame(frame(.connect(connect), version))) == ["denied connect ", "client: 20 02 00 02", "close"])
        }
    }

    @Test("5.0: the proxy's packet limit goes to the broker in CONNECT and to the client in CONNACK, unless theirs is smaller")
    func maximumPacketSizeAdvertised() throws {
        let configuration = ProxySession.Configuration(maximumPacketSize: 1 << 20)
        func upstreamLimit(_ clientLimit: UInt32?) throws -> UInt32? {
            var s = try session(configuration: configuration)
            let connect = Connect(protocolVersion: .v5, cleanStart: true, keepAlive: 30,
                                  properties: clientLimit.map { [.maximumPacketSize($0)] } ?? [], clientIdentifier: "c1", username: "alice")
            guard case .effects(let effects) = s.clientFrame(frame(.connect(connect), .v5)), case .openUpstream(let bytes) = effects[0],
                  case .connect(let sent) = try MQTTPacket.decode(bytes: bytes, version: .v5) else { Issue.record("not opened"); return nil }
            return sent.properties.maximumPacketSize
        }
        #expect(try upstreamLimit(nil) == 1 << 20)
        #expect(try upstreamLimit(1 << 30) == 1 << 20)
        #expect(try upstreamLimit(1000) == 1000)
        func clientLimit(_ brokerLimit: UInt32?) throws -> ProxySession.Action {
            var s = try session(configuration: configuration)
            _ = s.clientFrame(frame(.connect(Connect(protocolVersion: .v5, cleanStart: true, keepAlive: 30, clientIdentifier: "c1", username: "alice")), .v5))
            return s.brokerFrame(frame(.connAck(ConnAck(sessionPresent: false, returnCode: 0, properties: brokerLimit.map { [.maximumPacketSize($0)] } ?? [])), .v5))
        }
        // 20 len 00 00 props(5): 27 00 10 00 00 = Maximum Packet Size 1048576.
        #expect(wire(try clientLimit(nil)) == ["client: 20 08 00 00 05 27 00 10 00 00"])
        #expect(wire(try clientLimit(1 << 30)) == ["client: 20 08 00 00 05 27 00 10 00 00"])
        #expect(try clientLimit(2000) == .forward)
        // 3.1.1 has no such property: CONNECT and CONNACK pass unchanged.
        var old = try session(configuration: configuration)
        let bytes = MQTTPacket.connect(Connect(protocolVersion: .v3_1_1, cleanStart: true, keepAlive: 30, clientIdentifier: "c1", username: "alice")).encode(version: .v3_1_1)
        #expect(old.clientFrame(try MQTTFrame(validating: bytes)) == .effects([.openUpstream(connect: bytes)]))
    }

    @Test("A second CONNECT: 5.0 DISCONNECT 0x82; 3.1.1 close")
    func secondConnect() throws {
        var s = try connected(.v5)
        let again = frame(.connect(Connect(protocolVersion: .v5, cleanStart: true, keepAlive: 1, clientIdentifier: "c1", username: "alice")), .v5)
        #expect(wire(s.clientFrame(again)) == ["client error protocol error", "client: e0 01 82", "close"])
        var t = try connected(.v3_1_1)
        #expect(wire(t.clientFrame(frame(.connect(Connect(protocolVersion: .v3_1_1, cleanStart: true, keepAlive: 1, clientIdentifier: "c1")), .v3_1_1)))
                == ["client error protocol error", "close"])
    }

    @Test("AUTH is forwarded only after a CONNECT that named an Authentication Method; otherwise DISCONNECT 0x82 (§4.12)")
    func authWithoutMethod() throws {
        let auth = frame(.auth(Auth(reasonCode: .continueAuthentication, properties: [.authenticationMethod("SCRAM-SHA-1")])), .v5)
        var plain = try connected(.v5)
        #expect(wire(plain.clientFrame(auth)) == ["client error protocol error", "client: e0 01 82", "close"])
        var enhanced = try connected(.v5, connectProperties: [.authenticationMethod("SCRAM-SHA-1")])
        #expect(enhanced.clientFrame(auth) == .forward)
    }

    @Test("Malformed packets close the connection with the reason: invalid UTF-8 0x81, wildcard topic 0x82, server-only packet 0x82")
    func malformed() throws {
        var a = try connected(.v5)
        #expect(wire(a.clientFrame(try MQTTFrame(validating: buffer("30 06 00 03 61 ff 62 00")))) == ["client error malformed packet", "client: e0 01 81", "close"])
        var b = try connected(.v5)
        #expect(wire(b.clientFrame(try MQTTFrame(validating: buffer("30 06 00 03 61 2f 23 00")))) == ["client error protocol error", "client: e0 01 82", "close"])
        var c = try connected(.v5)
        #expect(wire(c.clientFrame(try MQTTFrame(validating: buffer("d0 00")))) == ["client error protocol error", "client: e0 01 82", "close"])
        var d = try connected(.v3_1_1)
        #expect(wire(d.clientFrame(try MQTTFrame(validating: buffer("30 05 00 03 61 00 62")))) == ["client error malformed packet", "close"])
    }

    @Test("A 5.0 error before the broker's CONNACK: the CONNACK goes out first, then DISCONNECT (MQTT-3.14.0-1)")
    func errorBeforeConnAck() throws {
        var s = try session()
        _ = s.clientFrame(frame(.connect(Connect(protocolVersion: .v5, cleanStart: true, keepAlive: 1, clientIdentifier: "c1", username: "alice")), .v5))
        #expect(wire(s.clientFrame(try MQTTFrame(validating: buffer("30 06 00 03 61 2f 23 00")))) == ["client error protocol error"])
        // Further client packets are ignored while waiting.
        #expect(wire(s.clientFrame(frame(.pingReq(PingReq()), .v5))) == [])
        #expect(wire(s.brokerFrame(frame(.connAck(ConnAck(sessionPresent: false, returnCode: 0, properties: [])), .v5)))
                == ["client: 20 03 00 00 00", "client: e0 01 82", "close"])
    }

    // MARK: PUBLISH from the client

    @Test("Allowed PUBLISH is forwarded unchanged; denied QoS 0 is dropped")
    func publish() throws {
        var s = try connected(.v3_1_1)
        #expect(s.clientFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "sensors/t", packetIdentifier: nil, payload: ByteBuffer())), .v3_1_1)) == .forward)
        #expect(wire(s.clientFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "sensors/secret", packetIdentifier: nil, payload: ByteBuffer())), .v3_1_1)))
                == ["denied publish sensors/secret"])
    }

    @Test("Denied QoS 1: 3.1.1 PUBACK 40 02 00 0a (as mosquitto); 5.0 PUBACK 0x87")
    func deniedQoS1() throws {
        var a = try connected(.v3_1_1)
        #expect(wire(a.clientFrame(frame(.publish(Publish(qos: .atLeastOnce, topic: "alerts/a", packetIdentifier: 10, payload: ByteBuffer())), .v3_1_1)))
                == ["denied publish alerts/a", "client: 40 02 00 0a"])
        var b = try connected(.v5)
        #expect(wire(b.clientFrame(frame(.publish(Publish(qos: .atLeastOnce, topic: "alerts/a", packetIdentifier: 10, payload: ByteBuffer())), .v5)))
                == ["denied publish alerts/a", "client: 40 03 00 0a 87"])
    }

    @Test("Denied QoS 2: 3.1.1 PUBREC, then PUBREL answered here with PUBCOMP; 5.0 PUBREC 0x87")
    func deniedQoS2() throws {
        var a = try connected(.v3_1_1)
        #expect(wire(a.clientFrame(frame(.publish(Publish(qos: .exactlyOnce, topic: "alerts/a", packetIdentifier: 11, payload: ByteBuffer())), .v3_1_1)))
                == ["denied publish alerts/a", "client: 50 02 00 0b"])
        #expect(wire(a.clientFrame(frame(.pubRel(PubRel(packetIdentifier: 11)), .v3_1_1))) == ["client: 70 02 00 0b"])
        // Another PUBREL (for an allowed publish) goes to the broker.
        #expect(a.clientFrame(frame(.pubRel(PubRel(packetIdentifier: 12)), .v3_1_1)) == .forward)
        var b = try connected(.v5)
        #expect(wire(b.clientFrame(frame(.publish(Publish(qos: .exactlyOnce, topic: "alerts/a", packetIdentifier: 11, payload: ByteBuffer())), .v5)))
                == ["denied publish alerts/a", "client: 50 03 00 0b 87"])
    }

    @Test("5.0 topic aliases: the ACL sees the real topic; re-pointing to a forbidden topic is denied; unknown or out-of-range aliases close")
    func clientAliases() throws {
        var s = try connected(.v5, connAckProperties: [.topicAliasMaximum(5)])
        #expect(s.clientFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "sensors/a", packetIdentifier: nil, properties: [.topicAlias(1)], payload: ByteBuffer())), .v5)) == .forward)
        #expect(s.clientFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "", packetIdentifier: nil, properties: [.topicAlias(1)], payload: ByteBuffer())), .v5)) == .forward)
        #expect(wire(s.clientFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "sensors/secret", packetIdentifier: nil, properties: [.topicAlias(1)], payload: ByteBuffer())), .v5)))
                == ["denied publish sensors/secret"])
        // The alias now means the forbidden topic: alias-only use is denied too.
        #expect(wire(s.clientFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "", packetIdentifier: nil, properties: [.topicAlias(1)], payload: ByteBuffer())), .v5)))
                == ["denied publish sensors/secret"])
        #expect(wire(s.clientFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "", packetIdentifier: nil, properties: [.topicAlias(2)], payload: ByteBuffer())), .v5)))
                == ["client error protocol error", "client: e0 01 82", "close"])
        var t = try connected(.v5, connAckProperties: [.topicAliasMaximum(5)])
        #expect(wire(t.clientFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "sensors/a", packetIdentifier: nil, properties: [.topicAlias(6)], payload: ByteBuffer())), .v5)))
                == ["client error topic alias invalid", "client: e0 01 94", "close"])
        // Without a Topic Alias Maximum from the broker, no alias is allowed.
        var u = try connected(.v5)
        #expect(wire(u.clientFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "sensors/a", packetIdentifier: nil, properties: [.topicAlias(1)], payload: ByteBuffer())), .v5)))
                == ["client error topic alias invalid", "client: e0 01 94", "close"])
    }

    // MARK: SUBSCRIBE

    @Test("A partly permitted wildcard is narrowed on the way to the broker; SUBACK is reassembled per requested filter")
    func narrowing() throws {
        var s = try connected(.v3_1_1)
        let subscribe = Subscribe(packetIdentifier: 5, subscriptions: [
            Subscription(topicFilter: "#", options: .init(qos: .atLeastOnce)),
            Subscription(topicFilter: "secret/x", options: .init(qos: .atLeastOnce)),
            Subscription(topicFilter: "alerts/+", options: .init(qos: .exactlyOnce)),
        ])
        let expectedToBroker = MQTTPacket.subscribe(Subscribe(packetIdentifier: 5, subscriptions: [
            Subscription(topicFilter: "alerts/+", options: .init(qos: .atLeastOnce)),
            Subscription(topicFilter: "devices/c1/#", options: .init(qos: .atLeastOnce)),
            Subscription(topicFilter: "alerts/+", options: .init(qos: .exactlyOnce)),
        ])).encode(version: .v3_1_1)
        // sensors/# overlaps the deny on sensors/secret, so "#" narrows to alerts/+ and the
        // client's own pattern subtree.
        #expect(wire(s.clientFrame(frame(.subscribe(subscribe), .v3_1_1))) == ["denied subscribe secret/x", "broker: " + hexOf(expectedToBroker)])
        let fromBroker = frame(.subAck(SubAck(packetIdentifier: 5, reasonCodes: [.grantedQoS1, .grantedQoS1, .grantedQoS2])), .v3_1_1)
        #expect(wire(s.brokerFrame(fromBroker)) == ["client: 90 05 00 05 01 80 02"])
    }

    @Test("The issue's example end to end: # with read sensors/# and read alerts/+ becomes those two")
    func narrowingExample() throws {
        var s = try session("user bob\ntopic read sensors/#\ntopic read alerts/+")
        _ = s.clientFrame(frame(.connect(Connect(protocolVersion: .v5, cleanStart: true, keepAlive: 1, clientIdentifier: "b", username: "bob")), .v5))
        _ = s.brokerFrame(frame(.connAck(ConnAck(sessionPresent: false, returnCode: 0, properties: [])), .v5))
        let action = s.clientFrame(frame(.subscribe(Subscribe(packetIdentifier: 1, subscriptions: [Subscription(topicFilter: "#", options: .init(qos: .exactlyOnce))])), .v5))
        guard case .effects(let effects) = action, case .toBroker(let bytes) = effects[0], case .subscribe(let sent) = try MQTTPacket.decode(bytes: bytes, version: .v5) else {
            Issue.record("\(action)"); return
        }
        #expect(sent.subscriptions.map(\.topicFilter) == ["sensors/#", "alerts/+"])
        // One granted QoS 1, one QoS 2: the client sees the highest granted, 0x02.
        #expect(wire(s.brokerFrame(frame(.subAck(SubAck(packetIdentifier: 1, reasonCodes: [.grantedQoS1, .grantedQoS2])), .v5))) == ["client: 90 04 00 01 00 02"])
    }

    @Test("Only denied filters: SUBACK answered here (3.1.1 0x80, 5.0 0x87), nothing to the broker")
    func allDenied() throws {
        var a = try connected(.v3_1_1)
        #expect(wire(a.clientFrame(frame(.subscribe(Subscribe(packetIdentifier: 3, subscriptions: [Subscription(topicFilter: "x/#", options: .init(qos: .atMostOnce))])), .v3_1_1)))
                == ["denied subscribe x/#", "client: 90 03 00 03 80"])
        var b = try connected(.v5)
        #expect(wire(b.clientFrame(frame(.subscribe(Subscribe(packetIdentifier: 3, subscriptions: [Subscription(topicFilter: "x/#", options: .init(qos: .atMostOnce))])), .v5)))
                == ["denied subscribe x/#", "client: 90 04 00 03 00 87"])
    }

    @Test("A fully permitted SUBSCRIBE is forwarded byte for byte")
    func subscribeUnchanged() throws {
        var s = try connected(.v3_1_1)
        #expect(s.clientFrame(frame(.subscribe(Subscribe(packetIdentifier: 3, subscriptions: [Subscription(topicFilter: "alerts/+", options: .init(qos: .atLeastOnce))])), .v3_1_1)) == .forward)
        #expect(s.brokerFrame(frame(.subAck(SubAck(packetIdentifier: 3, reasonCodes: [.grantedQoS1])), .v3_1_1)) == .forward)
    }

    /// bob reads four subtrees, so "+/x" narrows to four filters; the limit is 6 per packet.
    func narrowingLimited(_ version: ProtocolVersion) throws -> ProxySession {
        var s = try session("user bob\ntopic read a/#\ntopic read b/#\ntopic read c/#\ntopic read d/#\ntopic read q",
                            configuration: .init(maximumNarrowedFilters: 6))
        _ = s.clientFrame(frame(.connect(Connect(protocolVersion: version, cleanStart: true, keepAlive: 1, clientIdentifier: "b", username: "bob")), version))
        _ = s.brokerFrame(frame(.connAck(ConnAck(sessionPresent: false, returnCode: 0, properties: version == .v5 ? [] : nil)), version))
        return s
    }

    @Test("Narrowing is limited: a filter whose narrowing does not fit is refused (5.0 0x97, 3.1.1 0x80); whole filters still pass")
    func narrowingLimit() throws {
        for (version, refused) in [(ProtocolVersion.v5, "97"), (.v3_1_1, "80")] {
            var s = try narrowingLimited(version)
            let options = SubscriptionOptions(qos: .atLeastOnce)
            let subscribe = Subscribe(packetIdentifier: 7, subscriptions: ["+/x", "+/y", "q", "+/z", "nothing/+", "a/1"].map { Subscription(topicFilter: $0, options: options) })
            // +/x takes 4 of the 6; +/y (4 more) does not fit and costs one attempt; q and a/1
            // are whole; +/z is narrowed with the last one left and does not fit either. With
            // nothing left, nothing/+ is only checked whole: no grant overlaps it, a plain denial.
            let toBroker = MQTTPacket.subscribe(Subscribe(packetIdentifier: 7, subscriptions: ["a/x", "b/x", "c/x", "d/x", "q", "a/1"].map { Subscription(topicFilter: $0, options: options) }))
            #expect(wire(s.clientFrame(frame(.subscribe(subscribe), version)))
                    == ["denied subscribe +/y", "denied subscribe +/z", "denied subscribe nothing/+", "broker: " + hexOf(toBroker.encode(version: version))])
            let fromBroker = SubAck(packetIdentifier: 7, reasonCodes: Array(repeating: .grantedQoS1, count: 6))
            let denied = version == .v5 ? "87" : "80"
            let header = version == .v5 ? "90 09 00 07 00" : "90 08 00 07"
            #expect(wire(s.brokerFrame(frame(.subAck(fromBroker), version))) == ["client: \(header) 01 \(refused) 01 \(refused) \(denied) 01"])
        }
    }

    @Test("The limit is per connection: narrowed filters held count until unsubscribed; subscribing the same filter again replaces what it holds")
    func narrowingLimitPerConnection() throws {
        var s = try narrowingLimited(.v5)
        let options = SubscriptionOptions(qos: .atMostOnce)
        func subscribe(_ id: UInt16, _ filter: String) -> [String] {
            wire(s.clientFrame(frame(.subscribe(Subscribe(packetIdentifier: id, subscriptions: [Subscription(topicFilter: filter, options: options)])), .v5)))
        }
        func toBroker(_ id: UInt16, _ filters: [String]) -> [String] {
            ["broker: " + hexOf(MQTTPacket.subscribe(Subscribe(packetIdentifier: id, subscriptions: filters.map { Subscription(topicFilter: $0, options: options) })).encode(version: .v5))]
        }
        func subAck(_ id: UInt16, _ count: Int) -> [String] {
            wire(s.brokerFrame(frame(.subAck(SubAck(packetIdentifier: id, reasonCodes: Array(repeating: .success, count: count))), .v5)))
        }
        #expect(subscribe(1, "+/x") == toBroker(1, ["a/x", "b/x", "c/x", "d/x"]))
        #expect(subAck(1, 4) == ["client: 90 04 00 01 00 00"])
        // 4 of 6 held: +/y (4 more) is refused, answered here.
        #expect(subscribe(2, "+/y") == ["denied subscribe +/y", "client: 90 04 00 02 00 97"])
        // +/x again replaces its own 4.
        #expect(subscribe(3, "+/x") == toBroker(3, ["a/x", "b/x", "c/x", "d/x"]))
        #expect(subAck(3, 4) == ["client: 90 04 00 03 00 00"])
        #expect(subscribe(4, "+/y") == ["denied subscribe +/y", "client: 90 04 00 04 00 97"])
        // Once +/x is gone, +/y fits.
        #expect(wire(s.clientFrame(frame(.unsubscribe(Unsubscribe(packetIdentifier: 5, topicFilters: ["+/x"])), .v5)))
                == ["broker: " + hexOf(MQTTPacket.unsubscribe(Unsubscribe(packetIdentifier: 5, topicFilters: ["a/x", "b/x", "c/x", "d/x"])).encode(version: .v5))])
        #expect(subscribe(6, "+/y") == toBroker(6, ["a/y", "b/y", "c/y", "d/y"]))
        // +/y is not answered yet and already counts: +/z does not fit.
        #expect(subscribe(7, "+/z") == ["denied subscribe +/z", "client: 90 04 00 07 00 97"])
    }

    @Test("A persistent session's narrowed filters count across its connections, until the broker starts a new session")
    func narrowingLimitAcrossConnections() throws {
        let ledger = NarrowingLedger()
        let acl = try CompiledACL(parsing: "user bob\ntopic read a/#\ntopic read b/#\ntopic read c/#\ntopic read d/#", source: "acl.conf")
        let options = SubscriptionOptions(qos: .atMostOnce)
        func connection(cleanSession: Bool, sessionPresent: Bool) -> ProxySession {
            var s = ProxySession(configuration: .init(maximumNarrowedFilters: 6), aclStore: ACLStore(acl), narrowingLedger: ledger)
            _ = s.clientFrame(frame(.connect(Connect(protocolVersion: .v3_1_1, cleanStart: cleanSession, keepAlive: 1, clientIdentifier: "keep", username: "bob")), .v3_1_1))
            _ = s.brokerFrame(frame(.connAck(ConnAck(sessionPresent: sessionPresent, returnCode: 0)), .v3_1_1))
            return s
        }
        func subscribe(_ s: inout ProxySession, _ id: UInt16, _ filter: String) -> [String] {
            wire(s.clientFrame(frame(.subscribe(Subscribe(packetIdentifier: id, subscriptions: [Subscription(topicFilter: filter, options: options)])), .v3_1_1)))
        }
        func toBroker(_ id: UInt16, _ filters: [String]) -> [String] {
            ["broker: " + hexOf(MQTTPacket.subscribe(Subscribe(packetIdentifier: id, subscriptions: filters.map { Subscription(topicFilter: $0, options: options) })).encode(version: .v3_1_1))]
        }
        func subAck(_ s: inout ProxySession, _ id: UInt16) {
            _ = s.brokerFrame(frame(.subAck(SubAck(packetIdentifier: id, reasonCodes: Array(repeating: .success, count: 4))), .v3_1_1))
        }
        var first = connection(cleanSession: false, sessionPresent: false)
        #expect(subscribe(&first, 1, "+/x") == toBroker(1, ["a/x", "b/x", "c/x", "d/x"]))
        subAck(&first, 1)
        // That connection ends; the broker keeps the session, and the next connection resumes it.
        var second = connection(cleanSession: false, sessionPresent: true)
        #expect(subscribe(&second, 2, "+/y") == ["denied subscribe +/y", "client: 90 03 00 02 80"])
        // Unsubscribing +/x (held since the first connection) frees its four.
        #expect(wire(second.clientFrame(frame(.unsubscribe(Unsubscribe(packetIdentifier: 3, topicFilters: ["+/x"])), .v3_1_1)))
                == ["broker: " + hexOf(MQTTPacket.unsubscribe(Unsubscribe(packetIdentifier: 3, topicFilters: ["a/x", "b/x", "c/x", "d/x"])).encode(version: .v3_1_1))])
        #expect(subscribe(&second, 4, "+/y") == toBroker(4, ["a/y", "b/y", "c/y", "d/y"]))
        subAck(&second, 4)
        #expect(ledger.count("keep") == 4)
        // A clean session: the broker drops what the old one held, and so does the ledger.
        var third = connection(cleanSession: true, sessionPresent: false)
        #expect(ledger.count("keep") == 0)
        #expect(subscribe(&third, 5, "+/z") == toBroker(5, ["a/z", "b/z", "c/z", "d/z"]))
        subAck(&third, 5)
        #expect(ledger.count("keep") == 0)
        var fourth = connection(cleanSession: false, sessionPresent: true)
        #expect(subscribe(&fourth, 6, "+/w") == toBroker(6, ["a/w", "b/w", "c/w", "d/w"]))
        subAck(&fourth, 6)
        #expect(subscribe(&fourth, 7, "+/v") == ["denied subscribe +/v", "client: 90 03 00 07 80"])
    }

    @Test("The same limit holds for UNSUBSCRIBE of filters this connection never subscribed: past it they are answered here")
    func unsubscribeNarrowingLimit() throws {
        var s = try narrowingLimited(.v5)
        let action = s.clientFrame(frame(.unsubscribe(Unsubscribe(packetIdentifier: 8, topicFilters: ["+/x", "+/y", "q"])), .v5))
        #expect(wire(action) == ["broker: " + hexOf(MQTTPacket.unsubscribe(Unsubscribe(packetIdentifier: 8, topicFilters: ["a/x", "b/x", "c/x", "d/x", "q"])).encode(version: .v5))])
        // +/y did not fit: answered here as never subscribed.
        #expect(wire(s.brokerFrame(frame(.unsubAck(UnsubAck(packetIdentifier: 8, reasonCodes: Array(repeating: .success, count: 5))), .v5)))
                == ["client: b0 06 00 08 00 00 11 00"])
    }

    @Test("UNSUBSCRIBE maps to the broker filters that nobody else holds")
    func unsubscribeRefcount() throws {
        var s = try session("user bob\ntopic read sensors/#\ntopic read alerts/+")
        _ = s.clientFrame(frame(.connect(Connect(protocolVersion: .v5, cleanStart: true, keepAlive: 1, clientIdentifier: "b", username: "bob")), .v5))
        _ = s.brokerFrame(frame(.connAck(ConnAck(sessionPresent: false, returnCode: 0, properties: [])), .v5))
        _ = s.clientFrame(frame(.subscribe(Subscribe(packetIdentifier: 1, subscriptions: [Subscription(topicFilter: "#", options: .init(qos: .atMostOnce))])), .v5))
        _ = s.brokerFrame(frame(.subAck(SubAck(packetIdentifier: 1, reasonCodes: [.success, .success])), .v5))
        #expect(s.clientFrame(frame(.subscribe(Subscribe(packetIdentifier: 2, subscriptions: [Subscription(topicFilter: "sensors/#", options: .init(qos: .atMostOnce))])), .v5)) == .forward)
        _ = s.brokerFrame(frame(.subAck(SubAck(packetIdentifier: 2, reasonCodes: [.success])), .v5))
        // Unsubscribing "#" removes alerts/+ at the broker but keeps sensors/#, still held.
        let action = s.clientFrame(frame(.unsubscribe(Unsubscribe(packetIdentifier: 3, topicFilters: ["#"])), .v5))
        #expect(wire(action) == ["broker: " + hexOf(MQTTPacket.unsubscribe(Unsubscribe(packetIdentifier: 3, topicFilters: ["alerts/+"])).encode(version: .v5))])
        #expect(wire(s.brokerFrame(frame(.unsubAck(UnsubAck(packetIdentifier: 3, reasonCodes: [.success])), .v5))) == ["forward"])
        // Unsubscribing something never subscribed is answered here (0x11).
        #expect(wire(s.clientFrame(frame(.unsubscribe(Unsubscribe(packetIdentifier: 4, topicFilters: ["nothing/here"])), .v5))) == ["client: b0 04 00 04 00 11"])
        // Now sensors/# goes.
        #expect(s.clientFrame(frame(.unsubscribe(Unsubscribe(packetIdentifier: 5, topicFilters: ["sensors/#"])), .v5)) == .forward)
    }

    // MARK: Delivery

    @Test("Deliveries are checked: denied QoS 1 is acknowledged to the broker; QoS 2 PUBREC, then PUBREL answered here")
    func delivery() throws {
        var s = try connected(.v3_1_1)
        #expect(s.brokerFrame(frame(.publish(Publish(qos: .atLeastOnce, topic: "alerts/a", packetIdentifier: 7, payload: ByteBuffer())), .v3_1_1)) == .forward)
        #expect(wire(s.brokerFrame(frame(.publish(Publish(qos: .atLeastOnce, topic: "sensors/secret", packetIdentifier: 8, payload: ByteBuffer())), .v3_1_1)))
                == ["denied delivery sensors/secret", "broker: 40 02 00 08"])
        #expect(wire(s.brokerFrame(frame(.publish(Publish(qos: .exactlyOnce, topic: "other", packetIdentifier: 9, payload: ByteBuffer())), .v3_1_1)))
                == ["denied delivery other", "broker: 50 02 00 09"])
        #expect(wire(s.brokerFrame(frame(.pubRel(PubRel(packetIdentifier: 9)), .v3_1_1))) == ["broker: 70 02 00 09"])
        #expect(s.brokerFrame(frame(.pubRel(PubRel(packetIdentifier: 10)), .v3_1_1)) == .forward)
        var q = try connected(.v3_1_1)
        #expect(wire(q.brokerFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "status/alice", packetIdentifier: nil, payload: ByteBuffer())), .v3_1_1)))
                == ["denied delivery status/alice"])
    }

    @Test("A delivery over max_packet_size (3.1.1): dropped, logged as refused, acknowledged for the client (QoS 1 PUBACK; QoS 2 PUBREC, PUBREL answered here)")
    func oversizedDelivery() throws {
        var s = try connected(.v3_1_1)
        #expect(wire(s.brokerOversizedPublish(OversizedPublish(topic: "sensors/big", qos: .atLeastOnce, packetIdentifier: 7, size: 5000)))
                == ["denied delivery sensors/big", "broker: 40 02 00 07"])
        #expect(wire(s.brokerOversizedPublish(OversizedPublish(topic: "sensors/big", qos: .exactlyOnce, packetIdentifier: 8, size: 5000)))
                == ["denied delivery sensors/big", "broker: 50 02 00 08"])
        #expect(wire(s.brokerFrame(frame(.pubRel(PubRel(packetIdentifier: 8)), .v3_1_1))) == ["broker: 70 02 00 08"])
        #expect(wire(s.brokerOversizedPublish(OversizedPublish(topic: "sensors/big", qos: .atMostOnce, packetIdentifier: nil, size: 5000)))
                == ["denied delivery sensors/big"])
    }

    @Test("Broker → client aliases resolve before the read check")
    func brokerAliases() throws {
        var s = try connected(.v5, connectProperties: [.topicAliasMaximum(3)])
        #expect(s.brokerFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "alerts/a", packetIdentifier: nil, properties: [.topicAlias(1)], payload: ByteBuffer())), .v5)) == .forward)
        #expect(s.brokerFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "", packetIdentifier: nil, properties: [.topicAlias(1)], payload: ByteBuffer())), .v5)) == .forward)
        #expect(wire(s.brokerFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "secret", packetIdentifier: nil, properties: [.topicAlias(1)], payload: ByteBuffer())), .v5)))
                == ["denied delivery secret"])
        #expect(wire(s.brokerFrame(frame(.publish(Publish(qos: .atMostOnce, topic: "", packetIdentifier: nil, properties: [.topicAlias(1)], payload: ByteBuffer())), .v5)))
                == ["denied delivery secret"])
    }

    @Test("An ACL reload applies to the next packet of an existing session")
    func reload() throws {
        let store = ACLStore(try CompiledACL(parsing: "user alice\ntopic write a", source: "old"))
        var s = ProxySession(configuration: .init(), aclStore: store)
        _ = s.clientFrame(frame(.connect(Connect(protocolVersion: .v3_1_1, cleanStart: true, keepAlive: 1, clientIdentifier: "c", username: "alice")), .v3_1_1))
        _ = s.brokerFrame(frame(.connAck(ConnAck(sessionPresent: false, returnCode: 0)), .v3_1_1))
        let publish = frame(.publish(Publish(qos: .atMostOnce, topic: "a", packetIdentifier: nil, payload: ByteBuffer())), .v3_1_1)
        #expect(s.clientFrame(publish) == .forward)
        store.replace(with: try CompiledACL(parsing: "user alice\ntopic write b", source: "new"))
        #expect(wire(s.clientFrame(publish)) == ["denied publish a"])
    }

    @Test("Broker sending a client-only packet closes both; 5.0 tells each side")
    func brokerProtocolError() throws {
        var s = try connected(.v5)
        #expect(wire(s.brokerFrame(frame(.pingReq(PingReq()), .v5))) == ["broker error protocol error", "broker: e0 01 82", "client: e0 01 80", "close"])
    }
}

