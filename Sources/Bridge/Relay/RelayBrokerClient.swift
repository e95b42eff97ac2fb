import Logging
import MQTTCodec
import NIOCore
import NIOPosix

/// The relay's MQTT client to its local broker: a persistent session (clean session off), so
/// messages for the relay's subscriptions wait in the broker while the bridge is down, and
/// are only acknowledged once they are safe on disk.
final class RelayBrokerClient {
    struct Incoming {
        var publish: Publish
        /// Acknowledge to the broker (after the message is durable).
        var acknowledge: () -> Void
    }

    private let configuration: RelayConfiguration
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let metrics: RelayMetrics
    private var version: ProtocolVersion { configuration.protocolLevel == 5 ? .v5 : .v3_1_1 }
    private var context: ChannelHandlerContext?
    private var connected = false
    private var stopped = false
    private var backoff = TimeAmount.milliseconds(100)
    /// No connection before this (`reconnect(holdingUntil:)`): while the queue's disk fails,
    /// the broker keeps our messages instead of redelivering them into failing writes.
    private var holdUntil: NIODeadline?
    /// DISCONNECT sent and our side shut (`leave`): nothing more is read or written.
    private var leaving = false
    /// The broker kept no session for the relay (CONNACK without Session Present); true on
    /// the first connection of this run.
    var onSessionLost: ((_ firstConnection: Bool) -> Void)?
    private var everConnected = false
    /// A CONNACK of this run came without Session Present: exchanges recorded in an earlier
    /// run (`Outgoing.packetID`) are unknown to the broker now.
    private var brokerLostSessionThisRun = false
    private var nextPacketID: UInt16 = 1
    /// Our publications not yet acknowledged by the broker: resent (DUP) after a reconnect.
    private var inflight: [UInt16: Outgoing] = [:]
    private var inflightOrder: [UInt16] = []
    /// Publications waiting for a free in-flight slot (a queue: `waitingHead` is its front).
    private var waiting: [Outgoing] = []
    private var waitingHead = 0
    /// Packet ids of QoS 2 exchanges recorded before a restart and not finished: never given
    /// to a new publication (the broker may still hold them).
    private var reservedIDs: Set<UInt16> = []
    private let maximumInflight = 256
    private var output = OutputBatch()
    private var pinger: RepeatedTask?
    private var qos2Limit = 20
    /// One flush for everything written in this event-loop turn (a burst from the link
    /// becomes one write to the broker, not one per message).
    private lazy var flushRequest = CoalescedAction<RelayBrokerClient>(on: eventLoop) { $0.flushIfNeeded() }
    private var qos2Inflight = 0
    /// TCP_QUICKACK of the broker socket, set again only after we wrote to it.
    private var quickAck = QuickAckArming()
    static let keepAlive: UInt16 = 30

    /// One publication to the broker and the hooks of its QoS 2 exchange.
    struct Outgoing {
        var publish: Publish
        /// Resume an exchange started before a restart with this packet id.
        var packetID: UInt16?
        /// The broker already has it (PUBREC was seen before the restart): send PUBREL only.
        var released = false
        /// Runs with the packet id before the PUBLISH is first written (to record it).
        var beforeSend: ((UInt16) -> Void)?
        /// Runs when PUBREC arrives, before PUBREL is written (to record it).
        var beforeRelease: (() -> Void)?
        var onAcknowledged: () -> Void
    }

    var subscriptions: [(filter: String, qos: QoS)]
    /// The broker's PUBREL for a QoS 2 message we received: call the completion (after
    /// recording the release durably) to send PUBCOMP.
    var onRelease: ((UInt16, @escaping () -> Void) -> Void)?
    /// A message larger than `maximumPacketSize` arrived (3.1.1) and was skipped and acknowledged.
    var onOversized: ((OversizedPublish) -> Void)?
    /// The largest message the relay takes from its broker (a 5.0 broker is told so in CONNECT).
    static let maximumPacketSize = 64 << 20
    var skipsOversizedPublish: Bool { version != .v5 }
    var onMessage: ((Incoming) -> Void)?
    var onConnected: (() -> Void)?

    init(configuration: RelayConfiguration, subscriptions: [(filter: String, qos: QoS)], eventLoop: any EventLoop, logger: Logger, metrics: RelayMetrics) {
        self.configuration = configuration
        self.subscriptions = subscriptions
        self.eventLoop = eventLoop
        self.logger = logger
        self.metrics = metrics
    }

    /// For each connection to the broker (its state is the socket's).
    func makeCoalescer() -> ReceiveCoalescer? {
        configuration.receiveCoalescing.map { ReceiveCoalescer(configuration: $0, counters: metrics.readCoalescing) }
    }

    var isConnected: Bool { connected }

    func start() { connect() }

    func stop() {
        stopped = true
        leave()
    }

