import MQTTCodec
import NIOCore
import TestSupport
import Testing

/// Exact bytes for every packet type in 3.1, 3.1.1 and 5.0, decoded to an exact struct and
/// re-encoded to the same bytes. Where the spec gives an example, it is used.
@Suite("Packet vectors")
struct PacketVectorTests {
    @Test("CONNECT 3.1.1, the spec's flags example 0xCE (§3.1.2.10): will QoS 1, credentials, clean session")
    func connect311() throws {
        let packet = try expectRoundTrip(
            "10 1c" + ascii("\0\u{4}MQTT") + "04 ce 00 0a 00 02 63 31 00 01 77 00 03 62 79 65 00 01 75 00 01 70", .v3_1_1)
        let expected = Connect(protocolVersion: .v3_1_1, cleanStart: true, keepAlive: 10, clientIdentifier: "c1",
                               will: .init(topic: "w", payload: ByteBuffer(string: "bye"), qos: .atLeastOnce, retain: false),
                               username: "u", password: ByteBuffer(string: "p"))
        #expect(packet == .connect(expected))
        #expect(hex(MQTTPacket.connect(expected).encode(version: .v3_1_1)) == hex(buffer("10 1c 00 04 4d 51 54 54 04 ce 00 0a 00 02 63 31 00 01 77 00 03 62 79 65 00 01 75 00 01 70")))
    }

