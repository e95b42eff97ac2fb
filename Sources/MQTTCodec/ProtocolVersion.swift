/// The MQTT protocol version of a connection.
///
/// The version is learned from CONNECT (protocol name + protocol level) and then passed
/// explicitly to every later decode and encode: the same bytes mean different things in
/// 3.1.1 and 5.0 (a PUBACK of length 3 is malformed in 3.1.1 and carries a reason code in 5.0).
public enum ProtocolVersion: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// MQTT 3.1 (IBM), protocol name "MQIsdp", level 3.
    case v3_1 = 3
    /// MQTT 3.1.1 (OASIS), protocol name "MQTT", level 4.
    case v3_1_1 = 4
    /// MQTT 5.0 (OASIS), protocol name "MQTT", level 5.
    case v5 = 5

    /// The protocol name carried in CONNECT for this version.
    public var protocolName: String {
        switch self {
        case .v3_1: "MQIsdp"
        case .v3_1_1, .v5: "MQTT"
        }
    }

    public var description: String {
        switch self {
        case .v3_1: "3.1"
        case .v3_1_1: "3.1.1"
        case .v5: "5.0"
        }
    }

    /// Whether packets of this version carry reason codes and properties.
    @inlinable
    public var hasProperties: Bool { self == .v5 }
}