    /// Drops the broker connection (it is re-established with backoff): the broker then
    /// redelivers what we have not acknowledged.
    func reconnect() { leave() }

    /// Ends the connection so that the broker reads every acknowledgement written before the
    /// end: DISCONNECT after them, then our side shut for writing, and what the broker still
    /// sends is read and ignored until it closes (it does at the DISCONNECT; at most
    /// `leaveTimeout`). A plain close while its PUBLISHes sit unread in our socket makes
    /// the kernel answer with a reset, which throws away the PUBACKs still unread in the
    /// broker's socket: after a reconnect, mosquitto 2.0 sends everything it then thinks in
    /// flight in one burst, so on a full disk each hold lost the acknowledgements of all that
    /// the queue had taken meanwhile (~140,000 messages), and they came again, and again.
    private func leave() {
        guard let context, !leaving else { return }
        if connected { write(.disconnect(Disconnect())) }
        flush()
        leaving = true
        context.close(mode: .output, promise: nil)
        let channel = context.channel
        eventLoop.scheduleTask(in: Self.leaveTimeout) { channel.close(promise: nil) }
    }

    static let leaveTimeout = TimeAmount.seconds(5)

    /// Drops the broker connection and stays away until `deadline`.
    func reconnect(holdingUntil deadline: NIODeadline) {
        holdUntil = max(holdUntil ?? deadline, deadline)
        leave()
    }

