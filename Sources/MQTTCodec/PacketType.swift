/// The 4-bit MQTT control packet type (the high nibble of the fixed header).
///
/// The low nibble (flags) is kept apart and checked per type, as mosquitto does
/// (`if(context->in_packet.command != (CMD_SUBSCRIBE|2)) return MOSQ_ERR_MALFORMED_PACKET;`).
public enum PacketType: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case connect = 1
    case connack = 2
    case publish = 3
    case puback = 4
    case pubrec = 5
    case pubrel = 6
    case pubcomp = 7
    case subscribe = 8
    case suback = 9
    case unsubscribe = 10
    case unsuback = 11
    case pingreq = 12
    case pingresp = 13
    case disconnect = 14
    /// MQTT 5.0 only.
    case auth = 15

    public var description: String {
        switch self {
        case .connect: "CONNECT"
        case .connack: "CONNACK"
        case .publish: "PUBLISH"
        case .puback: "PUBACK"
        case .pubrec: "PUBREC"
        case .pubrel: "PUBREL"
        case .pubcomp: "PUBCOMP"
        case .subscribe: "SUBSCRIBE"
        case .suback: "SUBACK"
        case .unsubscribe: "UNSUBSCRIBE"
        case .unsuback: "UNSUBACK"
        case .pingreq: "PINGREQ"
        case .pingresp: "PINGRESP"
        case .disconnect: "DISCONNECT"
        case .auth: "AUTH"
        }
    }

    /// The only fixed-header flags value allowed for every type except PUBLISH
    /// (MQTT-2.1.3-1 in 3.1.1, MQTT-2.1.3-1 in 5.0: "Where a flag bit is marked as Reserved,
    /// it is reserved for future use and MUST be set to the value listed").
    @inlinable
    public var requiredFlags: UInt8? {
        switch self {
        case .publish: nil
        case .pubrel, .subscribe, .unsubscribe: 0b0010
        default: 0
        }
    }

    /// Which side may send this packet. The codec decodes either way; the proxy uses this to
    /// reject, say, a CONNACK arriving from a client.
    public enum Sender: Sendable, Hashable { case client, server, both }

    public var sender: Sender {
        switch self {
        case .connect, .subscribe, .unsubscribe, .pingreq: .client
        case .connack, .suback, .unsuback, .pingresp: .server
        case .publish, .puback, .pubrec, .pubrel, .pubcomp, .disconnect, .auth: .both
        }
    }
}

/// Quality of service of a PUBLISH or a subscription.
public enum QoS: UInt8, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible {
    case atMostOnce = 0
    case atLeastOnce = 1
    case exactlyOnce = 2

    public static func < (lhs: QoS, rhs: QoS) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "QoS \(rawValue)" }
}
