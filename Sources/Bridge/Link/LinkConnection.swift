import CoreMetrics
import Logging
import MQTTCodec
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import X509

/// A stream endpoint that left work (a flush) for the end of the link's current read.
protocol LinkReadEndObserver: AnyObject {
    func linkReadEnded()
}

/// An endpoint's work left for the end of the link's read, requested at most once per read.
struct WorkAtReadEnd {
    private var isPending = false

    /// Leaves the work for the end of `link`'s read when it is reading (`observer` is then
    /// called), else does it `now`.
    mutating func request(_ link: LinkConnection?, observer: any LinkReadEndObserver, now: () -> Void) {
        guard !isPending else { return }
        if let link, link.atEndOfRead(observer) { isPending = true } else { now() }
    }

    /// The read ended: the observer does the work.
    mutating func ended() { isPending = false }
}

/// One TLS connection to a paired site, and the streams multiplexed on it.
///
/// Handshake → each side sends HELLO → the link is up when the other side's HELLO arrives and
/// names the peer we verified. Only then are streams opened or accepted. A PING goes out every
/// keepalive interval; a link that has been silent for three intervals is closed as dead.
final class LinkConnection {
    enum Role {
        /// We dialled, expecting this peer.
        case dialer(PeerConfiguration)
        case acceptor
    }

    enum State {
        case handshaking
        case awaitingHello(PeerConfiguration)
        case up(PeerConfiguration)
        case closed
    }

    let node: LinkNode
    let role: Role
    private(set) var state = State.handshaking
    private var context: ChannelHandlerContext?
    private var streams: [UInt32: LinkStream] = [:]
    private var nextStreamID: UInt32
    private var lastReceived = NIODeadline.now()
    private var keepalive: RepeatedTask?
    private var handshakeTimer: Scheduled<Void>?
    /// Accepted links: the source address whose handshake place this connection holds until
    /// it is up or closed (`LinkRegistry.beginHandshake`).
    var handshakeSlot: String?
    private var needsFlush = false
    /// The link's round-trip time, smoothed, from PINGs that carry their send time (nil until
    /// the first PONG): what tells a stream that its window, not its consumer, holds it back.
    private(set) var roundTripTime: TimeAmount?
    /// Bytes by which this link's streams' receive windows grew beyond the initial one.
    private var windowGrowth = 0
    /// OPENs refused at `max_streams`, for the log.
    private let streamLimitRefusals = RefusalReport()
    /// Between the first frame of a read from the link and the end of that read: endpoints
    /// then leave their flushes (to a local socket, to the broker) for `readComplete`, so the
    /// frames one TLS read carries go out in one write per socket instead of one each.
    private var isReading = false
    private var atReadEnd: [any LinkReadEndObserver] = []
    /// Ends the read at the end of this event-loop turn if no read-complete came (NIOSSL
    /// can hand over decrypted data outside a socket read, e.g. while closing).
    private lazy var readEndFallback = CoalescedAction<LinkConnection>(on: node.eventLoop) { $0.endRead() }
    private var output: ByteBuffer?
    /// Bytes of the last batch passed down the pipeline: the next batch's starting capacity.
    private var lastOutputSize = 0
    private var logger: Logger
    /// Called once the link is up (dialer: to reset backoff) and once it has closed.
    var onUp: (() -> Void)?
    var onClosed: (() -> Void)?

    init(node: LinkNode, role: Role) {
        self.node = node
        self.role = role
        self.logger = node.logger
        switch role {
        case .dialer: nextStreamID = 1
        case .acceptor: nextStreamID = 2
        }
    }

    var peer: PeerConfiguration? {
        if case .up(let peer) = state { return peer }
        return nil
    }

    /// The channel's writability as its events report it (NIO fires them at the transitions).
    /// Read for every packet a stream sends; asking the channel retained and released it.
    private(set) var isWritable = false

    // MARK: Channel events

