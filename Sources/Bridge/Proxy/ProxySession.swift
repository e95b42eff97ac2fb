import MQTTCodec
import NIOCore
public import TopicACL
import Foundation

/// A denial, for the audit log and the denial counters. Never a metric label: topics are
/// unbounded, so they appear only in log lines.
public struct DenialEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case connect, will, publish, subscribe, delivery
    }

    public var kind: Kind
    /// "client_to_broker" or "broker_to_client".
    public var direction: String
    public var identity: Identity
    public var topic: String
    public var rule: SourceLocation?
    public var reason: String
}

/// The per-connection state machine of the MQTT-aware proxy: every packet from the client or
/// the broker goes in, and what to do comes out. No I/O here: `ProxyConnection` performs the
/// actions, so every rule is testable with exact bytes.
///
/// The common case (a packet the ACL allows, forwarded unchanged) is `.forward`, with no
/// allocation; everything else is a list of effects.
struct ProxySession {
    struct Configuration {
        var decodingOptions = DecodingOptions.strict
        /// Refuse clients without a username at CONNECT (mosquitto's allow_anonymous false).
        var allowAnonymous = true
        /// Give clients with an empty client id one of ours ("auto-…", as mosquitto does), so
        /// `%c` patterns see the id the broker will use.
        var assignClientIdentifiers = true
        /// The largest packet the proxy frames, either way. 5.0 peers are told (Maximum Packet
        /// Size in the CONNECT to the broker and in the CONNACK to the client), so they do not
        /// send what the proxy would have to refuse: the broker then drops an oversized
        /// delivery for this client instead of the proxy closing the connection over it.
        var maximumPacketSize: Int? = nil
        /// At most this many broker filters may be held through narrowing by one client (by its
        /// connection, or by a persistent session across its connections: `NarrowingLedger`;
        /// the filters produced for the requested filters narrowing changes), so also at most this
        /// many in one SUBSCRIBE, of at most `maximumPacketSize` bytes; and at most this many in
        /// one UNSUBSCRIBE of filters the connection never subscribed. Narrowing multiplies:
        /// `#` for a user with 200 read grants is 200 filters, and without a limit a 23 KB
        /// SUBSCRIBE of 2,000 distinct wildcards became 400,000 filters that kept mosquitto busy
        /// for 20 s; a limit per packet alone would still let small SUBSCRIBEs, one after
        /// another, pile up filters at the broker. A requested filter past the limit is refused
        /// (5.0: 0x97 Quota exceeded) and logged as a denial.
        var maximumNarrowedFilters = 1000
    }

    /// What narrowing may still add to the SUBSCRIBE or UNSUBSCRIBE being built, and how
    /// much narrowing work is left for it: every attempt costs at least one filter, so one
    /// packet makes at most `maximumNarrowedFilters` of them; after that, filters are only
    /// checked whole (`ACLPolicy.subscribe(filter:narrowing:)`).
    struct NarrowingBudget {
        private(set) var filters: Int
        private var bytes: Int
        private var decided: [String: SubscribeDecision] = [:]
        /// Requested filters whose narrowed filters already held were counted back once.
        private var credited: Set<String> = []

        /// `inUse`: narrowed filters the connection already holds or has asked for.
        init(_ configuration: Configuration, inUse: Int = 0) {
            filters = max(0, configuration.maximumNarrowedFilters - inUse)
            bytes = configuration.maximumPacketSize ?? 268_435_455
        }

        /// The decision for `filter`: narrowed while the budget lasts, whole-or-nothing after.
        /// A filter repeated in the packet is decided once.
        mutating func decide(_ filter: String, _ policy: ACLPolicy) -> SubscribeDecision {
            if let known = decided[filter] { return known }
            let decision = policy.subscribe(filter: filter, narrowing: filters > 0)
            if decided.count < 10_000 { decided[filter] = decision }
            switch decision {
            case .denied(.invalidFilter), .denied(.narrowingNotAttempted), .allowed: break
            case .denied: filters = max(0, filters - 1)  // a narrowing attempt that found nothing
            case .narrowed: break  // charged by `take`
            }
            return decision
        }

