import Foundation

/// Which of a peer's messages this site has already published: the receiver's half of "no
/// loss, no duplicates". A message is recorded once the local broker acknowledged it and
/// before the acknowledgement goes back to the sender, so a resend (after a lost ACK, a link
/// cut or a restart of either side) is recognised and only acknowledged again.
///
/// Per sender epoch: a high-water mark (every sequence up to it is settled) and the settled
/// sequences above it. Records are appended to a file with `write(2)`: the kernel keeps them
/// when the process is killed; a power loss can lose the last ones, which at worst turns into
/// a QoS 1 duplicate. The file is rewritten compactly when it grows.
///
/// Delivery and high-water records are gathered and written by `flush()`, which the relay
/// calls before it sends acknowledgements (one write per batch, not one or two per message);
/// QoS 2 intent records are written at once, before the PUBLISH they announce.
final class DeliveryLedger {
    private struct Window {
        var highWater: UInt64 = 0
        var above: Set<UInt64> = []
    }

    private enum RecordType: UInt8 {
        case delivered = 0
        case highWater = 1
        /// A QoS 2 publication to the broker is starting with this packet id.
        case intent = 2
        /// Its PUBREC arrived: the broker has it; only PUBREL remains.
        case released = 3
    }

    struct Key: Hashable {
        var epoch: UInt64
        var sequence: UInt64
    }

    /// A QoS 2 exchange with the local broker, recorded so that after a restart it is resumed
    /// with the same packet id (which the broker recognises) instead of published anew.
    struct Intent: Equatable {
        var packetID: UInt16
        var released: Bool
    }

    private let path: String
    private var windows: [UInt64: Window] = [:]
    private(set) var intents: [Key: Intent] = [:]
    private var fd: Int32 = -1
    private var appended = 0
    /// Records not yet handed to the kernel.
    private var unwritten: [UInt8] = []
    private static let compactAfter = 1 << 20

    init(path: String) throws {
        self.path = path
        if let data = FileManager.default.contents(atPath: path) {
            var offset = 0
            while offset + 17 <= data.count {
                let type = data[data.startIndex + offset]
                let epoch = Self.integer(data, offset + 1)
                let value = Self.integer(data, offset + 9)
                switch type {
                case RecordType.delivered.rawValue:
                    insert(epoch: epoch, sequence: value)
                    intents[Key(epoch: epoch, sequence: value)] = nil
                case RecordType.highWater.rawValue:
                    advance(epoch: epoch, floor: value + 1)
                case RecordType.intent.rawValue:
                    guard offset + 19 <= data.count else { break }
                    let id = UInt16(data[data.startIndex + offset + 17]) << 8 | UInt16(data[data.startIndex + offset + 18])
                    intents[Key(epoch: epoch, sequence: value)] = Intent(packetID: id, released: false)
                    offset += 2
                case RecordType.released.rawValue:
                    intents[Key(epoch: epoch, sequence: value)]?.released = true
                default:
                    break
                }
                offset += 17
            }
        }
        try rewrite()
    }

    deinit {
        flush()
        if fd >= 0 { close(fd) }
    }

    /// Hands the gathered records to the kernel.
    func flush() {
        guard !unwritten.isEmpty, fd >= 0 else { return }
        _ = unwritten.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        unwritten.removeAll(keepingCapacity: true)
    }

    private static func integer(_ data: Data, _ offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<8 { value = value << 8 | UInt64(data[data.startIndex + offset + i]) }
        return value
    }

    func contains(epoch: UInt64, sequence: UInt64) -> Bool {
        guard let window = windows[epoch] else { return false }
        return sequence <= window.highWater || window.above.contains(sequence)
    }

    /// Records a published message.
    func record(epoch: UInt64, sequence: UInt64) {
        insert(epoch: epoch, sequence: sequence)
        intents[Key(epoch: epoch, sequence: sequence)] = nil
        append(type: RecordType.delivered.rawValue, epoch: epoch, value: sequence)
    }

    func recordIntent(epoch: UInt64, sequence: UInt64, packetID: UInt16) {
        intents[Key(epoch: epoch, sequence: sequence)] = Intent(packetID: packetID, released: false)
        append(type: RecordType.intent.rawValue, epoch: epoch, value: sequence, packetID: packetID)
        flush()  // before the PUBLISH: a restart must resume this exchange, not start another
    }

    func recordReleased(epoch: UInt64, sequence: UInt64) {
        intents[Key(epoch: epoch, sequence: sequence)]?.released = true
        append(type: RecordType.released.rawValue, epoch: epoch, value: sequence)
        flush()
    }

    /// The sender will never send anything below `floor` again.
    func forget(epoch: UInt64, below floor: UInt64) {
        guard floor > 1, (windows[epoch]?.highWater ?? 0) < floor - 1 else { return }
        advance(epoch: epoch, floor: floor)
        append(type: RecordType.highWater.rawValue, epoch: epoch, value: floor - 1)
    }

    private func insert(epoch: UInt64, sequence: UInt64) {
        var window = windows[epoch] ?? Window()
        if sequence > window.highWater { window.above.insert(sequence) }
        while window.above.remove(window.highWater + 1) != nil { window.highWater += 1 }
        windows[epoch] = window
    }

    private func advance(epoch: UInt64, floor: UInt64) {
        var window = windows[epoch] ?? Window()
        guard floor > 0, floor - 1 > window.highWater else { return }
        window.highWater = floor - 1
        window.above = window.above.filter { $0 > window.highWater }
        while window.above.remove(window.highWater + 1) != nil { window.highWater += 1 }
        windows[epoch] = window
    }

    private func append(type: UInt8, epoch: UInt64, value: UInt64, packetID: UInt16? = nil) {
        unwritten.append(type)
        for shift in stride(from: 56, through: 0, by: -8) { unwritten.append(UInt8(truncatingIfNeeded: epoch >> UInt64(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { unwritten.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
        if let packetID { unwritten += [UInt8(packetID >> 8), UInt8(packetID & 0xFF)] }
        if unwritten.count >= 64 << 10 { flush() }
        appended += 1
        if appended >= Self.compactAfter { try? rewrite() }
    }

    /// Writes the current state as a new file and renames it over the old one.
    private func rewrite() throws {
        let temporary = path + ".tmp"
        let newFD = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o600)
        guard newFD >= 0 else { throw DurableQueue.AppendError.io("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        if fd >= 0 { close(fd) }
        fd = newFD
        appended = 0
        unwritten.removeAll(keepingCapacity: true)  // the state written below includes them
        let current = windows
        for (epoch, window) in current {
            append(type: RecordType.highWater.rawValue, epoch: epoch, value: window.highWater)
            for sequence in window.above { append(type: RecordType.delivered.rawValue, epoch: epoch, value: sequence) }
        }
        for (key, intent) in intents {
            append(type: RecordType.intent.rawValue, epoch: key.epoch, value: key.sequence, packetID: intent.packetID)
            if intent.released { append(type: RecordType.released.rawValue, epoch: key.epoch, value: key.sequence) }
        }
        flush()
        fsync(fd)
        guard rename(temporary, path) == 0 else { throw DurableQueue.AppendError.io("cannot rename \(temporary): \(String(cString: strerror(errno)))") }
    }
}

@available(*, unavailable)
extension DeliveryLedger: Sendable {}
