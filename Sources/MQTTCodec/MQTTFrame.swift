public import NIOCore

/// One complete MQTT control packet as it arrived: a validated fixed header and the original
/// bytes. Step one of decoding; `MQTTPacket.decode(_:version:)` is step two.
///
/// Keeping `bytes` lets the proxy forward an unchanged packet byte for byte without
/// re-encoding it.
public struct MQTTFrame: Hashable, Sendable, CustomStringConvertible {
    /// The whole packet: fixed header, remaining length, body.
    public let bytes: ByteBuffer
    /// Offset of the body (variable header + payload) inside `bytes`.
    @usableFromInline let bodyOffset: Int
    public let type: PacketType

    @inlinable
    init(bytes: ByteBuffer, bodyOffset: Int, type: PacketType) {
        self.bytes = bytes
        self.bodyOffset = bodyOffset
        self.type = type
    }

    /// The first byte: type in the high nibble, flags in the low nibble.
    @inlinable public var firstByte: UInt8 { bytes.getInteger(at: bytes.readerIndex)! }
    /// The low nibble of the fixed header.
    @inlinable public var flags: UInt8 { firstByte & 0x0F }
    /// The variable header and payload.
    @inlinable public var body: ByteBuffer { bytes.getSlice(at: bytes.readerIndex + bodyOffset, length: bytes.readableBytes - bodyOffset)! }
    /// Total bytes on the wire.
    @inlinable public var size: Int { bytes.readableBytes }

    public var description: String { "\(type) frame (\(size) bytes, flags 0x\(String(flags, radix: 16)))" }

    /// Frames exactly one packet from `bytes`, which must hold nothing else.
    public init(validating bytes: ByteBuffer, maximumPacketSize: Int = MQTTFrameDecoder.Configuration.largestPacketSize) throws(MQTTCodecError) {
        var copy = bytes
        guard let frame = try MQTTFrameDecoder.parseFrame(from: &copy, maximumPacketSize: maximumPacketSize, expectedType: nil) else {
            throw .malformed("fixedHeader", "the bytes end before the packet does (\(bytes.readableBytes) bytes)")
        }
        guard copy.readableBytes == 0 else {
            throw .malformed("fixedHeader.remainingLength", "\(copy.readableBytes) byte(s) after the end of the packet")
        }
        self = frame
    }
}

/// Rules on the fixed header's first byte, for every packet type (spec §2.1.3).
public enum FixedHeader {
    /// Validates the type nibble and its flags; returns the packet type.
    @inlinable
    public static func validate(_ firstByte: UInt8) throws(MQTTCodecError) -> PacketType {
        guard let type = PacketType(rawValue: firstByte >> 4) else {
            throw .malformed("fixedHeader.type", "packet type 0 is reserved", spec: "MQTT-2.1.2")
        }
        let flags = firstByte & 0x0F
        if let required = type.requiredFlags {
            if flags != required {
                throw .malformed("\(type).fixedHeader.flags", "flags must be 0x\(String(required, radix: 16)), got 0x\(String(flags, radix: 16))",
                                 spec: type == .subscribe ? "MQTT-3.8.1-1" : type == .unsubscribe ? "MQTT-3.10.1-1" : type == .pubrel ? "MQTT-3.6.1-1" : "MQTT-2.1.3-1")
            }
            return type
        }
        // PUBLISH: DUP(3) QoS(2-1) RETAIN(0)
        let qos = (flags >> 1) & 0x03
        if qos == 3 {
            throw .malformed("PUBLISH.fixedHeader.qos", "QoS 3 is not a valid QoS", spec: "MQTT-3.3.1-4")
        }
        if qos == 0 && flags & 0x08 != 0 {
            throw .malformed("PUBLISH.fixedHeader.dup", "DUP must be 0 for a QoS 0 message", spec: "MQTT-3.3.1-2")
        }
        return type
    }
}