    @Test("CONNECT 5.0, the spec's variable header example (§3.1.2.11): Session Expiry Interval 10")
    func connect5() throws {
        let packet = try expectRoundTrip("10 1a 00 04 4d 51 54 54 05 c2 00 0a 05 11 00 00 00 0a 00 02 63 31 00 01 75 00 01 70", .v5)
        #expect(packet == .connect(Connect(protocolVersion: .v5, cleanStart: true, keepAlive: 10, properties: [.sessionExpiryInterval(10)],
                                           clientIdentifier: "c1", username: "u", password: ByteBuffer(string: "p"))))
    }

    @Test("CONNECT 3.1 (MQIsdp, level 3)")
    func connect31() throws {
        let packet = try expectRoundTrip("10 10 00 06 4d 51 49 73 64 70 03 02 00 3c 00 02 63 31", .v3_1)
        #expect(packet == .connect(Connect(protocolVersion: .v3_1, cleanStart: true, keepAlive: 60, clientIdentifier: "c1")))
    }

    @Test("CONNECT with the mosquitto bridge bit (level 0x84) keeps it")
    func connectBridge() throws {
        guard case .connect(let c) = try expectRoundTrip("10 0e 00 04 4d 51 54 54 84 02 00 3c 00 02 63 31", .v3_1_1) else {
            Issue.record("not CONNECT"); return
        }
        #expect(c.bridgeFlag)
        #expect(c.protocolVersion == .v3_1_1)
    }

    @Test("CONNECT 5.0 with will properties and a password without a username (allowed in 5.0)")
    func connect5Will() throws {
        // flags 0x4e: password, will QoS 1, will, clean start.
        let packet = try expectRoundTrip("10 21 00 04 4d 51 54 54 05 4e 00 3c 00 00 02 63 31 05 18 00 00 00 05 00 01 77 00 03 62 79 65 00 02 70 77", .v5)
        let will = Connect.Will(topic: "w", payload: ByteBuffer(string: "bye"), qos: .atLeastOnce, retain: false, properties: [.willDelayInterval(5)])
        #expect(packet == .connect(Connect(protocolVersion: .v5, cleanStart: true, keepAlive: 60, clientIdentifier: "c1", will: will,
                                           password: ByteBuffer(string: "pw"))))
    }

    @Test("CONNACK in each version")
    func connack() throws {
        #expect(try expectRoundTrip("20 02 01 00", .v3_1_1) == .connAck(ConnAck(sessionPresent: true, returnCode: 0)))
        #expect(try expectRoundTrip("20 02 00 05", .v3_1) == .connAck(ConnAck(sessionPresent: false, returnCode: 5)))
        #expect(try expectRoundTrip("20 03 00 00 00", .v5) == .connAck(ConnAck(sessionPresent: false, returnCode: 0, properties: [])))
        #expect(try expectRoundTrip("20 08 00 00 05 21 00 14 25 00", .v5)
                == .connAck(ConnAck(sessionPresent: false, returnCode: 0, properties: [.receiveMaximum(20), .retainAvailable(0)])))
        #expect(try expectRoundTrip("20 03 00 87 00", .v5) == .connAck(ConnAck(sessionPresent: false, returnCode: 0x87, properties: [])))
        // A 3.1.1 server refusing a 5.0 CONNECT answers in 3.1.1 form.
        #expect(try expectRoundTrip("20 02 00 01", .v5) == .connAck(ConnAck(sessionPresent: false, returnCode: 1, properties: nil)))
    }

    @Test("PUBLISH 3.1.1, the spec's example topic a/b and packet id 10 (§3.3.2.3)")
    func publish311() throws {
        #expect(try expectRoundTrip("32 09 00 03 61 2f 62 00 0a 68 69", .v3_1_1)
                == .publish(Publish(qos: .atLeastOnce, topic: "a/b", packetIdentifier: 10, payload: ByteBuffer(string: "hi"))))
        #expect(try expectRoundTrip("31 07 00 03 61 2f 62 68 69", .v3_1_1)
                == .publish(Publish(qos: .atMostOnce, retain: true, topic: "a/b", packetIdentifier: nil, payload: ByteBuffer(string: "hi"))))
        #expect(try expectRoundTrip("3c 07 00 03 61 2f 62 00 0b", .v3_1_1)
                == .publish(Publish(dup: true, qos: .exactlyOnce, topic: "a/b", packetIdentifier: 11, payload: ByteBuffer())))
    }

    @Test("PUBLISH 5.0 with properties, and with only a topic alias")
    func publish5() throws {
        #expect(try expectRoundTrip("32 0a 00 03 61 2f 62 00 0a 00 68 69", .v5)
                == .publish(Publish(qos: .atLeastOnce, topic: "a/b", packetIdentifier: 10, payload: ByteBuffer(string: "hi"))))
        #expect(try expectRoundTrip("30 07 00 00 03 23 00 05 78", .v5)
                == .publish(Publish(qos: .atMostOnce, topic: "", packetIdentifier: nil, properties: [.topicAlias(5)], payload: ByteBuffer(string: "x"))))
        // Two subscription identifiers and user properties may repeat in PUBLISH.
        let p = try expectRoundTrip("30 13 00 01 61 0d 0b 01 0b 02 26 00 01 6b 00 01 76 01 01 68 69", .v5)
        #expect(p == .publish(Publish(qos: .atMostOnce, topic: "a", packetIdentifier: nil,
                                      properties: [.subscriptionIdentifier(1), .subscriptionIdentifier(2), .userProperty(name: "k", value: "v"), .payloadFormatIndicator(1)],
                                      payload: ByteBuffer(string: "hi"))))
    }

    @Test("PUBACK / PUBREC / PUBREL / PUBCOMP in 3.1.1 and every 5.0 length form")
    func acknowledgements() throws {
        #expect(try expectRoundTrip("40 02 00 0a", .v3_1_1) == .pubAck(PubAck(packetIdentifier: 10)))
        #expect(try expectRoundTrip("50 02 00 0b", .v3_1_1) == .pubRec(PubRec(packetIdentifier: 11)))
        #expect(try expectRoundTrip("62 02 00 0b", .v3_1) == .pubRel(PubRel(packetIdentifier: 11)))
        #expect(try expectRoundTrip("70 02 00 0b", .v3_1_1) == .pubComp(PubComp(packetIdentifier: 11)))
        #expect(try expectRoundTrip("40 02 00 0a", .v5) == .pubAck(PubAck(packetIdentifier: 10)))
        #expect(try expectRoundTrip("40 03 00 0a 10", .v5) == .pubAck(PubAck(packetIdentifier: 10, reasonCode: .noMatchingSubscribers)))
        #expect(try expectRoundTrip("40 04 00 0a 87 00", .v5) == .pubAck(PubAck(packetIdentifier: 10, reasonCode: .notAuthorized, properties: [])))
        #expect(try expectRoundTrip("50 08 00 0a 87 04 1f 00 01 78", .v5)
                == .pubRec(PubRec(packetIdentifier: 10, reasonCode: .notAuthorized, properties: [.reasonString("x")])))
        #expect(try expectRoundTrip("62 03 00 0b 92", .v5) == .pubRel(PubRel(packetIdentifier: 11, reasonCode: .packetIdentifierNotFound)))
        #expect(try expectRoundTrip("70 03 00 0b 00", .v5) == .pubComp(PubComp(packetIdentifier: 11, reasonCode: .success)))
    }

    @Test("SUBSCRIBE 3.1.1, the spec's example (§3.8.3.1): a/b QoS 1, c/d QoS 2")
    func subscribe311() throws {
        #expect(try expectRoundTrip("82 0e 00 0a 00 03 61 2f 62 01 00 03 63 2f 64 02", .v3_1_1)
                == .subscribe(Subscribe(packetIdentifier: 10, subscriptions: [
                    Subscription(topicFilter: "a/b", options: .init(qos: .atLeastOnce)),
                    Subscription(topicFilter: "c/d", options: .init(qos: .exactlyOnce)),
                ])))
    }

    @Test("SUBSCRIBE 5.0 with a subscription identifier and every option bit")
    func subscribe5() throws {
        #expect(try expectRoundTrip("82 0b 00 0a 02 0b 07 00 03 61 2f 62 2d", .v5)
                == .subscribe(Subscribe(packetIdentifier: 10, properties: [.subscriptionIdentifier(7)], subscriptions: [
                    Subscription(topicFilter: "a/b", options: .init(qos: .atLeastOnce, noLocal: true, retainAsPublished: true, retainHandling: .doNotSend)),
                ])))
        // Shared subscription without No Local.
        #expect(try expectRoundTrip("82 14 00 01 00 00 0e" + ascii("$share/g/a/b/#") + "01", .v5)
                == .subscribe(Subscribe(packetIdentifier: 1, subscriptions: [Subscription(topicFilter: "$share/g/a/b/#", options: .init(qos: .atLeastOnce))])))
    }

    @Test("SUBACK, the spec's example (§3.9.3): QoS 0, QoS 2, failure")
    func suback() throws {
        #expect(try expectRoundTrip("90 05 00 0a 00 02 80", .v3_1_1)
                == .subAck(SubAck(packetIdentifier: 10, reasonCodes: [.success, .grantedQoS2, .unspecifiedError])))
        #expect(try expectRoundTrip("90 06 00 0a 00 00 02 87", .v5)
                == .subAck(SubAck(packetIdentifier: 10, reasonCodes: [.success, .grantedQoS2, .notAuthorized])))
    }

    @Test("UNSUBSCRIBE and UNSUBACK")
    func unsubscribe() throws {
        #expect(try expectRoundTrip("a2 0c 00 0a 00 03 61 2f 62 00 03 63 2f 64", .v3_1_1)
                == .unsubscribe(Unsubscribe(packetIdentifier: 10, topicFilters: ["a/b", "c/d"])))
        #expect(try expectRoundTrip("a2 08 00 0a 00 00 03 61 2f 62", .v5)
                == .unsubscribe(Unsubscribe(packetIdentifier: 10, topicFilters: ["a/b"])))
        #expect(try expectRoundTrip("b0 02 00 0a", .v3_1_1) == .unsubAck(UnsubAck(packetIdentifier: 10)))
        #expect(try expectRoundTrip("b0 05 00 0a 00 00 11", .v5) == .unsubAck(UnsubAck(packetIdentifier: 10, reasonCodes: [.success, .noSubscriptionExisted])))
    }

    @Test("PINGREQ, PINGRESP")
    func ping() throws {
        #expect(try expectRoundTrip("c0 00", .v3_1_1) == .pingReq(PingReq()))
        #expect(try expectRoundTrip("d0 00", .v5) == .pingResp(PingResp()))
    }

    @Test("DISCONNECT in 3.1.1 and every 5.0 length form")
    func disconnect() throws {
        #expect(try expectRoundTrip("e0 00", .v3_1_1) == .disconnect(Disconnect()))
        #expect(try expectRoundTrip("e0 00", .v5) == .disconnect(Disconnect()))
        #expect(try expectRoundTrip("e0 01 04", .v5) == .disconnect(Disconnect(reasonCode: .disconnectWithWillMessage)))
        #expect(try expectRoundTrip("e0 02 00 00", .v5) == .disconnect(Disconnect(reasonCode: .success, properties: [])))
        #expect(try expectRoundTrip("e0 07 00 05 11 00 00 00 3c", .v5)
                == .disconnect(Disconnect(reasonCode: .success, properties: [.sessionExpiryInterval(60)])))
    }

    @Test("AUTH (5.0)")
    func auth() throws {
        #expect(try expectRoundTrip("f0 00", .v5) == .auth(Auth()))
        #expect(try expectRoundTrip("f0 02 18 00", .v5) == .auth(Auth(reasonCode: .continueAuthentication, properties: [])))
        #expect(try expectRoundTrip("f0 0a 18 08 15 00 05" + ascii("SCRAM"), .v5)
                == .auth(Auth(reasonCode: .continueAuthentication, properties: [.authenticationMethod("SCRAM")])))
    }

    @Test("Encoding a packet the bridge builds: v5 PUBACK 0x87 and v5 DISCONNECT 0x81")
    func bridgeBuilt() {
        #expect(hex(MQTTPacket.pubAck(PubAck(packetIdentifier: 7, reasonCode: .notAuthorized)).encode(version: .v5)) == "40 03 00 07 87")
        #expect(hex(MQTTPacket.pubAck(PubAck(packetIdentifier: 7, reasonCode: .notAuthorized)).encode(version: .v3_1_1)) == "40 02 00 07")
        #expect(hex(MQTTPacket.disconnect(Disconnect(reasonCode: .malformedPacket)).encode(version: .v5)) == "e0 01 81")
    }

    @Test("A large PUBLISH uses a 3-byte remaining length and round-trips")
    func largePublish() throws {
        let payload = ByteBuffer(repeating: 0x41, count: 20_000)
        let p = Publish(qos: .exactlyOnce, topic: "big", packetIdentifier: 9, payload: payload)
        let bytes = MQTTPacket.publish(p).encode(version: .v3_1_1)
        #expect(hex(bytes.getSlice(at: bytes.readerIndex, length: 4)!) == "34 a7 9c 01")
        #expect(try MQTTPacket.decode(bytes: bytes, version: .v3_1_1) == .publish(p))
    }

    @Test("decodePublish: the same Publish as decode, for every version; another packet type is refused")
    func decodePublishDirectly() throws {
        let frames: [(String, ProtocolVersion)] = [
            ("32 0a 00 03 61 2f 62 00 07 68 69 21", .v3_1_1),
            ("30 08 00 03 61 2f 62 68 69 21", .v3_1),
            ("3b 0e 00 03 61 2f 62 00 07 03 23 00 05 68 69 21", .v5),  // DUP, QoS 1, retain, alias 5
        ]
        for (bytes, version) in frames {
            let frame = try MQTTFrame(validating: buffer(bytes))
            let publish = try MQTTPacket.decodePublish(frame, version: version)
            #expect(try MQTTPacket.decode(frame, version: version) == .publish(publish))
        }
        #expect(throws: MQTTCodecError.self) {
            try MQTTPacket.decodePublish(try MQTTFrame(validating: buffer("c0 00")), version: .v3_1_1)
        }
        // A malformed PUBLISH fails the same way as through decode.
        let bad = try MQTTFrame(validating: buffer("30 05 00 03 61 2b 62"))  // wildcard in the topic
        var direct: MQTTCodecError?, viaEnum: MQTTCodecError?
        do { _ = try MQTTPacket.decodePublish(bad, version: .v3_1_1) } catch { direct = error }
        do { _ = try MQTTPacket.decode(bad, version: .v3_1_1) } catch { viaEnum = error }
        #expect(direct != nil && direct == viaEnum)
    }
}

