import MQTTCodec
import NIOCore
import Testing

/// "10 0c 00" -> bytes. Spaces and newlines are ignored.
func buffer(_ hex: String) -> ByteBuffer {
    let digits = hex.filter { !$0.isWhitespace }
    precondition(digits.count % 2 == 0, "odd hex string")
    var bytes: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        bytes.append(UInt8(digits[index..<next], radix: 16)!)
        index = next
    }
    return ByteBuffer(bytes: bytes)
}

func hex(_ buffer: ByteBuffer) -> String {
    buffer.readableBytesView.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
}

/// ASCII text as the hex the wire carries, to keep vectors readable.
func ascii(_ text: String) -> String {
    text.utf8.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
}

func decode(_ hexString: String, _ version: ProtocolVersion) throws(MQTTCodecError) -> MQTTPacket {
    try MQTTPacket.decode(bytes: buffer(hexString), version: version)
}

/// Decodes, expecting a specific error kind (and spec statement when given).
func expectRejected(_ hexString: String, _ version: ProtocolVersion, _ kind: MQTTCodecError.Kind, spec: String? = nil,
                    sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        let packet = try decode(hexString, version)
        Issue.record("expected \(kind), decoded \(packet)", sourceLocation: sourceLocation)
    } catch {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        if let spec { #expect(error.specStatement == spec, "\(error)", sourceLocation: sourceLocation) }
    }
}

/// Decodes and re-encodes, requiring identical bytes.
@discardableResult
func expectRoundTrip(_ hexString: String, _ version: ProtocolVersion, sourceLocation: SourceLocation = #_sourceLocation) throws -> MQTTPacket {
    let input = buffer(hexString)
    let packet = try MQTTPacket.decode(bytes: input, version: version)
    #expect(hex(packet.encode(version: version)) == hex(input), sourceLocation: sourceLocation)
    return packet
}

/// One byte as two hex digits.
func byteHex(_ value: Int) -> String {
    precondition((0...255).contains(value))
    return (value < 16 ? "0" : "") + String(value, radix: 16)
}
