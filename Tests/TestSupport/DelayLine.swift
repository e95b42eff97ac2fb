public import NIOCore
import NIOPosix

/// A TCP forwarder that holds every byte for a fixed time in each direction: the network
/// between two sites, on loopback. The sites of a real pairing are apart by milliseconds, and
/// what a relay does with that distance (how much it keeps in flight, whether it waits for the
/// far side before acknowledging) is what decides its throughput there. Linux's netem qdisc
/// would do this in the kernel, but it is missing on some kernels (this machine's among them),
/// so the benchmark brings its own.
///
/// Bytes keep their order and their timing: each read is released `oneWay` after it arrived;
/// releases that fall due together go out in one write. A side with more than `maximumInFlight`
/// bytes waiting stops reading until half of them went out, as a link with a bounded buffer.
/// Used by the link tests and by `mqbridge-bench relay --rtt`.
public final class DelayLine {
    public let port: Int
    private let server: any Channel

    public init(to target: (host: String, port: Int), oneWay: TimeAmount, on group: any EventLoopGroup, maximumInFlight: Int = 32 << 20) throws {
        server = try ServerBootstrap(group: group)
            .childChannelOption(.autoRead, value: false)  // nothing is read before the far side is connected
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.autoRead, value: false)
                    .channelOption(.allowRemoteHalfClosure, value: true)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .connect(host: target.host, port: target.port)
                    .flatMapThrowing { outbound in
                        let forward = Direction(delay: oneWay, maximumInFlight: maximumInFlight)
                        let backward = Direction(delay: oneWay, maximumInFlight: maximumInFlight)
                        try inbound.pipeline.syncOperations.addHandler(DelayHandler(sending: forward))
                        try outbound.pipeline.syncOperations.addHandler(DelayHandler(sending: backward))
                        forward.destination = outbound
                        backward.destination = inbound
                    }
                    .flatMapErrorThrowing { error in
                        inbound.close(promise: nil)
                        throw error
                    }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        port = server.localAddress!.port!
    }

    public func stop() { try? server.close().wait() }

    /// One direction: what its source read, waiting for its time, and the channel it goes to.
    /// Both channels of a pair are on one event loop, so no lock is needed.
    final class Direction {
        let delay: TimeAmount
        let maximumInFlight: Int
        var destination: (any Channel)?
        var source: (any Channel)?
        private var waiting = CircularBuffer<(due: NIODeadline, bytes: ByteBuffer)>()
        private var waitingBytes = 0
        private var timerArmed = false
        /// The source's end (half-close or close), passed on after the delay like its bytes.
        private var end = End.notYet
        private enum End {
            case notYet
            case due(NIODeadline)
            case passedOn
        }
        /// More than `maximumInFlight` bytes are waiting: the source is not read until half went out.
        private(set) var sourcePaused = false

        init(delay: TimeAmount, maximumInFlight: Int) {
            self.delay = delay
            self.maximumInFlight = maximumInFlight
        }

        /// The source read `bytes`: they leave after the delay.
        func arrived(_ bytes: ByteBuffer, on loop: any EventLoop) {
            waiting.append((.now() + delay, bytes))
            waitingBytes += bytes.readableBytes
            arm(on: loop)
            sourcePaused = waitingBytes > maximumInFlight
        }

        /// The source half-closed (or closed): so does the destination, after the delay.
        func ended(on loop: any EventLoop) {
            guard case .notYet = end else { return }
            end = .due(.now() + delay)
            arm(on: loop)
        }

        private var nextDue: NIODeadline? {
            if let first = waiting.first { return first.due }
            if case .due(let due) = end { return due }
            return nil
        }

        private func arm(on loop: any EventLoop) {
            guard !timerArmed, let due = nextDue else { return }
            timerArmed = true
            loop.assumeIsolated().scheduleTask(deadline: due) { self.release(on: loop) }
        }

        private func release(on loop: any EventLoop) {
            timerArmed = false
            guard let destination else { return }
            let now = NIODeadline.now()
            var wrote = false
            while let first = waiting.first, first.due <= now {
                waiting.removeFirst()
                waitingBytes -= first.bytes.readableBytes
                destination.write(first.bytes, promise: nil)
                wrote = true
            }
            if wrote { destination.flush() }
            if waiting.isEmpty, case .due(let due) = end, due <= now {
                // Half-close when the source only stopped sending; the destination's own
                // close (if the source went away entirely) follows from its handler.
                destination.close(mode: .output, promise: nil)
                end = .passedOn
            }
            if sourcePaused && waitingBytes <= maximumInFlight / 2 {
                sourcePaused = false
                source?.read()
            }
            arm(on: loop)
        }
    }

    final class DelayHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        /// The direction this handler's channel is the source of.
        let sending: Direction

        init(sending: Direction) { self.sending = sending }

        func handlerAdded(context: ChannelHandlerContext) {
            sending.source = context.channel
            // The far side's channel is active already; the accepted one becomes so after this.
            if context.channel.isActive { context.read() }
        }

        func channelActive(context: ChannelHandlerContext) { context.read() }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            sending.arrived(unwrapInboundIn(data), on: context.eventLoop)
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            if !sending.sourcePaused { context.read() }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event { sending.ended(on: context.eventLoop) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            sending.ended(on: context.eventLoop)
            // A reset or full close: the other side goes too, once what was in flight arrived.
            let other = sending.destination
            context.eventLoop.assumeIsolated().scheduleTask(in: sending.delay) { other?.close(promise: nil) }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }
}

/// The distance between two sites in a benchmark: loopback with `roundTrip` zero, otherwise a
/// delay line in front of every port reached across it (on a thread of its own).
public final class SiteDistance {
    public let roundTripMilliseconds: Double
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var lines: [DelayLine] = []

    public init(roundTripMilliseconds: Double) { self.roundTripMilliseconds = roundTripMilliseconds }

    /// The port to use for reaching `port` from the other site.
    public func across(_ port: Int) throws -> Int {
        guard roundTripMilliseconds > 0 else { return port }
        let line = try DelayLine(to: ("127.0.0.1", port), oneWay: .nanoseconds(Int64(roundTripMilliseconds * 500_000)), on: group)
        lines.append(line)
        return line.port
    }

    public func stop() {
        lines.forEach { $0.stop() }
        try? group.syncShutdownGracefully()
    }
}