/// Step one of decoding: splits a byte stream into `MQTTFrame`s.
///
/// The declared size is checked against the limit as soon as the remaining length is known,
/// before the body is buffered, and the first packet may have a smaller limit (a peer that has
/// not yet sent CONNECT must not make us buffer megabytes; mosquitto's
/// `01-bad-initial-packets.py` sends a 100 MB PUBLISH as the first packet).
public struct MQTTFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = MQTTFrame

    public struct Configuration: Hashable, Sendable {
        /// The largest size an MQTT packet can have: 1 + 4 + 268,435,455.
        public static let largestPacketSize = 1 + 4 + Int(VariableByteInteger.maximum)

        /// Largest accepted packet (whole packet, fixed header included, as MQTT 5.0's Maximum
        /// Packet Size counts it). Default 1 MiB.
        public var maximumPacketSize: Int
        /// Largest accepted first packet (the CONNECT, or whatever arrives instead).
        /// Default 128 KiB: room for a 64 KiB will payload plus credentials and properties.
        public var maximumFirstPacketSize: Int
        /// If set, the first packet must have this type, checked on its first byte. A server
        /// sets `.connect` (MQTT-3.1.0-1); a client leaves it nil because a v5 server may send
        /// AUTH before CONNACK.
        public var expectedFirstPacket: PacketType?

        public init(maximumPacketSize: Int = 1 << 20, maximumFirstPacketSize: Int = 128 << 10, expectedFirstPacket: PacketType? = nil) {
            self.maximumPacketSize = maximumPacketSize
            self.maximumFirstPacketSize = maximumFirstPacketSize
            self.expectedFirstPacket = expectedFirstPacket
        }

        /// For the side that accepts client connections.
        public static func server(maximumPacketSize: Int = 1 << 20, maximumConnectPacketSize: Int = 128 << 10) -> Configuration {
            Configuration(maximumPacketSize: maximumPacketSize, maximumFirstPacketSize: min(maximumPacketSize, maximumConnectPacketSize), expectedFirstPacket: .connect)
        }

        /// For the side that connects to a broker.
        public static func client(maximumPacketSize: Int = 1 << 20) -> Configuration {
            Configuration(maximumPacketSize: maximumPacketSize, maximumFirstPacketSize: maximumPacketSize, expectedFirstPacket: nil)
        }
    }

    public var configuration: Configuration
    private var framesDecoded = 0

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Frames one packet from the front of `buffer`, consuming it, or returns nil and consumes
    /// nothing when more bytes are needed. Throws for a malformed or oversized header.
    @inlinable
    public static func parseFrame(from buffer: inout ByteBuffer, maximumPacketSize: Int, expectedType: PacketType?) throws(MQTTCodecError) -> MQTTFrame? {
        guard let firstByte = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        let type = try FixedHeader.validate(firstByte)
        if let expectedType, type != expectedType {
            throw .protocolError("fixedHeader.type", "first packet must be \(expectedType), got \(type)", spec: expectedType == .connect ? "MQTT-3.1.0-1" : nil)
        }
        switch try VariableByteInteger.peek(in: buffer, at: buffer.readerIndex + 1, field: "\(type).fixedHeader.remainingLength") {
        case .needMoreBytes:
            return nil
        case .value(let remainingLength, let lengthBytes):
            let headerLength = 1 + lengthBytes
            let total = headerLength + Int(remainingLength)
            if total > maximumPacketSize {
                throw MQTTCodecError(.packetTooLarge, field: "\(type).fixedHeader.remainingLength", "packet of \(total) bytes exceeds the maximum of \(maximumPacketSize)", spec: "MQTT-3.2.2-15")
            }
            guard let bytes = buffer.readSlice(length: total) else { return nil }
            return MQTTFrame(bytes: bytes, bodyOffset: headerLength, type: type)
        }
    }

    /// Frames the next packet of the stream from `buffer` (consuming it), applying the
    /// first-packet rules; nil when more bytes are needed. For streams that do not arrive
    /// through a ChannelPipeline (a multiplexed link stream).
    public mutating func nextFrame(from buffer: inout ByteBuffer) throws(MQTTCodecError) -> MQTTFrame? {
        let first = framesDecoded == 0
        let limit = first ? configuration.maximumFirstPacketSize : configuration.maximumPacketSize
        guard let frame = try Self.parseFrame(from: &buffer, maximumPacketSize: limit, expectedType: first ? configuration.expectedFirstPacket : nil) else {
            return nil
        }
        framesDecoded += 1
        return frame
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try nextFrame(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A half-received packet at EOF is dropped with the connection; it was never complete,
        // so there is nothing to forward. ByteToMessageHandler reports leftover bytes.
        try decode(context: context, buffer: &buffer)
    }
}

@available(*, unavailable)
extension MQTTFrameDecoder: Sendable {}
