@testable import Bridge
import MQTTCodec
import NIOCore
import TestSupport
import Testing
import TopicACL

/// The proxy's safety properties under random traffic, checked from outside.
///
/// Thousands of seeded sessions: a random client (3.1, 3.1.1 or 5.0, any identity, valid and
/// mutated packets, topic aliases in and out of range) and a scripted broker that answers what
/// it received and delivers random topics. Two observers decode what each side actually
/// receives, keeping their own alias tables as a real broker and client would, and check:
/// - the broker never sees a PUBLISH or will the identity may not write, a SUBSCRIBE filter
///   that matches a topic it may not read, or an alias it cannot resolve;
/// - the client never sees a delivery it may not read;
/// - nothing reaches the broker before CONNECT or either side after the close;
/// - nothing is lost: every QoS 1/2 PUBLISH either way is forwarded or answered by the proxy;
/// - every SUBACK the client sees has one code per requested filter.
/// The oracle decides with `CompiledACL.decide` (itself compared with mosquitto elsewhere), not
/// with the proxy's cache or its SUBSCRIBE narrowing. A failure prints the seed to replay.
@Suite("ProxySession under random traffic")
struct ProxySessionRandomTests {
    static let aclText = """
    topic read public/#
    user alice
    topic readwrite sensors/#
    topic read alerts/+
    topic deny sensors/secret
    topic deny sensors/+/private
    topic write status/alice
    user bob
    topic read #
    topic deny $SYS/#
    topic write cmd/bob/+
    pattern readwrite devices/%c/#
    pattern read users/%u/inbox
    pattern deny devices/%c/locked
    """

    static let levels = ["sensors", "alerts", "status", "alice", "bob", "cmd", "devices", "c1", "c2", "users", "inbox",
                         "secret", "private", "locked", "public", "x", "$SYS", ""]

    /// Every topic the generator can produce as a name, for checking what a filter can match.
    static let sampleTopics: [String] = {
        var topics = Set<String>()
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<4000 { topics.insert(RandomTraffic.topic(using: &generator)) }
        return topics.sorted()
    }()

    @Test("thousands of random sessions: nothing forbidden reaches either side and nothing is lost", arguments: 0..<8)
    func randomSessions(shard: Int) throws {
        let acl = try CompiledACL(parsing: Self.aclText, source: "acl.conf")
        var totals = Totals()
        for index in 0..<400 {
            let seed = UInt64(shard * 1_000_000 + index)
            var run = SessionRun(acl: acl, seed: seed, sampleTopics: Self.sampleTopics)
            run.play(steps: 60)
            totals.add(run)
            if !run.violations.isEmpty {
                Issue.record("seed \(seed): \(run.violations.prefix(5).joined(separator: "\n"))\nlast steps:\n\(run.log.suffix(12).joined(separator: "\n"))")
                return
            }
        }
        // The generator must exercise what the properties are about, or they prove nothing.
        // (Per shard of 400 sessions, seen: ~200 / ~1,300 publishes, ~800 / ~800 deliveries, 20-45 alias-only, ~85 narrowed.)
        #expect(totals.publishesForwarded > 80, "\(totals)")
        #expect(totals.publishesDenied > 300, "\(totals)")
        #expect(totals.deliveriesForwarded > 300, "\(totals)")
        #expect(totals.deliveriesDenied > 300, "\(totals)")
        #expect(totals.aliasOnlyForwarded > 10, "\(totals)")
        #expect(totals.subscribesNarrowed > 20, "\(totals)")
        #expect(totals.protocolCloses > 100, "\(totals)")
        #expect(totals.connectsRefused > 50, "\(totals)")
    }

    struct Totals: CustomStringConvertible {
        var publishesForwarded = 0, publishesDenied = 0, deliveriesForwarded = 0, deliveriesDenied = 0
        var aliasOnlyForwarded = 0, subscribesNarrowed = 0, protocolCloses = 0, connectsRefused = 0

