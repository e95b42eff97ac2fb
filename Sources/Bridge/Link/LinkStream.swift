import CoreMetrics
import Logging
import MQTTCodec
import NIOCore
import Synchronization

/// The local end of a stream: a TCP connection (passthrough, or a local MQTT client going to
/// a peer), or the in-process MQTT proxy serving a peer's client.
protocol LinkStreamEndpoint: AnyObject {
    /// The peer accepted the stream (OPEN_OK): start reading.
    func opened()
    /// Bytes from the peer; `fin` when the peer will send no more.
    func deliver(_ bytes: ByteBuffer, fin: Bool)
    /// There is send window again (or the link became writable): read more if waiting.
    func resumeReading()
    /// The stream is gone (RESET, refused, link closed).
    func abort(reason: String)
    /// Both ends sent FIN: the link has let go of the stream, and so should the endpoint.
    func streamFinished()
    /// Whether the stream's receive window may grow over a distant link (`ReceiveWindow`).
    var receiveWindowMayGrow: Bool { get }
}

extension LinkStreamEndpoint {
    /// Bytes written to a socket or relayed cost little each: a larger window only keeps a
    /// distant pipe full.
    var receiveWindowMayGrow: Bool { true }

    func streamFinished() {}
}

/// Credit for an endpoint that frames units (MQTT packets, relay records) out of a stream and
/// credits a unit's bytes once it has consumed the unit. The bytes of a unit that has not fully
/// arrived are credited as they arrive, or a unit larger than the stream window could never
/// complete (the peer would wait for credit, the endpoint for the rest of the unit); they are
/// not credited again when the unit is consumed. The endpoint's unit size limit bounds what is
/// held this way.
struct IncompleteUnitCredit {
    /// Bytes at the front of the endpoint's buffer that were credited already.
    private var creditedAhead = 0

    /// The unit at the front of the buffer is incomplete, with `buffered` bytes there: what to
    /// credit now.
    mutating func incomplete(buffered: Int) -> Int {
        defer { creditedAhead = max(creditedAhead, buffered) }
        return max(0, buffered - creditedAhead)
    }

    /// A unit of `size` bytes was taken from the front of the buffer: what of it is still to
    /// be credited once it is consumed.
    mutating func taken(_ size: Int) -> Int {
        let already = min(size, creditedAhead)
        creditedAhead -= already
        return size - already
    }
}

/// One multiplexed stream: credit-based flow control in both directions.
///
/// Sending: at most `sendWindow` bytes beyond what the peer has credited (a read already
/// taken from the socket may overshoot by one buffer); the local source is read only while
/// the window is open and the link writable. Receiving: bytes are credited back with WINDOW
/// only once the local end has consumed them (written to its socket, or processed by the
/// proxy), so a slow consumer at either end stops the producer without unbounded buffering.
/// The receive window grows over a distant link (`ReceiveWindow`).
final class LinkStream {
    let id: UInt32
    unowned let link: LinkConnection
    var endpoint: (any LinkStreamEndpoint)? {
        didSet {
            guard let endpoint, !heldForEndpoint.isEmpty else { return }
            let held = heldForEndpoint
            heldForEndpoint.removeAll()
            for (bytes, fin) in held { endpoint.deliver(bytes, fin: fin) }
        }
    }
    /// Peer bytes that came before the local end was set up (the opener sends right behind
    /// its OPEN; a service connection's handler is added as that connection is made).
    private var heldForEndpoint: [(ByteBuffer, Bool)] = []
    private(set) var isOpen: Bool
    /// The peer said (OPEN_OK) that this stream reaches an MQTT broker through its proxy.
    private(set) var reachesMQTTBroker = false
    private(set) var sendWindow: Int
    private(set) var receive: ReceiveWindow
    private(set) var sentFIN = false
    private(set) var receivedFIN = false
    private var finished = false

    /// Strong (unlike `link`): counts this object out in `deinit`, when the link may be gone.
    private let node: LinkNode

    init(id: UInt32, link: LinkConnection, window: Int, opened: Bool) {
        self.id = id
        self.link = link
        self.node = link.node
        node.liveStreams.add(1, ordering: .relaxed)
        self.sendWindow = window
        self.receive = ReceiveWindow(initial: window, maximum: link.node.configuration.maximumStreamWindow, now: .now())
        self.isOpen = opened
    }

