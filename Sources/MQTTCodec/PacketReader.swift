public import NIOCore

/// Reads the fields of one complete frame body.
///
/// The frame decoder has already waited for every byte the fixed header promised, so
/// running out of bytes here is never "need more bytes": it is a malformed packet whose
/// declared length is shorter than its contents. (mqtt-nio conflates the two and stalls.)
@usableFromInline
struct PacketReader {
    @usableFromInline var buffer: ByteBuffer
    @usableFromInline let packet: PacketType
    @usableFromInline let options: DecodingOptions

    @inlinable
    init(_ buffer: ByteBuffer, packet: PacketType, options: DecodingOptions) {
        self.buffer = buffer
        self.packet = packet
        self.options = options
    }

    @inlinable var readableBytes: Int { buffer.readableBytes }
    @inlinable var isAtEnd: Bool { buffer.readableBytes == 0 }

    // Field names are autoclosures: they are only built when an error is thrown, so the
    // hot path never allocates a string for them.
    @inlinable
    func name(_ field: () -> String) -> String { "\(packet).\(field())" }

    @inlinable
    func truncated(_ field: () -> String) -> MQTTCodecError {
        .malformed(name(field), "packet ends before this field is complete (remaining length too short)")
    }

    @inlinable
    mutating func readByte(_ field: @autoclosure () -> String) throws(MQTTCodecError) -> UInt8 {
        guard let value = buffer.readInteger(as: UInt8.self) else { throw truncated(field) }
        return value
    }

    @inlinable
    mutating func readUInt16(_ field: @autoclosure () -> String) throws(MQTTCodecError) -> UInt16 {
        guard let value = buffer.readInteger(as: UInt16.self) else { throw truncated(field) }
        return value
    }

    @inlinable
    mutating func readUInt32(_ field: @autoclosure () -> String) throws(MQTTCodecError) -> UInt32 {
        guard let value = buffer.readInteger(as: UInt32.self) else { throw truncated(field) }
        return value
    }

    @inlinable
    mutating func readVariableByteInteger(_ field: @autoclosure () -> String) throws(MQTTCodecError) -> UInt32 {
        switch try VariableByteInteger.peek(in: buffer, at: buffer.readerIndex, field: name(field)) {
        case .value(let value, let count):
            buffer.moveReaderIndex(forwardBy: count)
            return value
        case .needMoreBytes:
            throw truncated(field)
        }
    }

    /// A packet identifier, which must be non-zero wherever it appears (MQTT-2.2.1-3 in
    /// 3.1.1 and 5.0: "non-zero 16-bit Packet Identifier").
    @inlinable
    mutating func readPacketIdentifier() throws(MQTTCodecError) -> UInt16 {
        let id = try readUInt16("packetIdentifier")
        if id == 0 {
            throw .malformed(name { "packetIdentifier" }, "packet identifier must be non-zero", spec: "MQTT-2.2.1-3")
        }
        return id
    }

    /// Binary Data: a 2-byte length and that many bytes, returned as a slice (no copy).
    @inlinable
    mutating func readBinary(_ field: @autoclosure () -> String) throws(MQTTCodecError) -> ByteBuffer {
        let length = Int(try readUInt16(field() + ".length"))
        guard let slice = buffer.readSlice(length: length) else { throw truncated(field) }
        return slice
    }

    /// A UTF-8 Encoded String, validated per MQTT's rules (see `MQTTUTF8`).
    @inlinable
    mutating func readString(_ field: @autoclosure () -> String) throws(MQTTCodecError) -> String {
        let length = Int(try readUInt16(field() + ".length"))
        guard buffer.readableBytes >= length else { throw truncated(field) }
        let result = buffer.withUnsafeReadableBytes { bytes in
            MQTTUTF8.decode(UnsafeRawBufferPointer(rebasing: bytes.prefix(length)), allowDiscouragedCodePoints: options.allowDiscouragedCodePoints)
        }
        switch result {
        case .success(let string):
            buffer.moveReaderIndex(forwardBy: length)
            return string
        case .failure(let violation):
            throw .malformed(name(field), violation.description, spec: violation.specStatement)
        }
    }

    @inlinable
    mutating func readRest() -> ByteBuffer {
        buffer.readSlice(length: buffer.readableBytes)!
    }

    @inlinable
    func expectEnd() throws(MQTTCodecError) {
        if buffer.readableBytes != 0 {
            throw .malformed(name { "remainingLength" }, "\(buffer.readableBytes) unexpected byte(s) after the last field")
        }
    }
}

/// Options that change how strictly the decoder reads, shared by every packet.
public struct DecodingOptions: Hashable, Sendable {
    /// Accept control characters and Unicode non-characters in strings. The spec says they
    /// "SHOULD NOT" be sent (MQTT-1.5.4-3) and mosquitto refuses them, so the default is false.
    public var allowDiscouragedCodePoints: Bool

    public init(allowDiscouragedCodePoints: Bool = false) {
        self.allowDiscouragedCodePoints = allowDiscouragedCodePoints
    }

    public static let strict = DecodingOptions()
}

extension ByteBuffer {
    /// Writes an MQTT UTF-8 Encoded String (2-byte length prefix).
    @inlinable
    mutating func writeMQTTString(_ string: String) {
        let lengthIndex = writerIndex
        writeInteger(UInt16(0))
        let written = writeString(string)
        precondition(written <= Int(UInt16.max), "MQTT string longer than 65535 bytes")
        setInteger(UInt16(written), at: lengthIndex)
    }

    /// Writes MQTT Binary Data (2-byte length prefix).
    @inlinable
    mutating func writeMQTTBinary(_ bytes: ByteBuffer) {
        precondition(bytes.readableBytes <= Int(UInt16.max), "MQTT binary data longer than 65535 bytes")
        writeInteger(UInt16(bytes.readableBytes))
        writeImmutableBuffer(bytes)
    }
}

/// Length of an MQTT string on the wire, including its 2-byte prefix.
@inlinable
func mqttStringLength(_ string: String) -> Int { 2 + string.utf8.count }

/// Builds one frame: fixed header, remaining length, body.
///
/// The body is written after a 5-byte gap; the header is then written right-aligned into the
/// gap and the reader index moved to it, so no body bytes are copied.
@usableFromInline
struct FrameWriter {
    @usableFromInline var buffer: ByteBuffer
    @usableFromInline static let headerSpace = 5

    @inlinable
    init(allocator: ByteBufferAllocator, bodyCapacity: Int) {
        buffer = allocator.buffer(capacity: Self.headerSpace + bodyCapacity)
        buffer.moveWriterIndex(forwardBy: Self.headerSpace)
        buffer.moveReaderIndex(forwardBy: Self.headerSpace)
    }

    @inlinable
    mutating func finish(typeAndFlags: UInt8) -> ByteBuffer {
        let bodyLength = buffer.readableBytes
        let lengthBytes = VariableByteInteger.encodedLength(bodyLength)
        let start = Self.headerSpace - 1 - lengthBytes
        buffer.setInteger(typeAndFlags, at: start)
        var remaining = bodyLength
        var index = start + 1
        repeat {
            var byte = UInt8(remaining & 0x7F)
            remaining >>= 7
            if remaining > 0 { byte |= 0x80 }
            buffer.setInteger(byte, at: index)
            index += 1
        } while remaining > 0
        buffer.moveReaderIndex(to: start)
        return buffer
    }
}