        mutating func add(_ run: SessionRun) {
            publishesForwarded += run.broker.publishes
            publishesDenied += run.denied[.publish, default: 0]
            deliveriesForwarded += run.client.publishes
            deliveriesDenied += run.denied[.delivery, default: 0]
            aliasOnlyForwarded += run.broker.aliasOnly + run.client.aliasOnly
            subscribesNarrowed += run.narrowed
            protocolCloses += run.protocolCloses
            connectsRefused += run.denied[.connect, default: 0] + run.denied[.will, default: 0]
        }

        var description: String {
            "publishes \(publishesForwarded)/\(publishesDenied) deliveries \(deliveriesForwarded)/\(deliveriesDenied) alias-only \(aliasOnlyForwarded) " +
                "narrowed \(subscribesNarrowed) protocol closes \(protocolCloses) refused connects \(connectsRefused)"
        }
    }
}

/// Random packets. Topics come from a small vocabulary so that rules match often.
enum RandomTraffic {
    /// Topics the rules are about; the rest are random level sequences.
    static let ruledTopics = ["sensors/a", "sensors/b", "sensors/secret", "sensors/b/private", "sensors/b/c", "sensors/c/d/e", "alerts/fire",
                              "alerts/a/b", "status/alice", "status/bob", "cmd/bob/go", "cmd/bob/stop", "cmd/bob", "devices/c1/t", "devices/c1/u/v",
                              "devices/c1/locked", "devices/c2/t", "users/alice/inbox", "users/bob/inbox", "public/news", "$SYS/load", "x"]

    static func topic(using g: inout SeededGenerator) -> String {
        if Int.random(in: 0..<3, using: &g) != 0 { return ruledTopics.randomElement(using: &g)! }
        let depth = Int.random(in: 1...4, using: &g)
        return (0..<depth).map { _ in ProxySessionRandomTests.levels.randomElement(using: &g)! }.joined(separator: "/")
    }

    static func filter(using g: inout SeededGenerator) -> String {
        var levels = topic(using: &g).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        for i in levels.indices where Int.random(in: 0..<5, using: &g) == 0 { levels[i] = "+" }
        if Int.random(in: 0..<3, using: &g) == 0 { levels.append("#") }
        let text = levels.joined(separator: "/")
        return Int.random(in: 0..<8, using: &g) == 0 ? "$share/g/" + text : text
    }

    static func qos(using g: inout SeededGenerator) -> QoS { QoS(rawValue: UInt8.random(in: 0...2, using: &g))! }
    static func packetID(using g: inout SeededGenerator) -> UInt16 { UInt16.random(in: 1...6, using: &g) }

    /// Flips, drops or inserts one byte: mostly still framed, often no longer valid.
    static func mutate(_ bytes: ByteBuffer, using g: inout SeededGenerator) -> ByteBuffer {
        var array = Array(bytes.readableBytesView)
        let i = Int.random(in: 0..<array.count, using: &g)
        switch Int.random(in: 0..<3, using: &g) {
        case 0: array[i] ^= UInt8(1) << UInt8.random(in: 0...7, using: &g)
        case 1: array[i] = UInt8.random(in: 0...255, using: &g)
        default:
            // Keep the frame's length consistent so the body decoder, not the framer, sees it.
            if i >= 2 { array.insert(UInt8.random(in: 0...255, using: &g), at: i); if array[1] < 127 { array[1] += 1 } }
        }
        return ByteBuffer(bytes: array)
    }
}

/// What one side (the broker, or the client) receives from the proxy, decoded as that side
/// would, with its own alias table.
struct Observer {
    enum Side { case broker, client }
    let side: Side
    var version: ProtocolVersion?
    var buffer = ByteBuffer()
    /// Alias → topic as this side has been told.
    var aliases: [UInt16: String] = [:]
    var aliasMaximum: UInt16 = 0
    var received: [MQTTPacket] = []
    var publishes = 0
    var aliasOnly = 0
}