    deinit { node.liveStreams.subtract(1, ordering: .relaxed) }

    /// Whether the local source may be read now. Also before the peer accepted the stream: its
    /// first bytes go right behind the OPEN (the peer holds them until its connection to the
    /// service is up, and drops them if it refuses), so a new connection through the link
    /// costs one round trip, not two (stunnel pays a TLS handshake on top).
    var mayRead: Bool { !finished && sendWindow > 0 && link.isWritable && !sentFIN }

    func frame(_ frame: LinkFrame) {
        switch frame.kind {
        case .openOK:
            guard !isOpen else { return }
            isOpen = true
            reachesMQTTBroker = frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt8.self) == 1
            endpoint?.opened()
        case .openRefused:
            var payload = frame.payload
            switch payload.readInteger(as: UInt8.self).flatMap(LinkFrame.RefusalCode.init(rawValue:)) {
            case .targetUnreachable: abort(reason: "the peer cannot reach the service target")
            case .tooManyStreams: abort(reason: "the peer has too many streams open (its link.max_streams)")
            case .notOffered, nil: abort(reason: "the peer does not offer this service to us")
            }
        case .data:
            // After FIN the peer promised no more bytes: more is a broken peer, not input.
            if receivedFIN {
                reset("DATA after FIN")
                return
            }
            guard receive.received(frame.payload.readableBytes) else {
                reset("flow-control window exceeded")
                return
            }
            if frame.isFIN { receivedFIN = true }
            if let endpoint {
                endpoint.deliver(frame.payload, fin: frame.isFIN)
            } else {
                heldForEndpoint.append((frame.payload, frame.isFIN))
            }
            finishIfDone()
        case .window:
            var payload = frame.payload
            guard let increment = payload.readInteger(as: UInt32.self) else { return }
            let wasClosed = sendWindow <= 0
            // Bounded, so that a peer repeating huge increments cannot overflow it.
            sendWindow = min(sendWindow + Int(increment), Int(UInt32.max))
            if wasClosed && sendWindow > 0 { endpoint?.resumeReading() }
        case .reset:
            if !finished { link.node.metrics.streamResetsReceived.increment() }
            abort(reason: "reset by the peer: \(String(buffer: frame.payload))")
        default:
            break
        }
    }

    /// Sends local bytes to the peer, in frames of at most 32 KiB.
    func send(_ bytes: ByteBuffer) {
        guard !finished, !sentFIN else { return }
        var bytes = bytes
        while bytes.readableBytes > 0 {
            let piece = bytes.readSlice(length: min(bytes.readableBytes, LinkFrame.maximumDataPayload))!
            sendWindow -= piece.readableBytes
            link.write(LinkFrame(.data, stream: id, payload: piece))
        }
    }

    /// Sends `size` bytes that `encode` appends, written straight into the link's output (one
    /// copy instead of two for a small unit such as a relay record).
    func send(size: Int, _ encode: (inout ByteBuffer) -> Void) {
        guard !finished, !sentFIN, size > 0 else { return }
        guard size <= LinkFrame.maximumDataPayload else {
            var buffer = ByteBufferAllocator().buffer(capacity: size)
            encode(&buffer)
            send(buffer)
            return
        }
        sendWindow -= size
        link.writeFrame(.data, stream: id, payloadSize: size, encode)
    }

    /// The local source ended: tell the peer no more bytes follow.
    func sendFIN() {
        guard !finished, !sentFIN else { return }
        sentFIN = true
        link.write(LinkFrame(.data, flags: LinkFrame.finFlag, stream: id))
        link.flush()
        finishIfDone()
    }

    /// The local end consumed `count` delivered bytes: credit the peer (in batches).
    func consumed(_ count: Int) {
        guard !finished else { return }
        if let credit = receive.consumed(count, now: .now(), roundTrip: (endpoint?.receiveWindowMayGrow ?? false) ? link.roundTripTime : nil,
                                         mayGrow: link.lendWindowGrowth) {
            if credit.grew > 0 { link.node.metrics.streamWindowGrowths.increment() }
            var payload = ByteBuffer()
            payload.writeInteger(UInt32(credit.increment))
            link.write(LinkFrame(.window, stream: id, payload: payload))
            link.flush()
        }
    }

    func linkWritable() {
        if mayRead { endpoint?.resumeReading() }
    }

    /// The local end closed before both directions finished: abandon the stream.
    func localClosed() {
        guard !finished else { return }
        if !(sentFIN && receivedFIN) { reset("closed") }
    }

    func reset(_ reason: String) {
        guard !finished else { return }
        link.node.metrics.streamResetsSent.increment()
        link.write(LinkFrame(.reset, stream: id, payload: ByteBuffer(string: reason)))
        link.flush()
        abort(reason: reason)
    }

    func abort(reason: String) {
        guard !finished else { return }
        finished = true
        let endpoint = self.endpoint
        self.endpoint = nil
        endpoint?.abort(reason: reason)
        link.streamFinished(self)
    }

    private func finishIfDone() {
        if sentFIN && receivedFIN && !finished {
            finished = true
            let endpoint = self.endpoint
            self.endpoint = nil
            link.streamFinished(self)
            endpoint?.streamFinished()
        }
    }
}