        /// Takes `narrowed` from the budget if all of it fits; if not, charges the attempt.
        /// `held`: what the requested filter holds through narrowing already, which its new
        /// subscription replaces (counted back once per packet).
        mutating func take(_ narrowed: [String], for requested: String = "", held: Int = 0) -> Bool {
            let credit = held > 0 && !credited.contains(requested) ? held : 0
            let size = narrowed.count <= filters + credit ? narrowed.reduce(0) { $0 + 3 + $1.utf8.count } : Int.max  // length, filter, options
            guard size <= bytes else {
                filters = max(0, filters - 1)
                return false
            }
            if credit > 0 { credited.insert(requested) }
            filters -= max(0, narrowed.count - credit)
            bytes -= size
            return true
        }
    }

    enum Effect: Equatable {
        case toBroker(ByteBuffer)
        case toClient(ByteBuffer)
        /// Connect to the broker and send it `connect` first.
        case openUpstream(connect: ByteBuffer)
        case denied(DenialEvent)
        /// A malformed or forbidden packet from the client (counted as a decode / protocol error).
        case clientProtocolError(MQTTCodecError)
        /// A malformed or forbidden packet from the broker.
        case brokerProtocolError(MQTTCodecError)
        /// Close both connections once what was queued above has been written.
        case closeBoth
    }

    enum Action: Equatable {
        /// Forward the frame's original bytes to the other side.
        case forward
        case effects([Effect])
    }

    enum State: Equatable {
        case awaitingConnect
        case connecting
        case connected
        /// The client broke the protocol before the broker's CONNACK arrived. A 5.0 server
        /// must not send DISCONNECT before a successful CONNACK (MQTT-3.14.0-1), so the CONNACK
        /// is forwarded first, then this DISCONNECT, then both sides close.
        case failedAwaitingConnAck(Disconnect)
        case closed
    }

    let configuration: Configuration
    let aclStore: ACLStore
    private(set) var state = State.awaitingConnect
    private(set) var version: ProtocolVersion?
    private(set) var identity: Identity?
    private var policy: ACLPolicy?
    private var policyGeneration = -1
    private(set) var assignedClientIdentifier: String?

    /// Client → broker aliases, bounded by the broker's Topic Alias Maximum (CONNACK).
    private var clientAliases = TopicAliasMap(maximum: 0)
    /// Broker → client aliases, bounded by the client's Topic Alias Maximum (CONNECT).
    private var brokerAliases = TopicAliasMap(maximum: 0)
    /// QoS 2 PUBLISHes from the client that were denied and acknowledged here (3.1.x), whose
    /// PUBREL must be answered here because the broker never saw them.
    private var locallyReceivedFromClient = Set<UInt16>()
    /// QoS 2 deliveries from the broker that were denied and acknowledged here on the client's
    /// behalf, whose PUBREL must be answered here.
    private var locallyReceivedFromBroker = Set<UInt16>()
    /// QoS > 0 PUBLISHes forwarded to the broker and not yet acknowledged (for draining).
    private(set) var inFlightToBroker = Set<UInt16>()
    private var subscriptions = SubscriptionBook()
    /// Narrowed filters of persistent sessions, across this listener's connections.
    let narrowingLedger: NarrowingLedger
    /// The client id, when the broker keeps this session after the connection ends (3.1.x
    /// without Clean Session; 5.0 with a Session Expiry Interval): its narrowed filters are
    /// counted in `narrowingLedger`, not only in `subscriptions`.
    private var persistentClientID: String?
    private var decisions = DecisionCache()
    /// The 5.0 CONNECT named an Authentication Method: only then may AUTH follow (§4.12).
    private var enhancedAuthentication = false

    init(configuration: Configuration, aclStore: ACLStore, narrowingLedger: NarrowingLedger = NarrowingLedger()) {
        self.configuration = configuration
        self.aclStore = aclStore
        self.narrowingLedger = narrowingLedger
    }

    /// Narrowed filters in use: held by the session (for a persistent one, also from earlier
    /// connections) and asked for in SUBSCRIBEs not yet answered.
    private var narrowedInUse: Int {
        (persistentClientID.map(narrowingLedger.count) ?? subscriptions.narrowedHeld) + subscriptions.narrowedPending
    }

    /// For a persistent session, moves the ledger by what this connection's narrowed filters
    /// did since `before` (`subscriptions.narrowedHeld` then), less `removedElsewhere`:
    /// narrowed filters an UNSUBSCRIBE sent for filters subscribed on an earlier connection.
    private func recordNarrowed(since before: Int, removedElsewhere: Int = 0) {
        guard let clientID = persistentClientID else { return }
        narrowingLedger.add(subscriptions.narrowedHeld - before - removedElsewhere, for: clientID)
    }

