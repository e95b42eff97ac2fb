/// An MQTT 5.0 reason code (spec §2.4), also used to name the wire reaction to a decode error.
///
/// A struct over the raw byte rather than an enum: a reason code that is valid in one packet
/// is invalid in another, and a peer may send any byte. Validity is checked per packet with
/// `isValid(in:)`.
public struct ReasonCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public init(_ rawValue: UInt8) { self.rawValue = rawValue }

    public static let success = ReasonCode(0x00)  // also "Normal disconnection", "Granted QoS 0"
    public static let grantedQoS1 = ReasonCode(0x01)
    public static let grantedQoS2 = ReasonCode(0x02)
    public static let disconnectWithWillMessage = ReasonCode(0x04)
    public static let noMatchingSubscribers = ReasonCode(0x10)
    public static let noSubscriptionExisted = ReasonCode(0x11)
    public static let continueAuthentication = ReasonCode(0x18)
    public static let reAuthenticate = ReasonCode(0x19)
    public static let unspecifiedError = ReasonCode(0x80)
    public static let malformedPacket = ReasonCode(0x81)
    public static let protocolError = ReasonCode(0x82)
    public static let implementationSpecificError = ReasonCode(0x83)
    public static let unsupportedProtocolVersion = ReasonCode(0x84)
    public static let clientIdentifierNotValid = ReasonCode(0x85)
    public static let badUserNameOrPassword = ReasonCode(0x86)
    public static let notAuthorized = ReasonCode(0x87)
    public static let serverUnavailable = ReasonCode(0x88)
    public static let serverBusy = ReasonCode(0x89)
    public static let banned = ReasonCode(0x8A)
    public static let serverShuttingDown = ReasonCode(0x8B)
    public static let badAuthenticationMethod = ReasonCode(0x8C)
    public static let keepAliveTimeout = ReasonCode(0x8D)
    public static let sessionTakenOver = ReasonCode(0x8E)
    public static let topicFilterInvalid = ReasonCode(0x8F)
    public static let topicNameInvalid = ReasonCode(0x90)
    public static let packetIdentifierInUse = ReasonCode(0x91)
    public static let packetIdentifierNotFound = ReasonCode(0x92)
    public static let receiveMaximumExceeded = ReasonCode(0x93)
    public static let topicAliasInvalid = ReasonCode(0x94)
    public static let packetTooLarge = ReasonCode(0x95)
    public static let messageRateTooHigh = ReasonCode(0x96)
    public static let quotaExceeded = ReasonCode(0x97)
    public static let administrativeAction = ReasonCode(0x98)
    public static let payloadFormatInvalid = ReasonCode(0x99)
    public static let retainNotSupported = ReasonCode(0x9A)
    public static let qosNotSupported = ReasonCode(0x9B)
    public static let useAnotherServer = ReasonCode(0x9C)
    public static let serverMoved = ReasonCode(0x9D)
    public static let sharedSubscriptionsNotSupported = ReasonCode(0x9E)
    public static let connectionRateExceeded = ReasonCode(0x9F)
    public static let maximumConnectTime = ReasonCode(0xA0)
    public static let subscriptionIdentifiersNotSupported = ReasonCode(0xA1)
    public static let wildcardSubscriptionsNotSupported = ReasonCode(0xA2)

    /// Whether the code reports a failure (spec: values 0x80 and above).
    @inlinable public var isFailure: Bool { rawValue >= 0x80 }

    /// The reason codes each packet may carry (spec §2.4, Table 2-6, and each packet's section).
    public func isValid(in packet: PacketType) -> Bool {
        switch packet {
        case .connack:
            return self == .success || (0x80...0x9F).contains(rawValue) && ![0x8B, 0x8D, 0x8E, 0x8F, 0x91, 0x92, 0x93, 0x94, 0x96, 0x98, 0x9E].contains(rawValue)
        case .puback, .pubrec:
            return [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99].contains(rawValue)
        case .pubrel, .pubcomp:
            return [0x00, 0x92].contains(rawValue)
        case .suback:
            return [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2].contains(rawValue)
        case .unsuback:
            return [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91].contains(rawValue)
        case .disconnect:
            return [0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
                    0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2].contains(rawValue)
        case .auth:
            return [0x00, 0x18, 0x19].contains(rawValue)
        case .connect, .publish, .subscribe, .unsubscribe, .pingreq, .pingresp:
            return false
        }
    }

    public var description: String {
        let hex = "0x" + (rawValue < 0x10 ? "0" : "") + String(rawValue, radix: 16, uppercase: true)
        return hex
    }
}

/// The 3.1 / 3.1.1 CONNACK return codes (3.1.1 §3.2.2.3).
public enum ConnectReturnCode: UInt8, Sendable, Hashable, CaseIterable {
    case accepted = 0x00
    case unacceptableProtocolVersion = 0x01
    case identifierRejected = 0x02
    case serverUnavailable = 0x03
    case badUserNameOrPassword = 0x04
    case notAuthorized = 0x05
}
