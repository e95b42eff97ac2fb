import MQTTCodec
import NIOCore

/// The start of a PUBLISH from a broker that is larger than this side frames.
///
/// A 3.1.x client cannot tell the broker its limit (5.0 has Maximum Packet Size), so a broker
/// may deliver such a message to the proxy (for a client) or to the relay. Closing over it
/// does not help: at QoS ≥ 1 the broker delivers it again on every reconnect and the session
/// is stuck behind it for good. So the message is skipped without being buffered — its topic
/// and packet identifier are read, the rest of its bytes discarded as they arrive — and the
/// caller acknowledges it, logs it and counts it.
struct OversizedPublish: Equatable {
    /// The topic as sent (for the log; never decoded as a topic: the packet is not checked).
    var topic: String
    var qos: QoS
    var packetIdentifier: UInt16?
    /// The whole packet, fixed header included.
    var size: Int
}

/// What a broker sent: a packet, or a PUBLISH too large to frame, skipped.
enum BrokerFrame {
    case packet(MQTTFrame)
    case oversizedPublish(OversizedPublish)
}

/// Frames packets from a broker like `MQTTFrameDecoder`, except that a PUBLISH over the limit
/// is skipped (see `OversizedPublish`) when `skipsOversizedPublish` is set. Any other packet
/// over the limit, or a PUBLISH when it is not set (a 5.0 broker was told the limit and must
/// not exceed it, MQTT-3.1.2-24), is still an error.
struct BrokerFrameDecoder: IncrementalFrameDecoder {
    private var decoder: MQTTFrameDecoder
    let skipsOversizedPublish: Bool
    /// Bytes of a skipped PUBLISH still to come and be discarded.
    private var skipping = 0

    init(maximumPacketSize: Int, skipsOversizedPublish: Bool) {
        decoder = MQTTFrameDecoder(configuration: .client(maximumPacketSize: maximumPacketSize))
        self.skipsOversizedPublish = skipsOversizedPublish
    }

    mutating func nextFrame(from buffer: inout ByteBuffer) throws -> BrokerFrame? {
        if skipping > 0 {
            let discarded = min(skipping, buffer.readableBytes)
            buffer.moveReaderIndex(forwardBy: discarded)
            skipping -= discarded
            if skipping > 0 { return nil }
        }
        let tooLarge: MQTTCodecError
        do {
            return try decoder.nextFrame(from: &buffer).map(BrokerFrame.packet)
        } catch {
            guard error.kind == .packetTooLarge, skipsOversizedPublish else { throw error }
            tooLarge = error
        }
        guard let firstByte = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self), firstByte >> 4 == PacketType.publish.rawValue,
              let qos = QoS(rawValue: (firstByte >> 1) & 0x03) else { throw tooLarge }
        guard case .value(let remainingLength, let lengthBytes) = try VariableByteInteger.peek(in: buffer, at: buffer.readerIndex + 1, field: "PUBLISH.fixedHeader.remainingLength") else {
            return nil  // cannot happen: the size was known to be too large
        }
        // Topic length, topic, and the packet identifier at QoS > 0: at most 65,539 bytes
        // are held until they have arrived.
        let variableHeader = buffer.readerIndex + 1 + lengthBytes
        guard let topicLength = buffer.getInteger(at: variableHeader, as: UInt16.self) else { return nil }
        let needed = 2 + Int(topicLength) + (qos == .atMostOnce ? 0 : 2)
        guard buffer.readableBytes >= 1 + lengthBytes + needed else { return nil }
        let topic = buffer.getString(at: variableHeader + 2, length: Int(topicLength)) ?? ""
        let packetIdentifier = qos == .atMostOnce ? nil : buffer.getInteger(at: variableHeader + 2 + Int(topicLength), as: UInt16.self)
        if packetIdentifier == 0 { throw MQTTCodecError(.protocolError, field: "PUBLISH.packetIdentifier", "packet identifier 0", spec: "MQTT-2.3.1-1") }
        let size = 1 + lengthBytes + Int(remainingLength)
        let available = min(size, buffer.readableBytes)
        buffer.moveReaderIndex(forwardBy: available)
        skipping = size - available
        return .oversizedPublish(OversizedPublish(topic: topic, qos: qos, packetIdentifier: packetIdentifier, size: size))
    }
}