    // MARK: Client → broker

    mutating func clientFrame(_ frame: MQTTFrame) -> Action {
        switch state {
        case .awaitingConnect:
            return connect(frame)
        case .closed, .failedAwaitingConnAck:
            return .effects([])
        case .connecting, .connected:
            break
        }
        let version = self.version!
        if frame.type == .publish {
            // Most of the traffic: decoded straight to its struct, with no MQTTPacket around it
            // to copy in and out of the switch below.
            let publish: Publish
            do {
                publish = try MQTTPacket.decodePublish(frame, version: version, options: configuration.decodingOptions)
            } catch {
                return clientError(error)
            }
            return clientPublish(publish, version: version)
        }
        let packet: MQTTPacket
        do {
            packet = try MQTTPacket.decode(frame, version: version, options: configuration.decodingOptions)
        } catch {
            return clientError(error)
        }
        if packet.type.sender == .server {
            return clientError(.init(.protocolError, field: "\(packet.type)", "a client must not send \(packet.type)", spec: "MQTT-2.1.2"))
        }
        switch packet {
        case .connect:
            return clientError(.init(.protocolError, field: "CONNECT", "a second CONNECT on one connection", spec: "MQTT-3.1.0-2"))
        case .publish(let publish):
            return clientPublish(publish, version: version)  // not reached: decoded above without the enum
        case .pubRel(let pubRel):
            if locallyReceivedFromClient.remove(pubRel.packetIdentifier) != nil {
                return .effects([.toClient(MQTTPacket.pubComp(PubComp(packetIdentifier: pubRel.packetIdentifier)).encode(version: version))])
            }
            return .forward
        case .subscribe(let subscribe):
            return clientSubscribe(subscribe, version: version)
        case .unsubscribe(let unsubscribe):
            return clientUnsubscribe(unsubscribe, version: version)
        case .disconnect:
            state = .closed
            return .effects([.toBroker(frame.bytes), .closeBoth])
        case .auth where !enhancedAuthentication:
            return clientError(.init(.protocolError, field: "AUTH", "AUTH without an Authentication Method in CONNECT", spec: "MQTT-4.12"))
        case .pubAck, .pubRec, .pubComp, .pingReq, .auth:
            return .forward
        case .connAck, .subAck, .unsubAck, .pingResp:
            return .forward  // rejected above (server-only packets)
        }
    }

