import CoreMetrics
import Logging
import MQTTCodec
import NIOCore
import NIOPosix
import TopicACL

/// The client end of a proxied connection: a TCP channel for local clients, or a stream of
/// the link for clients at a paired site. Everything is called on the connection's event loop.
protocol ProxyClientSide: AnyObject {
    var isWritable: Bool { get }
    var allocator: ByteBufferAllocator { get }
    func write(_ bytes: ByteBuffer)
    func flush()
    /// Resume delivering input (the other side can take more).
    func read()
    /// Close once what was written has gone out.
    func closeAfterFlush()
}

/// A TCP client channel as the client side.
final class ChannelClientSide: ProxyClientSide {
    let context: ChannelHandlerContext
    init(_ context: ChannelHandlerContext) { self.context = context }
    var isWritable: Bool { context.channel.isWritable }
    var allocator: ByteBufferAllocator { context.channel.allocator }
    func write(_ bytes: ByteBuffer) { context.write(NIOAny(bytes), promise: nil) }
    func flush() { context.flush() }
    func read() { context.read() }
    func closeAfterFlush() {
        let channel = context.channel
        context.writeAndFlush(NIOAny(channel.allocator.buffer(capacity: 0))).whenComplete { _ in channel.close(promise: nil) }
    }
}

@available(*, unavailable)
extension ChannelClientSide: Sendable {}

/// One proxied connection: a client side, the broker channel opened for it on the same
/// event loop, and the `ProxySession` deciding what crosses. Performs the session's actions.
///
/// Backpressure follows SwiftNIO's GlueHandler: a side is read only while the other side is
/// writable, so a slow reader stops the fast writer instead of growing a buffer. Writes are
/// flushed when a read burst ends, so a burst of small packets costs one syscall.
final class ProxyConnection {
    private let environment: ProxyEnvironment
    private var session: ProxySession
    private let eventLoop: any EventLoop
    private var client: (any ProxyClientSide)?
    private var broker: ChannelHandlerContext?
    /// Written to the broker before its channel became active (the CONNECT, and packets a
    /// client pipelines behind it).
    private var queuedForBroker: [ByteBuffer] = []
    private var upstreamRequested = false
    private var clientReadPending = false
    private var brokerReadPending = false
    /// What a read burst produced for each side, written as one buffer when the burst ends:
    /// one pipeline write (and, over a link, one DATA frame) per burst instead of one per packet.
    private var toClient = OutputBatch()
    private var toBroker = OutputBatch()
    /// TCP_QUICKACK of each socket, set again only after we wrote to it. Noted where writes
    /// are flushed (`flushPending`, `brokerActive`): bytes leave only then, and `endBurst`
    /// reports the large packets written past the batch too.
    private var clientQuickAck = QuickAckArming()
    private var brokerQuickAck = QuickAckArming()
    /// The broker channel's writability as its events report it: asked before every packet a
    /// link stream hands over (`clientMayRead`), where asking the channel retained it.
    private var brokerWritable = false
    /// Anything but a QoS 0 PUBLISH gets an answer that will carry the TCP ACK.
    private var burst = UnansweredBurst()
    private var closing = false
    private var denialLog = DenialLogWindow<DenialEvent>()
    private var connectTimer: Scheduled<Void>?
    private var drainTimer: Scheduled<Void>?
    private var logger: Logger

    init(environment: ProxyEnvironment, eventLoop: any EventLoop) {
        self.environment = environment
        self.eventLoop = eventLoop
        self.session = ProxySession(configuration: .init(allowAnonymous: environment.configuration.allowAnonymous,
                                                          maximumPacketSize: environment.configuration.maximumPacketSize,
                                                          maximumNarrowedFilters: environment.configuration.maximumNarrowedFilters),
                                     aclStore: environment.aclStore, narrowingLedger: environment.narrowingLedger)
        self.logger = environment.logger
    }

    // MARK: Client side

