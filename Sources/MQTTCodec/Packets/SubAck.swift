import NIOCore

/// SUBACK (spec §3.9, 3.1.1 §3.9): one result per requested filter, in order.
public struct SubAck: Hashable, Sendable {
    public var packetIdentifier: UInt16
    /// MQTT 5.0 only.
    public var properties: Properties
    /// Granted QoS (0x00-0x02) or a failure code; in 3.1.1 the only failure is 0x80.
    public var reasonCodes: [ReasonCode]

    public init(packetIdentifier: UInt16, properties: Properties = Properties(), reasonCodes: [ReasonCode]) {
        self.packetIdentifier = packetIdentifier
        self.properties = properties
        self.reasonCodes = reasonCodes
    }

    static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> SubAck {
        var reader = PacketReader(frame.body, packet: .suback, options: options)
        let packetIdentifier = try reader.readPacketIdentifier()
        let properties = version == .v5 ? try reader.readProperties(.suback) : Properties()
        let codes = try reader.readReasonCodes(
            isValid: { version == .v5 ? $0.isValid(in: .suback) : [0x00, 0x01, 0x02, 0x80].contains($0.rawValue) },
            spec: version == .v5 ? nil : "MQTT-3.9.3-2")
        return SubAck(packetIdentifier: packetIdentifier, properties: properties, reasonCodes: codes)
    }

    var fixedHeader: UInt8 { PacketType.suback.rawValue << 4 }

    func encodeBody(into buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeInteger(packetIdentifier)
        if version == .v5 { properties.write(to: &buffer) }
        for code in reasonCodes { buffer.writeInteger(code.rawValue) }
    }
}