    private mutating func connect(_ frame: MQTTFrame) -> Action {
        let connect: Connect
        do {
            connect = try MQTTPacket.decodeConnect(frame, options: configuration.decodingOptions)
        } catch {
            state = .closed
            var effects: [Effect] = [.clientProtocolError(error)]
            switch error.serverReaction(version: nil, awaitingConnect: true) {
            case .sendConnAckAndClose(let ack):
                effects.append(.toClient(MQTTPacket.connAck(ack).encode(version: error.protocolVersion ?? .v3_1_1)))
            case .sendDisconnectAndClose, .close:
                break
            }
            effects.append(.closeBoth)
            return .effects(effects)
        }
        version = connect.protocolVersion
        brokerAliases.maximum = connect.properties.topicAliasMaximum ?? 0
        enhancedAuthentication = connect.properties.authenticationMethod != nil

        var rewritten = connect
        var clientID = connect.clientIdentifier
        if clientID.isEmpty && configuration.assignClientIdentifiers {
            // 3.1 requires an id, and 3.1.1 refuses an empty one without Clean Session: leave
            // those for the broker to refuse. Otherwise the broker would invent one; we do it
            // instead so the ACL knows the id that %c stands for.
            let assignable = connect.protocolVersion == .v5 || (connect.protocolVersion == .v3_1_1 && connect.cleanStart)
            if assignable {
                clientID = "auto-" + UUID().uuidString
                assignedClientIdentifier = clientID
                rewritten.clientIdentifier = clientID
            }
        }
        if connect.protocolVersion == .v5 {
            // The broker must not send this client more than the proxy can frame (MQTT-3.1.2-24).
            rewritten.properties.lowerMaximumPacketSize(to: configuration.maximumPacketSize)
        }
        let forwarded = rewritten == connect ? frame.bytes : MQTTPacket.connect(rewritten).encode(version: connect.protocolVersion)
        let identity = Identity.client(username: connect.username, clientID: clientID.isEmpty ? nil : clientID)
        self.identity = identity
        let persists = connect.protocolVersion == .v5 ? (connect.properties.sessionExpiryInterval ?? 0) > 0 : !connect.cleanStart
        persistentClientID = persists && !clientID.isEmpty ? clientID : nil
        let policy = currentPolicy()

        /// `code` is the 3.1.x return code; 5.0 refusals here are all 0x87.
        func refuse(_ event: DenialEvent, code: ConnectReturnCode = .notAuthorized) -> Action {
            state = .closed
            let ack = connect.protocolVersion == .v5
                ? ConnAck(sessionPresent: false, returnCode: ReasonCode.notAuthorized.rawValue, properties: [])
                : ConnAck(sessionPresent: false, returnCode: code.rawValue)
            return .effects([.denied(event), .toClient(MQTTPacket.connAck(ack).encode(version: connect.protocolVersion)), .closeBoth])
        }
        if clientID.isEmpty && connect.protocolVersion != .v5 {
            // 3.1 needs an id, 3.1.1 needs one without Clean Session: the broker would answer
            // 0x02 (MQTT-3.1.3-8), so the proxy does, before any ACL question (an ACL cannot
            // place a client whose id %c would stand for).
            return refuse(DenialEvent(kind: .connect, direction: "client_to_broker", identity: identity, topic: "", rule: nil,
                                      reason: "an empty client id needs Clean Session (MQTT-3.1.3-8)"), code: .identifierRejected)
        }
        if connect.username == nil && !configuration.allowAnonymous {
            return refuse(DenialEvent(kind: .connect, direction: "client_to_broker", identity: identity, topic: "",
                                      rule: nil, reason: "anonymous clients are not allowed (allow_anonymous: false)"))
        }
        if !policy.grantsAnything {
            return refuse(DenialEvent(kind: .connect, direction: "client_to_broker", identity: identity, topic: "",
                                      rule: nil, reason: policy.noRulesReason))
        }
        if let will = connect.will {
            let decision = policy.decide(topic: will.topic, access: .write)
            if !decision.isAllowed {
                return refuse(DenialEvent(kind: .will, direction: "client_to_broker", identity: identity, topic: will.topic,
                                          rule: decision.rule?.location, reason: decision.description))
            }
        }
        state = .connecting
        return .effects([.openUpstream(connect: forwarded)])
    }

    /// A PUBLISH decision, through the per-connection cache.
    private mutating func isAllowed(_ topic: String, _ access: Access) -> Bool {
        let policy = currentPolicy()
        return decisions.isAllowed(policy, generation: policyGeneration, topic: topic, access: access)
    }

    /// The whole decision (deciding rule, reason) for a denial's event.
    private mutating func explainDenial(_ topic: String, _ access: Access) -> ACLDecision {
        currentPolicy().decide(topic: topic, access: access)
    }

    private mutating func currentPolicy() -> ACLPolicy {
        if let policy, policyGeneration == aclStore.generation { return policy }
        // First use, or the ACL was reloaded: recompile this identity's rules.
        let snapshot = aclStore.current
        let fresh = snapshot.acl.policy(for: identity!)
        policy = fresh
        policyGeneration = snapshot.generation
        return fresh
    }

