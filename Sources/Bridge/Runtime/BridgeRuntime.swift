#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import Logging
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import TopicACL
import UnixSignals

/// Wires a configuration into running services and runs them until SIGTERM / SIGINT
/// (graceful drain) — the whole of `mqbridge run`.
public enum BridgeRuntime {
    /// A parent may have started us with SIGTERM / SIGINT / SIGHUP blocked (the mask is
    /// inherited), in which case graceful shutdown and reload would silently never happen.
    public static func unblockControlSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, signal) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    public static func run(_ configuration: BridgeConfiguration, logger: Logger) async throws {
        let store = try configuration.aclPath.map { try ACLStore(path: $0) }
        for warning in store?.current.acl.file.warnings ?? [] {
            logger.warning("\(warning)", metadata: ["event": "acl_warning"])
        }
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        let metrics = BridgeMetrics(factory: factory)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads ?? System.coreCount)
        var services: [any Service] = []
        var relayNode: LinkNode?
        if let store {
            services += configuration.proxies.map {
                ProxyServer(configuration: $0, aclStore: store, metrics: metrics, group: group, logger: logger)
            }
            services.append(ACLReloadService(store: store, metrics: metrics, logger: logger))
        }
        if let link = configuration.link {
            let identity = try SiteIdentity.load(from: link.identityDirectory)
            var linkLogger = logger
            linkLogger[metadataKey: "site"] = "\(identity.name)"
            let node = try LinkNode(configuration: link, identity: identity, eventLoop: group.next(), logger: linkLogger,
                                    metrics: LinkMetrics(factory: factory), aclStore: store, proxyMetrics: metrics,
                                    proxyTemplate: configuration.proxies.first)
            if var relayConfiguration = configuration.relay {
                if relayConfiguration.clientID.isEmpty { relayConfiguration.clientID = "mqbridge-relay-\(identity.name)" }
                let relayConfigurationFinal = relayConfiguration
                let relayMetrics = RelayMetrics(factory: factory)
                let relayLogger = linkLogger
                // Set up before any link exists, so the first link already carries the relay.
                try await node.eventLoop.submit {
                    let relay = try RelayService(configuration: relayConfigurationFinal, eventLoop: node.eventLoop, logger: relayLogger,
                                                 metrics: relayMetrics, aclStore: store)
                    node.relay.value = relay
                    relay.start()
                }.get()
                relayNode = node
            }
            // A service that returns ends the whole group: add only what has work to do.
            if link.listen != nil { services.append(LinkServer(node: node)) }
            for peer in link.peers where peer.connect != nil { services.append(LinkDialer(node: node, peer: peer)) }
            for remote in link.remotes { services.append(RemoteListener(node: node, configuration: remote)) }
        }
        if let address = configuration.metrics {
            services.append(MetricsServer(host: address.host, port: address.port, registry: registry, group: group, logger: logger))
        }
        let serviceGroup = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        logger.info("mqbridge starting", metadata: ["event": "starting", "acl": "\(configuration.aclPath ?? "-")", "rules": "\(store?.current.acl.file.rules.count ?? 0)"])
        // The queue is durable at every step; stopping only ends its writer cleanly.
        let stoppingNode = relayNode
        let stopRelay = { @Sendable in
            if let relayNode = stoppingNode { try? await relayNode.eventLoop.submit { relayNode.relay.value?.stop() }.get() }
        }
        do {
            try await serviceGroup.run()
        } catch {
            await stopRelay()
            try? await group.shutdownGracefully()
            throw error
        }
        await stopRelay()
        try await group.shutdownGracefully()
    }
}
