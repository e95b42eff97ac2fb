import NIOCore

/// UNSUBSCRIBE (spec §3.10, 3.1.1 §3.10).
public struct Unsubscribe: Hashable, Sendable {
    public var packetIdentifier: UInt16
    public var properties: Properties
    public var topicFilters: [String]

    public init(packetIdentifier: UInt16, properties: Properties = Properties(), topicFilters: [String]) {
        self.packetIdentifier = packetIdentifier
        self.properties = properties
        self.topicFilters = topicFilters
    }

    static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> Unsubscribe {
        var reader = PacketReader(frame.body, packet: .unsubscribe, options: options)
        let packetIdentifier = try reader.readPacketIdentifier()
        let properties = version == .v5 ? try reader.readProperties(.unsubscribe) : Properties()
        var filters: [String] = []
        while !reader.isAtEnd {
            let filter = try reader.readString("topicFilter")
            if let violation = TopicSyntax.validateFilter(filter) {
                throw .malformed("UNSUBSCRIBE.topicFilter", violation.description, spec: violation.specStatement)
            }
            filters.append(filter)
        }
        if filters.isEmpty {
            throw .protocolError("UNSUBSCRIBE.payload", "UNSUBSCRIBE must contain at least one topic filter", spec: version == .v5 ? "MQTT-3.10.3-2" : "MQTT-3.10.3-2")
        }
        return Unsubscribe(packetIdentifier: packetIdentifier, properties: properties, topicFilters: filters)
    }

    var fixedHeader: UInt8 { PacketType.unsubscribe.rawValue << 4 | 0x02 }

    func encodeBody(into buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeInteger(packetIdentifier)
        if version == .v5 { properties.write(to: &buffer) }
        for filter in topicFilters { buffer.writeMQTTString(filter) }
    }
}
