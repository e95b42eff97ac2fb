@testable import Bridge
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import TestSupport
import Testing

/// Echoes bytes; on the client's half-close, finishes echoing and half-closes too.
final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.writeAndFlush(data, promise: nil) }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event as? ChannelEvent ?? .outputClosed {
            context.close(mode: .output, promise: nil)
        }
    }
}

/// Runs tasks on a serial dispatch queue of its own instead of Swift's cooperative pool. The
/// in-process sites run on it: the process-based tests beside them block pool threads while
/// they wait on child processes, and on a 2-core machine that could keep the sites from
/// starting for longer than any timeout.
final class DedicatedTaskExecutor: TaskExecutor, @unchecked Sendable {
    private let queue = DispatchQueue(label: "mqbridge-test-sites")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// Two sites in one process: B offers services and accepts the link; A dials B and has a
/// remote listener for each of B's services.
struct TwoSites {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-link-\(UUID().uuidString)")
    var a: SiteIdentity!
    var b: SiteIdentity!
    var serviceGroups: [ServiceGroup] = []
    var tasks: [Task<Void, any Error>] = []
    let bound = NIOLockedValueBox<[String: Int]>([:])
    let executor = DedicatedTaskExecutor()
    let metricsA = LinkMetrics(factory: NOOPMetricsHandler.instance)
    let metricsB = LinkMetrics(factory: NOOPMetricsHandler.instance)

    init() throws {
        a = try SiteIdentity.create(in: directory.appendingPathComponent("a").path, name: "site-a")
        b = try SiteIdentity.create(in: directory.appendingPathComponent("b").path, name: "site-b")
    }

    func port(_ name: String, timeout: Double = 60) async throws -> Int {
        // The sites run as tasks on Swift's cooperative pool, which process-based tests running
        // beside these may keep busy for a while: look once more after the deadline (this task
        // may itself have resumed only after it), and allow a generous one.
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if let port = bound.withLockedValue({ $0[name] }) { return port }
            try await Task.sleep(for: .milliseconds(10))
        } while Date() < deadline
        if let port = bound.withLockedValue({ $0[name] }) { return port }
        throw TestFailure("\(name) did not bind")
    }

    mutating func run(_ services: [any Service]) {
        let serviceGroup = ServiceGroup(services: services, logger: Logger(label: "test"))
        serviceGroups.append(serviceGroup)
        tasks.append(Task(executorPreference: executor) { try await serviceGroup.run() })
    }