struct SessionRun {
    let acl: CompiledACL
    let sampleTopics: [String]
    var g: SeededGenerator
    var session: ProxySession
    var broker = Observer(side: .broker)
    var client = Observer(side: .client)
    var version: ProtocolVersion = .v3_1_1
    /// The identity as the broker knows it (client id possibly assigned by the proxy).
    var identity: Identity?
    var upstreamOpen = false
    var closed = false
    var violations: [String] = []
    var log: [String] = []
    var denied: [DenialEvent.Kind: Int] = [:]
    var narrowed = 0
    var protocolCloses = 0
    /// The client's SUBSCRIBEs by packet id: how many filters each asked for.
    var requestedFilters: [UInt16: Int] = [:]
    /// What the broker still owes an answer for.
    var brokerPendingSubscribes: [Subscribe] = []
    var brokerPendingUnsubscribes: [Unsubscribe] = []
    var brokerPendingPublishes: [UInt16] = []
    var clientAliasMaximum: UInt16 = 0
    var brokerAliasMaximum: UInt16 = 0
    /// The aliases each sender has set (whether or not the proxy passed that PUBLISH on).
    var aliasesSet: [Observer.Side: Set<UInt16>] = [:]
    /// The client's SUBSCRIBE and UNSUBSCRIBE ids not answered yet.
    var requestsInFlight = Set<UInt16>()
    /// The SUBACK counts are checked only while the broker answered each SUBSCRIBE correctly.
    var brokerMisbehaved = false

    init(acl: CompiledACL, seed: UInt64, sampleTopics: [String]) {
        self.acl = acl
        self.sampleTopics = sampleTopics
        g = SeededGenerator(seed: seed)
        var configuration = ProxySession.Configuration()
        configuration.allowAnonymous = Bool.random(using: &g)
        session = ProxySession(configuration: configuration, aclStore: ACLStore(acl))
    }

    mutating func play(steps: Int) {
        version = [.v3_1, .v3_1_1, .v5, .v5].randomElement(using: &g)!
        if Int.random(in: 0..<20, using: &g) == 0 {
            // A packet before CONNECT.
            clientSends(MQTTPacket.pingReq(PingReq()).encode(version: version), note: "PINGREQ before CONNECT")
            return
        }
        clientSends(randomConnect(), note: "CONNECT")
        guard upstreamOpen, !closed else { return }
        brokerAliasMaximum = version == .v5 ? [0, 1, 2, 3, 3].randomElement(using: &g)! : 0
        let accepted = Int.random(in: 0..<15, using: &g) != 0
        let ack = ConnAck(sessionPresent: false, returnCode: accepted ? 0 : (version == .v5 ? 0x87 : 5),
                          properties: version == .v5 ? (brokerAliasMaximum > 0 ? [.topicAliasMaximum(brokerAliasMaximum)] : []) : nil)
        brokerSends(MQTTPacket.connAck(ack).encode(version: version), note: "CONNACK \(accepted)")
        // A refused CONNACK reaches the client as it is; the broker then closes.
        guard accepted else {
            if client.received.last != .connAck(ack) { violations.append("the broker's refusing CONNACK did not reach the client") }
            return
        }
        for _ in 0..<steps where !closed {
            step()
        }
    }

    // MARK: Generators

