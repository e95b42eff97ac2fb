public import MQTTCodec
public import NIOCore

/// A recorded MQTT session in the text format written by `scripts/capture-session.py`:
///
///     # comment
///     = connection 1
///     C <hex of bytes the client sent>
///     S <hex of bytes the server sent>
///
/// Parsed from a String; the caller reads the file.
public struct SessionTranscript: Sendable {
    public struct Connection: Sendable {
        public var clientBytes = ByteBuffer()
        public var serverBytes = ByteBuffer()
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    public var comments: [String] = []
    public var connections: [Connection] = []

    public init(parsing text: String) throws(ParseError) {
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingTrailingWhitespace()
            if line.isEmpty { continue }
            if line.hasPrefix("#") { comments.append(String(line.dropFirst().drop { $0 == " " })); continue }
            if line.hasPrefix("=") { connections.append(Connection()); continue }
            guard line.count > 2, line.hasPrefix("C ") || line.hasPrefix("S "), !connections.isEmpty else {
                throw ParseError(line: index + 1, message: "expected '= connection N', 'C <hex>' or 'S <hex>'")
            }
            guard var bytes = ByteBuffer(hexDigits: line.dropFirst(2)) else {
                throw ParseError(line: index + 1, message: "not an even number of hex digits")
            }
            if line.hasPrefix("C ") {
                connections[connections.count - 1].clientBytes.writeBuffer(&bytes)
            } else {
                connections[connections.count - 1].serverBytes.writeBuffer(&bytes)
            }
        }
    }

    /// One decoded packet of a transcript, or the error that stopped decoding its stream.
    public struct Entry: Sendable {
        public enum Direction: String, Sendable { case clientToServer = "C→S", serverToClient = "S→C" }
        public var connection: Int
        public var direction: Direction
        public var result: Result<DecodedPacket, MQTTCodecError>
        /// Whether re-encoding gave back the original bytes.
        public var reencodesIdentically: Bool
    }

    /// Decodes both directions of every connection. The client stream starts with CONNECT,
    /// which gives the version used for both directions.
    public func decode(options: DecodingOptions = .strict) -> [Entry] {
        var entries: [Entry] = []
        for (index, connection) in connections.enumerated() {
            var version: ProtocolVersion?
            var client = decodeStream(connection.clientBytes, connection: index + 1, direction: .clientToServer, version: &version, options: options)
            var server = decodeStream(connection.serverBytes, connection: index + 1, direction: .serverToClient, version: &version, options: options)
            // Interleave for readability: the order within each direction is exact; across
            // directions the transcript does not keep timing, so show request/response pairs.
            while !client.isEmpty || !server.isEmpty {
                if !client.isEmpty { entries.append(client.removeFirst()) }
                if !server.isEmpty { entries.append(server.removeFirst()) }
            }
        }
        return entries
    }

    private func decodeStream(_ bytes: ByteBuffer, connection: Int, direction: Entry.Direction, version: inout ProtocolVersion?, options: DecodingOptions) -> [Entry] {
        var stream = bytes
        var entries: [Entry] = []
        do {
            while let frame = try MQTTFrameDecoder.parseFrame(from: &stream, maximumPacketSize: MQTTFrameDecoder.Configuration.largestPacketSize, expectedType: nil) {
                let packet: MQTTPacket
                if frame.type == .connect {
                    let connect = try MQTTPacket.decodeConnect(frame, options: options)
                    version = connect.protocolVersion
                    packet = .connect(connect)
                } else {
                    packet = try MQTTPacket.decode(frame, version: version ?? .v3_1_1, options: options)
                }
                let same = packet.encode(version: version ?? .v3_1_1) == frame.bytes
                entries.append(Entry(connection: connection, direction: direction, result: .success(DecodedPacket(packet: packet, frame: frame)), reencodesIdentically: same))
            }
        } catch {
            entries.append(Entry(connection: connection, direction: direction, result: .failure(error), reencodesIdentically: false))
        }
        return entries
    }
}

extension ByteBuffer {
    /// Parses hex digits ("0a1b…"); nil for an odd count or a non-hex character.
    init?(hexDigits: Substring) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hexDigits.utf8.count / 2)
        var high: UInt8?
        for char in hexDigits.utf8 {
            let nibble: UInt8
            switch char {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = char - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = char - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = char - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let h = high { bytes.append(h << 4 | nibble); high = nil } else { high = nibble }
        }
        guard high == nil else { return nil }
        self.init(bytes: bytes)
    }
}

extension Substring {
    fileprivate func trimmingTrailingWhitespace() -> Substring {
        var result = self
        while let last = result.last, last.isWhitespace { result.removeLast() }
        return result
    }
}
