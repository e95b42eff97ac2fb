import MQTTCodec
import NIOCore
import TestSupport
import Testing

@Suite("Wire reactions to decode errors")
struct ErrorReactionTests {
    func error(_ hexString: String, _ version: ProtocolVersion) -> MQTTCodecError {
        do {
            _ = try decode(hexString, version)
        } catch {
            return error
        }
        fatalError("decoded")
    }

    @Test("5.0 after CONNECT: DISCONNECT with the reason code; bytes e0 01 81 / e0 01 82")
    func v5Disconnect() {
        let malformed = error("30 05 00 03 61 00 62", .v5)
        guard case .sendDisconnectAndClose(let d) = malformed.serverReaction(version: .v5, awaitingConnect: false) else {
            Issue.record("no DISCONNECT"); return
        }
        #expect(hex(MQTTPacket.disconnect(d).encode(version: .v5)) == "e0 01 81")
        let protocolError = error("30 06 00 03 61 2f 23 00", .v5)
        guard case .sendDisconnectAndClose(let d2) = protocolError.serverReaction(version: .v5, awaitingConnect: false) else {
            Issue.record("no DISCONNECT"); return
        }
        #expect(hex(MQTTPacket.disconnect(d2).encode(version: .v5)) == "e0 01 82")
    }

    @Test("3.1.1: close without a reply")
    func v311Close() {
        #expect(error("30 05 00 03 61 00 62", .v3_1_1).serverReaction(version: .v3_1_1, awaitingConnect: false) == .close)
        #expect(error("30 05 00 03 61 00 62", .v3_1_1).clientReaction(version: .v3_1_1) == .close)
    }

    @Test("Unsupported protocol level: a 3.1.1-format CONNACK 0x01 (bytes 20 02 00 01)")
    func unsupportedLevel() {
        let e = error("10 0e 00 04 4d 51 54 54 07 02 00 3c 00 02 63 31", .v5)
        guard case .sendConnAckAndClose(let ack) = e.serverReaction(version: nil, awaitingConnect: true) else {
            Issue.record("no CONNACK"); return
        }
        #expect(hex(MQTTPacket.connAck(ack).encode(version: .v3_1_1)) == "20 02 00 01")
    }

    @Test("5.0 malformed CONNECT: CONNACK 0x81 (bytes 20 03 00 81 00)")
    func v5ConnectMalformed() {
        let e = error("10 0f 00 04 4d 51 54 54 05 03 00 3c 00 00 02 63 31", .v5)
        guard case .sendConnAckAndClose(let ack) = e.serverReaction(version: nil, awaitingConnect: true) else {
            Issue.record("no CONNACK"); return
        }
        #expect(hex(MQTTPacket.connAck(ack).encode(version: .v5)) == "20 03 00 81 00")
    }

    @Test("Unreadable protocol name: close")
    func unreadable() {
        #expect(error("10 03 00 04 4d", .v5).serverReaction(version: nil, awaitingConnect: true) == .close)
    }

    @Test("Errors name the field and the spec statement")
    func messages() {
        let e = error("30 05 00 03 61 2f 23", .v3_1_1)
        #expect(e.description == "protocol error in PUBLISH.topicName: topic name must not contain wildcards '+' or '#' [MQTT-3.3.2-2]")
    }
}
