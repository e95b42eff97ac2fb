public import NIOCore

/// The mqbridge link protocol, carried inside TLS 1.3 between paired sites.
///
/// Every frame: type (1 byte), flags (1), stream id (4, big-endian), payload length (4), payload.
/// Stream 0 is the link itself (HELLO, PING, PONG, GOAWAY). Streams are opened by OPEN, carry
/// DATA in both directions under credit-based flow control (WINDOW), and end with a FIN flag
/// on DATA in each direction or with RESET. The side that dialled the TLS connection uses odd
/// stream ids, the side that accepted it even ones, so both can open streams without clashing.
public struct LinkFrame: Hashable, Sendable {
    public enum Kind: UInt8, Sendable, CaseIterable {
        /// version (1), site name (2 + n), the sender's SPKI fingerprint (32).
        case hello = 0x01
        case ping = 0x02
        case pong = 0x03
        /// Last frame before closing: the reason as UTF-8.
        case goAway = 0x04
        /// service name (2 + n), origin description (2 + n).
        case open = 0x10
        /// the service's kind (1; absent from older peers): `openOKMQTT` or `openOKBytes`.
        case openOK = 0x11
        /// reason code (1), message as UTF-8.
        case openRefused = 0x12
        /// bytes; flag FIN: the sender will send no more on this stream.
        case data = 0x13
        /// credit increment (4).
        case window = 0x14
        /// reason as UTF-8: the stream is gone both ways.
        case reset = 0x15
    }

    public static let finFlag: UInt8 = 0x01
    /// OPEN_OK payloads: the stream reaches an MQTT broker through the peer's proxy, or it
    /// carries bytes the peer does not interpret (a TCP service, the relay).
    public static let openOKMQTT = ByteBuffer(bytes: [1])
    public static let openOKBytes = ByteBuffer(bytes: [0])

    /// OPEN_REFUSED reason codes: the payload's first byte, before a message as UTF-8.
    public enum RefusalCode: UInt8, Sendable {
        /// No such service for this peer (or no relay rules for it).
        case notOffered = 1
        /// The service's target could not be reached.
        case targetUnreachable = 2
        /// The link has `max_streams` streams open.
        case tooManyStreams = 3
    }

    public static func openRefused(stream: UInt32, _ code: RefusalCode, _ message: String) -> LinkFrame {
        var payload = ByteBuffer()
        payload.writeInteger(code.rawValue)
        payload.writeString(message)
        return LinkFrame(.openRefused, stream: stream, payload: payload)
    }
    public static let headerSize = 10
    /// No frame may be larger; DATA is cut into pieces of at most `maximumDataPayload`.
    public static let maximumPayload = 1 << 20
    public static let maximumDataPayload = 32 << 10

    public var kind: Kind
    public var flags: UInt8
    public var stream: UInt32
    public var payload: ByteBuffer

    public init(_ kind: Kind, flags: UInt8 = 0, stream: UInt32 = 0, payload: ByteBuffer = ByteBuffer()) {
        self.kind = kind
        self.flags = flags
        self.stream = stream
        self.payload = payload
    }

    public var isFIN: Bool { flags & Self.finFlag != 0 }

    public func write(to buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: Self.headerSize + payload.readableBytes)
        buffer.writeMultipleIntegers(kind.rawValue, flags, stream, UInt32(payload.readableBytes))
        buffer.writeImmutableBuffer(payload)
    }
}

/// A link frame that cannot be read: the link is closed (the peer runs something else, or a
/// version we do not speak).
public struct LinkProtocolError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Frames the TLS plaintext into `LinkFrame`s, checking each length before buffering.
public struct LinkFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = LinkFrame

    public init() {}

    /// The next frame from the front of `buffer` (consumed), nil when more bytes are needed.
    public mutating func nextFrame(from buffer: inout ByteBuffer) throws(LinkProtocolError) -> LinkFrame? {
        guard buffer.readableBytes >= LinkFrame.headerSize,
              let typeByte = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let flags = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self),
              let stream = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt32.self),
              let length = buffer.getInteger(at: buffer.readerIndex + 6, as: UInt32.self) else {
            return nil
        }
        guard let kind = LinkFrame.Kind(rawValue: typeByte) else {
            throw LinkProtocolError("unknown link frame type 0x\(String(typeByte, radix: 16))")
        }
        guard Int(length) <= LinkFrame.maximumPayload else {
            throw LinkProtocolError("link frame of \(length) bytes exceeds \(LinkFrame.maximumPayload)")
        }
        guard buffer.readableBytes >= LinkFrame.headerSize + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: LinkFrame.headerSize)
        let payload = buffer.readSlice(length: Int(length))!
        return LinkFrame(kind, flags: flags, stream: stream, payload: payload)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try nextFrame(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }
}

@available(*, unavailable)
extension LinkFrameDecoder: Sendable {}

extension ByteBuffer {
    /// A 2-byte length and UTF-8 bytes.
    mutating func writeShortString(_ string: String) {
        let bytes = Array(string.utf8.prefix(Int(UInt16.max)))
        writeInteger(UInt16(bytes.count))
        writeBytes(bytes)
    }

    mutating func readShortString() -> String? {
        guard let length = readInteger(as: UInt16.self), let bytes = readBytes(length: Int(length)) else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }
}

/// The HELLO each side sends once TLS is up. The dialling side treats the link as accepted
/// only when the other side's HELLO arrives: in TLS 1.3 a client sees its handshake complete
/// before the server has judged the client's certificate.
public struct LinkHello: Hashable, Sendable {
    public static let currentVersion: UInt8 = 1

    public var version: UInt8
    public var name: String
    public var fingerprint: SPKIFingerprint

    public init(version: UInt8 = Self.currentVersion, name: String, fingerprint: SPKIFingerprint) {
        self.version = version
        self.name = name
        self.fingerprint = fingerprint
    }

    public var frame: LinkFrame {
        var payload = ByteBuffer()
        payload.writeInteger(version)
        payload.writeShortString(name)
        payload.writeBytes(fingerprint.bytes)
        return LinkFrame(.hello, payload: payload)
    }

    public init(parsing payload: ByteBuffer) throws(LinkProtocolError) {
        var payload = payload
        guard let version = payload.readInteger(as: UInt8.self), let name = payload.readShortString(),
              let bytes = payload.readBytes(length: 32), payload.readableBytes == 0 else {
            throw LinkProtocolError("malformed HELLO")
        }
        self.init(version: version, name: name, fingerprint: SPKIFingerprint(bytes: bytes))
    }
}
