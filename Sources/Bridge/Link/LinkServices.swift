import CoreMetrics
import Logging
import NIOConcurrencyHelpers
public import NIOCore
import NIOPosix
import NIOSSL
public import ServiceLifecycle

extension LinkNode {
    /// The link channel pipeline: TLS, link framing, the link handler.
    /// `handshakeSlot`: the source address whose handshake place (`beginHandshake`) the
    /// connection holds until it is up or closed.
    func configureLinkChannel(_ channel: any Channel, role: LinkConnection.Role, handshakeSlot: String? = nil,
                              onReady: ((LinkConnection) -> Void)? = nil) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let tlsHandler: any ChannelHandler
            switch role {
            case .acceptor:
                tlsHandler = tls.makeServerHandler(allowing: pinnedFingerprints)
            case .dialer(let peer):
                tlsHandler = try tls.makeClientHandler(allowing: peer.fingerprint.map { [$0] } ?? [])
            }
            let link = LinkConnection(node: self, role: role)
            onReady?(link)
            try channel.pipeline.syncOperations.addHandler(tlsHandler)
            try channel.pipeline.syncOperations.addHandler(LinkHandler(link: link))
            link.handshakeSlot = handshakeSlot
        }
    }

    /// Closes every link politely (GOAWAY) and waits briefly for them to go.
    func shutdownLinks() async {
        try? await eventLoop.submit { self.registry.value.all.forEach { $0.shutdown() } }.get()
    }
}

/// Accepts paired sites on `link.listen`.
public final class LinkServer: Service, Sendable {
    let node: LinkNode
    let onBound: @Sendable (SocketAddress) -> Void
    /// Connections closed on accept at max_handshakes, for the log.
    private let handshakeRefusals = RefusalReport()

    public init(node: LinkNode, onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }) {
        self.node = node
        self.onBound = onBound
    }

    public func run() async throws {
        guard let listen = node.configuration.listen else { return }
        let node = self.node
        let server = try await ServerBootstrap(group: node.eventLoop)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [handshakeRefusals] channel in
                // Before any TLS: a place among the connections still proving who they are.
                let address = channel.remoteAddress?.ipAddress ?? "unknown"
                let configuration = node.configuration
                switch node.registry.value.beginHandshake(from: address, limit: configuration.maximumHandshakes,
                                                          perAddress: configuration.maximumHandshakesPerAddress) {
                case .admitted:
                    return node.configureLinkChannel(channel, role: .acceptor, handshakeSlot: address).flatMapErrorThrowing { error in
                        node.registry.value.endHandshake(from: address)
                        throw error
                    }
                case .refused(let limit):
                    node.metrics.refusedAtHandshakeLimit.increment()
                    if let refused = handshakeRefusals.refused() {
                        node.logger.warning("link connection from \(address) closed on accept: \(limit) reached (\(refused) since the last such line)",
                                            metadata: ["event": "link_refused", "reason": "\(limit)", "refused": "\(refused)",
                                                      "remote": "\(channel.remoteAddress?.logDescription ?? address)"])
                    }
                    channel.closeWithReset()
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
            }
            .bind(host: listen.host, port: listen.port).get()
        if let address = server.localAddress {
            node.logger.notice("link listening", metadata: ["event": "link_listening", "address": "\(address.logDescription)",
                                                             "fingerprint": "\(node.identity.fingerprint)"])
            onBound(address)
        }
        try await withGracefulShutdownHandler {
            try await server.closeFuture.get()
        } onGracefulShutdown: {
            server.close(promise: nil)
        }
        await node.shutdownLinks()
    }
}

/// Keeps a link to one peer: dials, and after a failure or a dead link dials again with
/// exponential backoff and full jitter (so many sites restarting together do not stampede).
public final class LinkDialer: Service, Sendable {
    let node: LinkNode
    let peer: PeerConfiguration

    public init(node: LinkNode, peer: PeerConfiguration) {
        self.node = node
        self.peer = peer
    }