    mutating func randomConnect() -> ByteBuffer {
        let username = [nil, "alice", "alice", "alice", "bob", "bob", "bob", "carol", "a+b"].randomElement(using: &g)!
        let clientID = ["c1", "c1", "c2", "", "x/y"].randomElement(using: &g)!
        var properties: Properties = []
        if version == .v5 {
            clientAliasMaximum = [0, 1, 2, 3, 3].randomElement(using: &g)!
            if clientAliasMaximum > 0 { properties.append(.topicAliasMaximum(clientAliasMaximum)) }
        }
        let will = Int.random(in: 0..<8, using: &g) == 0
            ? Connect.Will(topic: RandomTraffic.topic(using: &g), payload: ByteBuffer(string: "w"), qos: RandomTraffic.qos(using: &g), retain: false)
            : nil
        let connect = Connect(protocolVersion: version, cleanStart: Int.random(in: 0..<5, using: &g) != 0, keepAlive: 30, properties: properties,
                              clientIdentifier: clientID, will: will, username: username)
        return MQTTPacket.connect(connect).encode(version: version)
    }

    mutating func randomPublish(aliasMaximum: UInt16, sender: Observer.Side) -> ByteBuffer {
        let qos = RandomTraffic.qos(using: &g)
        var topic = RandomTraffic.topic(using: &g)
        var properties: Properties = []
        if version == .v5, Int.random(in: 0..<(aliasMaximum == 0 ? 10 : 2), using: &g) == 0 {
            // Mostly within the agreed maximum, sometimes one above it.
            let alias = Int.random(in: 0..<10, using: &g) == 0 || aliasMaximum == 0 ? aliasMaximum + 1 : UInt16.random(in: 1...aliasMaximum, using: &g)
            properties.append(.topicAlias(alias))
            // An alias alone: mostly one this sender has set, now and then one it never set.
            let known = aliasesSet[sender, default: []].contains(alias)
            if Int.random(in: 0..<(known ? 2 : 20), using: &g) == 0 {
                topic = ""
            } else {
                aliasesSet[sender, default: []].insert(alias)
            }
        }
        let publish = Publish(qos: qos, retain: Bool.random(using: &g), topic: topic,
                              packetIdentifier: qos == .atMostOnce ? nil : RandomTraffic.packetID(using: &g), properties: properties,
                              payload: ByteBuffer(string: "m"))
        return MQTTPacket.publish(publish).encode(version: version)
    }

    mutating func step() {
        let roll = Int.random(in: 0..<100, using: &g)  // percent; 99 is shared by the last two cases
        switch roll {
        case 0..<30:
            clientSends(randomPublish(aliasMaximum: brokerAliasMaximum, sender: .client), note: "client PUBLISH")
        case 30..<38:
            let count = Int.random(in: 1...3, using: &g)
            let subscriptions = (0..<count).map { _ in
                Subscription(topicFilter: RandomTraffic.filter(using: &g), options: .init(qos: RandomTraffic.qos(using: &g)))
            }
            guard let id = unusedRequestID() else { return }
            requestedFilters[id] = count
            clientSends(MQTTPacket.subscribe(Subscribe(packetIdentifier: id, subscriptions: subscriptions)).encode(version: version), note: "SUBSCRIBE")
        case 38..<42:
            let filters = (0..<Int.random(in: 1...2, using: &g)).map { _ in RandomTraffic.filter(using: &g) }
            guard let id = unusedRequestID() else { return }
            clientSends(MQTTPacket.unsubscribe(Unsubscribe(packetIdentifier: id, topicFilters: filters)).encode(version: version),
                        note: "UNSUBSCRIBE")
        case 42..<46:
            let id = RandomTraffic.packetID(using: &g)
            let packet: MQTTPacket = [.pubRel(PubRel(packetIdentifier: id)), .pubAck(PubAck(packetIdentifier: id)),
                                      .pubRec(PubRec(packetIdentifier: id)), .pingReq(PingReq())].randomElement(using: &g)!
            clientSends(packet.encode(version: version), note: "client \(packet.type)")
        case 46..<48:
            let valid = randomPublish(aliasMaximum: brokerAliasMaximum, sender: .client)
            clientSends(RandomTraffic.mutate(valid, using: &g), note: "client mutated PUBLISH")
        case 48..<80:
            brokerSends(randomPublish(aliasMaximum: clientAliasMaximum, sender: .broker), note: "broker PUBLISH")
        case 80..<94:
            answerPending()
        case 94..<97:
            let id = RandomTraffic.packetID(using: &g)
            brokerSends(MQTTPacket.pubRel(PubRel(packetIdentifier: id)).encode(version: version), note: "broker PUBREL")
        case 97:
            brokerMisbehaved = true
            let valid = randomPublish(aliasMaximum: clientAliasMaximum, sender: .broker)
            brokerSends(RandomTraffic.mutate(valid, using: &g), note: "broker mutated PUBLISH")
        case 98:
            // A SUBACK the broker owes nobody, or with the wrong number of codes.
            brokerMisbehaved = true
            let codes = (0..<Int.random(in: 1...3, using: &g)).map { _ in ReasonCode(UInt8.random(in: 0...2, using: &g)) }
            brokerSends(MQTTPacket.subAck(SubAck(packetIdentifier: RandomTraffic.packetID(using: &g), reasonCodes: codes)).encode(version: version),
                        note: "broker stray SUBACK")
        case 99 where Bool.random(using: &g):
            clientSends(MQTTPacket.disconnect(Disconnect()).encode(version: version), note: "client DISCONNECT")
        default:
            // Another packet a client must not send, or a second CONNECT.
            let packet: MQTTPacket = Bool.random(using: &g)
                ? .connAck(ConnAck(sessionPresent: false, returnCode: 0, properties: version == .v5 ? [] : nil))
                : .connect(Connect(protocolVersion: version, cleanStart: true, keepAlive: 5, clientIdentifier: "again", username: "bob"))
            clientSends(packet.encode(version: version), note: "client \(packet.type) (forbidden)")
        }
    }