@available(*, unavailable)
extension LinkStream: Sendable {}

/// A local TCP connection spliced to a stream (both the side that accepted a local client and
/// the side that connected to a service target). Half-close is carried as FIN both ways.
final class TCPStreamEndpoint: ChannelDuplexHandler, LinkStreamEndpoint, LinkReadEndObserver {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private(set) var stream: LinkStream?
    private var context: ChannelHandlerContext?
    private var readPending = false
    private var lastWrite: EventLoopFuture<Void>?
    /// Peer bytes that arrived before our socket finished connecting.
    private var heldForSocket: [(ByteBuffer, Bool)] = []
    private var socketActive = false
    /// Where a local MQTT client's bytes go to a peer's broker: the packets they carry, so that
    /// a read burst nothing will answer is acknowledged at once. Nil when not watched.
    private var packets: MQTTPacketBoundaryScanner?
    private var burst = UnansweredBurst()
    /// Peer bytes written to the socket wait for the end of the link's read to be flushed.
    private var flushAtReadEnd = WorkAtReadEnd()
    /// The socket failed (e.g. reset by the other end): its close is a reset, never a FIN.
    private var failed = false
    /// TCP_QUICKACK of the socket, set again only after we wrote to it.
    private var quickAck = QuickAckArming()

    /// `watchesMQTT`: the accepting side of a remote listener, whose peer service may be an
    /// MQTT broker (known at OPEN_OK; the bytes are followed from the first one until then).
    init(stream: LinkStream?, watchesMQTT: Bool = false) {
        self.stream = stream
        self.packets = watchesMQTT ? MQTTPacketBoundaryScanner() : nil
    }

    /// For the accepting side: the stream is opened after the local connection arrives.
    func attach(_ stream: LinkStream) {
        self.stream = stream
        stream.endpoint = self
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        socketActive = context.channel.isActive
        stream?.endpoint = self
    }

