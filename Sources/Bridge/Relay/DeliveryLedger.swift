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
    /// Bytes of whole records in the file: where a torn write is cut back to.
    private var fileLength: off_t = 0
    private var appended = 0
    /// Records not yet handed to the kernel.
    private var unwritten: [UInt8] = []
    private static let compactAfter = 1 << 20
    /// Why the last flush failed.
    private(set) var lastWriteError = ""
    /// Tests: a write stops after this many bytes and fails as a full disk does (ENOSPC).
    var injectedWriteLimit: Int?

    init(path: String) throws {
        self.path = path
        var wholeRecords = 0
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
            wholeRecords = offset
        }
        do {
            try rewrite()
        } catch {
            // No room for a compact copy (a full disk): go on appending to the file as it is,
            // cut to its whole records.
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            guard fd >= 0 else { throw error }
            _ = ftruncate(fd, off_t(wholeRecords))
            fileLength = off_t(wholeRecords)
        }
    }

    deinit {
        flush()
        if fd >= 0 { close(fd) }
    }

    /// Hands the gathered records to the kernel. False when the disk refused them (full or
    /// failing): they stay gathered for the next flush, and the file is cut back to its whole
    /// records, since a torn one would shift every record appended after it (and a misread
    /// high-water mark would take messages never published for settled ones).
    @discardableResult
    func flush() -> Bool {
        guard !unwritten.isEmpty, fd >= 0 else { return true }
        guard let written = Self.writeAll(unwritten, to: fd, limit: injectedWriteLimit) else {
            lastWriteError = String(cString: strerror(errno))
            _ = ftruncate(fd, fileLength)
            return false
        }
        fileLength += off_t(written)
        unwritten.removeAll(keepingCapacity: true)
        return true
    }

    /// Writes all of `bytes` (a short write goes on where it stopped); nil on an error.
    private static func writeAll(_ bytes: [UInt8], to fd: Int32, limit: Int? = nil) -> Int? {
        bytes.withUnsafeBytes { buffer -> Int? in
            var offset = 0
            while offset < buffer.count {
                if let limit, offset >= limit {
                    errno = ENOSPC
                    return nil
                }
                let n = write(fd, buffer.baseAddress! + offset, min(buffer.count - offset, limit.map { $0 - offset } ?? Int.max))
                if n < 0 {
                    if errno == EINTR { continue }
                    return nil
                }
                offset += n
            }
            return offset
        }
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

    private static func encode(into bytes: inout [UInt8], type: UInt8, epoch: UInt64, value: UInt64, packetID: UInt16? = nil) {
        bytes.append(type)
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: epoch >> UInt64(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
        if let packetID { bytes += [UInt8(packetID >> 8), UInt8(packetID & 0xFF)] }
    }

    private func append(type: UInt8, epoch: UInt64, value: UInt64, packetID: UInt16? = nil) {
        Self.encode(into: &unwritten, type: type, epoch: epoch, value: value, packetID: packetID)
        if unwritten.count >= 64 << 10 { flush() }
        appended += 1
        if appended >= Self.compactAfter {
            appended = 0  // on failure, the next try is another compactAfter records away
            try? rewrite()
        }
    }

    /// Writes the current state as a new file and renames it over the old one. If the new
    /// file cannot be written whole, the old one stays, and so do the gathered records.
    private func rewrite() throws {
        let temporary = path + ".tmp"
        let newFD = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o600)
        func failure(_ what: String) -> DurableQueue.AppendError { .io("cannot \(what) \(temporary): \(String(cString: strerror(errno)))") }
        guard newFD >= 0 else { throw failure("write") }
        var state: [UInt8] = []
        for (epoch, window) in windows {
            Self.encode(into: &state, type: RecordType.highWater.rawValue, epoch: epoch, value: window.highWater)
            for sequence in window.above { Self.encode(into: &state, type: RecordType.delivered.rawValue, epoch: epoch, value: sequence) }
        }
        for (key, intent) in intents {
            Self.encode(into: &state, type: RecordType.intent.rawValue, epoch: key.epoch, value: key.sequence, packetID: intent.packetID)
            if intent.released { Self.encode(into: &state, type: RecordType.released.rawValue, epoch: key.epoch, value: key.sequence) }
        }
        /// The old file stays: the new one goes.
        func abandon(_ what: String) -> DurableQueue.AppendError {
            let error = failure(what)
            close(newFD)
            unlink(temporary)
            return error
        }
        guard let written = Self.writeAll(state, to: newFD, limit: injectedWriteLimit), fsync(newFD) == 0 else { throw abandon("write") }
        guard rename(temporary, path) == 0 else { throw abandon("rename") }
        if fd >= 0 { close(fd) }
        fd = newFD
        fileLength = off_t(written)
        appended = 0
        unwritten.removeAll(keepingCapacity: true)  // the state written above includes them
    }
}

@available(*, unavailable)
extension DeliveryLedger: Sendable {}
