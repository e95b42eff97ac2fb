public import NIOCore

/// Where a property block appears; each property is allowed in a fixed set of these
/// (spec §2.2.2.2, Table 2-4). A will has its own block inside CONNECT.
public enum PropertyContext: Hashable, Sendable, CustomStringConvertible {
    case connect, will, connack, publish, puback, pubrec, pubrel, pubcomp
    case subscribe, suback, unsubscribe, unsuback, disconnect, auth

    public var description: String {
        switch self {
        case .connect: "CONNECT"
        case .will: "CONNECT.will"
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
        case .disconnect: "DISCONNECT"
        case .auth: "AUTH"
        }
    }
}

/// Every MQTT 5.0 property identifier (spec §2.2.2.2).
public enum PropertyIdentifier: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case payloadFormatIndicator = 0x01
    case messageExpiryInterval = 0x02
    case contentType = 0x03
    case responseTopic = 0x08
    case correlationData = 0x09
    case subscriptionIdentifier = 0x0B
    case sessionExpiryInterval = 0x11
    case assignedClientIdentifier = 0x12
    case serverKeepAlive = 0x13
    case authenticationMethod = 0x15
    case authenticationData = 0x16
    case requestProblemInformation = 0x17
    case willDelayInterval = 0x18
    case requestResponseInformation = 0x19
    case responseInformation = 0x1A
    case serverReference = 0x1C
    case reasonString = 0x1F
    case receiveMaximum = 0x21
    case topicAliasMaximum = 0x22
    case topicAlias = 0x23
    case maximumQoS = 0x24
    case retainAvailable = 0x25
    case userProperty = 0x26
    case maximumPacketSize = 0x27
    case wildcardSubscriptionAvailable = 0x28
    case subscriptionIdentifierAvailable = 0x29
    case sharedSubscriptionAvailable = 0x2A

    /// The packets (and will) that may carry this property (Table 2-4).
    public func isAllowed(in context: PropertyContext) -> Bool {
        switch self {
        case .payloadFormatIndicator, .messageExpiryInterval, .contentType, .responseTopic, .correlationData:
            return context == .publish || context == .will
        case .subscriptionIdentifier:
            return context == .publish || context == .subscribe
        case .sessionExpiryInterval:
            return context == .connect || context == .connack || context == .disconnect
        case .assignedClientIdentifier, .serverKeepAlive, .responseInformation, .maximumQoS, .retainAvailable,
            .wildcardSubscriptionAvailable, .subscriptionIdentifierAvailable, .sharedSubscriptionAvailable:
            return context == .connack
        case .authenticationMethod, .authenticationData:
            return context == .connect || context == .connack || context == .auth
        case .requestProblemInformation, .requestResponseInformation:
            return context == .connect
        case .willDelayInterval:
            return context == .will
        case .serverReference:
            return context == .connack || context == .disconnect
        case .reasonString:
            switch context {
            case .connack, .puback, .pubrec, .pubrel, .pubcomp, .suback, .unsuback, .disconnect, .auth: return true
            default: return false
            }
        case .receiveMaximum, .topicAliasMaximum, .maximumPacketSize:
            return context == .connect || context == .connack
        case .topicAlias:
            return context == .publish
        case .userProperty:
            return true
        }
    }

    /// Whether the property may appear more than once in one block. User Property always
    /// may (§3.1.2.11.8 …); Subscription Identifier may in PUBLISH, where one message can
    /// match several subscriptions (§3.3.2.3.8), but not in SUBSCRIBE (§3.8.2.1.2).
    public func mayRepeat(in context: PropertyContext) -> Bool {
        switch self {
        case .userProperty: true
        case .subscriptionIdentifier: context == .publish
        default: false
        }
    }

    public var description: String {
        switch self {
        case .payloadFormatIndicator: "Payload Format Indicator"
        case .messageExpiryInterval: "Message Expiry Interval"
        case .contentType: "Content Type"
        case .responseTopic: "Response Topic"
        case .correlationData: "Correlation Data"
        case .subscriptionIdentifier: "Subscription Identifier"
        case .sessionExpiryInterval: "Session Expiry Interval"
        case .assignedClientIdentifier: "Assigned Client Identifier"
        case .serverKeepAlive: "Server Keep Alive"
        case .authenticationMethod: "Authentication Method"
        case .authenticationData: "Authentication Data"
        case .requestProblemInformation: "Request Problem Information"
        case .willDelayInterval: "Will Delay Interval"
        case .requestResponseInformation: "Request Response Information"
        case .responseInformation: "Response Information"
        case .serverReference: "Server Reference"
        case .reasonString: "Reason String"
        case .receiveMaximum: "Receive Maximum"
        case .topicAliasMaximum: "Topic Alias Maximum"
        case .topicAlias: "Topic Alias"
        case .maximumQoS: "Maximum QoS"
        case .retainAvailable: "Retain Available"
        case .userProperty: "User Property"
        case .maximumPacketSize: "Maximum Packet Size"
        case .wildcardSubscriptionAvailable: "Wildcard Subscription Available"
        case .subscriptionIdentifierAvailable: "Subscription Identifier Available"
        case .sharedSubscriptionAvailable: "Shared Subscription Available"
        }
    }
}

