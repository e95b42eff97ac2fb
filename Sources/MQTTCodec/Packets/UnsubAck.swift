import NIOCore

/// UNSUBACK (spec §3.11, 3.1.1 §3.11). In 3.1.x it carries only the packet identifier.
public struct UnsubAck: Hashable, Sendable {
    public var packetIdentifier: UInt16
    /// MQTT 5.0 only.
    public var properties: Properties
    /// MQTT 5.0 only: one per topic filter. Empty in 3.1.x.
    public var reasonCodes: [ReasonCode]

    public init(packetIdentifier: UInt16, properties: Properties = Properties(), reasonCodes: [ReasonCode] = []) {
        self.packetIdentifier = packetIdentifier
        self.properties = properties
        self.reasonCodes = reasonCodes
    }

    static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> UnsubAck {
        var reader = PacketReader(frame.body, packet: .unsuback, options: options)
        let packetIdentifier = try reader.readPacketIdentifier()
        guard version == .v5 else {
            try reader.expectEnd()
            return UnsubAck(packetIdentifier: packetIdentifier)
        }
        let properties = try reader.readProperties(.unsuback)
        let codes = try reader.readReasonCodes(isValid: { $0.isValid(in: .unsuback) })
        return UnsubAck(packetIdentifier: packetIdentifier, properties: properties, reasonCodes: codes)
    }

    var fixedHeader: UInt8 { PacketType.unsuback.rawValue << 4 }

    func encodeBody(into buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeInteger(packetIdentifier)
        guard version == .v5 else { return }
        properties.write(to: &buffer)
        for code in reasonCodes { buffer.writeInteger(code.rawValue) }
    }
}
