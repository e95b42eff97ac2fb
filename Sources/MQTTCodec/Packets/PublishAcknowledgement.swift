public import NIOCore

/// Names the packet a `PublishAcknowledgement` is. A phantom type: PUBACK, PUBREC, PUBREL and
/// PUBCOMP share one layout but stay distinct types, so one cannot be passed for another.
public protocol PublishAcknowledgementKind: Sendable {
    static var packetType: PacketType { get }
    static var propertyContext: PropertyContext { get }
}

public enum PubAckKind: PublishAcknowledgementKind {
    public static var packetType: PacketType { .puback }
    public static var propertyContext: PropertyContext { .puback }
}

public enum PubRecKind: PublishAcknowledgementKind {
    public static var packetType: PacketType { .pubrec }
    public static var propertyContext: PropertyContext { .pubrec }
}

public enum PubRelKind: PublishAcknowledgementKind {
    public static var packetType: PacketType { .pubrel }
    public static var propertyContext: PropertyContext { .pubrel }
}

public enum PubCompKind: PublishAcknowledgementKind {
    public static var packetType: PacketType { .pubcomp }
    public static var propertyContext: PropertyContext { .pubcomp }
}

/// PUBACK (§3.4): the response to a QoS 1 PUBLISH.
public typealias PubAck = PublishAcknowledgement<PubAckKind>
/// PUBREC (§3.5): the first response to a QoS 2 PUBLISH.
public typealias PubRec = PublishAcknowledgement<PubRecKind>
/// PUBREL (§3.6): the response to PUBREC.
public typealias PubRel = PublishAcknowledgement<PubRelKind>
/// PUBCOMP (§3.7): the response to PUBREL, ending a QoS 2 exchange.
public typealias PubComp = PublishAcknowledgement<PubCompKind>

/// The shared shape of PUBACK, PUBREC, PUBREL and PUBCOMP: a packet identifier and, in 5.0,
/// an optional reason code and optional properties.
///
/// In 5.0 "the Reason Code and Property Length can be omitted" (§3.4.2.1): a remaining length of
/// 2 means neither, 3 means a reason code only, 4 or more means both. nil records the omission,
/// so re-encoding gives back the bytes that arrived.
public struct PublishAcknowledgement<Kind: PublishAcknowledgementKind>: Hashable, Sendable {
    public var packetIdentifier: UInt16
    /// MQTT 5.0 only; nil when omitted (success).
    public var reasonCode: ReasonCode?
    /// MQTT 5.0 only; nil when the property length was omitted.
    public var properties: Properties?

    public init(packetIdentifier: UInt16, reasonCode: ReasonCode? = nil, properties: Properties? = nil) {
        self.packetIdentifier = packetIdentifier
        self.reasonCode = reasonCode
        self.properties = properties
    }

    @inlinable
    static func decode(_ frame: MQTTFrame, version: ProtocolVersion, options: DecodingOptions) throws(MQTTCodecError) -> Self {
        var reader = PacketReader(frame.body, packet: Kind.packetType, options: options)
        let packetIdentifier = try reader.readPacketIdentifier()
        var result = Self(packetIdentifier: packetIdentifier)
        if version == .v5 {
            (result.reasonCode, result.properties) = try reader.readOptionalReasonAndProperties(Kind.propertyContext)
        }
        try reader.expectEnd()
        return result
    }

    var fixedHeader: UInt8 { Kind.packetType.rawValue << 4 | (Kind.packetType.requiredFlags ?? 0) }

    func encodeBody(into buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeInteger(packetIdentifier)
        if version == .v5 { buffer.writeOptionalReasonAndProperties(reasonCode, properties) }
    }
}

extension PacketReader {
    /// The optional tail of 5.0 acknowledgements, DISCONNECT and AUTH: nothing, a reason
    /// code alone, or a reason code and a property block. The reason code must be valid for
    /// the packet.
    @inlinable
    mutating func readOptionalReasonAndProperties(_ context: PropertyContext) throws(MQTTCodecError) -> (ReasonCode?, Properties?) {
        guard !isAtEnd else { return (nil, nil) }
        let code = ReasonCode(try readByte("reasonCode"))
        guard code.isValid(in: packet) else {
            throw .protocolError("\(packet).reasonCode", "reason code \(code) is not valid in \(packet)", spec: packet == .auth ? "MQTT-3.15.2-1" : nil)
        }
        return (code, isAtEnd ? nil : try readProperties(context))
    }

    /// One reason code per topic filter (SUBACK, UNSUBACK), at least one.
    mutating func readReasonCodes(isValid: (ReasonCode) -> Bool, spec: String? = nil) throws(MQTTCodecError) -> [ReasonCode] {
        var codes: [ReasonCode] = []
        while !isAtEnd {
            let code = ReasonCode(try readByte("reasonCode"))
            guard isValid(code) else {
                throw .protocolError("\(packet).reasonCode", "reason code \(code) is not valid in \(packet)", spec: spec)
            }
            codes.append(code)
        }
        if codes.isEmpty {
            throw .protocolError("\(packet).payload", "\(packet) must carry one reason code per topic filter")
        }
        return codes
    }
}

extension ByteBuffer {
    /// Writes the optional 5.0 tail in the form it was decoded from. A property block needs a
    /// reason code before it, so properties without one write Success.
    @usableFromInline
    mutating func writeOptionalReasonAndProperties(_ reasonCode: ReasonCode?, _ properties: Properties?) {
        if let properties {
            writeInteger((reasonCode ?? .success).rawValue)
            properties.write(to: &self)
        } else if let reasonCode {
            writeInteger(reasonCode.rawValue)
        }
    }
}