    private mutating func clientPublish(_ publish: Publish, version: ProtocolVersion) -> Action {
        var topic = publish.topic
        if version == .v5 {
            if !publish.properties.subscriptionIdentifiers.isEmpty {
                return clientError(.init(.protocolError, field: "PUBLISH.properties", "a client PUBLISH must not carry a Subscription Identifier", spec: "MQTT-3.3.4-6"))
            }
            switch clientAliases.resolve(topic: publish.topic, alias: publish.properties.topicAlias) {
            case .topic(let resolved): topic = resolved
            case .aliasOutOfRange(let alias):
                return clientError(.init(.topicAliasInvalid, field: "PUBLISH.properties.topicAlias", "alias \(alias) is above the broker's Topic Alias Maximum \(clientAliases.maximum)", spec: "MQTT-3.3.2-9"))
            case .unknownAlias(let alias):
                return clientError(.init(.protocolError, field: "PUBLISH.properties.topicAlias", "alias \(alias) was never set", spec: "MQTT-3.3.2-11"))
            }
        }
        if isAllowed(topic, .write) {
            if let id = publish.packetIdentifier { inFlightToBroker.insert(id) }
            return .forward
        }
        let decision = explainDenial(topic, .write)
        var effects: [Effect] = [.denied(DenialEvent(kind: .publish, direction: "client_to_broker", identity: identity!, topic: topic,
                                                     rule: decision.rule?.location, reason: decision.description))]
        // Acknowledge so the client's session moves on: 5.0 says why (0x87); 3.1.x has no way to
        // refuse, so, as mosquitto does, it is acknowledged as if delivered.
        let reason: ReasonCode? = version == .v5 ? .notAuthorized : nil
        switch publish.qos {
        case .atMostOnce:
            break
        case .atLeastOnce:
            effects.append(.toClient(MQTTPacket.pubAck(PubAck(packetIdentifier: publish.packetIdentifier!, reasonCode: reason)).encode(version: version)))
        case .exactlyOnce:
            // A 5.0 PUBREC with a failure code ends the exchange; in 3.1.x a PUBREL follows.
            if version != .v5 { locallyReceivedFromClient.insert(publish.packetIdentifier!) }
            effects.append(.toClient(MQTTPacket.pubRec(PubRec(packetIdentifier: publish.packetIdentifier!, reasonCode: reason)).encode(version: version)))
        }
        return .effects(effects)
    }

    private mutating func clientSubscribe(_ subscribe: Subscribe, version: ProtocolVersion) -> Action {
        let policy = currentPolicy()
        var brokerSubscriptions: [Subscription] = []
        var components: [SubscriptionBook.Component] = []
        var effects: [Effect] = []
        var unchanged = true
        var budget = NarrowingBudget(configuration, inUse: narrowedInUse)
        var narrowed = 0
        let deniedCode: ReasonCode = version == .v5 ? .notAuthorized : .unspecifiedError
        /// A filter refused for the narrowing limit: SUBACK 0x97 (0x80 in 3.1.x), and a denial.
        func overLimit(_ filter: String, _ why: String) {
            unchanged = false
            components.append(.refused(version == .v5 ? .quotaExceeded : .unspecifiedError))
            effects.append(.denied(DenialEvent(kind: .subscribe, direction: "client_to_broker", identity: identity!, topic: filter, rule: nil,
                                               reason: "\(why) (max_narrowed_filters \(configuration.maximumNarrowedFilters))")))
        }
        for subscription in subscribe.subscriptions {
            let decision = budget.decide(subscription.topicFilter, policy)
            let permitted = decision.permittedFilters
            if case .denied(.narrowingNotAttempted) = decision {
                overLimit(subscription.topicFilter, "not readable as a whole, and this connection narrowed as much as it may")
                continue
            }
            if permitted.isEmpty {
                unchanged = false
                components.append(.refused(deniedCode))
                var reason = decision.description
                var rule: SourceLocation?
                if case .denied(.overlapsDeny(let deny)) = decision { rule = deny.location; reason = "the filter overlaps \(deny)" }
                effects.append(.denied(DenialEvent(kind: .subscribe, direction: "client_to_broker", identity: identity!,
                                                   topic: subscription.topicFilter, rule: rule, reason: reason)))
                continue
            }
            if permitted != [subscription.topicFilter] {
                unchanged = false
                guard budget.take(permitted, for: subscription.topicFilter, held: subscriptions.narrowedCount(of: subscription.topicFilter)) else {
                    overLimit(subscription.topicFilter, "narrowed to \(permitted.count) filters, more than this connection may still hold through narrowing")
                    continue
                }
                narrowed += permitted.count
            }
            var indices: [Int] = []
            for filter in permitted {
                indices.append(brokerSubscriptions.count)
                brokerSubscriptions.append(Subscription(topicFilter: filter, options: subscription.options))
            }
            components.append(.forwarded(indices))
        }
        let id = subscribe.packetIdentifier
        if brokerSubscriptions.isEmpty {
            // Nothing to ask the broker: answer here, one failure per filter.
            let codes = components.map { component in if case .refused(let code) = component { code } else { deniedCode } }
            effects.append(.toClient(MQTTPacket.subAck(SubAck(packetIdentifier: id, reasonCodes: codes)).encode(version: version)))
            return .effects(effects)
        }
        subscriptions.subscribeSent(packetIdentifier: id, .init(requested: subscribe.subscriptions.map(\.topicFilter), components: components,
                                                                brokerFilters: brokerSubscriptions.map(\.topicFilter), narrowed: narrowed))
        if unchanged { return .forward }
        let rewritten = Subscribe(packetIdentifier: id, properties: subscribe.properties, subscriptions: brokerSubscriptions)
        effects.append(.toBroker(MQTTPacket.subscribe(rewritten).encode(version: version)))
        return .effects(effects)
    }