/// One MQTT 5.0 property with its typed value.
public enum Property: Hashable, Sendable {
    case payloadFormatIndicator(UInt8)
    case messageExpiryInterval(UInt32)
    case contentType(String)
    case responseTopic(String)
    case correlationData(ByteBuffer)
    case subscriptionIdentifier(UInt32)
    case sessionExpiryInterval(UInt32)
    case assignedClientIdentifier(String)
    case serverKeepAlive(UInt16)
    case authenticationMethod(String)
    case authenticationData(ByteBuffer)
    case requestProblemInformation(UInt8)
    case willDelayInterval(UInt32)
    case requestResponseInformation(UInt8)
    case responseInformation(String)
    case serverReference(String)
    case reasonString(String)
    case receiveMaximum(UInt16)
    case topicAliasMaximum(UInt16)
    case topicAlias(UInt16)
    case maximumQoS(UInt8)
    case retainAvailable(UInt8)
    case userProperty(name: String, value: String)
    case maximumPacketSize(UInt32)
    case wildcardSubscriptionAvailable(UInt8)
    case subscriptionIdentifierAvailable(UInt8)
    case sharedSubscriptionAvailable(UInt8)

    public var identifier: PropertyIdentifier {
        switch self {
        case .payloadFormatIndicator: .payloadFormatIndicator
        case .messageExpiryInterval: .messageExpiryInterval
        case .contentType: .contentType
        case .responseTopic: .responseTopic
        case .correlationData: .correlationData
        case .subscriptionIdentifier: .subscriptionIdentifier
        case .sessionExpiryInterval: .sessionExpiryInterval
        case .assignedClientIdentifier: .assignedClientIdentifier
        case .serverKeepAlive: .serverKeepAlive
        case .authenticationMethod: .authenticationMethod
        case .authenticationData: .authenticationData
        case .requestProblemInformation: .requestProblemInformation
        case .willDelayInterval: .willDelayInterval
        case .requestResponseInformation: .requestResponseInformation
        case .responseInformation: .responseInformation
        case .serverReference: .serverReference
        case .reasonString: .reasonString
        case .receiveMaximum: .receiveMaximum
        case .topicAliasMaximum: .topicAliasMaximum
        case .topicAlias: .topicAlias
        case .maximumQoS: .maximumQoS
        case .retainAvailable: .retainAvailable
        case .userProperty: .userProperty
        case .maximumPacketSize: .maximumPacketSize
        case .wildcardSubscriptionAvailable: .wildcardSubscriptionAvailable
        case .subscriptionIdentifierAvailable: .subscriptionIdentifierAvailable
        case .sharedSubscriptionAvailable: .sharedSubscriptionAvailable
        }
    }

