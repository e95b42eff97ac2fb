import MQTTCodec
import NIOCore
import NIOEmbedded
import NIOTestUtils
import TestSupport
import Testing

@Suite("MQTTFrameDecoder: step one, framing")
struct FrameDecoderTests {
    static func frame(_ hexString: String) -> MQTTFrame {
        try! MQTTFrame(validating: buffer(hexString))
    }

    @Test("ByteToMessageDecoderVerifier: byte by byte, many per buffer, shuffled")
    func verifier() throws {
        let connect = "10 10 00 04 4d 51 54 54 04 02 00 3c 00 04 74 65 73 74"
        let publish = "30 08 00 03 61 2f 62 68 69 21"
        let ping = "c0 00"
        let bigPublish = "32 81 01 00 01 78 00 07" + String(repeating: " 41", count: 124)
        let pairs: [(ByteBuffer, [MQTTFrame])] = [
            (buffer(connect), [Self.frame(connect)]),
            (buffer(connect + publish + ping), [Self.frame(connect), Self.frame(publish), Self.frame(ping)]),
            (buffer(connect + bigPublish), [Self.frame(connect), Self.frame(bigPublish)]),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            MQTTFrameDecoder(configuration: .server())
        }
    }

    @Test("The frame keeps the original bytes and exposes the body")
    func keepsBytes() throws {
        let f = Self.frame("30 08 00 03 61 2f 62 68 69 21")
        #expect(f.type == .publish)
        #expect(f.flags == 0)
        #expect(f.size == 10)
        #expect(hex(f.body) == "00 03 61 2f 62 68 69 21")
        #expect(hex(f.bytes) == "30 08 00 03 61 2f 62 68 69 21")
    }

    @Test("Declared size over the limit is rejected as soon as the header arrives, before the body")
    func tooLargeBeforeBody() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(MQTTFrameDecoder(configuration: .client(maximumPacketSize: 1000))))
        // PUBLISH declaring 268,435,455 bytes; only the 5 header bytes are sent.
        #expect(throws: MQTTCodecError.self) {
            try channel.writeInbound(buffer("30 ff ff ff 7f"))
        }
        _ = try? channel.finish()
    }

    @Test("mosquitto 01-bad-initial-packets: a huge PUBLISH as first packet is refused on its first byte")
    func badInitialPacket() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(MQTTFrameDecoder(configuration: .server())))
        do {
            try channel.writeInbound(buffer("30 80 80 80 74 01 01 01"))
            Issue.record("accepted")
        } catch let error as MQTTCodecError {
            #expect(error.kind == .protocolError)
            #expect(error.specStatement == "MQTT-3.1.0-1")
        }
        _ = try? channel.finish()
    }

    @Test("The first packet has a smaller limit than later ones")
    func firstPacketLimit() throws {
        let config = MQTTFrameDecoder.Configuration(maximumPacketSize: 1 << 20, maximumFirstPacketSize: 100, expectedFirstPacket: .connect)
        // A CONNECT declaring 200 bytes: over the first-packet limit.
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(MQTTFrameDecoder(configuration: config)))
        do {
            try channel.writeInbound(buffer("10 c8 01"))
            Issue.record("accepted")
        } catch let error as MQTTCodecError {
            #expect(error.kind == .packetTooLarge)
            #expect(error.reasonCode == .packetTooLarge)
        }
        _ = try? channel.finish()

        // After a valid CONNECT, a 200-byte PUBLISH is fine.
        let channel2 = EmbeddedChannel(handler: ByteToMessageHandler(MQTTFrameDecoder(configuration: config)))
        try channel2.writeInbound(buffer("10 10 00 04 4d 51 54 54 04 02 00 3c 00 04 74 65 73 74"))
        try channel2.writeInbound(buffer("30 c8 01 00 01 61" + String(repeating: " 00", count: 197)))
        #expect(try channel2.readInbound(as: MQTTFrame.self)?.type == .connect)
        #expect(try channel2.readInbound(as: MQTTFrame.self)?.size == 203)
        _ = try channel2.finish()
    }

    @Test("Packet type 0 is reserved")
    func reservedType() {
        var b = buffer("00 00")
        #expect(throws: MQTTCodecError.self) { try MQTTFrameDecoder.parseFrame(from: &b, maximumPacketSize: 100, expectedType: nil) }
    }

    @Test("Fixed-header flags per type (MQTT-2.1.3-1), PUBLISH QoS 3 and DUP on QoS 0", arguments: [
        ("22 02 00 00", "MQTT-2.1.3-1"),  // CONNACK with flags
        ("80 05 00 01 00 00 00", "MQTT-3.8.1-1"),  // SUBSCRIBE without 0x2
        ("a0 03 00 01 00", "MQTT-3.10.1-1"),  // UNSUBSCRIBE without 0x2
        ("60 02 00 01", "MQTT-3.6.1-1"),  // PUBREL without 0x2
        ("41 02 00 01", "MQTT-2.1.3-1"),  // PUBACK with a flag
        ("c1 00", "MQTT-2.1.3-1"),  // PINGREQ with a flag
        ("e8 00", "MQTT-2.1.3-1"),  // DISCONNECT with a flag
        ("36 05 00 01 61 00 01", "MQTT-3.3.1-4"),  // PUBLISH QoS 3
        ("38 03 00 01 61", "MQTT-3.3.1-2"),  // PUBLISH DUP on QoS 0
    ])
    func flags(packet: String, spec: String) {
        var b = buffer(packet)
        do {
            _ = try MQTTFrameDecoder.parseFrame(from: &b, maximumPacketSize: 100, expectedType: nil)
            Issue.record("accepted \(packet)")
        } catch {
            #expect(error.kind == .malformedPacket)
            #expect(error.specStatement == spec)
        }
    }

    @Test("Valid flags pass: SUBSCRIBE 0x82, PUBREL 0x62, PUBLISH DUP QoS 2 retain 0x3d")
    func validFlags() throws {
        for packet in ["82 06 00 01 00 01 61 00", "62 02 00 01", "3d 05 00 01 61 00 01"] {
            var b = buffer(packet)
            #expect(try MQTTFrameDecoder.parseFrame(from: &b, maximumPacketSize: 100, expectedType: nil) != nil)
        }
    }

    @Test("Incomplete frames consume nothing")
    func incomplete() throws {
        var b = buffer("30 08 00 03 61")
        #expect(try MQTTFrameDecoder.parseFrame(from: &b, maximumPacketSize: 100, expectedType: nil) == nil)
        #expect(b.readableBytes == 5)
    }

    @Test("MQTTFrame(validating:) refuses trailing bytes and short input")
    func validatingInit() {
        #expect(throws: MQTTCodecError.self) { try MQTTFrame(validating: buffer("c0 00 00")) }
        #expect(throws: MQTTCodecError.self) { try MQTTFrame(validating: buffer("30 05 00")) }
    }

    @Test("Data after a rejected frame is not decoded")
    func dataAfterError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(MQTTFrameDecoder(configuration: .client())))
        #expect(throws: MQTTCodecError.self) { try channel.writeInbound(buffer("00 00 c0 00")) }
        #expect(try channel.readInbound(as: MQTTFrame.self) == nil)
        _ = try? channel.finish()
    }
}
