import MQTTCodec
import NIOCore
import TestSupport
import Testing

/// Generates random *valid* packets for a version.
struct PacketGenerator {
    var rng: SeededGenerator

    mutating func bool() -> Bool { Bool.random(using: &rng) }
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func pick<T>(_ items: [T]) -> T { items[int(0...(items.count - 1))] }

    mutating func string(max: Int = 12) -> String {
        let alphabet: [Character] = Array("abcXYZ019-_ é€😀$")
        return String((0..<int(0...max)).map { _ in pick(alphabet) })
    }

    mutating func level() -> String { pick(["a", "b", "sensors", "x1", "", "é", "$SYS"]) }

    mutating func topicName() -> String {
        var t = (0..<int(1...5)).map { _ in level() }.joined(separator: "/")
        if t.isEmpty { t = "t" }
        return t
    }

    mutating func topicFilter() -> String {
        var levels = (0..<int(1...5)).map { _ in pick(["a", "+", "b", "", "sensors", "é"]) }
        if bool() { levels.append("#") }
        let filter = levels.joined(separator: "/")
        return filter.isEmpty ? "#" : filter
    }

    mutating func bytes(max: Int = 40) -> ByteBuffer {
        ByteBuffer(bytes: (0..<int(0...max)).map { _ in UInt8.random(in: 0...255, using: &rng) })
    }

    mutating func packetId() -> UInt16 { UInt16.random(in: 1...UInt16.max, using: &rng) }
    mutating func qos() -> QoS { pick(QoS.allCases) }

    mutating func property(_ context: PropertyContext) -> Property? {
        let allowed = PropertyIdentifier.allCases.filter { $0.isAllowed(in: context) }
        let id = pick(allowed)
        switch id {
        case .payloadFormatIndicator: return .payloadFormatIndicator(UInt8(int(0...1)))
        case .messageExpiryInterval: return .messageExpiryInterval(UInt32.random(in: 0...UInt32.max, using: &rng))
        case .contentType: return .contentType(string())
        case .responseTopic: return .responseTopic(topicName())
        case .correlationData: return .correlationData(bytes())
        case .subscriptionIdentifier: return .subscriptionIdentifier(UInt32(int(1...Int(VariableByteInteger.maximum))))
        case .sessionExpiryInterval: return .sessionExpiryInterval(UInt32.random(in: 0...UInt32.max, using: &rng))
        case .assignedClientIdentifier: return .assignedClientIdentifier(string())
        case .serverKeepAlive: return .serverKeepAlive(UInt16.random(in: 0...UInt16.max, using: &rng))
        case .authenticationMethod: return .authenticationMethod(string())
        case .authenticationData: return .authenticationData(bytes())
        case .requestProblemInformation: return .requestProblemInformation(UInt8(int(0...1)))
        case .willDelayInterval: return .willDelayInterval(UInt32.random(in: 0...UInt32.max, using: &rng))
        case .requestResponseInformation: return .requestResponseInformation(UInt8(int(0...1)))
        case .responseInformation: return .responseInformation(string())
        case .serverReference: return .serverReference(string())
        case .reasonString: return .reasonString(string())
        case .receiveMaximum: return .receiveMaximum(UInt16(int(1...65535)))
        case .topicAliasMaximum: return .topicAliasMaximum(UInt16.random(in: 0...UInt16.max, using: &rng))
        case .topicAlias: return .topicAlias(UInt16(int(1...65535)))
        case .maximumQoS: return .maximumQoS(UInt8(int(0...1)))
        case .retainAvailable: return .retainAvailable(UInt8(int(0...1)))
        case .userProperty: return .userProperty(name: string(), value: string())
        case .maximumPacketSize: return .maximumPacketSize(UInt32(int(1...Int(UInt32.max))))
        case .wildcardSubscriptionAvailable: return .wildcardSubscriptionAvailable(UInt8(int(0...1)))
        case .subscriptionIdentifierAvailable: return .subscriptionIdentifierAvailable(UInt8(int(0...1)))
        case .sharedSubscriptionAvailable: return .sharedSubscriptionAvailable(UInt8(int(0...1)))
        }
    }

