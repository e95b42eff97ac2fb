import MQTTCodec
import NIOCore
import TestSupport
import Testing

@Suite("MQTTPacketBoundaryScanner: packet starts in a stream it does not buffer")
struct PacketBoundaryScannerTests {
    // CONNECT, QoS 0 PUBLISH, QoS 1 PUBLISH, PINGREQ, a 200-byte QoS 0 PUBLISH (2-byte
    // remaining length), DISCONNECT.
    static let stream = "10 10 00 04 4d 51 54 54 04 02 00 3c 00 04 74 65 73 74"
        + " 30 08 00 03 61 2f 62 68 69 21"
        + " 32 0a 00 03 61 2f 62 00 07 68 69 21"
        + " c0 00"
        + " 30 c8 01 00 01 78" + String(repeating: " 41", count: 197)
        + " e0 00"
    static let firstBytes: [UInt8] = [0x10, 0x30, 0x32, 0xC0, 0x30, 0xE0]

    @Test("Every packet start is seen once, whatever the stream is cut into", arguments: [1, 2, 3, 7, 64, 1000])
    func split(piece: Int) {
        var bytes = buffer(Self.stream)
        var scanner = MQTTPacketBoundaryScanner()
        var seen: [UInt8] = []
        while bytes.readableBytes > 0 {
            let slice = bytes.readSlice(length: min(piece, bytes.readableBytes))!
            scanner.scan(slice) { seen.append($0) }
        }
        #expect(seen == Self.firstBytes)
        #expect(!scanner.isLost)
    }

    @Test("A large body is skipped by its length across reads: the next header is found")
    func largeBody() {
        var scanner = MQTTPacketBoundaryScanner()
        var seen: [UInt8] = []
        // QoS 0 PUBLISH, remaining length 300000 = e0 a7 12.
        scanner.scan(buffer("30 e0 a7 12 00 01 78")) { seen.append($0) }
        scanner.scan(ByteBuffer(repeating: 0x41, count: 299_996)) { seen.append($0) }
        #expect(seen == [0x30])
        scanner.scan(buffer("41 c0 00")) { seen.append($0) }
        #expect(seen == [0x30, 0xC0])
    }

    @Test("A stream it cannot follow stops it: type 0, a five-byte remaining length")
    func lost() {
        var a = MQTTPacketBoundaryScanner()
        var seen: [UInt8] = []
        a.scan(buffer("c0 00 00 05 30 00")) { seen.append($0) }
        #expect(seen == [0xC0])
        #expect(a.isLost)
        var b = MQTTPacketBoundaryScanner()
        seen = []
        b.scan(buffer("30 ff ff ff ff 01 c0 00")) { seen.append($0) }
        #expect(seen == [0x30])
        #expect(b.isLost)
    }

    @Test("What a server answers: everything a client sends but a QoS 0 PUBLISH")
    func answers() {
        #expect(!MQTTPacketBoundaryScanner.clientPacketGetsAnswer(0x30))
        #expect(!MQTTPacketBoundaryScanner.clientPacketGetsAnswer(0x31))  // retained QoS 0
        #expect(MQTTPacketBoundaryScanner.clientPacketGetsAnswer(0x32))
        #expect(MQTTPacketBoundaryScanner.clientPacketGetsAnswer(0x3C))
        for first: UInt8 in [0x10, 0x62, 0x82, 0xA2, 0xC0, 0xE0] {
            #expect(MQTTPacketBoundaryScanner.clientPacketGetsAnswer(first))
        }
    }
}
