import MQTTCodec
import NIOCore
import TestSupport
import Testing

/// One test per rejection rule, each paired with the accepted neighbour where one exists.
@Suite("Rejections")
struct RejectionTests {
    // MARK: CONNECT

    @Test("CONNECT reserved flag bit (MQTT-3.1.2-3)")
    func connectReserved() throws {
        expectRejected("10 0e 00 04 4d 51 54 54 04 03 00 3c 00 02 63 31", .v3_1_1, .malformedPacket, spec: "MQTT-3.1.2-3")
        try expectRoundTrip("10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31", .v3_1_1)
    }

    @Test("CONNECT will QoS without will flag (MQTT-3.1.2-11) and will retain without will flag (MQTT-3.1.2-13)")
    func willFlags() {
        expectRejected("10 0e 00 04 4d 51 54 54 04 0a 00 3c 00 02 63 31", .v3_1_1, .malformedPacket, spec: "MQTT-3.1.2-11")
        expectRejected("10 0e 00 04 4d 51 54 54 04 22 00 3c 00 02 63 31", .v3_1_1, .malformedPacket, spec: "MQTT-3.1.2-13")
    }

    @Test("CONNECT will QoS 3 (MQTT-3.1.2-12)")
    func willQoS3() {
        expectRejected("10 14 00 04 4d 51 54 54 04 1e 00 3c 00 02 63 31 00 01 77 00 01 78", .v3_1_1, .malformedPacket, spec: "MQTT-3.1.2-12")
    }

    @Test("CONNECT password without username is a protocol error in 3.1.1 (MQTT-3.1.2-22) but not in 5.0")
    func passwordWithoutUsername() throws {
        expectRejected("10 12 00 04 4d 51 54 54 04 42 00 3c 00 02 63 31 00 02 70 77", .v3_1_1, .protocolError, spec: "MQTT-3.1.2-22")
        expectRejected("10 14 00 06 4d 51 49 73 64 70 03 42 00 3c 00 02 63 31 00 02 70 77", .v3_1, .protocolError, spec: "MQTT-3.1.2-22")
        try expectRoundTrip("10 13 00 04 4d 51 54 54 05 42 00 3c 00 00 02 63 31 00 02 70 77", .v5)
    }

    @Test("CONNECT unknown protocol level → unsupported protocol version (CONNACK 0x01 / 0x84)")
    func unknownLevel() {
        expectRejected("10 0e 00 04 4d 51 54 54 06 02 00 3c 00 02 63 31", .v5, .unsupportedProtocolVersion)
        expectRejected("10 10 00 06 4d 51 49 73 64 70 04 02 00 3c 00 02 63 31", .v5, .unsupportedProtocolVersion)
    }

    @Test("CONNECT wrong protocol name (MQTT-3.1.2-1)")
    func wrongName() {
        expectRejected("10 0e 00 04 4d 51 54 58 04 02 00 3c 00 02 63 31", .v3_1_1, .protocolError, spec: "MQTT-3.1.2-1")
    }

    @Test("CONNECT will topic with a wildcard or empty (MQTT-3.1.3-11)")
    func willTopic() {
        expectRejected("10 14 00 04 4d 51 54 54 04 06 00 3c 00 02 63 31 00 01 23 00 01 78", .v3_1_1, .protocolError, spec: "MQTT-3.1.3-11")
        expectRejected("10 13 00 04 4d 51 54 54 04 06 00 3c 00 02 63 31 00 00 00 01 78", .v3_1_1, .protocolError, spec: "MQTT-3.1.3-11")
    }

    @Test("CONNECT truncated field inside a complete frame is malformed")
    func connectTruncated() {
        // Username flag set but no username.
        expectRejected("10 0e 00 04 4d 51 54 54 04 82 00 3c 00 02 63 31", .v3_1_1, .malformedPacket)
        // Client id length says 5, only 2 bytes.
        expectRejected("10 0e 00 04 4d 51 54 54 04 02 00 3c 00 05 63 31", .v3_1_1, .malformedPacket)
    }

    @Test("CONNECT trailing bytes are malformed")
    func connectTrailing() {
        expectRejected("10 0f 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31 00", .v3_1_1, .malformedPacket)
    }

    @Test("A CONNECT error after the level is read carries the version, for a v5 CONNACK")
    func connectErrorCarriesVersion() {
        do {
            _ = try decode("10 0f 00 04 4d 51 54 54 05 03 00 3c 00 00 02 63 31", .v3_1_1)
            Issue.record("accepted")
        } catch {
            #expect(error.protocolVersion == .v5)
            #expect(error.serverReaction(version: nil, awaitingConnect: true) == .sendConnAckAndClose(ConnAck(sessionPresent: false, returnCode: 0x81, properties: [])))
        }
    }

    // MARK: PUBLISH

