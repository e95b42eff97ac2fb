import NIOCore

/// Per-subscription options (5.0 §3.8.3.1; in 3.1.x only the QoS bits exist).
public struct SubscriptionOptions: Hashable, Sendable {
    public enum RetainHandling: UInt8, Hashable, Sendable {
        case sendOnSubscribe = 0
        case sendOnSubscribeIfNew = 1
        case doNotSend = 2
    }

    public var qos: QoS
    public var noLocal: Bool
    public var retainAsPublished: Bool
    public var retainHandling: RetainHandling

    public init(qos: QoS, noLocal: Bool = false, retainAsPublished: Bool = false, retainHandling: RetainHandling = .sendOnSubscribe) {
        self.qos = qos
        self.noLocal = noLocal
        self.retainAsPublished = retainAsPublished
        self.retainHandling = retainHandling
    }

    var byte: UInt8 {
        qos.rawValue | (noLocal ? 0x04 : 0) | (retainAsPublished ? 0x08 : 0) | retainHandling.rawValue << 4
    }
}

public struct Subscription: Hashable, Sendable {
    public var topicFilter: String
    public var options: SubscriptionOptions

    public init(topicFilter: String, options: SubscriptionOptions) {
        self.topicFilter = topicFilter
        self.options = options
    }
}

/// SUBSCRIBE (spec §3.8, 3.1.1 §3.8).
public struct Subscribe: Hashable, Sendable {
    public var packetIdentifier: UInt16
    public var properties: Properties
    public var subscriptions: [Subscription]

    public init(packetIdentifier: UInt16, properties: Properties = Properties(), subscriptions: [Subscription]) {
        self.packetIdentifier = packetIdentifier
        self.properties = properties
        self.subscriptions = subscriptions
    }

    static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> Subscribe {
        var reader = PacketReader(frame.body, packet: .subscribe, options: options)
        let packetIdentifier = try reader.readPacketIdentifier()
        let properties = version == .v5 ? try reader.readProperties(.subscribe) : Properties()
        var subscriptions: [Subscription] = []
        while !reader.isAtEnd {
            let filter = try reader.readString("topicFilter")
            if let violation = TopicSyntax.validateFilter(filter) {
                // mosquitto disconnects with "malformed" here rather than answering 0x8F.
                throw .malformed("SUBSCRIBE.topicFilter", violation.description, spec: violation.specStatement)
            }
            let byte = try reader.readByte("subscriptionOptions")
            let reservedMask: UInt8 = version == .v5 ? 0xC0 : 0xFC
            if byte & reservedMask != 0 {
                throw .malformed("SUBSCRIBE.subscriptionOptions", "reserved bits must be 0 (got 0x\(String(byte, radix: 16)))", spec: version == .v5 ? "MQTT-3.8.3-5" : "MQTT-3-8.3-4")
            }
            guard let qos = QoS(rawValue: byte & 0x03) else {
                throw .malformed("SUBSCRIBE.subscriptionOptions.qos", "QoS 3 is not a valid QoS", spec: "MQTT-3.8.3-2")
            }
            guard let retainHandling = SubscriptionOptions.RetainHandling(rawValue: (byte >> 4) & 0x03) else {
                throw .protocolError("SUBSCRIBE.subscriptionOptions.retainHandling", "Retain Handling 3 is reserved")
            }
            let noLocal = byte & 0x04 != 0
            if noLocal && filter.utf8.starts(with: "$share/".utf8) {
                throw .protocolError("SUBSCRIBE.subscriptionOptions.noLocal", "No Local must not be set on a shared subscription", spec: "MQTT-3.8.3-4")
            }
            subscriptions.append(Subscription(topicFilter: filter, options: SubscriptionOptions(qos: qos, noLocal: noLocal, retainAsPublished: byte & 0x08 != 0, retainHandling: retainHandling)))
        }
        if subscriptions.isEmpty {
            throw .protocolError("SUBSCRIBE.payload", "SUBSCRIBE must contain at least one topic filter", spec: version == .v5 ? "MQTT-3.8.3-2" : "MQTT-3.8.3-3")
        }
        return Subscribe(packetIdentifier: packetIdentifier, properties: properties, subscriptions: subscriptions)
    }

    var fixedHeader: UInt8 { PacketType.subscribe.rawValue << 4 | 0x02 }

    func encodeBody(into buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeInteger(packetIdentifier)
        if version == .v5 { properties.write(to: &buffer) }
        for subscription in subscriptions {
            buffer.writeMQTTString(subscription.topicFilter)
            buffer.writeInteger(version == .v5 ? subscription.options.byte : subscription.options.qos.rawValue)
        }
    }
}