    func channelActive(context: ChannelHandlerContext) {
        socketActive = true
        for (bytes, fin) in heldForSocket { deliver(bytes, fin: fin) }
        heldForSocket.removeAll()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let stream else { return }
        let bytes = unwrapInboundIn(data)
        packets?.scan(bytes) { burst.packet($0) }
        stream.send(bytes)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        stream?.link.flushIfNeeded()
        // Only QoS 0 PUBLISHes: nothing will carry our ACK back, and a client with Nagle on
        // holds its next PUBLISH until the ACK comes (see `acknowledgeSegmentsPromptly`; the
        // stall is up to 40 ms). Not after packets that get an answer: extra ACKs cost throughput.
        if burst.end(), packets?.isLost == false, quickAck.needsArming() { context.channel.acknowledgeSegmentsPromptly() }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if let stream, stream.mayRead { context.read() } else { readPending = true }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            // From the IdleStateHandler of a service target's connection (idle_timeout).
            if let stream { stream.link.streamIdle(stream) }
            return
        }
        if case ChannelEvent.inputClosed = event as? ChannelEvent ?? .outputClosed {
            guard let stream else { return }
            stream.sendFIN()
            if stream.receivedFIN { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
        if let stream, stream.isOpen, stream.receivedFIN, !failed {
            // Our output was shut after the peer's FIN, so NIO reports the socket's own EOF as
            // a full close instead of `inputClosed`: it is the end of this side's bytes (a FIN),
            // not a failure. Sent as a reset, the other site would close its local connection
            // at once, dropping what it had not yet written there.
            stream.sendFIN()
        }
        stream?.localClosed()
        stream = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed = true
        context.close(promise: nil)
    }

    // MARK: LinkStreamEndpoint

    func opened() {
        // A TCP service: its bytes are not MQTT, stop following them.
        if stream?.reachesMQTTBroker != true { packets = nil }
        resumeReading()
    }

    func deliver(_ bytes: ByteBuffer, fin: Bool) {
        guard socketActive else {
            heldForSocket.append((bytes, fin))
            return
        }
        guard let context else { return }
        let count = bytes.readableBytes
        if count > 0 {
            let promise = context.eventLoop.makePromise(of: Void.self)
            context.write(NIOAny(bytes), promise: promise)
            quickAck.wrote()
            let streamBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { streamBound.value.stream?.consumed(count) }
            lastWrite = promise.futureResult
            // The frames of one TLS read leave in one write.
            flushAtReadEnd.request(stream?.link, observer: self) { context.flush() }
        }
        if fin {
            // Half-close our output once everything before the FIN has been written.
            let channel = context.channel
            let sentFIN = stream?.sentFIN ?? true
            (lastWrite ?? context.eventLoop.makeSucceededVoidFuture()).whenComplete { _ in
                if sentFIN { channel.close(promise: nil) } else { channel.close(mode: .output, promise: nil) }
            }
        }
    }

    func resumeReading() {
        guard readPending, let context, let stream, stream.mayRead else { return }
        readPending = false
        context.read()
    }

    func abort(reason: String) {
        stream = nil
        guard let context else { return }
        // The stream failed (reset by the peer, refused, or the link closed): the local end
        // gets a TCP reset, not an orderly close, so that a client reading to EOF cannot take a
        // cut-off answer for a whole one. Bytes not yet sent are dropped, as with any reset.
        context.channel.closeWithReset()
    }

    func linkReadEnded() {
        flushAtReadEnd.ended()
        context?.flush()
    }
}

@available(*, unavailable)
extension TCPStreamEndpoint: Sendable {}

/// A peer's MQTT client served by this site's MQTT-aware proxy: the stream is the proxy's
/// client side, so the same `ProxySession` (ACL, narrowing, aliases) decides, here, at the
/// site that owns the broker.
final class MQTTStreamEndpoint: LinkStreamEndpoint, ProxyClientSide, LinkReadEndObserver {
    /// Strong, and dropped when the stream is aborted or finished (when the link lets go of
    /// it): not weak, because it is read several times for every packet, and a weakly
    /// referenced object's retains and releases all take the runtime's slow path (see
    /// `CoalescedAction`). Held no longer than that, since the stream's link is unowned.
    private var stream: LinkStream?
    private let connection: ProxyConnection
    private var framer: InlineFramer<MQTTFrameDecoder>
    private var processing = false
    private var closed = false
    private var credit = IncompleteUnitCredit()
    /// The proxy's end of a client read burst (its writes to the broker are flushed then)
    /// waits for the end of the link's read: the DATA frames of one TLS read, of this stream
    /// or of several, reach the broker in one write instead of one per frame.
    private var readCompleteAtReadEnd = WorkAtReadEnd()
    /// Bytes of packets handed to the proxy before the event loop gets to look at its sockets
    /// again; the rest of a backlog waits for that. A backlog is at most this stream's window
    /// (256 KiB, which does not grow: `receiveWindowMayGrow`), yet that is ~37,000 7-byte
    /// PUBLISHes, measured at ~0.4 s in a debug build; while a grown window let it reach
    /// megabytes, handing them all over in one go kept the event loop from the link's other
    /// streams and PINGs for seconds and the peer took the link for dead. The allowance is
    /// spent across the frames of one link read and renewed once it ran out, after the
    /// sockets were looked at (`scheduleResume`).
    static let bytesPerTurn = 64 << 10
    private var allowance = MQTTStreamEndpoint.bytesPerTurn
    private var resumeScheduled = false