    /// A property block with no forbidden duplicates.
    mutating func properties(_ context: PropertyContext, version: ProtocolVersion) -> Properties {
        guard version == .v5 else { return Properties() }
        var result = Properties()
        var seen = Set<PropertyIdentifier>()
        for _ in 0..<int(0...4) {
            guard let p = property(context) else { continue }
            if seen.contains(p.identifier) && !p.identifier.mayRepeat(in: context) { continue }
            seen.insert(p.identifier)
            result.append(p)
        }
        return result
    }

    mutating func reasonCode(for type: PacketType) -> ReasonCode {
        pick((0...255).map { ReasonCode(UInt8($0)) }.filter { $0.isValid(in: type) })
    }

    mutating func packet(_ version: ProtocolVersion) -> MQTTPacket {
        let types = PacketType.allCases.filter { version == .v5 || $0 != .auth }
        switch pick(types) {
        case .connect:
            var will: Connect.Will?
            if bool() {
                will = Connect.Will(topic: topicName(), payload: bytes(), qos: qos(), retain: bool(), properties: properties(.will, version: version))
            }
            let username: String? = bool() ? string() : nil
            let password: ByteBuffer? = (version == .v5 || username != nil) && bool() ? bytes() : nil
            return .connect(Connect(protocolVersion: version, bridgeFlag: int(0...9) == 0, cleanStart: bool(),
                                    keepAlive: UInt16.random(in: 0...UInt16.max, using: &rng), properties: properties(.connect, version: version),
                                    clientIdentifier: string(max: 23), will: will, username: username, password: password))
        case .connack:
            if version == .v5 {
                let code = reasonCode(for: .connack)
                return .connAck(ConnAck(sessionPresent: code == .success && bool(), returnCode: code.rawValue, properties: properties(.connack, version: version)))
            }
            let code = UInt8(int(0...5))
            return .connAck(ConnAck(sessionPresent: code == 0 && bool(), returnCode: code))
        case .publish:
            let q = qos()
            var props = properties(.publish, version: version)
            var topic = topicName()
            if version == .v5 && bool() && props.topicAlias != nil { topic = "" }
            if version != .v5 { props = Properties() }
            return .publish(Publish(dup: q != .atMostOnce && bool(), qos: q, retain: bool(), topic: topic,
                                    packetIdentifier: q == .atMostOnce ? nil : packetId(), properties: props, payload: bytes(max: 300)))
        case .puback:
            let (code, props) = ackTail(.puback, context: .puback, version: version)
            return .pubAck(PubAck(packetIdentifier: packetId(), reasonCode: code, properties: props))
        case .pubrec:
            let (code, props) = ackTail(.pubrec, context: .pubrec, version: version)
            return .pubRec(PubRec(packetIdentifier: packetId(), reasonCode: code, properties: props))
        case .pubrel:
            let (code, props) = ackTail(.pubrel, context: .pubrel, version: version)
            return .pubRel(PubRel(packetIdentifier: packetId(), reasonCode: code, properties: props))
        case .pubcomp:
            let (code, props) = ackTail(.pubcomp, context: .pubcomp, version: version)
            return .pubComp(PubComp(packetIdentifier: packetId(), reasonCode: code, properties: props))
        case .subscribe:
            let subs = (0..<int(1...4)).map { _ -> Subscription in
                let filter = topicFilter()
                if version == .v5 {
                    return Subscription(topicFilter: filter, options: SubscriptionOptions(qos: qos(), noLocal: bool(), retainAsPublished: bool(),
                                                                                         retainHandling: pick([.sendOnSubscribe, .sendOnSubscribeIfNew, .doNotSend])))
                }
                return Subscription(topicFilter: filter, options: SubscriptionOptions(qos: qos()))
            }
            return .subscribe(Subscribe(packetIdentifier: packetId(), properties: properties(.subscribe, version: version), subscriptions: subs))
        case .suback:
            let codes = (0..<int(1...4)).map { _ in version == .v5 ? reasonCode(for: .suback) : ReasonCode(pick([0, 1, 2, 0x80])) }
            return .subAck(SubAck(packetIdentifier: packetId(), properties: properties(.suback, version: version), reasonCodes: codes))
        case .unsubscribe:
            return .unsubscribe(Unsubscribe(packetIdentifier: packetId(), properties: properties(.unsubscribe, version: version),
                                            topicFilters: (0..<int(1...4)).map { _ in topicFilter() }))
        case .unsuback:
            if version == .v5 {
                return .unsubAck(UnsubAck(packetIdentifier: packetId(), properties: properties(.unsuback, version: version),
                                          reasonCodes: (0..<int(1...4)).map { _ in reasonCode(for: .unsuback) }))
            }
            return .unsubAck(UnsubAck(packetIdentifier: packetId()))
        case .pingreq: return .pingReq(PingReq())
        case .pingresp: return .pingResp(PingResp())
        case .disconnect:
            guard version == .v5 else { return .disconnect(Disconnect()) }
            let (code, props) = ackTail(.disconnect, context: .disconnect, version: version)
            return .disconnect(Disconnect(reasonCode: code, properties: props))
        case .auth:
            let (code, props) = ackTail(.auth, context: .auth, version: version)
            return .auth(Auth(reasonCode: code, properties: props))
        }
    }