    /// A client may not reuse the id of a SUBSCRIBE or UNSUBSCRIBE still unanswered (MQTT-2.2.1-3).
    mutating func unusedRequestID() -> UInt16? {
        let free = (1...8).map(UInt16.init).filter { !requestsInFlight.contains($0) }
        guard let id = free.randomElement(using: &g) else { return nil }
        requestsInFlight.insert(id)
        return id
    }

    /// The broker answers the oldest SUBSCRIBE, UNSUBSCRIBE or QoS 1/2 PUBLISH it received.
    mutating func answerPending() {
        if !brokerPendingSubscribes.isEmpty {
            let subscribe = brokerPendingSubscribes.removeFirst()
            let codes = subscribe.subscriptions.map { _ in
                Int.random(in: 0..<6, using: &g) == 0 ? ReasonCode(version == .v5 ? 0x87 : 0x80) : ReasonCode(UInt8.random(in: 0...2, using: &g))
            }
            brokerSends(MQTTPacket.subAck(SubAck(packetIdentifier: subscribe.packetIdentifier, reasonCodes: codes)).encode(version: version), note: "SUBACK")
        } else if !brokerPendingUnsubscribes.isEmpty {
            let unsubscribe = brokerPendingUnsubscribes.removeFirst()
            let codes = version == .v5 ? unsubscribe.topicFilters.map { _ in ReasonCode(0) } : []
            brokerSends(MQTTPacket.unsubAck(UnsubAck(packetIdentifier: unsubscribe.packetIdentifier, reasonCodes: codes)).encode(version: version), note: "UNSUBACK")
        } else if !brokerPendingPublishes.isEmpty {
            let id = brokerPendingPublishes.removeFirst()
            brokerSends(MQTTPacket.pubAck(PubAck(packetIdentifier: id)).encode(version: version), note: "broker PUBACK")
        }
    }

    // MARK: Driving the session

    mutating func clientSends(_ bytes: ByteBuffer, note: String) { send(bytes, from: .client, note: note) }
    mutating func brokerSends(_ bytes: ByteBuffer, note: String) { send(bytes, from: .broker, note: note) }