    /// Bytes on the wire, identifier included.
    @usableFromInline
    var encodedLength: Int {
        switch self {
        case .payloadFormatIndicator, .requestProblemInformation, .requestResponseInformation, .maximumQoS,
            .retainAvailable, .wildcardSubscriptionAvailable, .subscriptionIdentifierAvailable, .sharedSubscriptionAvailable:
            return 2
        case .serverKeepAlive, .receiveMaximum, .topicAliasMaximum, .topicAlias:
            return 3
        case .messageExpiryInterval, .sessionExpiryInterval, .willDelayInterval, .maximumPacketSize:
            return 5
        case .subscriptionIdentifier(let value):
            return 1 + VariableByteInteger.encodedLength(Int(value))
        case .contentType(let s), .responseTopic(let s), .assignedClientIdentifier(let s), .authenticationMethod(let s),
            .responseInformation(let s), .serverReference(let s), .reasonString(let s):
            return 1 + mqttStringLength(s)
        case .correlationData(let b), .authenticationData(let b):
            return 3 + b.readableBytes
        case .userProperty(let name, let value):
            return 1 + mqttStringLength(name) + mqttStringLength(value)
        }
    }

    @usableFromInline
    func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(identifier.rawValue)
        switch self {
        case .payloadFormatIndicator(let v), .requestProblemInformation(let v), .requestResponseInformation(let v),
            .maximumQoS(let v), .retainAvailable(let v), .wildcardSubscriptionAvailable(let v),
            .subscriptionIdentifierAvailable(let v), .sharedSubscriptionAvailable(let v):
            buffer.writeInteger(v)
        case .serverKeepAlive(let v), .receiveMaximum(let v), .topicAliasMaximum(let v), .topicAlias(let v):
            buffer.writeInteger(v)
        case .messageExpiryInterval(let v), .sessionExpiryInterval(let v), .willDelayInterval(let v), .maximumPacketSize(let v):
            buffer.writeInteger(v)
        case .subscriptionIdentifier(let v):
            VariableByteInteger.write(Int(v), to: &buffer)
        case .contentType(let s), .responseTopic(let s), .assignedClientIdentifier(let s), .authenticationMethod(let s),
            .responseInformation(let s), .serverReference(let s), .reasonString(let s):
            buffer.writeMQTTString(s)
        case .correlationData(let b), .authenticationData(let b):
            buffer.writeMQTTBinary(b)
        case .userProperty(let name, let value):
            buffer.writeMQTTString(name)
            buffer.writeMQTTString(value)
        }
    }
}

/// An MQTT 5.0 property block, in wire order.
///
/// Order is kept (mosquitto: "The order of properties must be preserved for some types"):
/// user properties are ordered, and keeping every property in place makes
/// encode(decode(x)) == x.
public struct Properties: Hashable, Sendable, RandomAccessCollection, ExpressibleByArrayLiteral {
    public var elements: [Property]

    public init() { elements = [] }
    public init(_ elements: [Property]) { self.elements = elements }
    public init(arrayLiteral elements: Property...) { self.elements = elements }

    public var startIndex: Int { elements.startIndex }
    public var endIndex: Int { elements.endIndex }
    public subscript(position: Int) -> Property { elements[position] }

    public mutating func append(_ property: Property) { elements.append(property) }

    /// Removes every property with this identifier.
    public mutating func removeAll(_ identifier: PropertyIdentifier) {
        elements.removeAll { $0.identifier == identifier }
    }

    /// Bytes of the properties themselves, without the length prefix.
    @inlinable
    public var contentLength: Int { elements.reduce(0) { $0 + $1.encodedLength } }

    /// Bytes on the wire including the variable-byte length prefix.
    @inlinable
    public var encodedLength: Int {
        let content = contentLength
        return VariableByteInteger.encodedLength(content) + content
    }