    @Test("PUBLISH topic with wildcards (MQTT-3.3.2-2)", arguments: ["a/+", "a/#", "+", "#", "a+b"])
    func publishWildcard(topic: String) throws {
        let body = "00 \(byteHex(topic.utf8.count)) " + ascii(topic)
        expectRejected("30 \(byteHex(topic.utf8.count + 2)) " + body, .v3_1_1, .protocolError, spec: "MQTT-3.3.2-2")
    }

    @Test("PUBLISH empty topic: invalid in 3.1.1 (MQTT-4.7.3-1), and in 5.0 without a topic alias (MQTT-3.3.2-1)")
    func publishEmptyTopic() throws {
        expectRejected("30 03 00 00 78", .v3_1_1, .protocolError, spec: "MQTT-4.7.3-1")
        expectRejected("30 04 00 00 00 78", .v5, .protocolError, spec: "MQTT-3.3.2-1")
        try expectRoundTrip("30 07 00 00 03 23 00 01 78", .v5)
    }

    @Test("PUBLISH packet identifier 0 (MQTT-2.2.1-3)")
    func packetIdZero() throws {
        expectRejected("32 05 00 01 61 00 00", .v3_1_1, .malformedPacket, spec: "MQTT-2.2.1-3")
        try expectRoundTrip("32 05 00 01 61 00 01", .v3_1_1)
    }

    @Test("PUBLISH topic alias 0 (MQTT-3.3.2-8)")
    func topicAliasZero() {
        expectRejected("30 07 00 01 61 03 23 00 00", .v5, .topicAliasInvalid, spec: "MQTT-3.3.2-8")
    }

    @Test("PUBLISH QoS > 0 missing its packet identifier is malformed")
    func missingPacketId() {
        expectRejected("32 03 00 01 61", .v3_1_1, .malformedPacket)
    }

    @Test("PUBLISH Response Topic with a wildcard (MQTT-3.3.2-14)")
    func responseTopicWildcard() {
        expectRejected("30 09 00 01 61 04 08 00 01 23 78", .v5, .protocolError, spec: "MQTT-3.3.2-14")
    }

    // MARK: UTF-8

    @Test("UTF-8 string read (MQTT-1.5.4-1): ill-formed sequences and encoded surrogates",
          arguments: ["ff", "c0 80", "e0 80 80", "ed a0 80", "ed bf bf", "f4 90 80 80", "c3", "80"])
    func illFormedUTF8(bytes: String) {
        let n = bytes.split(separator: " ").count
        expectRejected("30 \(byteHex(n + 2)) 00 \(byteHex(n)) " + bytes, .v3_1_1, .malformedPacket, spec: "MQTT-1.5.4-1")
    }

    @Test("UTF-8 string read (MQTT-1.5.4-2): U+0000")
    func nulInTopic() {
        expectRejected("30 05 00 03 61 00 62", .v3_1_1, .malformedPacket, spec: "MQTT-1.5.4-2")
        expectRejected("10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 00", .v3_1_1, .malformedPacket, spec: "MQTT-1.5.4-2")
    }

    @Test("UTF-8 string read (MQTT-1.5.4-3): control characters and non-characters, as mosquitto rejects them")
    func discouraged() throws {
        expectRejected("30 05 00 03 61 01 62", .v3_1_1, .malformedPacket, spec: "MQTT-1.5.4-3")
        expectRejected("30 05 00 03 61 7f 62", .v3_1_1, .malformedPacket, spec: "MQTT-1.5.4-3")
        expectRejected("30 06 00 04 61 c2 85 62", .v3_1_1, .malformedPacket, spec: "MQTT-1.5.4-3")
        expectRejected("30 05 00 03 ef bf bf", .v3_1_1, .malformedPacket, spec: "MQTT-1.5.4-3")
        // Allowed when configured.
        let lenient = DecodingOptions(allowDiscouragedCodePoints: true)
        let packet = try MQTTPacket.decode(bytes: buffer("30 05 00 03 61 01 62"), version: .v3_1_1, options: lenient)
        guard case .publish(let p) = packet else { Issue.record("not PUBLISH"); return }
        #expect(p.topic == "a\u{1}b")
    }

    @Test("UTF-8: valid multi-byte text passes unchanged (é, €, 😀)")
    func validMultibyte() throws {
        guard case .publish(let p) = try expectRoundTrip("30 0b 00 09 c3 a9 e2 82 ac f0 9f 98 80", .v3_1_1) else { Issue.record("not PUBLISH"); return }
        #expect(p.topic == "é€😀")
    }

    // MARK: SUBSCRIBE / UNSUBSCRIBE

    @Test("SUBSCRIBE invalid topic filters (spec §4.7.1: 'sport+', 'a/b#', 'sport/tennis#')",
          arguments: ["sport+", "a/b#", "sport/tennis#", "#/a", "a/#/b", "+a", "", "$share/g", "$share//a", "$share/+/a", "$share/g/"])
    func invalidFilter(filter: String) {
        let n = filter.utf8.count
        let body = "00 01 00 \(byteHex(n)) " + ascii(filter) + " 00"
        expectRejected("82 \(byteHex(n + 5)) " + body, .v3_1_1, .malformedPacket)
    }