    /// Frames `bytes` as ProxyConnection does and hands each frame to the session.
    mutating func send(_ bytes: ByteBuffer, from sender: Observer.Side, note: String) {
        log.append("\(sender) → \(note): \(hex(bytes))")
        var stream = bytes
        while !closed {
            let frame: MQTTFrame
            do {
                guard let next = try MQTTFrameDecoder.parseFrame(from: &stream, maximumPacketSize: 1 << 20, expectedType: nil) else { return }
                frame = next
            } catch {
                apply(sender == .client ? session.clientFramingError(error) : session.brokerFramingError(error), original: nil, from: sender)
                return
            }
            let before = (broker: broker.received.count, client: client.received.count)
            let publish = frame.type == .publish ? try? MQTTPacket.decodePublish(frame, version: version) : nil
            apply(sender == .client ? session.clientFrame(frame) : session.brokerFrame(frame), original: frame, from: sender)
            // Nothing lost: a QoS 1/2 PUBLISH the proxy accepted was passed on, or answered to
            // its sender (denied: by the proxy, on the receiver's behalf).
            guard let publish, let id = publish.packetIdentifier, isOpen else { continue }
            let receiver = sender == .client ? broker.received[before.broker...] : client.received[before.client...]
            let senderGot = sender == .client ? client.received[before.client...] : broker.received[before.broker...]
            let passedOn = receiver.contains { if case .publish(let p) = $0 { p.packetIdentifier == id } else { false } }
            let answered = senderGot.contains { packet in
                switch packet {
                case .pubAck(let a): a.packetIdentifier == id
                case .pubRec(let r): r.packetIdentifier == id
                default: false
                }
            }
            if !passedOn && !answered { violations.append("\(sender)'s QoS \(publish.qos.rawValue) PUBLISH id \(id) neither passed on nor answered") }
        }
    }

    mutating func apply(_ action: ProxySession.Action, original: MQTTFrame?, from sender: Observer.Side) {
        switch action {
        case .forward:
            guard let original else { violations.append("forward without a frame"); return }
            deliver(original.bytes, to: sender == .client ? .broker : .client)
        case .effects(let effects):
            for effect in effects {
                switch effect {
                case .toBroker(let bytes): deliver(bytes, to: .broker)
                case .toClient(let bytes): deliver(bytes, to: .client)
                case .openUpstream(let connect):
                    if upstreamOpen || closed { violations.append("upstream opened twice or after close") }
                    upstreamOpen = true
                    deliver(connect, to: .broker)
                case .denied(let event):
                    denied[event.kind, default: 0] += 1
                case .clientProtocolError, .brokerProtocolError:
                    protocolCloses += 1
                case .closeBoth:
                    closed = true
                }
            }
        }
    }

    // MARK: The observers' checks

    mutating func deliver(_ bytes: ByteBuffer, to side: Observer.Side) {
        if closed { violations.append("bytes to the \(side) after the close: \(hex(bytes))") }
        if side == .broker && !upstreamOpen { violations.append("bytes to the broker before CONNECT: \(hex(bytes))") }
        var observer = side == .broker ? broker : client
        observer.buffer.writeImmutableBuffer(bytes)
        while true {
            let frame: MQTTFrame
            let packet: MQTTPacket
            do {
                guard let next = try MQTTFrameDecoder.parseFrame(from: &observer.buffer, maximumPacketSize: 1 << 20, expectedType: nil) else { break }
                frame = next
                if frame.type == .connect {
                    let connect = try MQTTPacket.decodeConnect(frame)
                    observer.version = connect.protocolVersion
                    packet = .connect(connect)
                } else {
                    packet = try MQTTPacket.decode(frame, version: observer.version ?? version)
                }
            } catch {
                violations.append("the \(side) received bytes it cannot decode (\(error)): \(hex(bytes))")
                observer.buffer.clear()
                break
            }
            observer.received.append(packet)
            check(packet, at: &observer)
        }
        if side == .broker { broker = observer } else { client = observer }
    }