    private mutating func clientUnsubscribe(_ unsubscribe: Unsubscribe, version: ProtocolVersion) -> Action {
        let policy = currentPolicy()
        let id = unsubscribe.packetIdentifier
        // A filter this connection never subscribed (a resumed session's) is mapped the way a
        // SUBSCRIBE would be, within the same limit; past it, it is answered here.
        var budget = NarrowingBudget(configuration)
        var removedElsewhere = 0
        let before = subscriptions.narrowedHeld
        let (brokerFilters, pending) = subscriptions.planUnsubscribe(packetIdentifier: id, requested: unsubscribe.topicFilters) { filter in
            let permitted = budget.decide(filter, policy).permittedFilters
            guard permitted == [filter] || budget.take(permitted) else { return [] }
            if permitted != [filter] { removedElsewhere += permitted.count }
            return permitted
        }
        recordNarrowed(since: before, removedElsewhere: removedElsewhere)
        if brokerFilters.isEmpty {
            let codes = version == .v5 ? SubscriptionBook.codes(for: pending, brokerCodes: []) : []
            return .effects([.toClient(MQTTPacket.unsubAck(UnsubAck(packetIdentifier: id, reasonCodes: codes)).encode(version: version))])
        }
        if brokerFilters == unsubscribe.topicFilters { return .forward }
        let rewritten = Unsubscribe(packetIdentifier: id, properties: unsubscribe.properties, topicFilters: brokerFilters)
        return .effects([.toBroker(MQTTPacket.unsubscribe(rewritten).encode(version: version))])
    }

    private mutating func clientError(_ error: MQTTCodecError) -> Action {
        var effects: [Effect] = [.clientProtocolError(error)]
        if case .sendDisconnectAndClose(let disconnect) = error.serverReaction(version: version, awaitingConnect: false), let version {
            if state == .connecting {
                // Hold the DISCONNECT until the CONNACK has gone out; read nothing more meanwhile.
                state = .failedAwaitingConnAck(disconnect)
                return .effects(effects)
            }
            effects.append(.toClient(MQTTPacket.disconnect(disconnect).encode(version: version)))
        }
        state = .closed
        // The broker connection is dropped without DISCONNECT, so it publishes the will, as it
        // must after a protocol error.
        effects.append(.closeBoth)
        return .effects(effects)
    }

    /// The client's bytes could not be framed (bad length, reserved type, too large).
    mutating func clientFramingError(_ error: MQTTCodecError) -> Action {
        if state == .awaitingConnect {
            state = .closed
            return .effects([.clientProtocolError(error), .closeBoth])
        }
        return clientError(error)
    }

    // MARK: Broker → client