    @Test("SUBSCRIBE valid topic filters (spec §4.7.1)", arguments: ["sport/tennis/#", "#", "+", "+/tennis/#", "sport/+/player1", "/+", "a//b", "$SYS/#", "$share/g/#"])
    func validFilter(filter: String) throws {
        let n = filter.utf8.count
        try expectRoundTrip("82 \(byteHex(n + 5)) 00 01 00 \(byteHex(n)) " + ascii(filter) + " 01", .v3_1_1)
    }

    @Test("SUBSCRIBE reserved option bits (3.1.1: upper 6 bits; 5.0: bits 6-7, MQTT-3.8.3-5)")
    func reservedOptions() throws {
        expectRejected("82 06 00 01 00 01 61 04", .v3_1_1, .malformedPacket)
        expectRejected("82 07 00 01 00 00 01 61 40", .v5, .malformedPacket, spec: "MQTT-3.8.3-5")
        try expectRoundTrip("82 07 00 01 00 00 01 61 04", .v5)
    }

    @Test("SUBSCRIBE QoS 3, retain handling 3, No Local on a shared subscription (MQTT-3.8.3-4)")
    func subscribeOptionValues() {
        expectRejected("82 06 00 01 00 01 61 03", .v3_1_1, .malformedPacket)
        expectRejected("82 07 00 01 00 00 01 61 30", .v5, .protocolError)
        expectRejected("82 10 00 01 00 00 0a" + ascii("$share/g/a") + "04", .v5, .protocolError, spec: "MQTT-3.8.3-4")
    }

    @Test("SUBSCRIBE and UNSUBSCRIBE with no filter (MQTT-3.8.3-3, MQTT-3.10.3-2)")
    func emptySubscribe() {
        expectRejected("82 02 00 01", .v3_1_1, .protocolError, spec: "MQTT-3.8.3-3")
        expectRejected("82 03 00 01 00", .v5, .protocolError, spec: "MQTT-3.8.3-2")
        expectRejected("a2 02 00 01", .v3_1_1, .protocolError, spec: "MQTT-3.10.3-2")
    }

    @Test("SUBSCRIBE packet identifier 0 (MQTT-2.2.1-3)")
    func subscribePacketIdZero() {
        expectRejected("82 06 00 00 00 01 61 00", .v3_1_1, .malformedPacket, spec: "MQTT-2.2.1-3")
    }

    @Test("UNSUBSCRIBE invalid filter")
    func unsubscribeInvalid() {
        expectRejected("a2 08 00 01 00 04 61 2f 23 62", .v3_1_1, .malformedPacket)
    }

    // MARK: Reason codes

    @Test("Reason codes valid for their packet", arguments: [
        ("40 03 00 01 92", ProtocolVersion.v5),  // 0x92 is a PUBREL/PUBCOMP code, not PUBACK
        ("62 03 00 01 87", .v5),  // PUBREL only 0x00 / 0x92
        ("90 04 00 01 00 93", .v5),  // SUBACK
        ("90 03 00 01 03", .v3_1_1),  // SUBACK 3.1.1: 0,1,2,0x80
        ("b0 04 00 01 00 92", .v5),  // UNSUBACK
        ("e0 01 8c", .v5),  // DISCONNECT: bad authentication method is CONNACK-only
        ("f0 02 87 00", .v5),  // AUTH: only 0x00, 0x18, 0x19
        ("20 03 00 8e 00", .v5),  // CONNACK: session taken over is DISCONNECT-only
        ("20 02 00 06", .v3_1_1),  // CONNACK 3.1.1 return codes 0-5
    ])
    func reasonCodes(packet: String, version: ProtocolVersion) {
        expectRejected(packet, version, .protocolError)
    }

    @Test("CONNACK reserved flags (MQTT-3.2.2-1) and Session Present with a refusal")
    func connackFlags() {
        expectRejected("20 02 02 00", .v3_1_1, .malformedPacket, spec: "MQTT-3.2.2-1")
        expectRejected("20 02 01 05", .v3_1_1, .protocolError, spec: "MQTT-3.2.2-4")
        expectRejected("20 03 01 87 00", .v5, .protocolError, spec: "MQTT-3.2.2-6")
    }

    @Test("3.1.1 acknowledgements have exactly 2 bytes; PINGREQ and 3.1.1 DISCONNECT have none")
    func fixedLengths() {
        expectRejected("40 03 00 01 00", .v3_1_1, .malformedPacket)
        expectRejected("b0 03 00 01 00", .v3_1_1, .malformedPacket)
        expectRejected("c0 01 00", .v3_1_1, .malformedPacket)
        expectRejected("e0 01 00", .v3_1_1, .malformedPacket)
        expectRejected("40 01 00", .v5, .malformedPacket)
    }

    @Test("AUTH before 5.0 is not a packet")
    func authInV3() {
        expectRejected("f0 00", .v3_1_1, .malformedPacket)
    }
}
