import NIOCore

/// What the relay stream between two sites carries, each record `length (4) | type (1) | body`.
///
/// The sender's `epoch` (random, fixed for its queue directory) and the per-peer `sequence`
/// name a message uniquely, which is how the receiver recognises a resend. `floor` is the
/// sender's oldest unsettled sequence: everything below it will never be sent again, so the
/// receiver can forget it.
enum RelayRecord: Equatable {
    enum Outcome: UInt8, Equatable {
        /// Published at the receiving site and acknowledged by its broker.
        case delivered = 0
        /// No `in` rule at the receiving site accepts the topic.
        case noRule = 1
        /// The receiving site's ACL does not let the peer write the topic.
        case denied = 2
    }

    /// A message; sequence 0 is a QoS 0 message that is neither queued nor acknowledged.
    case message(epoch: UInt64, floor: UInt64, RelayMessage)
    case acknowledgement(epoch: UInt64, [(sequence: UInt64, outcome: Outcome)])

    static func == (lhs: RelayRecord, rhs: RelayRecord) -> Bool {
        switch (lhs, rhs) {
        case let (.message(e1, f1, m1), .message(e2, f2, m2)): e1 == e2 && f1 == f2 && m1 == m2
        case let (.acknowledgement(e1, a1), .acknowledgement(e2, a2)):
            e1 == e2 && a1.map(\.sequence) == a2.map(\.sequence) && a1.map(\.outcome) == a2.map(\.outcome)
        default: false
        }
    }

    private static let messageType: UInt8 = 1
    private static let acknowledgementType: UInt8 = 2
    /// Larger records are a protocol violation. A message is bounded by what the relay takes
    /// from its broker; its record adds fixed fields (sequence, epoch, lengths, expiry) to the
    /// packet's topic, properties and payload, so the margin keeps a message at that limit
    /// within this one (else it could never cross: refused, resent, refused).
    static let maximumLength = RelayBrokerClient.maximumPacketSize + (64 << 10)

    /// Bytes `write(to:)` appends.
    var encodedSize: Int {
        switch self {
        case .message(_, _, let message): 4 + 1 + 8 + 8 + message.encodedSize
        case .acknowledgement(_, let entries): 4 + 1 + 8 + 9 * entries.count
        }
    }

    func write(to buffer: inout ByteBuffer) {
        let size = encodedSize
        buffer.reserveCapacity(minimumWritableBytes: size)
        switch self {
        case .message(let epoch, let floor, let message):
            buffer.writeMultipleIntegers(UInt32(size - 4), Self.messageType, epoch, floor)
            message.write(to: &buffer)
        case .acknowledgement(let epoch, let entries):
            buffer.writeMultipleIntegers(UInt32(size - 4), Self.acknowledgementType, epoch)
            for entry in entries {
                buffer.writeMultipleIntegers(entry.sequence, entry.outcome.rawValue)
            }
        }
    }

    /// The next whole record in `buffer`, nil if more bytes are needed; throws on garbage.
    static func read(from buffer: inout ByteBuffer) throws(LinkProtocolError) -> (RelayRecord, size: Int)? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= 1, Int(length) <= maximumLength else { throw LinkProtocolError("relay record of \(length) bytes") }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        var body = buffer.readSlice(length: Int(length))!
        let type = body.readInteger(as: UInt8.self)!
        switch type {
        case messageType:
            guard let epoch = body.readInteger(as: UInt64.self), let floor = body.readInteger(as: UInt64.self),
                  let message = RelayMessage.read(from: &body), body.readableBytes == 0 else {
                throw LinkProtocolError("malformed relay message record")
            }
            return (.message(epoch: epoch, floor: floor, message), 4 + Int(length))
        case acknowledgementType:
            guard let epoch = body.readInteger(as: UInt64.self), body.readableBytes % 9 == 0 else {
                throw LinkProtocolError("malformed relay acknowledgement record")
            }
            var entries: [(UInt64, Outcome)] = []
            while let sequence = body.readInteger(as: UInt64.self), let raw = body.readInteger(as: UInt8.self) {
                guard let outcome = Outcome(rawValue: raw) else { throw LinkProtocolError("unknown relay outcome \(raw)") }
                entries.append((sequence, outcome))
            }
            return (.acknowledgement(epoch: epoch, entries.map { (sequence: $0.0, outcome: $0.1) }), 4 + Int(length))
        default:
            throw LinkProtocolError("unknown relay record type \(type)")
        }
    }
}
