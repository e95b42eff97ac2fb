public import NIOCore

/// Step two of decoding: one case per control packet, one struct per case, so a `switch`
/// that forgets a packet type does not compile.
public enum MQTTPacket: Hashable, Sendable {
    case connect(Connect)
    case connAck(ConnAck)
    case publish(Publish)
    case pubAck(PubAck)
    case pubRec(PubRec)
    case pubRel(PubRel)
    case pubComp(PubComp)
    case subscribe(Subscribe)
    case subAck(SubAck)
    case unsubscribe(Unsubscribe)
    case unsubAck(UnsubAck)
    case pingReq(PingReq)
    case pingResp(PingResp)
    case disconnect(Disconnect)
    case auth(Auth)

    public var type: PacketType {
        switch self {
        case .connect: .connect
        case .connAck: .connack
        case .publish: .publish
        case .pubAck: .puback
        case .pubRec: .pubrec
        case .pubRel: .pubrel
        case .pubComp: .pubcomp
        case .subscribe: .subscribe
        case .subAck: .suback
        case .unsubscribe: .unsubscribe
        case .unsubAck: .unsuback
        case .pingReq: .pingreq
        case .pingResp: .pingresp
        case .disconnect: .disconnect
        case .auth: .auth
        }
    }

    /// Decodes a CONNECT, which carries its own protocol version.
    public static func decodeConnect(_ frame: MQTTFrame, options: DecodingOptions = .strict) throws(MQTTCodecError) -> Connect {
        guard frame.type == .connect else {
            throw .protocolError("fixedHeader.type", "expected CONNECT, got \(frame.type)", spec: "MQTT-3.1.0-1")
        }
        return try Connect.decode(frame, options: options)
    }

    /// Decodes and validates a PUBLISH frame (the bulk of any traffic) to its struct, for a
    /// caller that has checked the frame's type and wants no enum around the result.
    @inlinable
    public static func decodePublish(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions = .strict) throws(MQTTCodecError) -> Publish {
        guard frame.type == .publish else {
            throw .protocolError("fixedHeader.type", "expected PUBLISH, got \(frame.type)")
        }
        return try Publish.decode(frame, version: version, options: options)
    }

