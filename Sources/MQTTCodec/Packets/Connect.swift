public import NIOCore

/// CONNECT (spec §3.1, 3.1.1 §3.1). The packet that fixes the protocol version for the rest
/// of the connection, so it is decoded without one.
public struct Connect: Hashable, Sendable, CustomStringConvertible {
    /// Named bits of the Connect Flags byte (3.1.1 §3.1.2.3).
    public enum Flags {
        public static let reserved: UInt8 = 0x01
        public static let cleanStart: UInt8 = 0x02
        public static let will: UInt8 = 0x04
        public static let willQoSShift: UInt8 = 3
        public static let willQoSMask: UInt8 = 0x18
        public static let willRetain: UInt8 = 0x20
        public static let password: UInt8 = 0x40
        public static let username: UInt8 = 0x80
    }

    public struct Will: Hashable, Sendable {
        public var topic: String
        public var payload: ByteBuffer
        public var qos: QoS
        public var retain: Bool
        /// Will properties (MQTT 5.0 only; empty otherwise).
        public var properties: Properties

        public init(topic: String, payload: ByteBuffer, qos: QoS, retain: Bool, properties: Properties = Properties()) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
            self.properties = properties
        }
    }

    public var protocolVersion: ProtocolVersion
    /// The high bit of the protocol level, set by mosquitto bridges ("try_private"). Kept so a
    /// forwarded CONNECT is unchanged.
    public var bridgeFlag: Bool
    /// Clean Session (3.1 / 3.1.1) or Clean Start (5.0).
    public var cleanStart: Bool
    public var keepAlive: UInt16
    /// CONNECT properties (MQTT 5.0 only; empty otherwise).
    public var properties: Properties
    public var clientIdentifier: String
    public var will: Will?
    public var username: String?
    /// Binary Data, not a String: MQTT passwords are arbitrary bytes.
    public var password: ByteBuffer?

    public init(protocolVersion: ProtocolVersion, bridgeFlag: Bool = false, cleanStart: Bool, keepAlive: UInt16, properties: Properties = Properties(),
                clientIdentifier: String, will: Will? = nil, username: String? = nil, password: ByteBuffer? = nil) {
        self.protocolVersion = protocolVersion
        self.bridgeFlag = bridgeFlag
        self.cleanStart = cleanStart
        self.keepAlive = keepAlive
        self.properties = properties
        self.clientIdentifier = clientIdentifier
        self.will = will
        self.username = username
        self.password = password
    }

    /// Redacted: credentials and will payloads never reach a log through `description`.
    public var description: String {
        "CONNECT(v\(protocolVersion), clientId: \(clientIdentifier), username: \(username ?? "-"), password: \(password == nil ? "no" : "yes"), will: \(will?.topic ?? "-"))"
    }

    static func decode(_ frame: MQTTFrame, options: DecodingOptions) throws(MQTTCodecError) -> Connect {
        var reader = PacketReader(frame.body, packet: .connect, options: options)
        let name = try reader.readString("protocolName")
        let level = try reader.readByte("protocolLevel")
        let bridgeFlag = level & 0x80 != 0
        let version: ProtocolVersion
        switch (name, level & 0x7F) {
        case ("MQTT", 4): version = .v3_1_1
        case ("MQTT", 5): version = .v5
        case ("MQIsdp", 3): version = .v3_1
        case ("MQTT", _), ("MQIsdp", _):
            throw MQTTCodecError(.unsupportedProtocolVersion, field: "CONNECT.protocolLevel", "protocol level \(level & 0x7F) is not supported with protocol name \(name) (3, 4 and 5 are)", spec: "MQTT-3.1.2-2")
        default:
            throw MQTTCodecError(.protocolError, field: "CONNECT.protocolName", "protocol name must be \"MQTT\" or \"MQIsdp\"", spec: "MQTT-3.1.2-1")
        }
        do {
            return try decodeRest(&reader, version: version, bridgeFlag: bridgeFlag)
        } catch {
            var error = error
            error.protocolVersion = version
            throw error
        }
    }

    private static func decodeRest(_ reader: inout PacketReader, version: ProtocolVersion, bridgeFlag: Bool) throws(MQTTCodecError) -> Connect {
        let flags = try reader.readByte("connectFlags")
        if flags & Flags.reserved != 0 {
            throw .malformed("CONNECT.connectFlags", "reserved flag bit 0 must be 0", spec: "MQTT-3.1.2-3")
        }
        let willFlag = flags & Flags.will != 0
        let willQoSBits = (flags & Flags.willQoSMask) >> Flags.willQoSShift
        let willRetain = flags & Flags.willRetain != 0
        if !willFlag && (willQoSBits != 0 || willRetain) {
            throw .malformed("CONNECT.connectFlags", "Will QoS and Will Retain must be 0 when the Will Flag is 0", spec: willRetain ? "MQTT-3.1.2-13" : "MQTT-3.1.2-11")
        }
        guard let willQoS = QoS(rawValue: willQoSBits) else {
            throw .malformed("CONNECT.connectFlags", "Will QoS 3 is not a valid QoS", spec: "MQTT-3.1.2-12")
        }
        let hasUsername = flags & Flags.username != 0
        let hasPassword = flags & Flags.password != 0
        if version != .v5 && hasPassword && !hasUsername {
            throw .protocolError("CONNECT.connectFlags", "Password Flag set without User Name Flag (allowed only in MQTT 5.0)", spec: "MQTT-3.1.2-22")
        }
        let keepAlive = try reader.readUInt16("keepAlive")
        let properties = version == .v5 ? try reader.readProperties(.connect) : Properties()
        let clientIdentifier = try reader.readString("clientIdentifier")
        var will: Will?
        if willFlag {
            let willProperties = version == .v5 ? try reader.readProperties(.will) : Properties()
            let topic = try reader.readString("willTopic")
            if topic.isEmpty || TopicSyntax.nameContainsWildcard(topic) {
                throw .protocolError("CONNECT.willTopic", "the will topic must be a non-empty topic name without wildcards", spec: "MQTT-3.1.3-11")
            }
            let payload = try reader.readBinary("willPayload")
            will = Will(topic: topic, payload: payload, qos: willQoS, retain: willRetain, properties: willProperties)
        }
        let username = hasUsername ? try reader.readString("username") : nil
        let password = hasPassword ? try reader.readBinary("password") : nil
        try reader.expectEnd()
        return Connect(protocolVersion: version, bridgeFlag: bridgeFlag, cleanStart: flags & Flags.cleanStart != 0, keepAlive: keepAlive,
                       properties: properties, clientIdentifier: clientIdentifier, will: will, username: username, password: password)
    }

    var fixedHeader: UInt8 { PacketType.connect.rawValue << 4 }

    func encodeBody(into buffer: inout ByteBuffer) {
        buffer.writeMQTTString(protocolVersion.protocolName)
        buffer.writeInteger(protocolVersion.rawValue | (bridgeFlag ? 0x80 : 0))
        var flags: UInt8 = 0
        if cleanStart { flags |= Flags.cleanStart }
        if let will {
            flags |= Flags.will | (will.qos.rawValue << Flags.willQoSShift)
            if will.retain { flags |= Flags.willRetain }
        }
        if username != nil { flags |= Flags.username }
        if password != nil { flags |= Flags.password }
        buffer.writeInteger(flags)
        buffer.writeInteger(keepAlive)
        if protocolVersion == .v5 { properties.write(to: &buffer) }
        buffer.writeMQTTString(clientIdentifier)
        if let will {
            if protocolVersion == .v5 { will.properties.write(to: &buffer) }
            buffer.writeMQTTString(will.topic)
            buffer.writeMQTTBinary(will.payload)
        }
        if let username { buffer.writeMQTTString(username) }
        if let password { buffer.writeMQTTBinary(password) }
    }
}
