import ArgumentParser
import CMosquitto
import MQTTCodec
import NIOCore

/// Decode + validate throughput of PUBLISH, the packet on the hot path: framing (step one)
/// and the typed decode with every validation (step two), from one contiguous stream as a
/// socket read delivers it.
struct CodecBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "codec", abstract: "PUBLISH decode+validate throughput (64 B and 4 KiB payloads).")

    @Option(help: "Seconds to run each case.")
    var seconds: Double = 2

    func run() throws {
        var major: Int32 = 0, minor: Int32 = 0, revision: Int32 = 0
        mosquitto_lib_version(&major, &minor, &revision)
        print("mqbridge codec benchmark — decode+validate PUBLISH (framing + typed decode), one stream, \(seconds)s per case")
        print("")
        print(pad("case", 34) + pad("packets/s", 14) + pad("ns/packet", 12) + pad("MiB/s", 10))
        print(String(repeating: "-", count: 70))
        for payloadSize in [64, 4096] {
            for version in [ProtocolVersion.v3_1_1, .v5] {
                for qos in [QoS.atMostOnce, .atLeastOnce] {
                    let result = measure(payloadSize: payloadSize, version: version, qos: qos)
                    let name = "PUBLISH \(payloadSize == 64 ? "64 B" : "4 KiB") v\(version) \(qos)"
                    print(pad(name, 34) + pad(format(result.packetsPerSecond, 0), 14) + pad(format(result.nanosecondsPerPacket, 1), 12) + pad(format(result.mebibytesPerSecond, 0), 10))
                }
            }
        }
    }

    struct Result {
        var packetsPerSecond: Double
        var nanosecondsPerPacket: Double
        var mebibytesPerSecond: Double
    }

    func measure(payloadSize: Int, version: ProtocolVersion, qos: QoS) -> Result {
        var properties = Properties()
        if version == .v5 {
            properties = [.contentType("application/json"), .userProperty(name: "site", value: "a")]
        }
        let publish = Publish(qos: qos, topic: "site/a/sensors/temperature/room-12", packetIdentifier: qos == .atMostOnce ? nil : 4711,
                              properties: properties, payload: ByteBuffer(repeating: 0x5A, count: payloadSize))
        let one = MQTTPacket.publish(publish).encode(version: version)
        // A stream of 256 packets, as one large socket read would deliver them.
        var stream = ByteBuffer()
        for _ in 0..<256 { stream.writeImmutableBuffer(one) }

        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .milliseconds(Int(seconds * 1000)))
        var packets = 0
        var checksum = 0
        let start = clock.now
        while clock.now < deadline {
            for _ in 0..<64 {
                var input = stream
                while let frame = try! MQTTFrameDecoder.parseFrame(from: &input, maximumPacketSize: 1 << 20, expectedType: nil) {
                    let packet = try! MQTTPacket.decode(frame, version: version)
                    if case .publish(let p) = packet { checksum &+= p.payload.readableBytes &+ p.topic.utf8.count }
                    packets += 1
                }
            }
        }
        let elapsed = start.duration(to: clock.now)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        precondition(checksum > 0)
        let rate = Double(packets) / seconds
        return Result(packetsPerSecond: rate, nanosecondsPerPacket: 1e9 / rate, mebibytesPerSecond: rate * Double(one.readableBytes) / 1_048_576)
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}

func format(_ value: Double, _ decimals: Int) -> String {
    if decimals == 0 {
        let n = Int(value.rounded())
        var s = String(n)
        var i = s.count - 3
        while i > 0 { s.insert(",", at: s.index(s.startIndex, offsetBy: i)); i -= 3 }
        return s
    }
    let factor = pow10(decimals)
    return String(Double(Int((value * factor).rounded())) / factor)
}

private func pow10(_ n: Int) -> Double { (0..<n).reduce(1.0) { r, _ in r * 10 } }