    func clientActive(_ side: any ProxyClientSide, origin: String?) {
        client = side
        if let origin { logger[metadataKey: "peer"] = "\(origin)" }
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        let metrics = environment.metrics
        connectTimer = eventLoop.scheduleTask(in: environment.configuration.connectTimeout) {
            let connection = loopBound.value
            guard connection.session.state == .awaitingConnect else { return }
            metrics.connectTimeouts.increment()
            connection.logger.info("no CONNECT in time, closing", metadata: ["event": "connect_timeout"])
            connection.closeBoth()
        }
    }

    func clientFrame(_ frame: MQTTFrame) {
        environment.metrics.packet(.clientToBroker, frame.type, size: frame.size)
        burst.packet(frame.firstByte)
        let action = session.clientFrame(frame)
        if session.state != .awaitingConnect { connectTimer?.cancel(); connectTimer = nil }
        switch action {
        case .forward: writeToBroker(frame.bytes)
        case .effects(let effects): perform(effects)
        }
        if case .failedAwaitingConnAck = session.state, connectTimer == nil {
            // Waiting for the CONNACK before a DISCONNECT: do not wait forever for the broker.
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            connectTimer = eventLoop.scheduleTask(in: environment.configuration.connectTimeout) { loopBound.value.closeBoth() }
        }
    }

    /// End of a read burst on either side: flush whatever it produced, in both directions
    /// (a client packet can produce a reply to the client, e.g. a PUBACK for a denied PUBLISH).
    private func flushPending() {
        if let broker, toBroker.endBurst(write: { broker.write(NIOAny($0), promise: nil) }) {
            brokerQuickAck.wrote()
            broker.flush()
        }
        if let client, toClient.endBurst(write: { client.write($0) }) {
            clientQuickAck.wrote()
            client.flush()
        }
    }

    /// Frames what the client's channel read and hands the packets over, stopping once the
    /// connection is closing.
    func receiveFromClient(_ bytes: ByteBuffer, framer: inout InlineFramer<MQTTFrameDecoder>) {
        framer.feed(bytes, while: { !closing }, onFrame: clientFrame, onError: clientError)
    }

    /// The same for the broker's channel, where a PUBLISH too large for the client may be skipped.
    func receiveFromBroker(_ bytes: ByteBuffer, framer: inout InlineFramer<BrokerFrameDecoder>) {
        framer.feed(bytes, while: { !closing }, onFrame: { frame in
            switch frame {
            case .packet(let packet): brokerFrame(packet)
            case .oversizedPublish(let publish): brokerOversizedPublish(publish)
            }
        }, onError: brokerError)
    }

    func clientReadComplete() {
        flushPending()
    }

    /// Whether the client's last read burst was only QoS 0 PUBLISHes, which nothing answers:
    /// then its kernel would delay our ACK and a client with Nagle on (libmosquitto) would
    /// hold its next PUBLISH until it came (see `acknowledgeSegmentsPromptly`). Resets.
    func clientBurstGetsNoAnswer() -> Bool {
        burst.end()
    }

    /// Whether the client's socket needs TCP_QUICKACK set again (`QuickAckArming`).
    func clientNeedsQuickAck() -> Bool { clientQuickAck.needsArming() }

    /// Whether the broker's socket needs TCP_QUICKACK set again (`QuickAckArming`).
    func brokerNeedsQuickAck() -> Bool { brokerQuickAck.needsArming() }

    func clientError(_ error: any Error) {
        if let codecError = error as? MQTTCodecError {
            perform(session.clientFramingError(codecError))
            flushPending()
        } else {
            closeBoth()
        }
    }

    func clientInactive() {
        client = nil
        closeBoth()
    }

    /// Whether the client may be read: only once its packets have somewhere to go, and only
    /// while the client itself reads what it is sent. A client packet can be answered here
    /// (a PUBACK for a denied PUBLISH, a SUBACK nothing was forwarded for): a client that sends
    /// such packets without ever reading would otherwise have the answers pile up in memory.
    func clientMayRead() -> Bool {
        if closing || drainTimer != nil { return false }  // closing, or draining for shutdown
        guard let client, client.isWritable else { return false }
        if case .failedAwaitingConnAck = session.state { return false }
        if session.state == .awaitingConnect { return true }
        guard broker != nil else { return false }  // still connecting upstream
        return brokerWritable
    }