    public func run() async throws {
        guard let address = peer.connect else { return }
        var backoff = node.configuration.reconnectInitial
        var logger = node.logger
        logger[metadataKey: "peer"] = "\(peer.name)"
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let upAt = NIOLockedValueBox<NIODeadline?>(nil)
            let closed = node.eventLoop.makePromise(of: Void.self)
            let node = self.node
            let peer = self.peer
            do {
                let channel = try await ClientBootstrap(group: node.eventLoop)
                    .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .connectTimeout(node.configuration.handshakeTimeout)
                    .channelInitializer { channel in
                        node.configureLinkChannel(channel, role: .dialer(peer)) { link in
                            link.onUp = { upAt.withLockedValue { $0 = .now() } }
                            link.onClosed = { closed.succeed() }
                        }
                    }
                    .connect(host: address.host, port: address.port).get()
                try await withTaskCancellationOrGracefulShutdownHandler {
                    try await closed.futureResult.get()
                } onCancelOrGracefulShutdown: {
                    channel.eventLoop.execute { node.registry.value.all.filter { $0.peer?.name == peer.name }.forEach { $0.shutdown() } }
                    channel.close(promise: nil)
                }
            } catch {
                closed.succeed()
                logger.warning("cannot reach peer at \(address): \(error)", metadata: ["event": "link_connect_failed"])
            }
            if Task.isCancelled || Task.isShuttingDownGracefully { break }
            // A link that stayed up a while resets the backoff; a failing one doubles it.
            if let up = upAt.withLockedValue({ $0 }), NIODeadline.now() - up > .seconds(10) { backoff = node.configuration.reconnectInitial }
            let delay = TimeAmount.nanoseconds(Int64.random(in: 0...max(1, backoff.nanoseconds)))
            node.metrics.reconnects.increment()
            logger.info("reconnecting in \(delay.nanoseconds / 1_000_000) ms", metadata: ["event": "link_reconnect"])
            try? await Task.sleep(for: .nanoseconds(delay.nanoseconds))
            backoff = min(backoff * 2, node.configuration.reconnectMaximum)
        }
    }
}

/// A local plaintext listener whose connections become streams to a peer's named service.
public final class RemoteListener: Service, Sendable {
    let node: LinkNode
    public let configuration: RemoteListenerConfiguration
    let onBound: @Sendable (SocketAddress) -> Void
    /// The open local connections, for max_connections.
    private let connections = ConnectionRegistry()

    public init(node: LinkNode, configuration: RemoteListenerConfiguration, onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }) {
        self.node = node
        self.configuration = configuration
        self.onBound = onBound
    }

    public func run() async throws {
        let node = self.node
        let configuration = self.configuration
        let connections = self.connections
        let server = try await ServerBootstrap(group: node.eventLoop)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let admitted = connections.admit(channel, limit: configuration.maximumConnections) { toReport in
                        node.metrics.remoteConnectionsRefused.increment()
                        if let toReport {
                            node.logger.warning("connection refused: max_connections \(configuration.maximumConnections) reached",
                                                metadata: ["event": "max_connections", "peer": "\(configuration.peer)", "service": "\(configuration.service)",
                                                           "refused": "\(toReport)"])
                        }
                    }
                    guard admitted else { return }
                    try channel.pipeline.syncOperations.addHandler(RemoteListenerHandler(node: node, configuration: configuration))
                }
            }
            .bind(host: configuration.listen.host, port: configuration.listen.port).get()
        if let address = server.localAddress {
            node.logger.notice("listening for \(configuration.peer)/\(configuration.service)", metadata: [
                "event": "remote_listening", "address": "\(address.logDescription)",
                "peer": "\(configuration.peer)", "service": "\(configuration.service)",
            ])
            onBound(address)
        }
        try await withGracefulShutdownHandler {
            try await server.closeFuture.get()
        } onGracefulShutdown: {
            server.close(promise: nil)
        }
    }
}

/// Opens the stream for one local connection of a remote listener, then acts as its
/// `TCPStreamEndpoint`.
final class RemoteListenerHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let node: LinkNode
    let configuration: RemoteListenerConfiguration
    private let endpoint = TCPStreamEndpoint(stream: nil, watchesMQTT: true)

    init(node: LinkNode, configuration: RemoteListenerConfiguration) {
        self.node = node
        self.configuration = configuration
    }

    func handlerAdded(context: ChannelHandlerContext) {
        endpoint.handlerAdded(context: context)
    }

    func channelActive(context: ChannelHandlerContext) {
        guard let link = node.registry.value.link(to: configuration.peer) else {
            node.logger.warning("no link to \(configuration.peer): closing a connection for \(configuration.service)",
                                metadata: ["event": "stream_no_link", "peer": "\(configuration.peer)"])
            context.close(promise: nil)
            return
        }
        let origin = context.channel.remoteAddress.map { $0.logDescription } ?? "local"
        endpoint.attach(link.openStream(service: configuration.service, origin: origin, endpoint: endpoint))
        endpoint.channelActive(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { endpoint.channelRead(context: context, data: data) }
    func channelReadComplete(context: ChannelHandlerContext) { endpoint.channelReadComplete(context: context) }
    func read(context: ChannelHandlerContext) { endpoint.read(context: context) }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) { endpoint.userInboundEventTriggered(context: context, event: event) }
    func channelInactive(context: ChannelHandlerContext) { endpoint.channelInactive(context: context) }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { endpoint.errorCaught(context: context, error: error) }
}

@available(*, unavailable)
extension RemoteListenerHandler: Sendable {}
