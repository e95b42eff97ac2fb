/// Why a frame or packet was rejected, what field was wrong, the spec statement it breaks,
/// and the reason code that goes on the wire.
///
/// A struct over a private enum, so kinds can be added without breaking users
/// (swift-service-lifecycle's `ServiceGroupError.Code` pattern).
public struct MQTTCodecError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case malformedPacket, protocolError, packetTooLarge, unsupportedProtocolVersion, topicAliasInvalid
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The bytes do not follow the packet's format (truncated field, bad varint, invalid
        /// UTF-8, reserved flag bits): v5 reason code 0x81.
        public static let malformedPacket = Kind(.malformedPacket)
        /// Well-formed bytes that break a protocol rule (duplicate property, wildcard in a topic
        /// name, invalid reason code): v5 reason code 0x82.
        public static let protocolError = Kind(.protocolError)
        /// The declared remaining length is larger than the configured maximum: 0x95.
        public static let packetTooLarge = Kind(.packetTooLarge)
        /// CONNECT asks for a protocol version we do not speak: 0x84 / 3.1.1 return code 0x01.
        public static let unsupportedProtocolVersion = Kind(.unsupportedProtocolVersion)
        /// Topic alias 0 in PUBLISH: 0x94.
        public static let topicAliasInvalid = Kind(.topicAliasInvalid)

        public var reasonCode: ReasonCode {
            switch base {
            case .malformedPacket: .malformedPacket
            case .protocolError: .protocolError
            case .packetTooLarge: .packetTooLarge
            case .unsupportedProtocolVersion: .unsupportedProtocolVersion
            case .topicAliasInvalid: .topicAliasInvalid
            }
        }

        public var description: String {
            switch base {
            case .malformedPacket: "malformed packet"
            case .protocolError: "protocol error"
            case .packetTooLarge: "packet too large"
            case .unsupportedProtocolVersion: "unsupported protocol version"
            case .topicAliasInvalid: "topic alias invalid"
            }
        }
    }

    public var kind: Kind
    /// The packet and field, e.g. `PUBLISH.topicName` or `fixedHeader.remainingLength`.
    public var field: String
    /// What was wrong, with the value found where that is safe to print.
    public var detail: String
    /// The normative statement broken, e.g. `MQTT-3.3.2-2`, when the spec numbers one.
    public var specStatement: String?
    /// Set when the error was found inside a CONNECT after its protocol level was read, so the
    /// reaction can answer in that version (a v5 CONNACK with a reason code).
    public var protocolVersion: ProtocolVersion?

    public init(_ kind: Kind, field: String, _ detail: String, spec: String? = nil, version: ProtocolVersion? = nil) {
        self.kind = kind
        self.field = field
        self.detail = detail
        self.specStatement = spec
        self.protocolVersion = version
    }

    /// The v5 reason code to put in DISCONNECT or CONNACK.
    public var reasonCode: ReasonCode { kind.reasonCode }

    public var description: String {
        var text = "\(kind) in \(field): \(detail)"
        if let specStatement { text += " [\(specStatement)]" }
        return text
    }

    @usableFromInline static func malformed(_ field: String, _ detail: String, spec: String? = nil) -> MQTTCodecError {
        MQTTCodecError(.malformedPacket, field: field, detail, spec: spec)
    }

    @usableFromInline static func protocolError(_ field: String, _ detail: String, spec: String? = nil) -> MQTTCodecError {
        MQTTCodecError(.protocolError, field: field, detail, spec: spec)
    }
}

/// What to do on the wire after a decode error, decided in one place
/// (mosquitto's `read_handle.c` and sroebert's `disconnectReasonCode` do the same mapping).
public enum MQTTErrorReaction: Hashable, Sendable {
    /// Answer a CONNECT with this CONNACK, then close.
    case sendConnAckAndClose(ConnAck)
    /// Send this DISCONNECT (MQTT 5.0 only), then close.
    case sendDisconnectAndClose(Disconnect)
    /// Close the connection without a reply (MQTT 3.1 / 3.1.1 have no way to say why).
    case close
}

extension MQTTCodecError {
    /// The protocol-correct reaction when a server receives a bad packet from a client.
    ///
    /// - Parameters:
    ///   - version: the connection's version, or nil when no CONNECT has been decoded.
    ///   - awaitingConnect: true while the packet being decoded is (or should be) the CONNECT.
    public func serverReaction(version: ProtocolVersion?, awaitingConnect: Bool) -> MQTTErrorReaction {
        if kind == .unsupportedProtocolVersion {
            // The client speaks a level we do not know, so it cannot be expected to read a v5
            // CONNACK; answer in the 3.1.1 format with 0x01 as mosquitto does (3.1.1 §3.2.2.3).
            return .sendConnAckAndClose(ConnAck(sessionPresent: false, returnCode: ConnectReturnCode.unacceptableProtocolVersion.rawValue))
        }
        guard let version = version ?? protocolVersion else { return .close }
        switch version {
        case .v3_1, .v3_1_1:
            // 3.1.1 §4.8: "the Server ... MUST close the Network Connection"; no reply exists.
            return .close
        case .v5:
            if awaitingConnect {
                // MQTT-4.13.1-1 allows a CONNACK with a reason code 0x80 or above before closing.
                return .sendConnAckAndClose(ConnAck(sessionPresent: false, returnCode: reasonCode.rawValue, properties: Properties()))
            }
            return .sendDisconnectAndClose(Disconnect(reasonCode: reasonCode, properties: nil))
        }
    }

    /// The protocol-correct reaction when a client (the bridge towards a broker) receives a bad
    /// packet from the server: v5 DISCONNECT with the reason, else close.
    public func clientReaction(version: ProtocolVersion) -> MQTTErrorReaction {
        switch version {
        case .v3_1, .v3_1_1: .close
        case .v5: .sendDisconnectAndClose(Disconnect(reasonCode: reasonCode, properties: nil))
        }
    }
}