    func stop() async {
        for serviceGroup in serviceGroups { await serviceGroup.triggerGracefulShutdown() }
        for task in tasks { _ = await task.result }
        try? await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts B (link listener + services), then A (dialer + remote listeners).
    mutating func start(services: [ServiceConfiguration], remotes: [RemoteListenerConfiguration], aPins bPin: SPKIFingerprint? = nil) async throws {
        let logger = Logger(label: "test")
        let proxyMetrics = BridgeMetrics(factory: NOOPMetricsHandler.instance)
        let bConfig = LinkConfiguration(identityDirectory: "", listen: HostPort(host: "127.0.0.1", port: 0),
                                        peers: [PeerConfiguration(name: "site-a", fingerprint: a.fingerprint)], services: services)
        let nodeB = try LinkNode(configuration: bConfig, identity: b, eventLoop: group.next(), logger: logger, metrics: metricsB, aclStore: nil, proxyMetrics: proxyMetrics)
        let box = bound
        run([LinkServer(node: nodeB) { address in box.withLockedValue { $0["link-b"] = address.port } }])
        let linkPort = try await port("link-b")
        let aConfig = LinkConfiguration(identityDirectory: "", peers: [PeerConfiguration(name: "site-b", fingerprint: bPin ?? b.fingerprint,
                                                                                            connect: HostPort(host: "127.0.0.1", port: linkPort))],
                                        remotes: remotes, keepalive: .milliseconds(300), reconnectInitial: .milliseconds(50))
        let nodeA = try LinkNode(configuration: aConfig, identity: a, eventLoop: group.next(), logger: logger, metrics: metricsA, aclStore: nil, proxyMetrics: proxyMetrics)
        var services: [any Service] = [LinkDialer(node: nodeA, peer: aConfig.peers[0])]
        for remote in remotes {
            services.append(RemoteListener(node: nodeA, configuration: remote) { address in box.withLockedValue { $0["remote-\(remote.service)"] = address.port } })
        }
        run(services)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

@Suite("Link between two sites (in process)", .serialized)
struct LinkTests {
    func echoServer(_ group: any EventLoopGroup) async throws -> (any Channel, Int) {
        let channel = try await ServerBootstrap(group: group)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { $0.pipeline.addHandler(EchoHandler()) }
            .bind(host: "127.0.0.1", port: 0).get()
        return (channel, channel.localAddress!.port!)
    }

    func waitForLink(_ metrics: LinkMetrics, _ sites: TwoSites, port: Int) async throws {
        // The link is up when a remote listener connection gets through; poll a tiny exchange.
        // As in `TwoSites.port`: this task may resume only after the deadline, so one more
        // attempt follows it.
        let deadline = Date().addingTimeInterval(30)
        func exchanged() -> Bool { (try? TestEnvironment.tcpExchange(port: port, send: [1, 2, 3], halfClose: true, timeout: 2)) == [1, 2, 3] }
        while Date() < deadline {
            if exchanged() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        if exchanged() { return }
        throw TestFailure("link never came up")
    }

    @Test("Passthrough: bytes both ways through the pinned TLS 1.3 link, with half-close")
    func passthrough() async throws {
        var sites = try TwoSites()
        let (echo, echoPort) = try await echoServer(sites.group)
        try await sites.start(services: [ServiceConfiguration(name: "echo", kind: .tcp, target: HostPort(host: "127.0.0.1", port: echoPort), peers: ["site-a"])],
                              remotes: [RemoteListenerConfiguration(listen: HostPort(host: "127.0.0.1", port: 0), peer: "site-b", service: "echo")])
        let port = try await sites.port("remote-echo")
        try await waitForLink(sites.metricsA, sites, port: port)
        let message = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        let reply = try TestEnvironment.tcpExchange(port: port, send: message, halfClose: true)
        #expect(reply == message, "got \(reply.count) bytes: \(String(decoding: reply, as: UTF8.self))")
        // 3 MiB, larger than every window, arrives intact.
        let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        #expect(try TestEnvironment.tcpExchange(port: port, send: big, halfClose: true) == big)
        try? await echo.close()
        await sites.stop()
    }

    @Test("A service the peer does not offer to us is refused; nothing else is reachable")
    func refusedService() async throws {
        var sites = try TwoSites()
        let (echo, echoPort) = try await echoServer(sites.group)
        try await sites.start(services: [ServiceConfiguration(name: "echo", kind: .tcp, target: HostPort(host: "127.0.0.1", port: echoPort), peers: ["site-a"]),
                                         ServiceConfiguration(name: "private", kind: .tcp, target: HostPort(host: "127.0.0.1", port: echoPort), peers: ["site-c"])],
                              remotes: [RemoteListenerConfiguration(listen: HostPort(host: "127.0.0.1", port: 0), peer: "site-b", service: "echo"),
                                        RemoteListenerConfiguration(listen: HostPort(host: "127.0.0.1", port: 0), peer: "site-b", service: "private"),
                                        RemoteListenerConfiguration(listen: HostPort(host: "127.0.0.1", port: 0), peer: "site-b", service: "nonexistent")])
        try await waitForLink(sites.metricsA, sites, port: try await sites.port("remote-echo"))
        #expect(try TestEnvironment.tcpExchange(port: try await sites.port("remote-private"), send: [9, 9], halfClose: true) == [])
        #expect(try TestEnvironment.tcpExchange(port: try await sites.port("remote-nonexistent"), send: [9, 9], halfClose: true) == [])
        try? await echo.close()
        await sites.stop()
    }

    @Test("A wrong pinned key never brings the link up, and the refusal is counted")
    func wrongPin() async throws {
        var sites = try TwoSites()
        let other = try SiteIdentity.create(in: sites.directory.appendingPathComponent("other").path, name: "other")
        let (echo, echoPort) = try await echoServer(sites.group)
        try await sites.start(services: [ServiceConfiguration(name: "echo", kind: .tcp, target: HostPort(host: "127.0.0.1", port: echoPort), peers: ["site-a"])],
                              remotes: [RemoteListenerConfiguration(listen: HostPort(host: "127.0.0.1", port: 0), peer: "site-b", service: "echo")],
                              aPins: other.fingerprint)
        let port = try await sites.port("remote-echo")
        try await Task.sleep(for: .seconds(1))
        #expect(try TestEnvironment.tcpExchange(port: port, send: [1], halfClose: true, timeout: 2) == [])
        try? await echo.close()
        await sites.stop()
    }
}
