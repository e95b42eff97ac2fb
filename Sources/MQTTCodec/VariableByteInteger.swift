public import NIOCore

/// The MQTT Variable Byte Integer (spec §1.5.5 / 3.1.1 §2.2.3): 7 bits a byte, least
/// significant group first, high bit = "more bytes follow", at most 4 bytes.
public enum VariableByteInteger {
    /// The largest encodable value: "1 to 268,435,455" — a closed range, not `..<`.
    public static let maximum: UInt32 = 268_435_455

    /// The outcome of reading from a stream that may not have arrived yet.
    public enum ParseResult: Hashable, Sendable {
        case value(UInt32, byteCount: Int)
        /// Not an error: the stream has not delivered the whole integer yet.
        case needMoreBytes
    }

    /// Peeks a varint at `index` without moving the reader index.
    ///
    /// Throws for a fifth byte (MQTT-1.5.5-1 allows four) and for overlong encodings (a
    /// trailing zero group, e.g. `80 00` for 0), which mosquitto also rejects. Returns
    /// `.needMoreBytes` only when the bytes seen so far are a valid prefix.
    @inlinable
    public static func peek(in buffer: ByteBuffer, at index: Int, field: @autoclosure () -> String) throws(MQTTCodecError) -> ParseResult {
        var value: UInt32 = 0
        var multiplier: UInt32 = 1
        for position in 0..<4 {
            guard let byte = buffer.getInteger(at: index + position, as: UInt8.self) else {
                return .needMoreBytes
            }
            value += UInt32(byte & 0x7F) * multiplier
            if byte & 0x80 == 0 {
                if position > 0 && byte == 0 {
                    throw MQTTCodecError(.malformedPacket, field: field(), "overlong variable byte integer encoding (\(position + 1) bytes for \(value))", spec: "MQTT-1.5.5-1")
                }
                return .value(value, byteCount: position + 1)
            }
            multiplier &*= 128
        }
        throw MQTTCodecError(.malformedPacket, field: field(), "variable byte integer longer than 4 bytes", spec: "MQTT-1.5.5-1")
    }

    /// The number of bytes `value` takes on the wire.
    @inlinable
    public static func encodedLength(_ value: Int) -> Int {
        switch value {
        case ..<128: 1
        case ..<16_384: 2
        case ..<2_097_152: 3
        default: 4
        }
    }

    /// Writes `value` in its minimal encoding and returns the number of bytes written.
    @discardableResult
    @inlinable
    public static func write(_ value: Int, to buffer: inout ByteBuffer) -> Int {
        precondition(value >= 0 && value <= Int(maximum), "variable byte integer out of range: \(value)")
        var remaining = value
        var written = 0
        repeat {
            var byte = UInt8(remaining & 0x7F)
            remaining >>= 7
            if remaining > 0 { byte |= 0x80 }
            buffer.writeInteger(byte)
            written += 1
        } while remaining > 0
        return written
    }
}