    /// Decodes and validates one frame for a connection of the given version.
    @inlinable
    public static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions = .strict) throws(MQTTCodecError) -> MQTTPacket {
        switch frame.type {
        case .publish: return .publish(try Publish.decode(frame, version: version, options: options))
        case .puback: return .pubAck(try PubAck.decode(frame, version: version, options: options))
        case .pubrec: return .pubRec(try PubRec.decode(frame, version: version, options: options))
        case .pubrel: return .pubRel(try PubRel.decode(frame, version: version, options: options))
        case .pubcomp: return .pubComp(try PubComp.decode(frame, version: version, options: options))
        default: return try decodeOther(frame, version: version, options: options)
        }
    }

    @usableFromInline
    static func decodeOther(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> MQTTPacket {
        switch frame.type {
        case .connect:
            return .connect(try Connect.decode(frame, options: options))
        case .connack: return .connAck(try ConnAck.decode(frame, version: version, options: options))
        case .subscribe: return .subscribe(try Subscribe.decode(frame, version: version, options: options))
        case .suback: return .subAck(try SubAck.decode(frame, version: version, options: options))
        case .unsubscribe: return .unsubscribe(try Unsubscribe.decode(frame, version: version, options: options))
        case .unsuback: return .unsubAck(try UnsubAck.decode(frame, version: version, options: options))
        case .pingreq:
            try PacketReader(frame.body, packet: .pingreq, options: options).expectEmpty()
            return .pingReq(PingReq())
        case .pingresp:
            try PacketReader(frame.body, packet: .pingresp, options: options).expectEmpty()
            return .pingResp(PingResp())
        case .disconnect: return .disconnect(try Disconnect.decode(frame, version: version, options: options))
        case .auth: return .auth(try Auth.decode(frame, version: version, options: options))
        case .publish, .puback, .pubrec, .pubrel, .pubcomp:
            return try decode(frame, version: version, options: options)
        }
    }

    /// Frames and decodes one complete packet held alone in `bytes`.
    public static func decode(bytes: ByteBuffer, version: ProtocolVersion, options: DecodingOptions = .strict) throws(MQTTCodecError) -> MQTTPacket {
        try decode(MQTTFrame(validating: bytes), version: version, options: options)
    }

    /// Encodes the whole packet (fixed header included) for a connection of `version`.
    ///
    /// For every valid packet, `encode(decode(x)) == x`. A CONNECT is always encoded in its own
    /// `protocolVersion`.
    public func encode(version: ProtocolVersion, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var writer: FrameWriter
        let first: UInt8
        switch self {
        case .connect(let p):
            writer = FrameWriter(allocator: allocator, bodyCapacity: 64 + p.clientIdentifier.utf8.count + (p.will?.payload.readableBytes ?? 0))
            p.encodeBody(into: &writer.buffer)
            first = p.fixedHeader
        case .connAck(let p):
            writer = FrameWriter(allocator: allocator, bodyCapacity: 8)
            p.encodeBody(into: &writer.buffer, version: version)
            first = p.fixedHeader
        case .publish(let p):
            writer = FrameWriter(allocator: allocator, bodyCapacity: p.estimatedBodySize)
            p.encodeBody(into: &writer.buffer, version: version)
            first = p.fixedHeader
        case .pubAck(let p): return Self.encodeAcknowledgement(p, version: version, allocator: allocator)
        case .pubRec(let p): return Self.encodeAcknowledgement(p, version: version, allocator: allocator)
        case .pubRel(let p): return Self.encodeAcknowledgement(p, version: version, allocator: allocator)
        case .pubComp(let p): return Self.encodeAcknowledgement(p, version: version, allocator: allocator)
        case .subscribe(let p):
            writer = FrameWriter(allocator: allocator, bodyCapacity: 8 + p.subscriptions.reduce(0) { $0 + 3 + $1.topicFilter.utf8.count })
            p.encodeBody(into: &writer.buffer, version: version)
            first = p.fixedHeader
        case .subAck(let p):
            writer = FrameWriter(allocator: allocator, bodyCapacity: 4 + p.reasonCodes.count)
            p.encodeBody(into: &writer.buffer, version: version)
            first = p.fixedHeader
        case .unsubscribe(let p):
            writer = FrameWriter(allocator: allocator, bodyCapacity: 8 + p.topicFilters.reduce(0) { $0 + 2 + $1.utf8.count })
            p.encodeBody(into: &writer.buffer, version: version)
            first = p.fixedHeader
        case .unsubAck(let p):
            writer = FrameWriter(allocator: allocator, bodyCapacity: 4 + p.reasonCodes.count)
            p.encodeBody(into: &writer.buffer, version: version)
            first = p.fixedHeader
        case .pingReq:
            writer = FrameWriter(allocator: allocator, bodyCapacity: 0)
            first = PacketType.pingreq.rawValue << 4
        case .pingResp:
            writer = FrameWriter(allocator: allocator, bodyCapacity: 0)
            first = PacketType.pingresp.rawValue << 4
        case .disconnect(let p):
            writer = FrameWriter(allocator: allocator, bodyCapacity: 2)
            p.encodeBody(into: &writer.buffer, version: version)
            first = p.fixedHeader
        case .auth(let p):
            precondition(version == .v5, "AUTH exists only in MQTT 5.0")
            writer = FrameWriter(allocator: allocator, bodyCapacity: 2)
            p.encodeBody(into: &writer.buffer)
            first = p.fixedHeader
        }
        return writer.finish(typeAndFlags: first)
    }

    private static func encodeAcknowledgement<Kind>(_ packet: PublishAcknowledgement<Kind>, version: ProtocolVersion, allocator: ByteBufferAllocator) -> ByteBuffer {
        var writer = FrameWriter(allocator: allocator, bodyCapacity: 4)
        packet.encodeBody(into: &writer.buffer, version: version)
        return writer.finish(typeAndFlags: packet.fixedHeader)
    }
}

/// A decoded packet together with the frame it came from, so an unchanged packet can be
/// forwarded byte for byte.
public struct DecodedPacket: Hashable, Sendable {
    public var packet: MQTTPacket
    public var frame: MQTTFrame

    public init(packet: MQTTPacket, frame: MQTTFrame) {
        self.packet = packet
        self.frame = frame
    }
}