    /// nil/nil, code/nil or code/properties: the three 5.0 length forms.
    mutating func ackTail(_ type: PacketType, context: PropertyContext, version: ProtocolVersion) -> (ReasonCode?, Properties?) {
        guard version == .v5 else { return (nil, nil) }
        switch int(0...2) {
        case 0: return (nil, nil)
        case 1: return (reasonCode(for: type), nil)
        default: return (reasonCode(for: type), properties(context, version: version))
        }
    }
}

@Suite("Round trip over generated packets")
struct RoundTripPropertyTests {
    @Test("decode(encode(p)) == p and encode(decode(b)) == b for 20,000 generated packets per version", arguments: ProtocolVersion.allCases)
    func roundTrip(version: ProtocolVersion) throws {
        var generator = PacketGenerator(rng: SeededGenerator(seed: 0x6D71_6272 &+ UInt64(version.rawValue)))
        var seenTypes = Set<PacketType>()
        for index in 0..<20_000 {
            let packet = generator.packet(version)
            seenTypes.insert(packet.type)
            let bytes = packet.encode(version: version)
            let decoded: MQTTPacket
            do {
                decoded = try MQTTPacket.decode(bytes: bytes, version: version)
            } catch {
                Issue.record("case \(index): \(packet) failed to decode: \(error) bytes \(hex(bytes))")
                return
            }
            guard decoded == packet else {
                Issue.record("case \(index): decoded \(decoded) != generated \(packet)")
                return
            }
            let again = decoded.encode(version: version)
            guard again == bytes else {
                Issue.record("case \(index): re-encoding differs: \(hex(again)) vs \(hex(bytes))")
                return
            }
        }
        #expect(seenTypes.count == (version == .v5 ? 15 : 14))
    }

    @Test("Any prefix of a valid packet is 'need more bytes' for the framer, never a decode")
    func prefixes() throws {
        var generator = PacketGenerator(rng: SeededGenerator(seed: 42))
        for _ in 0..<300 {
            let bytes = generator.packet(.v5).encode(version: .v5)
            for length in 0..<bytes.readableBytes {
                var prefix = bytes.getSlice(at: bytes.readerIndex, length: length)!
                #expect(try MQTTFrameDecoder.parseFrame(from: &prefix, maximumPacketSize: 1 << 20, expectedType: nil) == nil)
            }
        }
    }
}