    private func connect() {
        guard !stopped else { return }
        if let holdUntil, holdUntil > .now() {
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            eventLoop.scheduleTask(deadline: holdUntil) { loopBound.value.connect() }
            return
        }
        holdUntil = nil
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        ClientBootstrap(group: eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RelayBrokerHandler(client: loopBound.value))
                }
            }
            .connect(host: configuration.broker.host, port: configuration.broker.port)
            .whenFailure { error in
                let client = loopBound.value
                client.logger.warning("relay cannot reach the local broker \(client.configuration.broker): \(error)", metadata: ["event": "relay_broker_unreachable"])
                client.scheduleReconnect()
            }
    }

    private func scheduleReconnect() {
        guard !stopped else { return }
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        let delay = TimeAmount.nanoseconds(Int64.random(in: backoff.nanoseconds / 2...backoff.nanoseconds))
        backoff = min(backoff * 2, .seconds(10))
        eventLoop.scheduleTask(in: delay) { loopBound.value.connect() }
    }

    // MARK: Channel events

    func active(_ context: ChannelHandlerContext) {
        self.context = context
        let connect = Connect(protocolVersion: version, cleanStart: false, keepAlive: Self.keepAlive,
                              properties: version == .v5 ? [.sessionExpiryInterval(UInt32.max), .receiveMaximum(UInt16(maximumInflight)),
                                                            .maximumPacketSize(UInt32(Self.maximumPacketSize))] : [],
                              clientIdentifier: configuration.clientID, username: configuration.username)
        write(.connect(connect))
        flush()
    }

    func frame(_ frame: MQTTFrame) {
        // Leaving: the broker sends this again after the reconnect.
        guard !leaving else { return }
        guard let packet = try? MQTTPacket.decode(frame, version: version) else {
            logger.error("relay: the local broker sent a packet that does not decode", metadata: ["event": "relay_broker_protocol"])
            context?.close(promise: nil)
            return
        }
        switch packet {
        case .connAck(let ack):
            guard ack.isAccepted else {
                logger.error("relay: the local broker refused the relay's CONNECT (code \(ack.returnCode))", metadata: ["event": "relay_broker_refused"])
                context?.close(promise: nil)
                return
            }
            connected = true
            if !ack.sessionPresent {
                brokerLostSessionThisRun = true
                // A broker without our session has none of our exchanges: a QoS 2 message it
                // answered with PUBREC but was never released went with it (mosquitto delivers
                // at PUBREL, and answers a PUBREL it does not know with PUBCOMP), so it is
                // published again rather than only released.
                for id in inflightOrder where inflight[id]?.released == true { inflight[id]?.released = false }
                onSessionLost?(!everConnected)
            }
            everConnected = true
            backoff = .milliseconds(100)
            // A broker keeps state for each unfinished incoming QoS 2 exchange and refuses
            // (mosquitto: disconnects) beyond its quota: v5 says it in Receive Maximum; for
            // 3.1.1 assume mosquitto's default max_inflight_messages.
            qos2Limit = Int(ack.properties?.receiveMaximum ?? 20)
            // Keep the session alive while idle: the broker drops a client silent for 1.5 × keep-alive.
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            pinger?.cancel()
            pinger = eventLoop.scheduleRepeatedTask(initialDelay: .seconds(Int64(Self.keepAlive) / 2), delay: .seconds(Int64(Self.keepAlive) / 2)) { _ in
                let client = loopBound.value
                guard client.connected else { return }
                client.write(.pingReq(PingReq()))
                client.flush()
            }
            if !subscriptions.isEmpty {
                let subscribe = Subscribe(packetIdentifier: allocateID(), subscriptions: subscriptions.map {
                    Subscription(topicFilter: $0.filter, options: SubscriptionOptions(qos: $0.qos, noLocal: version == .v5, retainAsPublished: version == .v5))
                })
                write(.subscribe(subscribe))
            }
            // Resend what the broker had not acknowledged, as duplicates of the same packets.
            for id in inflightOrder {
                guard let entry = inflight[id] else { continue }
                if entry.released {
                    write(.pubRel(PubRel(packetIdentifier: id)))
                } else {
                    var publish = entry.publish
                    publish.dup = true
                    write(.publish(publish))
                }
            }
            onConnected?()
            pump()
        case .publish(let publish):
            let id = publish.packetIdentifier
            // The closure keeps the QoS, not the PUBLISH: it lives until the message is on
            // disk (~2 ms), and the PUBLISH's payload is a slice of the socket's read buffer,
            // which NIO can then not reuse, so every read allocated a new one.
            let qos = publish.qos
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            onMessage?(Incoming(publish: publish, acknowledge: {
                guard let id else { return }  // QoS 0: nothing to answer
                let client = loopBound.value
                client.acknowledge(qos, id)
                client.flushRequest.request(for: client)
            }))
        case .pubRel(let rel):
            let id = rel.packetIdentifier
            guard let onRelease else {
                write(.pubComp(PubComp(packetIdentifier: id)))
                return
            }
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            onRelease(id) {
                let client = loopBound.value
                client.write(.pubComp(PubComp(packetIdentifier: id)))
                client.flush()
            }
        case .pubAck(let ack):
            completed(ack.packetIdentifier)
        case .pubRec(let rec):
            let id = rec.packetIdentifier
            if var entry = inflight[id], !entry.released {
                entry.beforeRelease?()
                entry.released = true
                inflight[id] = entry
            }
            write(.pubRel(PubRel(packetIdentifier: id)))
        case .pubComp(let comp):
            completed(comp.packetIdentifier)
        case .subAck, .unsubAck, .pingResp, .disconnect, .auth, .connect, .subscribe, .unsubscribe, .pingReq:
            break
        }
    }

    /// A message too large for the relay: acknowledged at once (nothing was queued) so that the
    /// broker does not deliver it again on every reconnect and hold up what follows it.
    func oversized(_ publish: OversizedPublish) {
        guard !leaving else { return }
        acknowledge(publish.qos, publish.packetIdentifier)
        onOversized?(publish)
    }

    /// Acknowledges a PUBLISH from the broker: QoS 1 PUBACK, QoS 2 PUBREC (its PUBREL then
    /// goes to `onRelease`).
    private func acknowledge(_ qos: QoS, _ id: UInt16?) {
        guard let id else { return }
        switch qos {
        case .atMostOnce: break
        case .atLeastOnce: write(.pubAck(PubAck(packetIdentifier: id)))
        case .exactlyOnce: write(.pubRec(PubRec(packetIdentifier: id)))
        }
    }

    func readComplete() { flushIfNeeded() }

    func framingError(_ error: any Error) {
        logger.error("relay: the local broker sent bytes that are not MQTT: \(error)", metadata: ["event": "relay_broker_protocol"])
        context?.close(promise: nil)
    }

    func inactive() {
        context = nil
        let left = leaving
        leaving = false
        _ = output.take()
        pinger?.cancel()
        pinger = nil
        // A reconnect or hold that was asked for (`leave`) was said by whoever asked.
        if connected && !left { logger.warning("relay lost the local broker connection; reconnecting", metadata: ["event": "relay_broker_lost"]) }
        connected = false
        scheduleReconnect()
    }

    // MARK: Publishing

    /// Publishes to the local broker; `onAcknowledged` runs when the broker has it
    /// (immediately for QoS 0, PUBACK for 1, PUBCOMP for 2).
    func publish(_ publish: Publish, onAcknowledged: @escaping () -> Void) {
        self.publish(Outgoing(publish: publish, onAcknowledged: onAcknowledged))
    }

    func publish(_ outgoing: Outgoing) {
        if outgoing.publish.qos == .atMostOnce && connected && waitingHead == waiting.count {
            // Nothing queued ahead and nothing to track: straight out, without a round
            // through the waiting list.
            sendAtMostOnce(outgoing)
            flushRequest.request(for: self)
            return
        }
        waiting.append(outgoing)
        pump()
    }

    /// A QoS 0 PUBLISH: written, and done with (nothing will acknowledge it).
    private func sendAtMostOnce(_ outgoing: Outgoing) {
        var publish = outgoing.publish
        publish.packetIdentifier = nil
        write(.publish(publish))
        outgoing.onAcknowledged()
    }

    /// Ids of exchanges recorded before a restart: kept out of allocation until resumed.
    func reserve(_ ids: some Sequence<UInt16>) { reservedIDs.formUnion(ids) }

    private func pump() {
        guard connected else { return }
        while waitingHead < waiting.count && inflight.count < maximumInflight {
            var outgoing = waiting[waitingHead]
            if outgoing.publish.qos == .exactlyOnce {
                // In order: a QoS 2 message over quota holds the ones behind it.
                guard qos2Inflight < qos2Limit else { break }
                qos2Inflight += 1
            }
            waitingHead += 1
            if outgoing.publish.qos == .atMostOnce {
                sendAtMostOnce(outgoing)
                continue
            }
            // Released in an earlier run, to a broker that has since lost our session: it
            // forgot the message, so it is published again (see the CONNACK above).
            if outgoing.released && outgoing.packetID != nil && brokerLostSessionThisRun { outgoing.released = false }
            let id: UInt16
            if let resumed = outgoing.packetID, inflight[resumed] == nil {
                id = resumed
                outgoing.publish.dup = true
            } else {
                id = allocateID()
            }
            outgoing.publish.packetIdentifier = id
            if !outgoing.released { outgoing.beforeSend?(id) }
            inflight[id] = outgoing
            inflightOrder.append(id)
            if outgoing.released { write(.pubRel(PubRel(packetIdentifier: id))) } else { write(.publish(outgoing.publish)) }
        }
        if waitingHead > 1024 && waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
        flushRequest.request(for: self)
    }

    private func completed(_ id: UInt16) {
        guard let entry = inflight.removeValue(forKey: id) else { return }
        if let index = inflightOrder.firstIndex(of: id) { inflightOrder.remove(at: index) }
        if entry.publish.qos == .exactlyOnce { qos2Inflight -= 1 }
        if entry.packetID == id { reservedIDs.remove(id) }
        entry.onAcknowledged()
        pump()
    }

    private func allocateID() -> UInt16 {
        repeat {
            nextPacketID = nextPacketID == UInt16.max ? 1 : nextPacketID + 1
        } while inflight[nextPacketID] != nil || reservedIDs.contains(nextPacketID)
        return nextPacketID
    }

    /// Whether the broker socket needs TCP_QUICKACK set again (`QuickAckArming`).
    func needsQuickAck() -> Bool { quickAck.needsArming() }

    /// Packets are gathered and handed to the channel as one buffer at the flush.
    private func write(_ packet: MQTTPacket) {
        guard let context, !leaving else { return }
        quickAck.wrote()
        output.append(packet.encode(version: version, allocator: context.channel.allocator)) { context.write(NIOAny($0), promise: nil) }
    }

    private func flush() {
        guard let context, !leaving else { return }
        _ = output.endBurst { context.write(NIOAny($0), promise: nil) }
        context.flush()
    }

    /// Flushes if anything was written since the last flush.
    func flushIfNeeded() {
        guard let context, !leaving else { return }
        if output.endBurst(write: { context.write(NIOAny($0), promise: nil) }) { context.flush() }
    }

}

