public import NIOCore

/// Follows packet boundaries in an MQTT byte stream without buffering or decoding it: only
/// each fixed header is read, bodies are skipped by their length, so a header split across
/// reads is fine and a megabyte PUBLISH costs nothing.
///
/// For a relay of raw bytes that must still know what kind of packets pass (the link's site A
/// tunnels a local client's bytes to the peer, which decodes them): whether a read carried
/// anything but QoS 0 PUBLISHes, i.e. whether the other end will answer it.
/// Not a validator: a stream it cannot follow (type 0, a varint longer than four bytes) makes
/// it stop, and `isLost` tells the caller so; the decoder at the other end rejects such bytes.
public struct MQTTPacketBoundaryScanner: Sendable, Hashable {
    private enum State: Sendable, Hashable {
        /// At a packet boundary.
        case header
        /// Reading the remaining length: the value so far and the next group's multiplier.
        case length(value: Int, multiplier: Int, bytes: Int)
        /// Skipping the body; this many bytes remain.
        case body(Int)
        case lost
    }

    private var state = State.header

    public init() {}

    /// The stream could not be followed; no further packet is seen.
    public var isLost: Bool { state == .lost }

    /// Feeds the next bytes of the stream and calls `onPacket` with the first byte of every
    /// packet that starts in them (type in the high nibble, flags in the low one).
    public mutating func scan(_ bytes: ByteBuffer, onPacket: (UInt8) -> Void) {
        bytes.withUnsafeReadableBytes { raw in
            var index = 0
            while index < raw.count {
                switch state {
                case .lost:
                    return
                case .header:
                    let first = raw[index]
                    index += 1
                    guard first >> 4 != 0 else { state = .lost; return }
                    onPacket(first)
                    state = .length(value: 0, multiplier: 1, bytes: 0)
                case .length(let value, let multiplier, let count):
                    let byte = raw[index]
                    index += 1
                    let total = value + Int(byte & 0x7F) * multiplier
                    if byte & 0x80 == 0 {
                        state = total == 0 ? .header : .body(total)
                    } else if count == 3 {
                        state = .lost
                        return
                    } else {
                        state = .length(value: total, multiplier: multiplier * 128, bytes: count + 1)
                    }
                case .body(let remaining):
                    let skipped = min(remaining, raw.count - index)
                    index += skipped
                    state = skipped == remaining ? .header : .body(remaining - skipped)
                }
            }
        }
    }
}

extension MQTTPacketBoundaryScanner {
    /// Whether a packet whose first byte is `first`, sent by a client, gets an answer from the
    /// server: everything but a QoS 0 PUBLISH (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK,
    /// PINGRESP, CONNACK; a DISCONNECT ends the connection, which acknowledges it too).
    ///
    /// A subscriber's PUBACK and PUBCOMP are counted as answered although nothing answers
    /// them: the next delivery carries the ACK, and acknowledging them at once made the
    /// subscriber send them one by one (link benchmark: QoS 1 CPU per message 20 → 29 µs,
    /// throughput not better).
    @inlinable
    public static func clientPacketGetsAnswer(_ first: UInt8) -> Bool {
        !(first >> 4 == PacketType.publish.rawValue && first & 0x06 == 0)
    }
}
