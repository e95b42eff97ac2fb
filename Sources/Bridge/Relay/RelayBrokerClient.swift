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
    private var version: ProtocolVersion { configuration.protocolLevel == 5 ? .v5 : .v3_1_1 }
    private var context: ChannelHandlerContext?
    private var connected = false
    private var stopped = false
    private var backoff = TimeAmount.milliseconds(100)
    private var nextPacketID: UInt16 = 1
    /// Our publications not yet acknowledged by the broker: resent (DUP) after a reconnect.
    private var inflight: [UInt16: (publish: Publish, onAcknowledged: () -> Void)] = [:]
    private var inflightOrder: [UInt16] = []
    /// Publications waiting for a free in-flight slot.
    private var waiting: [(Publish, () -> Void)] = []
    private let maximumInflight = 256
    private var needsFlush = false
    private var pinger: RepeatedTask?
    static let keepAlive: UInt16 = 30

    var subscriptions: [(filter: String, qos: QoS)]
    var onMessage: ((Incoming) -> Void)?
    var onConnected: (() -> Void)?

    init(configuration: RelayConfiguration, subscriptions: [(filter: String, qos: QoS)], eventLoop: any EventLoop, logger: Logger) {
        self.configuration = configuration
        self.subscriptions = subscriptions
        self.eventLoop = eventLoop
        self.logger = logger
    }

    var isConnected: Bool { connected }

    func start() { connect() }

    func stop() {
        stopped = true
        context?.close(promise: nil)
    }

    /// Drops the broker connection (it is re-established with backoff): the broker then
    /// redelivers what we have not acknowledged.
    func reconnect() { context?.close(promise: nil) }

    private func connect() {
        guard !stopped else { return }
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        ClientBootstrap(group: eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(MQTTFrameDecoder(configuration: .client(maximumPacketSize: 64 << 20))))
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
                              properties: version == .v5 ? [.sessionExpiryInterval(UInt32.max), .receiveMaximum(UInt16(maximumInflight))] : [],
                              clientIdentifier: configuration.clientID, username: configuration.username)
        write(.connect(connect))
        flush()
    }

    func frame(_ frame: MQTTFrame) {
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
            backoff = .milliseconds(100)
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
                guard var publish = inflight[id]?.publish else { continue }
                publish.dup = true
                write(.publish(publish))
            }
            needsFlush = true
            onConnected?()
            pump()
        case .publish(let publish):
            let id = publish.packetIdentifier
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            let version = self.version
            onMessage?(Incoming(publish: publish, acknowledge: {
                let client = loopBound.value
                guard let id else { return }
                switch publish.qos {
                case .atMostOnce: break
                case .atLeastOnce: client.write(.pubAck(PubAck(packetIdentifier: id)))
                case .exactlyOnce: client.write(.pubRec(PubRec(packetIdentifier: id)))
                }
                _ = version
                client.flush()
            }))
        case .pubRel(let rel):
            write(.pubComp(PubComp(packetIdentifier: rel.packetIdentifier)))
        case .pubAck(let ack):
            completed(ack.packetIdentifier)
        case .pubRec(let rec):
            write(.pubRel(PubRel(packetIdentifier: rec.packetIdentifier)))
        case .pubComp(let comp):
            completed(comp.packetIdentifier)
        case .subAck, .unsubAck, .pingResp, .disconnect, .auth, .connect, .subscribe, .unsubscribe, .pingReq:
            break
        }
    }

    func readComplete() { flushIfNeeded() }

    func inactive() {
        context = nil
        pinger?.cancel()
        pinger = nil
        if connected { logger.warning("relay lost the local broker connection; reconnecting", metadata: ["event": "relay_broker_lost"]) }
        connected = false
        scheduleReconnect()
    }

    // MARK: Publishing

    /// Publishes to the local broker; `onAcknowledged` runs when the broker has it
    /// (immediately for QoS 0, PUBACK for 1, PUBCOMP for 2).
    func publish(_ publish: Publish, onAcknowledged: @escaping () -> Void) {
        waiting.append((publish, onAcknowledged))
        pump()
    }

    private func pump() {
        guard connected else { return }
        while !waiting.isEmpty && inflight.count < maximumInflight {
            var (publish, done) = waiting.removeFirst()
            if publish.qos == .atMostOnce {
                publish.packetIdentifier = nil
                write(.publish(publish))
                done()
                continue
            }
            let id = allocateID()
            publish.packetIdentifier = id
            inflight[id] = (publish, done)
            inflightOrder.append(id)
            write(.publish(publish))
        }
        flushIfNeeded()
    }

    private func completed(_ id: UInt16) {
        guard let entry = inflight.removeValue(forKey: id) else { return }
        if let index = inflightOrder.firstIndex(of: id) { inflightOrder.remove(at: index) }
        entry.onAcknowledged()
        pump()
    }

    private func allocateID() -> UInt16 {
        repeat {
            nextPacketID = nextPacketID == UInt16.max ? 1 : nextPacketID + 1
        } while inflight[nextPacketID] != nil
        return nextPacketID
    }

    private func write(_ packet: MQTTPacket) {
        guard let context else { return }
        context.write(NIOAny(packet.encode(version: version, allocator: context.channel.allocator)), promise: nil)
        needsFlush = true
    }

    private func flush() {
        needsFlush = false
        context?.flush()
    }

    func flushIfNeeded() { if needsFlush { flush() } }
}

@available(*, unavailable)
extension RelayBrokerClient: Sendable {}

final class RelayBrokerHandler: ChannelInboundHandler {
    typealias InboundIn = MQTTFrame
    let client: RelayBrokerClient
    init(client: RelayBrokerClient) { self.client = client }

    func channelActive(context: ChannelHandlerContext) {
        client.active(context)
        context.fireChannelActive()
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { client.frame(unwrapInboundIn(data)) }
    func channelReadComplete(context: ChannelHandlerContext) {
        client.readComplete()
        context.fireChannelReadComplete()
    }
    func channelInactive(context: ChannelHandlerContext) {
        client.inactive()
        context.fireChannelInactive()
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

@available(*, unavailable)
extension RelayBrokerHandler: Sendable {}
