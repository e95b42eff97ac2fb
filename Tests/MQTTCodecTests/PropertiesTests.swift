import MQTTCodec
import NIOCore
import TestSupport
import Testing

@Suite("MQTT 5.0 properties")
struct PropertiesTests {
    /// A minimal valid example of each property, as hex (identifier included).
    static let examples: [PropertyIdentifier: String] = [
        .payloadFormatIndicator: "01 01", .messageExpiryInterval: "02 00 00 00 3c", .contentType: "03 00 01 74",
        .responseTopic: "08 00 01 72", .correlationData: "09 00 01 63", .subscriptionIdentifier: "0b 05",
        .sessionExpiryInterval: "11 00 00 00 3c", .assignedClientIdentifier: "12 00 01 69", .serverKeepAlive: "13 00 3c",
        .authenticationMethod: "15 00 01 6d", .authenticationData: "16 00 01 64", .requestProblemInformation: "17 01",
        .willDelayInterval: "18 00 00 00 05", .requestResponseInformation: "19 01", .responseInformation: "1a 00 01 72",
        .serverReference: "1c 00 01 73", .reasonString: "1f 00 01 72", .receiveMaximum: "21 00 0a", .topicAliasMaximum: "22 00 0a",
        .topicAlias: "23 00 01", .maximumQoS: "24 01", .retainAvailable: "25 01", .userProperty: "26 00 01 6b 00 01 76",
        .maximumPacketSize: "27 00 00 10 00", .wildcardSubscriptionAvailable: "28 01", .subscriptionIdentifierAvailable: "29 01",
        .sharedSubscriptionAvailable: "2a 01",
    ]

    /// Wraps a property block into a packet of the given context.
    static func packet(_ context: PropertyContext, properties: String) -> String {
        let props = buffer(properties)
        var propBlock = ByteBuffer()
        VariableByteInteger.write(props.readableBytes, to: &propBlock)
        let block = hex(propBlock) + " " + properties
        let (first, before, after): (String, String, String) = switch context {
        case .connect: ("10", "00 04 4d 51 54 54 05 02 00 3c", "00 01 63")
        case .will: ("10", "00 04 4d 51 54 54 05 06 00 3c 00 00 01 63", "00 01 77 00 00")
        case .connack: ("20", "00 00", "")
        case .publish: ("30", "00 01 61", "")
        case .puback: ("40", "00 01 00", "")
        case .pubrec: ("50", "00 01 00", "")
        case .pubrel: ("62", "00 01 00", "")
        case .pubcomp: ("70", "00 01 00", "")
        case .subscribe: ("82", "00 01", "00 01 61 00")
        case .suback: ("90", "00 01", "00")
        case .unsubscribe: ("a2", "00 01", "00 01 61")
        case .unsuback: ("b0", "00 01", "00")
        case .disconnect: ("e0", "00", "")
        case .auth: ("f0", "00", "")
        }
        let body = [before, block, after].filter { !$0.isEmpty }.joined(separator: " ")
        var length = ByteBuffer()
        VariableByteInteger.write(buffer(body).readableBytes, to: &length)
        return first + " " + hex(length) + " " + body
    }

    static let contexts: [PropertyContext] = [.connect, .will, .connack, .publish, .puback, .pubrec, .pubrel, .pubcomp,
                                              .subscribe, .suback, .unsubscribe, .unsuback, .disconnect, .auth]

    @Test("Every identifier is accepted exactly where Table 2-4 allows it, and rejected elsewhere", arguments: PropertyIdentifier.allCases)
    func allowedContexts(identifier: PropertyIdentifier) throws {
        let example = Self.examples[identifier]!
        for context in Self.contexts {
            let bytes = Self.packet(context, properties: example)
            if identifier.isAllowed(in: context) {
                try expectRoundTrip(bytes, .v5)
            } else {
                expectRejected(bytes, .v5, .protocolError)
            }
        }
    }

    @Test("Table 2-4 spot checks")
    func tableSpotChecks() {
        #expect(PropertyIdentifier.willDelayInterval.isAllowed(in: .will))
        #expect(!PropertyIdentifier.willDelayInterval.isAllowed(in: .publish))
        #expect(PropertyIdentifier.topicAlias.isAllowed(in: .publish))
        #expect(!PropertyIdentifier.topicAlias.isAllowed(in: .will))
        #expect(!PropertyIdentifier.reasonString.isAllowed(in: .publish))
        #expect(PropertyIdentifier.subscriptionIdentifier.isAllowed(in: .subscribe))
        #expect(!PropertyIdentifier.subscriptionIdentifier.isAllowed(in: .unsubscribe))
    }

    @Test("Duplicates are a protocol error, except User Property, and Subscription Identifier in PUBLISH")
    func duplicates() throws {
        expectRejected(Self.packet(.publish, properties: "02 00 00 00 01 02 00 00 00 02"), .v5, .protocolError)
        expectRejected(Self.packet(.connect, properties: "11 00 00 00 01 11 00 00 00 01"), .v5, .protocolError)
        expectRejected(Self.packet(.subscribe, properties: "0b 01 0b 02"), .v5, .protocolError)
        try expectRoundTrip(Self.packet(.publish, properties: "0b 01 0b 02"), .v5)
        try expectRoundTrip(Self.packet(.connect, properties: "26 00 01 6b 00 01 76 26 00 01 6b 00 01 77"), .v5)
    }

    @Test("Unknown identifiers are malformed", arguments: ["00 01", "04 01", "2b 01", "7f 01"])
    func unknownIdentifier(property: String) {
        expectRejected(Self.packet(.publish, properties: property), .v5, .malformedPacket)
    }

    @Test("A multi-byte identifier that is an overlong encoding is malformed")
    func overlongIdentifier() {
        expectRejected(Self.packet(.publish, properties: "81 00 01"), .v5, .malformedPacket)
    }

    @Test("Value ranges: booleans 0/1, Receive Maximum and Maximum Packet Size non-zero, Subscription Identifier ≥ 1")
    func valueRanges() throws {
        expectRejected(Self.packet(.publish, properties: "01 02"), .v5, .protocolError)
        expectRejected(Self.packet(.connect, properties: "17 02"), .v5, .protocolError)
        expectRejected(Self.packet(.connect, properties: "21 00 00"), .v5, .protocolError)
        expectRejected(Self.packet(.connect, properties: "27 00 00 00 00"), .v5, .protocolError)
        expectRejected(Self.packet(.subscribe, properties: "0b 00"), .v5, .protocolError)
        try expectRoundTrip(Self.packet(.subscribe, properties: "0b ff ff ff 7f"), .v5)
    }

    @Test("Lengths: a property running past its block, or a block past the packet, is malformed")
    func lengths() {
        // Block length says 3 but the string inside needs 4.
        expectRejected("30 08 00 01 61 03 03 00 02 74", .v5, .malformedPacket)
        // Block length 9 larger than what remains.
        expectRejected("30 06 00 01 61 09 01 01", .v5, .malformedPacket)
    }

    @Test("Typed accessors")
    func accessors() throws {
        guard case .publish(let p) = try decode(Self.packet(.publish, properties: "23 00 07 02 00 00 00 3c 08 00 01 72 0b 03 26 00 01 6b 00 01 76"), .v5) else {
            Issue.record("not PUBLISH"); return
        }
        #expect(p.properties.topicAlias == 7)
        #expect(p.properties.messageExpiryInterval == 60)
        #expect(p.properties.responseTopic == "r")
        #expect(p.properties.subscriptionIdentifiers == [3])
        #expect(p.properties.userProperties.map { "\($0.name)=\($0.value)" } == ["k=v"])
    }
}