    mutating func brokerFrame(_ frame: MQTTFrame) -> Action {
        if case .failedAwaitingConnAck(let disconnect) = state, let version {
            state = .closed
            guard frame.type == .connack, let packet = try? MQTTPacket.decode(frame, version: version), case .connAck(let ack) = packet else {
                return .effects([.closeBoth])
            }
            var effects: [Effect] = [.toClient(frame.bytes)]
            if ack.isAccepted { effects.append(.toClient(MQTTPacket.disconnect(disconnect).encode(version: version))) }
            effects.append(.closeBoth)
            return .effects(effects)
        }
        guard state == .connecting || state == .connected, let version else { return .effects([]) }
        if frame.type == .publish {
            // As for the client's PUBLISHes.
            let publish: Publish
            do {
                publish = try MQTTPacket.decodePublish(frame, version: version, options: configuration.decodingOptions)
            } catch {
                return brokerError(error)
            }
            return brokerPublish(publish, version: version)
        }
        let packet: MQTTPacket
        do {
            packet = try MQTTPacket.decode(frame, version: version, options: configuration.decodingOptions)
        } catch {
            return brokerError(error)
        }
        if packet.type.sender == .client {
            return brokerError(.init(.protocolError, field: "\(packet.type)", "a server must not send \(packet.type)", spec: "MQTT-2.1.2"))
        }
        switch packet {
        case .connAck(let ack):
            guard state == .connecting else {
                return brokerError(.init(.protocolError, field: "CONNACK", "a second CONNACK", spec: "MQTT-3.2.0-2"))
            }
            state = ack.isAccepted ? .connected : .closed
            clientAliases.maximum = ack.properties?.topicAliasMaximum ?? 0
            // A new session at the broker holds no subscriptions, whatever earlier ones did.
            if ack.isAccepted, !ack.sessionPresent, case .client(_, let id?) = identity { narrowingLedger.reset(id) }
            guard version == .v5, ack.isAccepted else { return .forward }
            var properties = ack.properties ?? []
            if let assigned = assignedClientIdentifier,
               !properties.contains(where: { if case .assignedClientIdentifier = $0 { true } else { false } }) {
                // The client sent an empty id and expects to learn the one in use.
                properties.append(.assignedClientIdentifier(assigned))
            }
            // A 5.0 client must not send more than the server's Maximum Packet Size
            // (MQTT-3.2.2-15): tell it the proxy's limit when the broker's is larger.
            properties.lowerMaximumPacketSize(to: configuration.maximumPacketSize)
            if properties == (ack.properties ?? []) { return .forward }
            var rewritten = ack
            rewritten.properties = properties
            return .effects([.toClient(MQTTPacket.connAck(rewritten).encode(version: version))])
        case .publish(let publish):
            return brokerPublish(publish, version: version)  // not reached: decoded above without the enum
        case .pubAck(let ack):
            inFlightToBroker.remove(ack.packetIdentifier)
            return .forward
        case .pubRec(let rec):
            if rec.reasonCode?.isFailure == true { inFlightToBroker.remove(rec.packetIdentifier) }
            return .forward
        case .pubComp(let comp):
            inFlightToBroker.remove(comp.packetIdentifier)
            return .forward
        case .pubRel(let rel):
            if locallyReceivedFromBroker.remove(rel.packetIdentifier) != nil {
                return .effects([.toBroker(MQTTPacket.pubComp(PubComp(packetIdentifier: rel.packetIdentifier)).encode(version: version))])
            }
            return .forward
        case .subAck(let subAck):
            let deniedCode: ReasonCode = version == .v5 ? .notAuthorized : .unspecifiedError
            let before = subscriptions.narrowedHeld
            guard let codes = subscriptions.subAckReceived(packetIdentifier: subAck.packetIdentifier, brokerCodes: subAck.reasonCodes, deniedCode: deniedCode) else {
                return .forward
            }
            recordNarrowed(since: before)
            if codes == subAck.reasonCodes { return .forward }
            let rebuilt = SubAck(packetIdentifier: subAck.packetIdentifier, properties: subAck.properties, reasonCodes: codes)
            return .effects([.toClient(MQTTPacket.subAck(rebuilt).encode(version: version))])
        case .unsubAck(let unsubAck):
            guard let codes = subscriptions.unsubAckReceived(packetIdentifier: unsubAck.packetIdentifier, brokerCodes: unsubAck.reasonCodes) else {
                return .forward
            }
            if version != .v5 || codes == unsubAck.reasonCodes { return .forward }
            let rebuilt = UnsubAck(packetIdentifier: unsubAck.packetIdentifier, properties: unsubAck.properties, reasonCodes: codes)
            return .effects([.toClient(MQTTPacket.unsubAck(rebuilt).encode(version: version))])
        case .disconnect:
            state = .closed
            return .effects([.toClient(frame.bytes), .closeBoth])
        case .pingResp, .auth:
            return .forward
        case .connect, .subscribe, .unsubscribe, .pingReq:
            return .forward  // rejected above (client-only packets)
        }
    }

