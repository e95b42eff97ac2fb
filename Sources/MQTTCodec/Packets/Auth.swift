import NIOCore

/// AUTH (spec §3.15): MQTT 5.0 enhanced authentication. Not a packet in 3.1.x.
public struct Auth: Hashable, Sendable {
    /// nil when omitted (remaining length 0 means Success with no properties).
    public var reasonCode: ReasonCode?
    public var properties: Properties?

    public init(reasonCode: ReasonCode? = nil, properties: Properties? = nil) {
        self.reasonCode = reasonCode
        self.properties = properties
    }

    static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> Auth {
        guard version == .v5 else {
            throw .malformed("AUTH", "AUTH (packet type 15) is reserved before MQTT 5.0", spec: "MQTT-2.1.2")
        }
        var reader = PacketReader(frame.body, packet: .auth, options: options)
        // mosquitto also accepts a reason code without a property length here.
        let (reasonCode, properties) = try reader.readOptionalReasonAndProperties(.auth)
        try reader.expectEnd()
        return Auth(reasonCode: reasonCode, properties: properties)
    }

    var fixedHeader: UInt8 { PacketType.auth.rawValue << 4 }

    func encodeBody(into buffer: inout ByteBuffer) {
        buffer.writeOptionalReasonAndProperties(reasonCode, properties)
    }
}