    init(stream: LinkStream, environment: ProxyEnvironment, origin: String) {
        self.stream = stream
        self.connection = ProxyConnection(environment: environment, eventLoop: stream.link.node.eventLoop)
        self.framer = InlineFramer(MQTTFrameDecoder(configuration: .server(maximumPacketSize: environment.configuration.maximumPacketSize,
                                                                           maximumConnectPacketSize: environment.configuration.maximumConnectPacketSize)))
        environment.metrics.connectionsTotal.increment()
        connection.clientActive(self, origin: origin)
    }

    // MARK: LinkStreamEndpoint

    func opened() {}

    func deliver(_ bytes: ByteBuffer, fin: Bool) {
        framer.append(bytes)
        process()
        if fin && !closed {
            closed = true
            connection.clientInactive()
        }
    }

    /// Frames and hands over what the proxy can take now; the rest waits (and is not credited).
    private func process() {
        guard !processing else { return }
        processing = true
        defer { processing = false }
        while !closed {
            guard allowance > 0 else {
                scheduleResume()
                break
            }
            var allowed = false
            connection.clientWantsRead { allowed = true }
            // Not now: the proxy remembers and calls read() when the broker side can take more.
            guard allowed else { break }
            let before = framer.bufferedBytes
            do {
                guard let frame = try framer.next() else {
                    // An incomplete packet (bounded by the framer's maximum packet size).
                    stream?.consumed(credit.incomplete(buffered: before))
                    break
                }
                let taken = before - framer.bufferedBytes
                allowance -= taken
                stream?.consumed(credit.taken(taken))
                connection.clientFrame(frame)
            } catch {
                connection.clientError(error)
                break
            }
        }
        framer.compact()
        readCompleteAtReadEnd.request(stream?.link, observer: self) { connection.clientReadComplete() }
    }

    func linkReadEnded() {
        readCompleteAtReadEnd.ended()
        connection.clientReadComplete()
    }

    /// The rest of a backlog, after the event loop has looked at its sockets. Not `execute`:
    /// NIO runs tasks submitted by tasks in the same tick, so that would never let go.
    private func scheduleResume() {
        guard !resumeScheduled, let eventLoop = stream?.link.node.eventLoop else { return }
        resumeScheduled = true
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.scheduleTask(in: .microseconds(50)) {
            let endpoint = loopBound.value
            endpoint.resumeScheduled = false
            endpoint.allowance = Self.bytesPerTurn
            endpoint.process()
        }
    }

    func resumeReading() { connection.clientWritabilityChanged() }

    func abort(reason: String) {
        defer { stream = nil }
        guard !closed else { return }
        closed = true
        connection.clientInactive()
    }

    func streamFinished() { stream = nil }

    /// Not for a peer's MQTT client: every byte of its window is packets this site's proxy may
    /// have to hold and then decide one by one. Measured: a client flooding 7-byte PUBLISHes
    /// whose answers it did not read made site B's window grow to megabytes of them, which
    /// its proxy then worked through for seconds (debug build), and a 500 ms keepalive took
    /// the link for dead. 256 KiB per round trip is still about 12 MB/s at 20 ms.
    var receiveWindowMayGrow: Bool { false }

    // MARK: ProxyClientSide

    var isWritable: Bool {
        guard let stream else { return false }
        return stream.sendWindow > 0 && stream.link.isWritable
    }
    var allocator: ByteBufferAllocator { ByteBufferAllocator() }
    func write(_ bytes: ByteBuffer) { stream?.send(bytes) }
    func flush() { stream?.link.flushIfNeeded() }
    func read() { process() }
    func closeAfterFlush() {
        closed = true
        // Held here: sending the last FIN finishes the stream, which lets go of it.
        guard let stream else { return }
        stream.sendFIN()
        stream.link.flushIfNeeded()
    }
}

@available(*, unavailable)
extension MQTTStreamEndpoint: Sendable {}
