public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
public import Prometheus
public import ServiceLifecycle

/// Serves `GET /metrics` in the Prometheus text format on its own address.
public final class MetricsServer: Service, Sendable {
    public let host: String
    public let port: Int
    let registry: PrometheusCollectorRegistry
    let group: any EventLoopGroup
    let logger: Logger
    let onBound: @Sendable (SocketAddress) -> Void

    public init(host: String, port: Int, registry: PrometheusCollectorRegistry, group: any EventLoopGroup, logger: Logger,
                onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }) {
        self.host = host
        self.port = port
        self.registry = registry
        self.group = group
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let registry = self.registry
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(registry: registry))
                }
            }
            .bind(host: host, port: port).get()
        if let address = channel.localAddress {
            logger.info("metrics endpoint listening", metadata: ["event": "metrics_listening", "address": "\(address.logDescription)"])
            onBound(address)
        }
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: PrometheusCollectorRegistry
    private var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            var body = context.channel.allocator.buffer(capacity: 4096)
            let status: HTTPResponseStatus
            if head.method == .GET && (head.uri == "/metrics" || head.uri.hasPrefix("/metrics?")) {
                var bytes: [UInt8] = []
                registry.emit(into: &bytes)
                body.writeBytes(bytes)
                status = .ok
            } else {
                body.writeString("not found; try /metrics\n")
                status = .notFound
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: status == .ok ? "text/plain; version=0.0.4" : "text/plain")
            headers.add(name: "Content-Length", value: "\(body.readableBytes)")
            let keepAlive = head.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { loopBoundContext.value.close(promise: nil) }
            }
            self.head = nil
        }
    }
}

@available(*, unavailable)
extension MetricsHTTPHandler: Sendable {}