    /// The client side asks to read more: allowed now, or remembered until the broker side
    /// can take more.
    func clientWantsRead(_ proceed: () -> Void) {
        if clientMayRead() { proceed() } else { clientReadPending = true }
    }

    func clientWritabilityChanged() {
        if let client, client.isWritable, brokerReadPending, let broker {
            brokerReadPending = false
            broker.read()
        }
        resumeClientReadIfAllowed()
    }

    /// A client read held back by `clientMayRead` goes ahead once both sides allow it.
    private func resumeClientReadIfAllowed() {
        if clientReadPending, clientMayRead(), let client {
            clientReadPending = false
            client.read()
        }
    }

    // MARK: Broker side

    func brokerAdded(_ context: ChannelHandlerContext) {
        broker = context
        brokerWritable = context.channel.isWritable
    }

    func brokerActive() {
        guard let broker else { return }
        for buffer in queuedForBroker { broker.write(NIOAny(buffer), promise: nil) }
        queuedForBroker.removeAll()
        brokerQuickAck.wrote()
        broker.flush()
        resumeClientReadIfAllowed()
    }

    func brokerFrame(_ frame: MQTTFrame) {
        environment.metrics.packet(.brokerToClient, frame.type, size: frame.size)
        switch session.brokerFrame(frame) {
        case .forward: writeToClient(frame.bytes)
        case .effects(let effects): perform(effects)
        }
    }

    private func brokerOversizedPublish(_ publish: OversizedPublish) {
        environment.metrics.packet(.brokerToClient, .publish, size: publish.size)
        perform(session.brokerOversizedPublish(publish))
    }

    func brokerReadComplete() {
        flushPending()
    }

    func brokerError(_ error: any Error) {
        if let codecError = error as? MQTTCodecError {
            perform(session.brokerFramingError(codecError))
            flushPending()
        } else {
            closeBoth()
        }
    }

    func brokerInactive() {
        broker = nil
        brokerWritable = false
        if !closing {
            if session.state == .connected || session.state == .connecting { environment.metrics.upstreamClosed.increment() }
            closeBoth()
        }
    }

    func brokerMayRead() -> Bool {
        guard !closing, let client else { return false }
        return client.isWritable
    }

    func brokerRead(_ context: ChannelHandlerContext) {
        if brokerMayRead() { context.read() } else { brokerReadPending = true }
    }

    func brokerWritabilityChanged() {
        brokerWritable = broker?.channel.isWritable ?? false
        resumeClientReadIfAllowed()
    }

    // MARK: Actions

    private func perform(_ action: ProxySession.Action) {
        if case .effects(let effects) = action { perform(effects) }
    }

    private func perform(_ effects: [ProxySession.Effect]) {
        for effect in effects {
            switch effect {
            case .toBroker(let bytes):
                writeToBroker(bytes)
            case .toClient(let bytes):
                writeToClient(bytes)
            case .openUpstream(let connect):
                queuedForBroker.append(connect)
                openUpstream()
            case .denied(let event):
                environment.metrics.denial(event.kind)
                logDenial(event)
            case .clientProtocolError(let error):
                environment.metrics.decodeError(.clientToBroker)
                logger.notice("closing client: \(error)", metadata: ["event": "client_protocol_error", "reason_code": "\(error.reasonCode)"])
            case .brokerProtocolError(let error):
                environment.metrics.decodeError(.brokerToClient)
                logger.warning("closing: the broker sent \(error)", metadata: ["event": "broker_protocol_error"])
            case .closeBoth:
                closeBoth()
            }
        }
    }

    private func writeToBroker(_ bytes: ByteBuffer) {
        if let broker, broker.channel.isActive {
            toBroker.append(bytes) { broker.write(NIOAny($0), promise: nil) }
        } else if !closing {
            queuedForBroker.append(bytes)
        }
    }

    private func writeToClient(_ bytes: ByteBuffer) {
        guard let client else { return }
        toClient.append(bytes) { client.write($0) }
    }