    func active(_ context: ChannelHandlerContext) {
        self.context = context
        isWritable = context.channel.isWritable
        if let remote = context.channel.remoteAddress { logger[metadataKey: "remote"] = "\(remote.logDescription)" }
        let loopBound = NIOLoopBound(self, eventLoop: node.eventLoop)
        handshakeTimer = node.eventLoop.scheduleTask(in: node.configuration.handshakeTimeout) {
            let link = loopBound.value
            if case .up = link.state { return }
            link.logger.warning("link handshake did not finish in time", metadata: ["event": "link_refused", "reason": "timeout"])
            link.node.metrics.refusedTLS.increment()
            link.close()
        }
    }

    func handshakeCompleted(_ context: ChannelHandlerContext) {
        guard case .handshaking = state else { return }
        // Which peer is this? The verifier already required a pinned key (or a CA-issued chain).
        let certificate = (try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self))?.peerCertificate
        guard let certificate, let fingerprint = try? SPKIFingerprint(of: certificate) else {
            refuse(hello: false, "no peer certificate after the handshake")
            return
        }
        let peer: PeerConfiguration?
        switch (role, node.configuration.trust) {
        case (.dialer(let expected), .pins):
            peer = expected.fingerprint == fingerprint ? expected : nil
        case (.acceptor, .pins):
            peer = node.peer(with: fingerprint)
        case (.dialer(let expected), .certificateAuthority):
            peer = Self.commonName(of: certificate) == expected.name ? expected : nil
        case (.acceptor, .certificateAuthority):
            peer = Self.commonName(of: certificate).flatMap { node.peer(named: $0) }
        }
        guard let peer else {
            refuse(hello: false, "certificate \(fingerprint) is not a configured peer")
            return
        }
        logger[metadataKey: "peer"] = "\(peer.name)"
        state = .awaitingHello(peer)
        write(LinkHello(name: node.identity.name, fingerprint: node.identity.fingerprint).frame)
        flush()
    }

    static func commonName(of certificate: NIOSSLCertificate) -> String? {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return nil }
        for attribute in parsed.subject.flatMap({ $0 }) where attribute.type == .RDNAttributeType.commonName {
            let text = attribute.description
            if let equals = text.firstIndex(of: "=") { return String(text[text.index(after: equals)...]) }
        }
        return nil
    }

    /// Frames what TLS decrypted and handles each frame; a frame that cannot be read closes
    /// the link.
    func receive(_ bytes: ByteBuffer, framer: inout InlineFramer<LinkFrameDecoder>) {
        lastReceived = .now()
        node.metrics.bytesFromPeer.increment(by: Int64(bytes.readableBytes))
        isReading = true
        framer.feed(bytes, while: { !isClosed }, onFrame: frame, onError: error)
    }

    func frame(_ frame: LinkFrame) {
        if case .handshaking = state, let context {
            // Decrypted data can only follow a finished handshake; if it overtook the
            // handshake-completed event, take the handshake as completed now.
            handshakeCompleted(context)
        }
        switch state {
        case .handshaking, .closed:
            return
        case .awaitingHello(let peer):
            guard frame.kind == .hello else {
                refuse(hello: true, "expected HELLO, got \(frame.kind)")
                return
            }
            hello(frame, peer: peer)
        case .up(let peer):
            streamFrame(frame, peer: peer)
        }
    }

    private func hello(_ frame: LinkFrame, peer: PeerConfiguration) {
        let hello: LinkHello
        do {
            hello = try LinkHello(parsing: frame.payload)
        } catch {
            refuse(hello: true, error.description)
            return
        }
        guard hello.version == LinkHello.currentVersion else {
            goAway("link protocol version \(hello.version) is not supported (this site speaks \(LinkHello.currentVersion))")
            refuse(hello: true, "peer speaks link protocol version \(hello.version)")
            return
        }
        guard hello.name == peer.name else {
            refuse(hello: true, "peer says it is \"\(hello.name)\" but its key belongs to \"\(peer.name)\"")
            return
        }
        if case .pins = node.configuration.trust, let pinned = peer.fingerprint, hello.fingerprint != pinned {
            refuse(hello: true, "HELLO fingerprint \(hello.fingerprint) differs from the pinned \(pinned)")
            return
        }
        handshakeTimer?.cancel()
        releaseHandshakeSlot()
        state = .up(peer)
        node.registry.value.add(self, peer: peer.name)
        node.metrics.linksUp.increment()
        node.metrics.linkUps.increment()
        logger.notice("link up", metadata: ["event": "link_up", "tls": "TLSv1.3", "peer_fingerprint": "\(hello.fingerprint)"])
        let loopBound = NIOLoopBound(self, eventLoop: node.eventLoop)
        let interval = node.configuration.keepalive
        keepalive = node.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let link = loopBound.value
            if NIODeadline.now() - link.lastReceived > interval * 3 {
                link.node.metrics.deadLinks.increment()
                link.logger.warning("link silent for \(interval.nanoseconds * 3 / 1_000_000) ms: closing it as dead", metadata: ["event": "link_dead"])
                link.close()
                return
            }
            link.ping()
        }
        // A first round-trip sample now, not one keepalive interval later.
        ping()
        onUp?()
        // The dialling side opens the relay stream; both sides then send on it.
        if case .dialer = role, let relay = node.relay.value { relay.linkUp(self, peer: peer.name) }
    }

    private func streamFrame(_ frame: LinkFrame, peer: PeerConfiguration) {
        switch frame.kind {
        case .hello:
            protocolViolation("a second HELLO")
        case .ping:
            write(LinkFrame(.pong, payload: frame.payload))
            needsFlush = true
        case .pong:
            var payload = frame.payload
            // Our PINGs carry their send time; a PONG without one (or a stale, odd value) is no sample.
            if let sent = payload.readInteger(as: UInt64.self), payload.readableBytes == 0 {
                let sample = Int64(NIODeadline.now().uptimeNanoseconds) - Int64(truncatingIfNeeded: sent)
                if sample > 0 && sample < 60_000_000_000 {
                    let previous = roundTripTime?.nanoseconds ?? sample
                    roundTripTime = .nanoseconds((previous * 7 + sample) / 8)
                }
            }
        case .goAway:
            logger.notice("peer closed the link: \(String(buffer: frame.payload))", metadata: ["event": "link_goaway"])
            close()
        case .open:
            acceptStream(frame, peer: peer)
        case .openOK, .openRefused, .data, .window, .reset:
            guard let stream = streams[frame.stream] else {
                // Frames racing a RESET are dropped; DATA for an unknown stream is refused.
                if frame.kind == .data { write(LinkFrame(.reset, stream: frame.stream, payload: ByteBuffer(string: "unknown stream"))) }
                return
            }
            stream.frame(frame)
        }
    }

    func readComplete() {
        endRead()
        flushIfNeeded()
    }

    /// `observer.linkReadEnded()` runs when this read from the link ends; false when the link
    /// is not reading (the caller acts at once). An observer registers once per read.
    func atEndOfRead(_ observer: any LinkReadEndObserver) -> Bool {
        guard isReading else { return false }
        // Only a read that leaves work needs the fallback, not every read from the link.
        if atReadEnd.isEmpty { readEndFallback.request(for: self) }
        atReadEnd.append(observer)
        return true
    }

    private func endRead() {
        isReading = false
        guard !atReadEnd.isEmpty else { return }
        let observers = atReadEnd
        atReadEnd.removeAll(keepingCapacity: true)
        for observer in observers { observer.linkReadEnded() }
    }

    func writabilityChanged() {
        isWritable = context?.channel.isWritable ?? false
        guard isWritable else { return }
        for stream in streams.values { stream.linkWritable() }
    }

    func error(_ error: any Error) {
        if let error = error as? LinkProtocolError, !isClosed {
            protocolViolation(error.description)
            return
        }
        if case .handshaking = state {
            node.metrics.refusedTLS.increment()
            logger.warning("link TLS handshake refused: \(error)", metadata: ["event": "link_refused", "reason": "tls"])
        } else if !(error is NIOSSLError && isClosed) {
            logger.warning("link error: \(error)", metadata: ["event": "link_error"])
        }
        close()
    }

    private func releaseHandshakeSlot() {
        guard let address = handshakeSlot else { return }
        handshakeSlot = nil
        node.registry.value.endHandshake(from: address)
    }

    private var isClosed: Bool { if case .closed = state { true } else { false } }

    func inactive() {
        let wasUp = peer
        state = .closed
        context = nil
        isWritable = false
        keepalive?.cancel()
        handshakeTimer?.cancel()
        releaseHandshakeSlot()
        endRead()
        for stream in streams.values { stream.abort(reason: "link closed") }
        streams.removeAll()
        if let wasUp {
            node.registry.value.remove(self, peer: wasUp.name)
            node.metrics.linksUp.decrement()
            logger.notice("link down", metadata: ["event": "link_down"])
        }
        onClosed?()
        onClosed = nil
    }

    private func refuse(hello: Bool, _ reason: String) {
        if hello { node.metrics.refusedHello.increment() } else { node.metrics.refusedTLS.increment() }
        logger.warning("link refused: \(reason)", metadata: ["event": "link_refused", "reason": "\(hello ? "hello" : "identity")"])
        close()
    }

    /// The authenticated peer broke the link protocol (a frame that cannot be read, an OPEN
    /// that cannot be, a second HELLO): counted, logged, and the reason sent in a GOAWAY so
    /// that the operator at the other end reads it in that site's log; then the link closes
    /// (the dialler reconnects with backoff).
    private func protocolViolation(_ reason: String) {
        node.metrics.protocolErrors.increment()
        logger.warning("link protocol error: \(reason); closing the link", metadata: ["event": "link_protocol_error"])
        goAway("protocol error: \(reason)")
        close()
    }

    func goAway(_ reason: String) {
        write(LinkFrame(.goAway, payload: ByteBuffer(string: reason)))
        flush()
    }

    func close() {
        guard let context else { return }
        context.close(promise: nil)
    }

    // MARK: Writing

    /// Frames are gathered into one buffer until flush: NIOSSL makes a TLS record (and an
    /// AEAD seal) of every buffer written to it, and most frames carry one small MQTT packet.
    func write(_ frame: LinkFrame) {
        guard prepareOutput(for: frame.payload.readableBytes) else { return }
        frame.write(to: &output!)
        finishWrite()
    }

    /// Writes a frame whose payload (`payloadSize` bytes) `encode` appends in place.
    func writeFrame(_ kind: LinkFrame.Kind, flags: UInt8 = 0, stream: UInt32, payloadSize: Int, _ encode: (inout ByteBuffer) -> Void) {
        guard prepareOutput(for: payloadSize) else { return }
        output!.writeMultipleIntegers(kind.rawValue, flags, stream, UInt32(payloadSize))
        let start = output!.writerIndex
        encode(&output!)
        assert(output!.writerIndex - start == payloadSize, "a frame's payload must be as long as its header says")
        finishWrite()
    }

    private func prepareOutput(for payloadSize: Int) -> Bool {
        guard let context else { return false }
        if output == nil {
            // As large as the last batch was (up to where it is passed on anyway), so a steady
            // stream of small frames is not copied through a chain of doubling reallocations.
            let capacity = max(Self.initialOutputCapacity, min(lastOutputSize, Self.maximumGathered), LinkFrame.headerSize + payloadSize)
            output = context.channel.allocator.buffer(capacity: capacity)
        }
        output!.reserveCapacity(minimumWritableBytes: LinkFrame.headerSize + payloadSize)
        return true
    }

    private func finishWrite() {
        needsFlush = true
        if output!.readableBytes >= Self.maximumGathered { passOutput() }
    }

    private static let initialOutputCapacity = 4096
    /// Beyond this the gathered bytes go down the pipeline without waiting for the flush.
    private static let maximumGathered = 64 << 10

    private func passOutput() {
        guard let buffer = output else { return }
        output = nil
        lastOutputSize = buffer.readableBytes
        guard let context, buffer.readableBytes > 0 else { return }
        node.metrics.bytesToPeer.increment(by: Int64(buffer.readableBytes))
        context.write(NIOAny(buffer), promise: nil)
    }

    func flush() {
        needsFlush = false
        passOutput()
        context?.flush()
    }

    func flushIfNeeded() { if needsFlush { flush() } }

    // MARK: Streams

    /// Opens a stream to `service` on the peer; `endpoint` is the local end.
    func openStream(service: String, origin: String, endpoint: any LinkStreamEndpoint) -> LinkStream {
        let id = nextStreamID
        nextStreamID &+= 2
        let stream = LinkStream(id: id, link: self, window: node.configuration.streamWindow, opened: false)
        stream.endpoint = endpoint
        streams[id] = stream
        var payload = ByteBuffer()
        payload.writeShortString(service)
        payload.writeShortString(origin)
        write(LinkFrame(.open, stream: id, payload: payload))
        flush()
        node.metrics.streamsOpened.increment()
        return stream
    }

    private func acceptStream(_ frame: LinkFrame, peer: PeerConfiguration) {
        let id = frame.stream
        let peerParity: UInt32 = { if case .dialer = role { 0 } else { 1 } }()
        var payload = frame.payload
        guard id % 2 == peerParity, streams[id] == nil, let serviceName = payload.readShortString(), let origin = payload.readShortString() else {
            protocolViolation("malformed OPEN for stream \(id)")
            return
        }
        // The relay's stream is not refused for max_streams while the link has none (passthrough
        // streams at the limit must not stop the relay); a second one counts like any stream.
        let firstRelayStream = serviceName == RelayService.streamName && !streams.values.contains { $0.endpoint is RelayStreamEndpoint }
        guard firstRelayStream || streams.count < node.configuration.maximumStreams else {
            refuseAtStreamLimit(id, service: serviceName, origin: origin)
            return
        }
        if serviceName == RelayService.streamName {
            let stream = LinkStream(id: id, link: self, window: node.configuration.streamWindow, opened: true)
            streams[id] = stream
            guard let relay = node.relay.value, relay.accept(stream, peer: peer.name) else {
                logger.warning("refused the relay stream of \(peer.name): this site has no relay rules for it", metadata: ["event": "stream_refused", "service": "\(serviceName)"])
                refuseStream(stream, .notOffered, "no relay rules for this peer")
                return
            }
            node.metrics.streamsOpened.increment()
            write(LinkFrame(.openOK, stream: id, payload: LinkFrame.openOKBytes))
            flush()
            stream.endpoint?.opened()
            return
        }
        // Only services this site lists for this peer: the peer never chooses a host:port.
        guard let service = node.configuration.services.first(where: { $0.name == serviceName }), service.peers.contains(peer.name) else {
            logger.warning("refused stream to service \"\(serviceName)\": not offered to \(peer.name)", metadata: ["event": "stream_refused", "service": "\(serviceName)", "origin": "\(origin)"])
            refuseOpen(id, .notOffered, "no such service")
            return
        }
        let stream = LinkStream(id: id, link: self, window: node.configuration.streamWindow, opened: true)
        streams[id] = stream
        node.metrics.streamsOpened.increment()
        var streamLoggerSetup = logger
        streamLoggerSetup[metadataKey: "service"] = "\(service.name)"
        streamLoggerSetup[metadataKey: "origin"] = "\(origin)"
        let streamLogger = streamLoggerSetup
        switch service.kind {
        case .mqtt:
            guard let aclStore = node.aclStore else {
                refuseStream(stream, .notOffered, "this site has no ACL for MQTT services")
                return
            }
            var configuration = node.proxyTemplate
            configuration.name = "link:\(service.name)"
            configuration.broker = service.target
            let environment = ProxyEnvironment(configuration: configuration, aclStore: aclStore, metrics: node.proxyMetrics, logger: streamLogger, registry: ConnectionRegistry(),
                                               narrowingLedger: node.narrowingLedger)
            let endpoint = MQTTStreamEndpoint(stream: stream, environment: environment, origin: "\(peer.name)/\(origin)")
            stream.endpoint = endpoint
            write(LinkFrame(.openOK, stream: id, payload: LinkFrame.openOKMQTT))
            flush()
        case .tcp:
            let loopBound = NIOLoopBound(self, eventLoop: node.eventLoop)
            let streamBound = NIOLoopBound(stream, eventLoop: node.eventLoop)
            ClientBootstrap(group: node.eventLoop)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers([IdleStateHandler(allTimeout: service.idleTimeout),
                                                                         TCPStreamEndpoint(stream: streamBound.value)])
                    }
                }
                .connect(host: service.target.host, port: service.target.port)
                .whenComplete { result in
                    let link = loopBound.value
                    let stream = streamBound.value
                    switch result {
                    case .success:
                        link.write(LinkFrame(.openOK, stream: id, payload: LinkFrame.openOKBytes))
                        link.flush()
                        stream.endpoint?.opened()
                    case .failure(let error):
                        streamLogger.warning("service target \(service.target) unreachable: \(error)", metadata: ["event": "stream_target_failed"])
                        link.refuseStream(stream, .targetUnreachable, "target unreachable")
                    }
                }
        }
    }

    /// A `tcp` stream of ours with nothing read or written for the service's idle_timeout.
    func streamIdle(_ stream: LinkStream) {
        logger.info("stream idle for longer than idle_timeout: reset", metadata: ["event": "stream_idle", "stream": "\(stream.id)"])
        stream.reset("idle for longer than the service's idle_timeout")
    }

    /// Refuses a peer's OPEN (counted).
    private func refuseOpen(_ id: UInt32, _ code: LinkFrame.RefusalCode, _ message: String) {
        node.metrics.streamsRefused.increment()
        write(.openRefused(stream: id, code, message))
    }

    /// Refuses a peer's OPEN for which a stream was already set up, and drops the stream.
    private func refuseStream(_ stream: LinkStream, _ code: LinkFrame.RefusalCode, _ message: String) {
        refuseOpen(stream.id, code, message)
        flush()
        streams[stream.id] = nil
    }

    /// A peer's OPEN beyond `max_streams`: refused and counted (logged as `RefusalReport` says).
    private func refuseAtStreamLimit(_ id: UInt32, service: String, origin: String) {
        if let refused = streamLimitRefusals.refused() {
            logger.warning("refused stream to service \"\(service)\": \(streams.count) streams open on this link (max_streams)",
                           metadata: ["event": "stream_refused", "reason": "max_streams", "service": "\(service)", "origin": "\(origin)",
                                      "refused": "\(refused)"])
        }
        refuseOpen(id, .tooManyStreams, "too many streams")
    }

    func streamFinished(_ stream: LinkStream) {
        streams[stream.id] = nil
        windowGrowth -= stream.receive.growth
    }

    /// Lends a stream `bytes` of receive window beyond the initial one, if the link's budget
    /// (four times `max_stream_window`) has them: many distant streams together cannot make
    /// this site buffer without bound.
    func lendWindowGrowth(_ bytes: Int) -> Bool {
        guard windowGrowth + bytes <= node.configuration.maximumStreamWindow * 4 else { return false }
        windowGrowth += bytes
        return true
    }

    /// A PING carrying its send time: the PONG that echoes it is a round-trip sample.
    private func ping() {
        var payload = ByteBuffer()
        payload.writeInteger(NIODeadline.now().uptimeNanoseconds)
        write(LinkFrame(.ping, payload: payload))
        flush()
    }

    /// Graceful stop: tell the peer, then close.
    func shutdown() {
        goAway("site shutting down")
        close()
    }
}

@available(*, unavailable)
extension LinkConnection: Sendable {}

/// The link channel's last handler: frames in, events to the `LinkConnection`.
final class LinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let link: LinkConnection
    /// Link frames are cut from the TLS plaintext here rather than by a ByteToMessageHandler:
    /// no pipeline hop per frame.
    private var framer = InlineFramer(LinkFrameDecoder())
    init(link: LinkConnection) { self.link = link }

    func channelActive(context: ChannelHandlerContext) {
        link.active(context)
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event as? TLSUserEvent ?? .shutdownCompleted {
            link.handshakeCompleted(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        link.receive(unwrapInboundIn(data), framer: &framer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        link.readComplete()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        link.writabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        link.error(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        link.inactive()
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension LinkHandler: Sendable {}