    mutating func check(_ packet: MQTTPacket, at observer: inout Observer) {
        switch (observer.side, packet) {
        case (.broker, .connect(let connect)):
            identity = .client(username: connect.username, clientID: connect.clientIdentifier.isEmpty ? nil : connect.clientIdentifier)
            observer.aliasMaximum = brokerAliasMaximum
            if let will = connect.will, !allowed(will.topic, .write) { violations.append("will on \(will.topic) reached the broker for \(identity!)") }
        case (.client, .connAck(let ack)):
            // The broker's CONNACK fixes how many aliases the client may use towards it.
            observer.aliasMaximum = clientAliasMaximum
            if ack.isAccepted { broker.aliasMaximum = brokerAliasMaximum }
        case (_, .publish(let publish)):
            guard let topic = resolve(publish, at: &observer) else { return }
            let access: Access = observer.side == .broker ? .write : .read
            if !allowed(topic, access) { violations.append("\(observer.side) received PUBLISH on \(topic), not \(access)able for \(identityText)") }
            observer.publishes += 1
            if publish.topic.isEmpty { observer.aliasOnly += 1 }
            if observer.side == .broker, let id = publish.packetIdentifier { brokerPendingPublishes.append(id) }
        case (.broker, .subscribe(let subscribe)):
            for subscription in subscribe.subscriptions {
                let inner = SharedSubscription(subscription.topicFilter)?.filter ?? subscription.topicFilter
                guard let filter = try? TopicFilter(inner) else {
                    violations.append("broker received an invalid filter \(subscription.topicFilter)")
                    continue
                }
                if let unreadable = sampleTopics.first(where: { filter.matches($0) && !allowed($0, .read) }) {
                    violations.append("broker received SUBSCRIBE \(subscription.topicFilter), which matches \(unreadable), not readable for \(identityText)")
                }
            }
            if let requested = requestedFilters[subscribe.packetIdentifier], requested != subscribe.subscriptions.count { narrowed += 1 }
            brokerPendingSubscribes.append(subscribe)
        case (.broker, .unsubscribe(let unsubscribe)):
            brokerPendingUnsubscribes.append(unsubscribe)
        case (.client, .unsubAck(let unsubAck)):
            requestsInFlight.remove(unsubAck.packetIdentifier)
        case (.client, .subAck(let subAck)):
            requestsInFlight.remove(subAck.packetIdentifier)
            if !brokerMisbehaved, let requested = requestedFilters[subAck.packetIdentifier], requested != subAck.reasonCodes.count {
                violations.append("SUBACK \(subAck.packetIdentifier) has \(subAck.reasonCodes.count) codes for \(requested) filters")
            }
        default:
            break
        }
    }

    /// Both connections up and the session reading (not closing, not waiting to close).
    var isOpen: Bool { !closed && (session.state == .connected || session.state == .connecting) }

    var identityText: String { identity.map { "\($0)" } ?? "(no identity)" }

    func allowed(_ topic: String, _ access: Access) -> Bool {
        guard let identity else { return false }
        return acl.decide(identity, topic: topic, access: access).isAllowed
    }

    /// The topic a PUBLISH means to its receiver, by the receiver's own alias table.
    mutating func resolve(_ publish: Publish, at observer: inout Observer) -> String? {
        guard let alias = publish.properties.topicAlias else {
            if publish.topic.isEmpty { violations.append("\(observer.side) received a PUBLISH with no topic and no alias") }
            return publish.topic
        }
        if alias == 0 || alias > observer.aliasMaximum {
            violations.append("\(observer.side) received alias \(alias) above its maximum \(observer.aliasMaximum)")
            return nil
        }
        if !publish.topic.isEmpty {
            observer.aliases[alias] = publish.topic
            return publish.topic
        }
        guard let topic = observer.aliases[alias] else {
            violations.append("\(observer.side) received alias \(alias), which it was never told")
            return nil
        }
        return topic
    }
}
