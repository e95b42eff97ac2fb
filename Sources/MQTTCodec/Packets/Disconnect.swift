import NIOCore

/// DISCONNECT (spec §3.14, 3.1.1 §3.14). In 3.1.x it has no body.
public struct Disconnect: Hashable, Sendable {
    /// MQTT 5.0; nil when omitted (remaining length 0 means "Normal disconnection").
    public var reasonCode: ReasonCode?
    /// MQTT 5.0; nil when the property length was omitted (remaining length < 2).
    public var properties: Properties?

    public init(reasonCode: ReasonCode? = nil, properties: Properties? = nil) {
        self.reasonCode = reasonCode
        self.properties = properties
    }

    static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> Disconnect {
        var reader = PacketReader(frame.body, packet: .disconnect, options: options)
        guard version == .v5 else {
            try reader.expectEmpty()
            return Disconnect()
        }
        let (reasonCode, properties) = try reader.readOptionalReasonAndProperties(.disconnect)
        try reader.expectEnd()
        return Disconnect(reasonCode: reasonCode, properties: properties)
    }

    var fixedHeader: UInt8 { PacketType.disconnect.rawValue << 4 }

    func encodeBody(into buffer: inout ByteBuffer, version: ProtocolVersion) {
        if version == .v5 { buffer.writeOptionalReasonAndProperties(reasonCode, properties) }
    }
}