    public func write(to buffer: inout ByteBuffer) {
        VariableByteInteger.write(contentLength, to: &buffer)
        for property in elements { property.write(to: &buffer) }
    }

    // MARK: Typed accessors for the properties the bridge acts on.

    public var topicAlias: UInt16? {
        for case .topicAlias(let v) in elements { return v }
        return nil
    }
    public var topicAliasMaximum: UInt16? {
        for case .topicAliasMaximum(let v) in elements { return v }
        return nil
    }
    public var authenticationMethod: String? {
        for case .authenticationMethod(let v) in elements { return v }
        return nil
    }
    public var receiveMaximum: UInt16? {
        for case .receiveMaximum(let v) in elements { return v }
        return nil
    }
    public var maximumPacketSize: UInt32? {
        for case .maximumPacketSize(let v) in elements { return v }
        return nil
    }
    public var messageExpiryInterval: UInt32? {
        for case .messageExpiryInterval(let v) in elements { return v }
        return nil
    }
    public var sessionExpiryInterval: UInt32? {
        for case .sessionExpiryInterval(let v) in elements { return v }
        return nil
    }
    public var responseTopic: String? {
        for case .responseTopic(let v) in elements { return v }
        return nil
    }
    public var reasonString: String? {
        for case .reasonString(let v) in elements { return v }
        return nil
    }
    public var subscriptionIdentifiers: [UInt32] {
        elements.compactMap { if case .subscriptionIdentifier(let v) = $0 { v } else { nil } }
    }
    public var userProperties: [(name: String, value: String)] {
        elements.compactMap { if case .userProperty(let n, let v) = $0 { (n, v) } else { nil } }
    }
}

extension PacketReader {
    /// Reads a property block and checks each property against `context`: known identifier
    /// (else malformed), allowed in this packet, not repeated unless the spec allows it, and
    /// a value in range (else protocol error, as mosquitto's `mosquitto_property_check_all`).
    @inlinable
    mutating func readProperties(_ context: PropertyContext) throws(MQTTCodecError) -> Properties {
        let length = Int(try readVariableByteInteger("properties.length"))
        if length == 0 { return Properties() }
        guard let slice = buffer.readSlice(length: length) else { throw truncated { "properties" } }
        var inner = PacketReader(slice, packet: packet, options: options)
        var properties = Properties()
        var seen: UInt64 = 0  // bit per identifier (all identifiers are < 64)
        while !inner.isAtEnd {
            let rawIdentifier = try inner.readVariableByteInteger("properties.identifier")
            guard rawIdentifier < 0x80, let identifier = PropertyIdentifier(rawValue: UInt8(rawIdentifier)) else {
                throw .malformed("\(context).properties", "unknown property identifier 0x\(String(rawIdentifier, radix: 16))", spec: "MQTT-2.2.2-2")
            }
            guard identifier.isAllowed(in: context) else {
                throw .protocolError("\(context).properties", "\(identifier) is not allowed in \(context)", spec: "MQTT-2.2.2-2")
            }
            let bit: UInt64 = 1 << UInt64(identifier.rawValue)
            if seen & bit != 0 && !identifier.mayRepeat(in: context) {
                throw .protocolError("\(context).properties", "\(identifier) appears more than once")
            }
            seen |= bit
            let property = try inner.readPropertyValue(identifier, context: context)
            properties.append(property)
        }
        return properties
    }