    private mutating func brokerPublish(_ publish: Publish, version: ProtocolVersion) -> Action {
        var topic = publish.topic
        if version == .v5 {
            switch brokerAliases.resolve(topic: publish.topic, alias: publish.properties.topicAlias) {
            case .topic(let resolved): topic = resolved
            case .aliasOutOfRange(let alias):
                return brokerError(.init(.topicAliasInvalid, field: "PUBLISH.properties.topicAlias", "the broker used alias \(alias) above the client's maximum \(brokerAliases.maximum)"))
            case .unknownAlias(let alias):
                return brokerError(.init(.protocolError, field: "PUBLISH.properties.topicAlias", "the broker used alias \(alias) without setting it"))
            }
        }
        // Overlapping and shared subscriptions can deliver what no single subscription was
        // checked for, so every delivery is checked.
        if isAllowed(topic, .read) { return .forward }
        let decision = explainDenial(topic, .read)
        var effects: [Effect] = [.denied(DenialEvent(kind: .delivery, direction: "broker_to_client", identity: identity!, topic: topic,
                                                     rule: decision.rule?.location, reason: decision.description))]
        // Acknowledge on the client's behalf so the broker does not redeliver forever.
        effects += acknowledgeForClient(qos: publish.qos, packetIdentifier: publish.packetIdentifier, version: version)
        return .effects(effects)
    }

    /// A delivery larger than the proxy frames (3.1.x: the broker cannot be told the limit):
    /// dropped, logged as a refused delivery, and acknowledged on the client's behalf as a
    /// denied one is, so the broker does not deliver it again on every reconnect.
    mutating func brokerOversizedPublish(_ publish: OversizedPublish) -> Action {
        guard let version, state == .connected else { return brokerError(.init(.packetTooLarge, field: "PUBLISH", "\(publish.size) bytes before CONNACK")) }
        let limit = configuration.maximumPacketSize.map { "\($0)" } ?? "the largest MQTT packet"
        var effects: [Effect] = [.denied(DenialEvent(kind: .delivery, direction: "broker_to_client", identity: identity!, topic: publish.topic, rule: nil,
                                                     reason: "a message of \(publish.size) bytes is larger than max_packet_size (\(limit))"))]
        effects += acknowledgeForClient(qos: publish.qos, packetIdentifier: publish.packetIdentifier, version: version)
        return .effects(effects)
    }

    /// Acknowledges a delivery the client will not see, on its behalf (QoS 2: PUBREC now, and
    /// the broker's PUBREL is answered here).
    private mutating func acknowledgeForClient(qos: QoS, packetIdentifier: UInt16?, version: ProtocolVersion) -> [Effect] {
        switch qos {
        case .atMostOnce:
            return []
        case .atLeastOnce:
            return [.toBroker(MQTTPacket.pubAck(PubAck(packetIdentifier: packetIdentifier!)).encode(version: version))]
        case .exactlyOnce:
            locallyReceivedFromBroker.insert(packetIdentifier!)
            return [.toBroker(MQTTPacket.pubRec(PubRec(packetIdentifier: packetIdentifier!)).encode(version: version))]
        }
    }

    private mutating func brokerError(_ error: MQTTCodecError) -> Action {
        state = .closed
        var effects: [Effect] = [.brokerProtocolError(error)]
        if let version, version == .v5 {
            effects.append(.toBroker(MQTTPacket.disconnect(Disconnect(reasonCode: error.reasonCode)).encode(version: version)))
            // The client did nothing wrong; tell it the server side failed.
            effects.append(.toClient(MQTTPacket.disconnect(Disconnect(reasonCode: .unspecifiedError)).encode(version: version)))
        }
        effects.append(.closeBoth)
        return .effects(effects)
    }

    /// The broker's bytes could not be framed.
    mutating func brokerFramingError(_ error: MQTTCodecError) -> Action {
        brokerError(error)
    }

    /// Graceful shutdown: what to tell the client before closing (5.0: Server shutting down).
    func shutdownNotice() -> ByteBuffer? {
        guard let version, version == .v5, state == .connected else { return nil }
        return MQTTPacket.disconnect(Disconnect(reasonCode: .serverShuttingDown)).encode(version: version)
    }
}

extension ACLPolicy {
    var noRulesReason: String {
        "no acl_file rule grants \(identity) anything (no user block and no usable pattern)"
    }
}

extension Properties {
    /// Sets Maximum Packet Size to `limit` unless it is already that low (no limit given:
    /// nothing changes).
    fileprivate mutating func lowerMaximumPacketSize(to limit: Int?) {
        guard let limit = limit.map({ UInt32(clamping: $0) }), (maximumPacketSize ?? .max) > limit else { return }
        removeAll(.maximumPacketSize)
        append(.maximumPacketSize(limit))
    }
}
