import MQTTCodec
import NIOCore
import TestSupport
import Testing

@Suite("Variable Byte Integer (spec §1.5.5)")
struct VariableByteIntegerTests {
    static let boundaryCases: [(UInt32, String)] = [
        (0, "00"), (127, "7f"), (128, "80 01"), (16_383, "ff 7f"), (16_384, "80 80 01"),
        (2_097_151, "ff ff 7f"), (2_097_152, "80 80 80 01"), (268_435_455, "ff ff ff 7f"),
    ]

    @Test("TEST_varint_read_boundaries and write", arguments: boundaryCases)
    func boundaries(value: UInt32, encoding: String) throws {
        var out = ByteBuffer()
        let written = VariableByteInteger.write(Int(value), to: &out)
        #expect(hex(out) == encoding)
        #expect(written == VariableByteInteger.encodedLength(Int(value)))
        let result = try VariableByteInteger.peek(in: buffer(encoding), at: 0, field: "test")
        #expect(result == .value(value, byteCount: written))
    }

    @Test("TEST_varint_read_empty")
    func empty() throws {
        #expect(try VariableByteInteger.peek(in: ByteBuffer(), at: 0, field: "test") == .needMoreBytes)
    }

    @Test("TEST_varint_read_truncated", arguments: ["80", "ff ff", "ff ff ff"])
    func truncated(prefix: String) throws {
        #expect(try VariableByteInteger.peek(in: buffer(prefix), at: 0, field: "test") == .needMoreBytes)
    }

    @Test("TEST_varint_read_overlong_encoding", arguments: ["80 00", "80 80 00", "80 80 80 00", "ff 80 00"])
    func overlong(encoding: String) {
        #expect(throws: MQTTCodecError.self) { try VariableByteInteger.peek(in: buffer(encoding), at: 0, field: "test") }
        do {
            _ = try VariableByteInteger.peek(in: buffer(encoding), at: 0, field: "test")
        } catch {
            #expect(error.kind == .malformedPacket)
            #expect(error.detail.contains("overlong"))
        }
    }

    @Test("TEST_varint_read_5_bytes: more than four bytes is malformed (MQTT-1.5.5-1)", arguments: ["ff ff ff ff 7f", "80 80 80 80 01", "80 80 80 80"])
    func fiveBytes(encoding: String) {
        do {
            _ = try VariableByteInteger.peek(in: buffer(encoding), at: 0, field: "test")
            Issue.record("accepted \(encoding)")
        } catch {
            #expect(error.kind == .malformedPacket)
            #expect(error.specStatement == "MQTT-1.5.5-1")
        }
    }

    @Test("A truncated varint inside a complete frame is malformed, not 'need more bytes'")
    func truncatedInsideFrame() {
        // SUBSCRIBE v5 whose property length varint (0x80) is cut off by the remaining length.
        expectRejected("82 03 00 01 80", .v5, .malformedPacket)
    }
}