    @inlinable
    mutating func readPropertyValue(_ identifier: PropertyIdentifier, context: PropertyContext) throws(MQTTCodecError) -> Property {
        let field = { "properties.\(identifier)" }
        func boolean(_ value: UInt8) throws(MQTTCodecError) -> UInt8 {
            guard value <= 1 else { throw .protocolError("\(context).\(field())", "value \(value) is not 0 or 1") }
            return value
        }
        func nonZero<T: FixedWidthInteger>(_ value: T) throws(MQTTCodecError) -> T {
            guard value != 0 else { throw .protocolError("\(context).\(field())", "value must not be 0") }
            return value
        }
        switch identifier {
        case .payloadFormatIndicator: return .payloadFormatIndicator(try boolean(readByte(field())))
        case .messageExpiryInterval: return .messageExpiryInterval(try readUInt32(field()))
        case .contentType: return .contentType(try readString(field()))
        case .responseTopic:
            let topic = try readString(field())
            if topic.isEmpty || TopicSyntax.nameContainsWildcard(topic) {
                throw .protocolError("\(context).\(field())", "Response Topic must be a non-empty topic name without wildcards", spec: "MQTT-3.3.2-14")
            }
            return .responseTopic(topic)
        case .correlationData: return .correlationData(try readBinary(field()))
        case .subscriptionIdentifier:
            let value = try readVariableByteInteger(field())
            guard value >= 1 else {
                throw .protocolError("\(context).\(field())", "Subscription Identifier must be 1...268435455, got 0", spec: "MQTT-3.8.2-1")
            }
            return .subscriptionIdentifier(value)
        case .sessionExpiryInterval: return .sessionExpiryInterval(try readUInt32(field()))
        case .assignedClientIdentifier: return .assignedClientIdentifier(try readString(field()))
        case .serverKeepAlive: return .serverKeepAlive(try readUInt16(field()))
        case .authenticationMethod: return .authenticationMethod(try readString(field()))
        case .authenticationData: return .authenticationData(try readBinary(field()))
        case .requestProblemInformation: return .requestProblemInformation(try boolean(readByte(field())))
        case .willDelayInterval: return .willDelayInterval(try readUInt32(field()))
        case .requestResponseInformation: return .requestResponseInformation(try boolean(readByte(field())))
        case .responseInformation: return .responseInformation(try readString(field()))
        case .serverReference: return .serverReference(try readString(field()))
        case .reasonString: return .reasonString(try readString(field()))
        case .receiveMaximum: return .receiveMaximum(try nonZero(readUInt16(field())))
        case .topicAliasMaximum: return .topicAliasMaximum(try readUInt16(field()))
        case .topicAlias:
            let alias = try readUInt16(field())
            guard alias != 0 else {
                throw MQTTCodecError(.topicAliasInvalid, field: "\(context).\(field())", "Topic Alias 0 is not permitted", spec: "MQTT-3.3.2-8")
            }
            return .topicAlias(alias)
        case .maximumQoS: return .maximumQoS(try boolean(readByte(field())))
        case .retainAvailable: return .retainAvailable(try boolean(readByte(field())))
        case .userProperty:
            let name = try readString(field() + ".name")
            let value = try readString(field() + ".value")
            return .userProperty(name: name, value: value)
        case .maximumPacketSize: return .maximumPacketSize(try nonZero(readUInt32(field())))
        case .wildcardSubscriptionAvailable: return .wildcardSubscriptionAvailable(try boolean(readByte(field())))
        case .subscriptionIdentifierAvailable: return .subscriptionIdentifierAvailable(try boolean(readByte(field())))
        case .sharedSubscriptionAvailable: return .sharedSubscriptionAvailable(try boolean(readByte(field())))
        }
    }
}

extension Properties {
    /// Reads a whole property block as `write(to:)` produced it (length prefix included), with
    /// the same checks as inside a packet. For carrying a PUBLISH's properties elsewhere (the
    /// relay stores them on disk and sends them to a peer).
    public static func decode(block: ByteBuffer, context: PropertyContext, options: DecodingOptions = .strict) throws(MQTTCodecError) -> Properties {
        var reader = PacketReader(block, packet: .publish, options: options)
        let properties = try reader.readProperties(context)
        guard reader.isAtEnd else { throw .malformed("\(context).properties", "bytes after the property block", spec: "MQTT-2.2.2-1") }
        return properties
    }
}
