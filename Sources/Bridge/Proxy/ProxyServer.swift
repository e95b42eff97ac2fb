import CoreMetrics
public import Logging
import MQTTCodec
public import NIOCore
import NIOPosix
public import ServiceLifecycle

/// One listener of the MQTT-aware proxy: accepts legacy clients and gives each its own
/// connection to the broker, on the same event loop.
///
/// On graceful shutdown it stops accepting, lets each session finish its in-flight
/// acknowledgements for up to `drainTimeout`, tells 5.0 clients "Server shutting down" (0x8B),
/// and closes.
public final class ProxyServer: Service, Sendable {
    let environment: ProxyEnvironment
    let group: any EventLoopGroup
    let onBound: @Sendable (SocketAddress) -> Void

    public init(configuration: ProxyConfiguration, aclStore: ACLStore, metrics: BridgeMetrics, group: any EventLoopGroup, logger: Logger,
                onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }) {
        var logger = logger
        logger[metadataKey: "proxy"] = "\(configuration.name)"
        self.environment = ProxyEnvironment(configuration: configuration, aclStore: aclStore, metrics: metrics, logger: logger, registry: ConnectionRegistry())
        self.group = group
        self.onBound = onBound
    }

    /// Builds a client connection's pipeline.
    static func configureClientChannel(_ channel: any Channel, environment: ProxyEnvironment) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let configuration = environment.configuration
            let admitted = environment.registry.admit(channel, limit: configuration.maximumConnections) { toReport in
                environment.metrics.connectionsRefused.increment()
                if let toReport {
                    environment.logger.warning("connection refused: max_connections \(configuration.maximumConnections) reached",
                                               metadata: ["event": "max_connections", "refused": "\(toReport)"])
                }
            }
            guard admitted else { return }
            environment.metrics.connectionsTotal.increment()
            environment.metrics.connectionsActive.increment()
            channel.closeFuture.whenComplete { _ in environment.metrics.connectionsActive.decrement() }
            let decoder = MQTTFrameDecoder(configuration: .server(maximumPacketSize: configuration.maximumPacketSize,
                                                                  maximumConnectPacketSize: configuration.maximumConnectPacketSize))
            try channel.pipeline.syncOperations.addHandler(ClientSideHandler(connection: ProxyConnection(environment: environment, eventLoop: channel.eventLoop), decoder: decoder))
        }
    }

    public func run() async throws {
        let environment = self.environment
        let configuration = environment.configuration
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 128, maximum: 65536))
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 32 << 10, high: 256 << 10))
            .childChannelInitializer { channel in Self.configureClientChannel(channel, environment: environment) }
            .bind(host: configuration.listen.host, port: configuration.listen.port).get()
        let address = server.localAddress
        environment.logger.notice("listening", metadata: [
            "event": "listening", "address": "\(address?.logDescription ?? "\(configuration.listen)")",
            "broker": "\(configuration.broker)",
        ])
        if let address { onBound(address) }

        try await withGracefulShutdownHandler {
            try await server.closeFuture.get()
        } onGracefulShutdown: {
            server.close(promise: nil)
        }
        // Accepting has stopped: drain the sessions that are open.
        let open = environment.registry.all
        if !open.isEmpty {
            environment.logger.info("draining \(open.count) connection(s)", metadata: ["event": "draining"])
            let deadline = NIODeadline.now() + configuration.drainTimeout
            for channel in open {
                channel.pipeline.fireUserInboundEventTriggered(ProxyShutdownEvent(deadline: deadline))
            }
            let waitUntil = ContinuousClock.now + .nanoseconds(configuration.drainTimeout.nanoseconds) + .seconds(1)
            while environment.registry.count > 0 && ContinuousClock.now < waitUntil {
                try? await Task.sleep(for: .milliseconds(20))
            }
            for channel in environment.registry.all { channel.close(promise: nil) }
        }
        environment.logger.info("stopped", metadata: ["event": "stopped"])
    }
}
