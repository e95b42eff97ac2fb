import MQTTCodec
import NIOCore

/// libFuzzer entry point. The first input byte picks how the rest is read:
///   0, 1, 2 → a server's inbound stream at 3.1 / 3.1.1 / 5.0 (CONNECT first, then any packet)
///   other   → a stream whose CONNECT (if any) sets the version, as a transcript is decoded.
///
/// The oracle, beyond "does not crash": every packet that decodes must re-encode to exactly
/// the bytes it came from, and every error must map to a wire reaction without trapping.
@_cdecl("LLVMFuzzerTestOneInput")
public func mqttCodecFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let mode = data[0]
    var stream = ByteBuffer(bytes: UnsafeBufferPointer(start: data + 1, count: size - 1))
    var version: ProtocolVersion? = switch mode {
    case 0: .v3_1
    case 1: .v3_1_1
    case 2: .v5
    default: nil
    }
    var first = true
    while true {
        let frame: MQTTFrame
        do {
            guard let next = try MQTTFrameDecoder.parseFrame(from: &stream, maximumPacketSize: 1 << 16, expectedType: nil) else { return 0 }
            frame = next
        } catch {
            _ = error.serverReaction(version: version, awaitingConnect: first)
            return 0
        }
        do {
            let packet: MQTTPacket
            if frame.type == .connect {
                let connect = try MQTTPacket.decodeConnect(frame)
                version = connect.protocolVersion
                packet = .connect(connect)
            } else {
                packet = try MQTTPacket.decode(frame, version: version ?? .v3_1_1)
            }
            let reencoded = packet.encode(version: version ?? .v3_1_1)
            precondition(reencoded == frame.bytes, "re-encoding differs for \(packet)")
        } catch {
            _ = error.serverReaction(version: version, awaitingConnect: first)
            _ = error.description
        }
        first = false
    }
}

// SwiftPM links an executable target with `main` aliased to `<module>_main`, so libFuzzer's
// own `main` is never pulled in. Provide that symbol and hand over to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_cdecl("MQTTCodecFuzzer_main")
func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, mqttCodecFuzz)
}
