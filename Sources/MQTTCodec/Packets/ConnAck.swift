import NIOCore

/// CONNACK (spec §3.2, 3.1.1 §3.2).
public struct ConnAck: Hashable, Sendable {
    public var sessionPresent: Bool
    /// The 3.1 / 3.1.1 Connect Return Code (0...5) or the 5.0 CONNACK Reason Code.
    public var returnCode: UInt8
    /// MQTT 5.0 properties. nil when absent: always in 3.1.x, and in 5.0 only for the 2-byte
    /// CONNACK 0x01 that a 3.1.1-only server sends to refuse a 5.0 CONNECT.
    public var properties: Properties?

    public init(sessionPresent: Bool, returnCode: UInt8, properties: Properties? = nil) {
        self.sessionPresent = sessionPresent
        self.returnCode = returnCode
        self.properties = properties
    }

    /// The 5.0 reading of `returnCode`.
    public var reasonCode: ReasonCode { ReasonCode(returnCode) }
    /// The 3.1.x reading of `returnCode`.
    public var connectReturnCode: ConnectReturnCode? { ConnectReturnCode(rawValue: returnCode) }
    public var isAccepted: Bool { returnCode == 0 }

    static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> ConnAck {
        var reader = PacketReader(frame.body, packet: .connack, options: options)
        let flags = try reader.readByte("connectAcknowledgeFlags")
        if flags & 0xFE != 0 {
            throw .malformed("CONNACK.connectAcknowledgeFlags", "bits 7-1 are reserved and must be 0", spec: version == .v5 ? "MQTT-3.2.2-1" : "MQTT-3.2.2-1")
        }
        let sessionPresent = flags & 0x01 != 0
        let code = try reader.readByte("returnCode")
        var properties: Properties?
        switch version {
        case .v3_1, .v3_1_1:
            guard code <= 5 else {
                throw .protocolError("CONNACK.returnCode", "return code \(code) is reserved (0-5 are defined)")
            }
        case .v5:
            if reader.isAtEnd && code == ConnectReturnCode.unacceptableProtocolVersion.rawValue {
                // A 3.1.1 server refusing our 5.0 CONNECT in its own format (3.1.1 §3.2.2.3).
                break
            }
            guard ReasonCode(code).isValid(in: .connack) else {
                throw .protocolError("CONNACK.reasonCode", "reason code \(ReasonCode(code)) is not valid in CONNACK")
            }
            properties = try reader.readProperties(.connack)
        }
        if sessionPresent && code != 0 {
            throw .protocolError("CONNACK.sessionPresent", "Session Present must be 0 when the connection is refused", spec: version == .v5 ? "MQTT-3.2.2-6" : "MQTT-3.2.2-4")
        }
        try reader.expectEnd()
        return ConnAck(sessionPresent: sessionPresent, returnCode: code, properties: properties)
    }

    var fixedHeader: UInt8 { PacketType.connack.rawValue << 4 }

    func encodeBody(into buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeInteger(UInt8(sessionPresent ? 1 : 0))
        buffer.writeInteger(returnCode)
        if version == .v5, let properties { properties.write(to: &buffer) }
    }
}
