import Foundation
import MQTTCodec
import NIOCore
import TestSupport
import Testing

/// Captures fresh traffic between mosquitto_pub / mosquitto_sub and a real mosquitto (through
/// scripts/capture-session.py's recording relay on free loopback ports) and requires every
/// packet, both directions, 3.1 / 3.1.1 / 5.0, to decode and re-encode identically.
@Suite("Live capture from a real mosquitto")
struct LiveCaptureTests {
    @Test("A fresh capture decodes and re-encodes byte for byte", .timeLimit(.minutes(2)))
    func liveCapture() async throws {
        try await TestEnvironment.blocking {
            let output = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-capture-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: output) }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", TestEnvironment.repositoryRoot.appendingPathComponent("scripts/capture-session.py").path, output.path]
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            try #require(process.terminationStatus == 0, "capture-session.py failed (is mosquitto installed? run `make test`)")

            let files = try FileManager.default.contentsOfDirectory(at: output, includingPropertiesForKeys: nil).filter { $0.pathExtension == "session" }
            #expect(files.count == 12)
            var packets = 0
            var qos2FromServer = 0
            for file in files {
                let session = try CapturedSession.load(file)
                for connection in session.connections {
                    let client = try decodeStream(connection.client, version: nil)
                    let server = try decodeStream(connection.server, version: client.version)
                    for (frame, packet) in client.packets + server.packets {
                        #expect(packet.encode(version: client.version) == frame.bytes, "\(file.lastPathComponent): \(packet)")
                        packets += 1
                    }
                    qos2FromServer += server.packets.filter { if case .publish(let p) = $0.1 { p.qos == .exactlyOnce } else { false } }.count
                }
            }
            #expect(packets > 120)
            #expect(qos2FromServer >= 3)
        }
    }
}
