public import NIOCore

/// A message crossing the relay: what is queued on disk and sent over the link.
public struct RelayMessage: Sendable, Equatable {
    /// Per-peer sequence number, assigned when the message is queued.
    public var sequence: UInt64
    public var topic: String
    public var qos: UInt8
    public var retain: Bool
    /// MQTT 5.0 properties to carry (user properties, content type, correlation data,
    /// response topic, payload format, message expiry), already remapped; the raw property
    /// block without its length.
    public var properties: ByteBuffer
    public var payload: ByteBuffer
    /// When the message was queued (milliseconds since the epoch), for max age.
    public var queuedAt: UInt64
    /// Message expiry (seconds) from 5.0, 0 if none: dropped once exceeded.
    public var expirySeconds: UInt32
    /// The packet id of a QoS 2 delivery from the local broker (0 otherwise): after a restart a
    /// redelivered PUBLISH with this id is recognised as this message until the broker's PUBREL.
    public var brokerPacketID: UInt16

    public init(sequence: UInt64, topic: String, qos: UInt8, retain: Bool, properties: ByteBuffer = ByteBuffer(), payload: ByteBuffer,
                queuedAt: UInt64, expirySeconds: UInt32 = 0, brokerPacketID: UInt16 = 0) {
        self.sequence = sequence
        self.topic = topic
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.payload = payload
        self.queuedAt = queuedAt
        self.expirySeconds = expirySeconds
        self.brokerPacketID = brokerPacketID
    }

    /// Bytes on disk and on the wire (without framing).
    public var encodedSize: Int { 8 + 2 + topic.utf8.count + 1 + 1 + 4 + properties.readableBytes + 4 + payload.readableBytes + 8 + 4 + 2 }

    /// Where the properties begin in what `write(to:)` writes (sequence, topic, QoS, retain,
    /// properties length come first).
    static func propertiesOffset(topicLength: Int) -> Int { 8 + 2 + topicLength + 1 + 1 + 4 }

    public func write(to buffer: inout ByteBuffer) {
        // Fields are written in groups: one capacity check per group, not per field.
        buffer.reserveCapacity(minimumWritableBytes: encodedSize)
        buffer.writeMultipleIntegers(sequence, UInt16(topic.utf8.count))
        buffer.writeString(topic)
        buffer.writeMultipleIntegers(qos, UInt8(retain ? 1 : 0), UInt32(properties.readableBytes))
        buffer.writeImmutableBuffer(properties)
        buffer.writeInteger(UInt32(payload.readableBytes))
        buffer.writeImmutableBuffer(payload)
        buffer.writeMultipleIntegers(queuedAt, expirySeconds, brokerPacketID)
    }

    public static func read(from buffer: inout ByteBuffer) -> RelayMessage? {
        guard let sequence = buffer.readInteger(as: UInt64.self),
              let topicLength = buffer.readInteger(as: UInt16.self),
              let topic = try? buffer.readUTF8ValidatedString(length: Int(topicLength)),
              let qos = buffer.readInteger(as: UInt8.self), qos <= 2,
              let retain = buffer.readInteger(as: UInt8.self),
              let propertiesLength = buffer.readInteger(as: UInt32.self), let properties = buffer.readSlice(length: Int(propertiesLength)),
              let payloadLength = buffer.readInteger(as: UInt32.self), let payload = buffer.readSlice(length: Int(payloadLength)),
              let queuedAt = buffer.readInteger(as: UInt64.self),
              let expiry = buffer.readInteger(as: UInt32.self),
              let brokerPacketID = buffer.readInteger(as: UInt16.self) else { return nil }
        return RelayMessage(sequence: sequence, topic: topic, qos: qos, retain: retain != 0, properties: properties, payload: payload,
                            queuedAt: queuedAt, expirySeconds: expiry, brokerPacketID: brokerPacketID)
    }
}
