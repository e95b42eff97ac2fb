/// PINGREQ (spec §3.12): no variable header, no payload.
public struct PingReq: Hashable, Sendable {
    public init() {}
}

/// PINGRESP (spec §3.13): no variable header, no payload.
public struct PingResp: Hashable, Sendable {
    public init() {}
}

extension PacketReader {
    /// PINGREQ, PINGRESP and 3.1.x DISCONNECT have a remaining length of 0.
    func expectEmpty() throws(MQTTCodecError) {
        if readableBytes != 0 {
            throw .malformed("\(packet).remainingLength", "remaining length must be 0, got \(readableBytes)")
        }
    }
}