@available(*, unavailable)
extension RelayBrokerClient: Sendable {}

final class RelayBrokerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let client: RelayBrokerClient
    /// Packets are framed here, not by a ByteToMessageHandler: no pipeline hop per packet.
    private var framer: InlineFramer<BrokerFrameDecoder>
    /// Coalesces the reads of the messages the broker delivers at high rates.
    private let coalescer: ReceiveCoalescer?
    init(client: RelayBrokerClient) {
        self.client = client
        coalescer = client.makeCoalescer()
        framer = InlineFramer(BrokerFrameDecoder(maximumPacketSize: RelayBrokerClient.maximumPacketSize, skipsOversizedPublish: client.skipsOversizedPublish))
    }

    func channelActive(context: ChannelHandlerContext) {
        client.active(context)
        context.fireChannelActive()
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        coalescer?.read(bytes.readableBytes, from: context.channel)
        framer.feed(bytes, while: { true }, onFrame: { frame in
            switch frame {
            case .packet(let packet): client.frame(packet)
            case .oversizedPublish(let publish): client.oversized(publish)
            }
        }, onError: client.framingError)
    }
    func channelReadComplete(context: ChannelHandlerContext) {
        client.readComplete()
        // The relay acknowledges a delivery only once it is on disk: see the method.
        if client.needsQuickAck() { context.channel.acknowledgeSegmentsPromptly() }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        coalescer?.stop()
        client.inactive()
        context.fireChannelInactive()
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

@available(*, unavailable)
extension RelayBrokerHandler: Sendable {}