    private func openUpstream() {
        guard !upstreamRequested, client != nil else { return }
        upstreamRequested = true
        let configuration = environment.configuration
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        let skipsOversized = session.version != .v5
        let metrics = environment.metrics
        let bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 128, maximum: 65536))
            .connectTimeout(configuration.connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // A 5.0 broker was told the limit (Maximum Packet Size); a 3.1.x one cannot be.
                    let decoder = BrokerFrameDecoder(maximumPacketSize: configuration.maximumPacketSize, skipsOversizedPublish: skipsOversized)
                    let coalescer = configuration.receiveCoalescing.map { ReceiveCoalescer(configuration: $0, counters: metrics.readCoalescing) }
                    try channel.pipeline.syncOperations.addHandler(BrokerSideHandler(connection: loopBound.value, decoder: decoder, coalescer: coalescer))
                }
            }
        bootstrap.connect(host: configuration.broker.host, port: configuration.broker.port).whenComplete { result in
            let connection = loopBound.value
            switch result {
            case .success(let channel):
                if connection.closing { channel.close(promise: nil) }
            case .failure(let error):
                connection.upstreamFailed(error)
            }
        }
    }

    private func upstreamFailed(_ error: any Error) {
        environment.metrics.upstreamConnectFailures.increment()
        logger.error("cannot reach the broker \(environment.configuration.broker): \(error)", metadata: ["event": "upstream_connect_failed"])
        // Tell the client the server is unavailable (3.1.1 0x03, 5.0 0x88) instead of a bare close.
        if let version = session.version, session.state == .connecting {
            let ack = version == .v5 ? ConnAck(sessionPresent: false, returnCode: ReasonCode.serverUnavailable.rawValue, properties: [])
                : ConnAck(sessionPresent: false, returnCode: ConnectReturnCode.serverUnavailable.rawValue)
            writeToClient(MQTTPacket.connAck(ack).encode(version: version))
        }
        closeBoth()
    }

    /// Closes both sides after what was written to each has gone out.
    func closeBoth() {
        guard !closing else { return }
        flushPending()
        reportSuppressedDenials()
        closing = true
        connectTimer?.cancel()
        drainTimer?.cancel()
        queuedForBroker.removeAll()
        client?.closeAfterFlush()
        if let broker {
            let channel = broker.channel
            broker.writeAndFlush(NIOAny(channel.allocator.buffer(capacity: 0))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// Graceful shutdown: stop reading the client, let in-flight acknowledgements come back
    /// until the deadline, then tell a 5.0 client why and close.
    func shutdown(deadline: NIODeadline) {
        guard !closing else { return }
        if session.inFlightToBroker.isEmpty || session.state != .connected {
            finishShutdown()
            return
        }
        clientReadPending = true  // hold further client reads
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        drainTimer = eventLoop.scheduleTask(deadline: deadline) { loopBound.value.finishShutdown() }
        pollDrain(deadline: deadline)
    }

    private func finishShutdown() {
        guard !closing else { return }
        if let notice = session.shutdownNotice() { writeToClient(notice) }
        closeBoth()
    }

    private func pollDrain(deadline: NIODeadline) {
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.scheduleTask(in: .milliseconds(20)) {
            let connection = loopBound.value
            guard !connection.closing else { return }
            if connection.session.inFlightToBroker.isEmpty {
                connection.drainTimer?.cancel()
                connection.finishShutdown()
            } else if .now() < deadline {
                connection.pollDrain(deadline: deadline)
            }
        }
    }

    /// One line per denial, up to `DenialLogLimit`'s rates; past them, counted and reported
    /// in one line when the window ends (or the connection closes).
    private func logDenial(_ event: DenialEvent) {
        switch denialLog.denial(event, at: .now(), perSecond: DenialLogLimit.perConnectionPerSecond, budget: .process) {
        case .log:
            var metadata = Self.identityMetadata(event.identity)
            metadata["event"] = "denied"
            metadata["kind"] = "\(event.kind.rawValue)"
            metadata["direction"] = "\(event.direction)"
            metadata["topic"] = "\(event.topic)"
            metadata["reason"] = "\(event.reason)"
            metadata["rule"] = .string(event.rule.map { "\($0)" } ?? "default deny")
            logger.notice("denied", metadata: metadata)
        case .suppressFirst(let deadline):
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            eventLoop.scheduleTask(deadline: deadline) { loopBound.value.reportSuppressedDenials() }
        case .suppress:
            break
        }
    }

    private func reportSuppressedDenials() {
        guard let (count, last) = denialLog.takeSuppressed() else { return }
        var metadata = Self.identityMetadata(last.identity)
        metadata["event"] = "denials_suppressed"
        metadata["count"] = "\(count)"
        metadata["last_kind"] = "\(last.kind.rawValue)"
        metadata["last_topic"] = "\(last.topic)"
        logger.notice("more denials than are logged one by one (\(DenialLogLimit.perConnectionPerSecond)/s per connection)", metadata: metadata)
    }

    private static func identityMetadata(_ identity: Identity) -> Logger.Metadata {
        switch identity {
        case .client(let username, let clientID):
            return ["username": .string(username ?? ""), "anonymous": "\(username == nil)", "client_id": .string(clientID ?? "")]
        case .peer(let name):
            return ["peer": .string(name)]
        }
    }
}

@available(*, unavailable)
extension ProxyConnection: Sendable {}

/// The client end of a proxied connection: bytes in, framed here, session decisions out.
///
/// The framing is done in the handler rather than by a ByteToMessageHandler in front of it:
/// a frame then goes straight to the session instead of through the pipeline boxed in an
/// NIOAny, which was a large share of the per-packet cost.
final class ClientSideHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let connection: ProxyConnection
    private var framer: InlineFramer<MQTTFrameDecoder>
    init(connection: ProxyConnection, decoder: MQTTFrameDecoder) {
        self.connection = connection
        self.framer = InlineFramer(decoder)
    }

    func channelActive(context: ChannelHandlerContext) {
        connection.clientActive(ChannelClientSide(context), origin: context.channel.remoteAddress.map { $0.logDescription })
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.receiveFromClient(unwrapInboundIn(data), framer: &framer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connection.clientReadComplete()
        // Only then: extra ACKs for packets that get an answer anyway cost throughput.
        if connection.clientBurstGetsNoAnswer() && connection.clientNeedsQuickAck() { context.channel.acknowledgeSegmentsPromptly() }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.clientError(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.clientInactive()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        connection.clientWritabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let shutdown = event as? ProxyShutdownEvent {
            connection.shutdown(deadline: shutdown.deadline)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func read(context: ChannelHandlerContext) {
        connection.clientWantsRead { context.read() }
    }
}

@available(*, unavailable)
extension ClientSideHandler: Sendable {}

/// The broker end of a proxied connection (framed inline, as the client end).
final class BrokerSideHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let connection: ProxyConnection
    private var framer: InlineFramer<BrokerFrameDecoder>
    /// The socket's receive low watermark at high rates; nil when `coalesce_broker_reads` is off.
    private let coalescer: ReceiveCoalescer?
    init(connection: ProxyConnection, decoder: BrokerFrameDecoder, coalescer: ReceiveCoalescer?) {
        self.connection = connection
        self.framer = InlineFramer(decoder)
        self.coalescer = coalescer
    }

    func handlerAdded(context: ChannelHandlerContext) {
        connection.brokerAdded(context)
    }

    func channelActive(context: ChannelHandlerContext) {
        connection.brokerActive()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        coalescer?.read(bytes.readableBytes, from: context.channel)
        connection.receiveFromBroker(bytes, framer: &framer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connection.brokerReadComplete()
        // A QoS 0 subscriber sends the broker nothing back: see the method.
        if connection.brokerNeedsQuickAck() { context.channel.acknowledgeSegmentsPromptly() }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.brokerError(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        coalescer?.stop()
        connection.brokerInactive()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        connection.brokerWritabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        connection.brokerRead(context)
    }
}

@available(*, unavailable)
extension BrokerSideHandler: Sendable {}
