public import NIOCore

/// PUBLISH (spec §3.3, 3.1.1 §3.3).
public struct Publish: Hashable, Sendable, CustomStringConvertible {
    public enum Flags {
        public static let dup: UInt8 = 0x08
        public static let qosShift: UInt8 = 1
        public static let qosMask: UInt8 = 0x06
        public static let retain: UInt8 = 0x01
    }

    public var dup: Bool
    public var qos: QoS
    public var retain: Bool
    /// The topic name as sent. Empty only in MQTT 5.0 when `properties.topicAlias` is set; the
    /// proxy then resolves the alias before any ACL decision.
    public var topic: String
    /// Present exactly when `qos` > 0.
    public var packetIdentifier: UInt16?
    public var properties: Properties
    public var payload: ByteBuffer

    public init(dup: Bool = false, qos: QoS, retain: Bool = false, topic: String, packetIdentifier: UInt16?, properties: Properties = Properties(), payload: ByteBuffer) {
        self.dup = dup
        self.qos = qos
        self.retain = retain
        self.topic = topic
        self.packetIdentifier = packetIdentifier
        self.properties = properties
        self.payload = payload
    }

    public var description: String {
        "PUBLISH(topic: \(topic), \(qos), id: \(packetIdentifier.map(String.init) ?? "-"), retain: \(retain), dup: \(dup), \(payload.readableBytes) bytes)"
    }

    @inlinable
    static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> Publish {
        let flags = frame.flags
        guard let qos = QoS(rawValue: (flags & Flags.qosMask) >> Flags.qosShift) else {
            throw .malformed("PUBLISH.fixedHeader.qos", "QoS 3 is not a valid QoS", spec: "MQTT-3.3.1-4")
        }
        var reader = PacketReader(frame.body, packet: .publish, options: options)
        let topic = try reader.readString("topicName")
        let packetIdentifier = qos == .atMostOnce ? nil : try reader.readPacketIdentifier()
        let properties = version == .v5 ? try reader.readProperties(.publish) : Properties()
        if topic.isEmpty {
            if version != .v5 {
                throw .protocolError("PUBLISH.topicName", "topic name must be at least one character long", spec: "MQTT-4.7.3-1")
            }
            if properties.topicAlias == nil {
                throw .protocolError("PUBLISH.topicName", "empty topic name without a Topic Alias", spec: "MQTT-3.3.2-1")
            }
        } else if TopicSyntax.nameContainsWildcard(topic) {
            throw .protocolError("PUBLISH.topicName", "topic name must not contain wildcards '+' or '#'", spec: "MQTT-3.3.2-2")
        }
        return Publish(dup: flags & Flags.dup != 0, qos: qos, retain: flags & Flags.retain != 0, topic: topic,
                       packetIdentifier: packetIdentifier, properties: properties, payload: reader.readRest())
    }

    var fixedHeader: UInt8 {
        var first = PacketType.publish.rawValue << 4 | qos.rawValue << Flags.qosShift
        if dup { first |= Flags.dup }
        if retain { first |= Flags.retain }
        return first
    }

    var estimatedBodySize: Int { mqttStringLength(topic) + 2 + payload.readableBytes + (properties.isEmpty ? 1 : 16) }

    func encodeBody(into buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeMQTTString(topic)
        if qos != .atMostOnce {
            precondition(packetIdentifier != nil, "a QoS \(qos.rawValue) PUBLISH needs a packet identifier")
            buffer.writeInteger(packetIdentifier!)
        }
        if version == .v5 { properties.write(to: &buffer) }
        buffer.writeImmutableBuffer(payload)
    }
}
