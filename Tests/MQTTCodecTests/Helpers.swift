import MQTTCodec
import NIOCore
import TestSupport
import Testing

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
