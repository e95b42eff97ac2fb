import Foundation
import MQTTCodec
import NIOCore
import TestSupport
import Testing

/// Sessions captured from mosquitto_pub / mosquitto_sub talking to a real mosquitto 2.0
/// (scripts/capture-session.py). Every packet in both directions must decode and re-encode to
/// the same bytes.
struct CapturedSession {
    var name: String
    /// (client→server stream, server→client stream) per TCP connection.
    var connections: [(client: ByteBuffer, server: ByteBuffer)]

    static func load(_ url: URL) throws -> CapturedSession {
        var connections: [(ByteBuffer, ByteBuffer)] = []
        for line in try String(contentsOf: url, encoding: .utf8).split(separator: "\n") {
            if line.hasPrefix("= ") { connections.append((ByteBuffer(), ByteBuffer())); continue }
            if line.hasPrefix("#") || line.isEmpty { continue }
            var chunk = buffer(String(line.dropFirst(2)))
            if line.hasPrefix("C ") { connections[connections.count - 1].0.writeBuffer(&chunk) } else { connections[connections.count - 1].1.writeBuffer(&chunk) }
        }
        return CapturedSession(name: url.deletingPathExtension().lastPathComponent, connections: connections)
    }

    static func all() throws -> [CapturedSession] {
        let dir = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
        return try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "session" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
            .map(load)
    }
}

/// Frames and decodes a whole stream; returns the packets or throws the first error.
func decodeStream(_ stream: ByteBuffer, version: ProtocolVersion?) throws -> (version: ProtocolVersion, packets: [(MQTTFrame, MQTTPacket)]) {
    var stream = stream
    var version = version
    var packets: [(MQTTFrame, MQTTPacket)] = []
    while let frame = try MQTTFrameDecoder.parseFrame(from: &stream, maximumPacketSize: 1 << 20, expectedType: nil) {
        let packet: MQTTPacket
        if frame.type == .connect {
            let connect = try MQTTPacket.decodeConnect(frame)
            version = connect.protocolVersion
            packet = .connect(connect)
        } else {
            packet = try MQTTPacket.decode(frame, version: version!)
        }
        packets.append((frame, packet))
    }
    #expect(stream.readableBytes == 0, "stream ends inside a packet")
    return (version!, packets)
}

@Suite("Captured mosquitto sessions")
struct CapturedSessionTests {
    @Test("Every captured packet decodes and re-encodes byte for byte")
    func capturedRoundTrip() throws {
        let sessions = try CapturedSession.all()
        #expect(sessions.count >= 12)
        var typesSeen: [ProtocolVersion: Set<PacketType>] = [:]
        var count = 0
        for session in sessions {
            for connection in session.connections {
                let client = try decodeStream(connection.client, version: nil)
                let server = try decodeStream(connection.server, version: client.version)
                for (frame, packet) in client.packets + server.packets {
                    #expect(packet.encode(version: client.version) == frame.bytes, "\(session.name): \(packet)")
                    typesSeen[client.version, default: []].insert(packet.type)
                    count += 1
                }
            }
        }
        // Every version saw the whole publish/subscribe vocabulary.
        for version in ProtocolVersion.allCases {
            let expected: Set<PacketType> = [.connect, .connack, .publish, .puback, .pubrec, .pubrel, .pubcomp, .subscribe, .suback, .unsubscribe, .unsuback, .disconnect]
            #expect(expected.isSubset(of: typesSeen[version] ?? []), "\(version): \(typesSeen[version] ?? [])")
        }
        #expect(count > 100)
    }

    @Test("The v5 capture carries the properties mosquitto_pub was given")
    func v5Properties() throws {
        let session = try CapturedSession.all().first { $0.name == "v5-publish-qos1-retained" }!
        let client = try decodeStream(session.connections[0].client, version: nil)
        guard case .connect(let connect) = client.packets[0].1 else { Issue.record("no CONNECT"); return }
        #expect(connect.username == "alice")
        #expect(connect.password == ByteBuffer(string: "s3cret"))
        #expect(connect.properties.sessionExpiryInterval == 300)
        let publish = client.packets.compactMap { if case .publish(let p) = $0.1 { p } else { nil } }.first!
        #expect(publish.topic == "sensors/hum")
        #expect(publish.retain)
        #expect(publish.qos == .atLeastOnce)
        #expect(publish.properties.responseTopic == "reply/to")
        #expect(publish.properties.messageExpiryInterval == 60)
        #expect(publish.properties.contains(.correlationData(ByteBuffer(string: "c0rr"))))
        #expect(publish.properties.contains(.contentType("text/plain")))
        #expect(publish.properties.userProperties.map(\.name) == ["k"])
    }

    @Test("The v3.1.1 will capture carries the will")
    func will() throws {
        let session = try CapturedSession.all().first { $0.name == "v311-publish-qos2-will" }!
        let client = try decodeStream(session.connections[0].client, version: nil)
        guard case .connect(let connect) = client.packets[0].1 else { Issue.record("no CONNECT"); return }
        #expect(connect.will == Connect.Will(topic: "status/pub", payload: ByteBuffer(string: "gone"), qos: .atLeastOnce, retain: true))
        #expect(connect.keepAlive == 30)
    }
}
