@testable import Bridge
import Foundation
import Logging
import Metrics
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization
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
    /// What each site's link counted.
    let recordedA = TestMetrics()
    let recordedB = TestMetrics()
    let metricsA: LinkMetrics
    let metricsB: LinkMetrics
    /// Delay lines between the sites, when they are set apart.
    var delayLines: [DelayLine] = []
    /// Site B's node, once started.
    var nodeB: LinkNode?

    init() throws {
        metricsA = LinkMetrics(factory: recordedA)
        metricsB = LinkMetrics(factory: recordedB)
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
        delayLines.forEach { $0.stop() }
        try? await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts B alone: its link listener (port "link-b") and services, for site-a.
    mutating func startB(services: [ServiceConfiguration], maximumStreams: Int = 10_000, maximumStreamWindow: Int = 16 << 20,
                         aclStore: ACLStore? = nil) async throws -> Int {
        let bConfig = LinkConfiguration(identityDirectory: "", listen: HostPort(host: "127.0.0.1", port: 0),
                                        peers: [PeerConfiguration(name: "site-a", fingerprint: a.fingerprint)], services: services,
                                        maximumStreamWindow: maximumStreamWindow, maximumStreams: maximumStreams)
        let nodeB = try LinkNode(configuration: bConfig, identity: b, eventLoop: group.next(), logger: Logger(label: "test"), metrics: metricsB, aclStore: aclStore,
                                 proxyMetrics: BridgeMetrics(factory: NOOPMetricsHandler.instance))
        self.nodeB = nodeB
        let box = bound
        run([LinkServer(node: nodeB) { address in box.withLockedValue { $0["link-b"] = address.port } }])
        return try await port("link-b")
    }

    /// Starts B (link listener + services), then A (dialer + remote listeners). With `oneWayDelay`,
    /// A reaches B through a delay line (a distant site).
    mutating func start(services: [ServiceConfiguration], remotes: [RemoteListenerConfiguration], aPins bPin: SPKIFingerprint? = nil,
                        oneWayDelay: TimeAmount? = nil, maximumStreamWindow: Int = 16 << 20) async throws {
        var linkPort = try await startB(services: services, maximumStreamWindow: maximumStreamWindow)
        if let oneWayDelay {
            let line = try DelayLine(to: ("127.0.0.1", linkPort), oneWay: oneWayDelay, on: group)
            delayLines.append(line)
            linkPort = line.port
        }
        try startA(linkPort: linkPort, remotes: remotes, bPin: bPin, maximumStreamWindow: maximumStreamWindow)
    }

    /// A raw link peer dialling B at `linkPort` as site-a, past the HELLOs.
    func rawPeerA(linkPort: Int) async throws -> RawLinkPeer {
        let peer = try await RawLinkPeer.connect(port: linkPort, tls: try LinkTLS(identity: a, trust: .pins), expecting: b.fingerprint, group: group)
        try await peer.exchangeHello(as: "site-a", a)
        return peer
    }

    /// Starts A alone, dialling site-b at `linkPort`, with its remote listeners.
    mutating func startA(linkPort: Int, remotes: [RemoteListenerConfiguration], bPin: SPKIFingerprint? = nil, maximumStreamWindow: Int = 16 << 20) throws {
        let logger = Logger(label: "test")
        let proxyMetrics = BridgeMetrics(factory: NOOPMetricsHandler.instance)
        let box = bound
        let aConfig = LinkConfiguration(identityDirectory: "", peers: [PeerConfiguration(name: "site-b", fingerprint: bPin ?? b.fingerprint,
                                                                                            connect: HostPort(host: "127.0.0.1", port: linkPort))],
                                        remotes: remotes, keepalive: .milliseconds(300), reconnectInitial: .milliseconds(50),
                                        maximumStreamWindow: maximumStreamWindow)
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

    /// The TCP service "echo" at `port`, offered to site-a.
    func echoService(_ port: Int) -> ServiceConfiguration {
        ServiceConfiguration(name: "echo", kind: .tcp, target: HostPort(host: "127.0.0.1", port: port), peers: ["site-a"])
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
        try await sites.start(services: [echoService(echoPort)],
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

    @Test("Over a distant link (40 ms round trip) a stream's receive windows grow, to link.max_stream_window at most, and 8 MiB echo intact")
    func windowGrowsOverDistance() async throws {
        var sites = try TwoSites()
        let (echo, echoPort) = try await echoServer(sites.group)
        try await sites.start(services: [echoService(echoPort)],
                              remotes: [RemoteListenerConfiguration(listen: HostPort(host: "127.0.0.1", port: 0), peer: "site-b", service: "echo")],
                              oneWayDelay: .milliseconds(20), maximumStreamWindow: 1 << 20)
        let port = try await sites.port("remote-echo")
        try await waitForLink(sites.metricsA, sites, port: port)
        let big = (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 131) }
        #expect(try TestEnvironment.tcpExchange(port: port, send: big, halfClose: true, timeout: 120) == big)
        // B receives the upload, A the echo: each window 256 KiB → 512 KiB → 1 MiB, so at
        // least one doubling and never more than two on each side (the small exchanges that
        // waited for the link never fill half a window).
        let grownAtB = try sites.recordedB.expectCounter("mqbridge_link_stream_window_growths_total").totalValue
        let grownAtA = try sites.recordedA.expectCounter("mqbridge_link_stream_window_growths_total").totalValue
        #expect((1...2).contains(grownAtB), "B's window doubled \(grownAtB) times")
        #expect((1...2).contains(grownAtA), "A's window doubled \(grownAtA) times")
        try? await echo.close()
        await sites.stop()
    }

    @Test("A new connection's first bytes go right behind the OPEN, before the peer accepts it; refused, the client gets a reset")
    func firstBytesBehindOpen() async throws {
        var sites = try TwoSites()
        let (peer, linkPort) = try await RawLinkPeer.listen(tls: try LinkTLS(identity: sites.b, trust: .pins), allowing: sites.a.fingerprint, group: sites.group)
        defer { peer.stop() }
        try sites.startA(linkPort: linkPort, remotes: [RemoteListenerConfiguration(listen: HostPort(host: "127.0.0.1", port: 0), peer: "site-b", service: "web")])
        try await peer.exchangeHello(as: "site-b", sites.b)
        // A connection made before A has read that HELLO would be closed (no link yet).
        let deadline = Date().addingTimeInterval(30)
        while (try? sites.recordedA.expectCounter("mqbridge_link_established_total").totalValue) ?? 0 < 1 && Date() < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let client = try TCPTestClient(port: try await sites.port("remote-web"), timeout: 30)
        defer { client.close() }
        try client.send(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        try await peer.expect("OPEN of stream 1") { $0.kind == .open && $0.stream == 1 }
        try await peer.expect("the client's bytes, with no OPEN_OK sent") { $0.kind == .data && $0.stream == 1 && String(buffer: $0.payload) == "GET / HTTP/1.1\r\n\r\n" }
        peer.send(.openRefused(stream: 1, .notOffered, "no such service"))
        let answer = client.receive()
        #expect(answer.received.isEmpty)
        #expect(answer.ending == .reset)
        await sites.stop()
    }

    @Test("Bytes right behind an OPEN wait for the service connection and all arrive, FIN included")
    func bytesBehindOpenAtTheService() async throws {
        var sites = try TwoSites()
        let (echo, echoPort) = try await echoServer(sites.group)
        let linkPort = try await sites.startB(services: [echoService(echoPort)])
        let peer = try await sites.rawPeerA(linkPort: linkPort)
        // One write: B reads the OPEN and the DATA together, before its connection to the echo server is made.
        peer.send([LinkFrame(.open, stream: 3, payload: RawLinkPeer.openPayload(service: "echo")),
                   LinkFrame(.data, stream: 3, payload: ByteBuffer(string: "first ")),
                   LinkFrame(.data, flags: LinkFrame.finFlag, stream: 3, payload: ByteBuffer(string: "and last"))])
        try await peer.expect("OPEN_OK of stream 3") { $0.kind == .openOK && $0.stream == 3 }
        let echoed = NIOLockedValueBox("")
        try await peer.expect("the whole echo, then FIN") { frame in
            guard frame.kind == .data, frame.stream == 3 else { return false }
            return echoed.withLockedValue { text in
                text += String(buffer: frame.payload)
                return frame.isFIN
            }
        }
        #expect(echoed.withLockedValue { $0 } == "first and last")
        try? await echo.close()
        await sites.stop()
    }

    @Test("A service the peer does not offer to us is refused; nothing else is reachable")
    func refusedService() async throws {
        var sites = try TwoSites()
        let (echo, echoPort) = try await echoServer(sites.group)
        try await sites.start(services: [echoService(echoPort),
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

    @Test("A paired peer that breaks the link protocol gets a RESET or GOAWAY, never a crash, and other streams keep working")
    func misbehavingPeer() async throws {
        var sites = try TwoSites()
        let (echo, echoPort) = try await echoServer(sites.group)
        let linkPort = try await sites.startB(services: [echoService(echoPort)])
        let peer = try await sites.rawPeerA(linkPort: linkPort)

        // DATA on a stream never opened: RESET for that stream only.
        peer.send(LinkFrame(.data, stream: 7, payload: ByteBuffer(string: "zz")))
        try await peer.expect("RESET of stream 7") { $0.kind == .reset && $0.stream == 7 }

        // A normal stream, then absurd window credit on it: the stream still echoes.
        peer.send(LinkFrame(.open, stream: 3, payload: RawLinkPeer.openPayload(service: "echo")))
        try await peer.expect("OPEN_OK of stream 3") { $0.kind == .openOK && $0.stream == 3 }
        peer.send(LinkFrame(.data, stream: 3, payload: ByteBuffer(string: "abc")))
        try await peer.expect("echo of abc") { $0.kind == .data && $0.stream == 3 && String(buffer: $0.payload) == "abc" }
        var credit = ByteBuffer()
        credit.writeInteger(UInt32.max)
        for _ in 0..<3 { peer.send(LinkFrame(.window, stream: 3, payload: credit)) }
        peer.send(LinkFrame(.data, stream: 3, payload: ByteBuffer(string: "def")))
        try await peer.expect("echo of def") { $0.kind == .data && $0.stream == 3 && String(buffer: $0.payload) == "def" }

        // DATA after the peer's own FIN: the stream is reset, not fed more bytes.
        peer.send(LinkFrame(.open, stream: 5, payload: RawLinkPeer.openPayload(service: "echo")))
        try await peer.expect("OPEN_OK of stream 5") { $0.kind == .openOK && $0.stream == 5 }
        peer.send([LinkFrame(.data, flags: LinkFrame.finFlag, stream: 5, payload: ByteBuffer(string: "x")), LinkFrame(.data, stream: 5, payload: ByteBuffer(string: "y"))])
        try await peer.expect("RESET of stream 5 for DATA after FIN") { $0.kind == .reset && $0.stream == 5 && String(buffer: $0.payload) == "DATA after FIN" }

        // An OPEN for a service that is not offered: refused, the link stays.
        peer.send(LinkFrame(.open, stream: 9, payload: RawLinkPeer.openPayload(service: "127.0.0.1:22")))
        try await peer.expect("OPEN_REFUSED of stream 9") { $0.kind == .openRefused && $0.stream == 9 }
        let ping = ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 42])
        peer.send(LinkFrame(.ping, payload: ping))
        try await peer.expect("PONG") { $0.kind == .pong && $0.payload == ping }
        #expect(!peer.closed)

        // An OPEN with the acceptor's stream parity: the peer is broken; GOAWAY says why, the link goes.
        peer.send(LinkFrame(.open, stream: 4, payload: RawLinkPeer.openPayload(service: "echo")))
        try await peer.expect("GOAWAY that says why") { $0.kind == .goAway && String(buffer: $0.payload) == "protocol error: malformed OPEN for stream 4" }
        try await peer.waitClosed()

        // Undecodable frames end the link the same way: an unknown type, a length over the limit.
        for (type, length) in [(UInt8(0x7F), UInt32(0)), (LinkFrame.Kind.data.rawValue, UInt32(LinkFrame.maximumPayload + 1))] {
            let broken = try await sites.rawPeerA(linkPort: linkPort)
            var raw = ByteBuffer()
            raw.writeInteger(type)
            raw.writeInteger(UInt8(0))
            raw.writeInteger(UInt32(1))
            raw.writeInteger(length)
            broken.send(raw)
            try await broken.expect("GOAWAY for frame type \(type)") { $0.kind == .goAway && String(buffer: $0.payload).hasPrefix("protocol error: ") }
            try await broken.waitClosed()
        }
        try? await echo.close()
        await sites.stop()
    }

    @Test("link.max_streams: a peer's OPEN beyond it is refused with code 3; the relay's stream is not refused for it; a finished stream frees a place")
    func streamLimit() async throws {
        var sites = try TwoSites()
        let (echo, echoPort) = try await echoServer(sites.group)
        let linkPort = try await sites.startB(services: [echoService(echoPort)],
                                              maximumStreams: 2)
        let peer = try await sites.rawPeerA(linkPort: linkPort)
        for stream: UInt32 in [1, 3] {
            peer.send(LinkFrame(.open, stream: stream, payload: RawLinkPeer.openPayload(service: "echo")))
            try await peer.expect("OPEN_OK of stream \(stream)") { $0.kind == .openOK && $0.stream == stream }
        }
        peer.send(LinkFrame(.open, stream: 5, payload: RawLinkPeer.openPayload(service: "echo")))
        try await peer.expect("OPEN_REFUSED of stream 5, code 3") { $0.kind == .openRefused && $0.stream == 5 && $0.payload.getInteger(at: $0.payload.readerIndex, as: UInt8.self) == 3 }
        // The relay's stream gets past the limit (and is refused here only because B has no relay: code 1).
        peer.send(LinkFrame(.open, stream: 7, payload: RawLinkPeer.openPayload(service: "_relay")))
        try await peer.expect("OPEN_REFUSED of stream 7, code 1") { $0.kind == .openRefused && $0.stream == 7 && $0.payload.getInteger(at: $0.payload.readerIndex, as: UInt8.self) == 1 }
        // Stream 1 reset by the peer: a place is free again.
        peer.send(LinkFrame(.reset, stream: 1, payload: ByteBuffer(string: "done")))
        peer.send(LinkFrame(.open, stream: 9, payload: RawLinkPeer.openPayload(service: "echo")))
        try await peer.expect("OPEN_OK of stream 9") { $0.kind == .openOK && $0.stream == 9 }
        peer.send(LinkFrame(.data, stream: 9, payload: ByteBuffer(string: "still")))
        try await peer.expect("echo on stream 9") { $0.kind == .data && $0.stream == 9 && String(buffer: $0.payload) == "still" }
        #expect(!peer.closed)
        try? await echo.close()
        await sites.stop()
    }

    @Test("Every way a stream ends frees it: FIN both ways, a RESET, the link closing; for TCP and MQTT streams (which hold their stream strongly)")
    func streamsAreFreed() async throws {
        var sites = try TwoSites()
        let (echo, echoPort) = try await echoServer(sites.group)
        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let acl = try TestEnvironment.temporaryFile("pattern readwrite test/#\n", name: "streams.acl")
        let linkPort = try await sites.startB(services: [echoService(echoPort),
                                                        ServiceConfiguration(name: "broker", kind: .mqtt, target: HostPort(host: "127.0.0.1", port: broker.port), peers: ["site-a"])],
                                              aclStore: try ACLStore(path: acl))
        let node = try #require(sites.nodeB)
        func waitUntilNoStreams(_ what: String) async throws {
            let deadline = Date().addingTimeInterval(10)
            while node.liveStreams.load(ordering: .relaxed) != 0 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(node.liveStreams.load(ordering: .relaxed) == 0, "stream objects still alive after \(what)")
        }
        let connect: [UInt8] = [0x10, 13, 0, 4] + Array("MQTT".utf8) + [4, 0x02, 0, 60, 0, 1, UInt8(ascii: "t")]
        let peer = try await sites.rawPeerA(linkPort: linkPort)
        // Opens an MQTT stream and waits for the broker's CONNACK through it.
        func openMQTT(_ stream: UInt32) async throws {
            peer.send([LinkFrame(.open, stream: stream, payload: RawLinkPeer.openPayload(service: "broker")),
                       LinkFrame(.data, stream: stream, payload: ByteBuffer(bytes: connect))])
            try await peer.expect("CONNACK on stream \(stream)") { $0.kind == .data && $0.stream == stream && Array($0.payload.readableBytesView) == [0x20, 2, 0, 0] }
            #expect(node.liveStreams.load(ordering: .relaxed) == 1)
        }

        // TCP: FIN both ways (the echo server closes its end after ours).
        peer.send([LinkFrame(.open, stream: 1, payload: RawLinkPeer.openPayload(service: "echo")),
                   LinkFrame(.data, flags: LinkFrame.finFlag, stream: 1, payload: ByteBuffer(string: "bye"))])
        try await peer.expect("FIN of stream 1") { $0.kind == .data && $0.stream == 1 && $0.isFIN }
        try await waitUntilNoStreams("a TCP stream's FINs")

        // MQTT: DISCONNECT and FIN; the proxy closes the broker connection and sends its FIN.
        try await openMQTT(3)
        peer.send(LinkFrame(.data, flags: LinkFrame.finFlag, stream: 3, payload: ByteBuffer(bytes: [0xE0, 0])))
        try await peer.expect("FIN of stream 3") { $0.kind == .data && $0.stream == 3 && $0.isFIN }
        try await waitUntilNoStreams("an MQTT stream's FINs")

        // MQTT: reset by the peer.
        try await openMQTT(5)
        peer.send(LinkFrame(.reset, stream: 5, payload: ByteBuffer(string: "gone")))
        try await waitUntilNoStreams("an MQTT stream's RESET")

        // MQTT: the link closes under an open stream.
        try await openMQTT(7)
        peer.stop()
        try await peer.waitClosed()
        try await waitUntilNoStreams("the link closing")

        try? await echo.close()
        await sites.stop()
    }

    @Test("A wrong pinned key never brings the link up, and the refusal is counted")
    func wrongPin() async throws {
        var sites = try TwoSites()
        let other = try SiteIdentity.create(in: sites.directory.appendingPathComponent("other").path, name: "other")
        let (echo, echoPort) = try await echoServer(sites.group)
        try await sites.start(services: [echoService(echoPort)],
                              remotes: [RemoteListenerConfiguration(listen: HostPort(host: "127.0.0.1", port: 0), peer: "site-b", service: "echo")],
                              aPins: other.fingerprint)
        let port = try await sites.port("remote-echo")
        try await Task.sleep(for: .seconds(1))
        #expect(try TestEnvironment.tcpExchange(port: port, send: [1], halfClose: true, timeout: 2) == [])
        try? await echo.close()
        await sites.stop()
    }
}

/// A hand-driven link peer over real TLS 1.3 with a paired identity: sends any frames,
/// records every frame it receives.
final class RawLinkPeer: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = LinkFrame
    private let received = NIOLockedValueBox<[LinkFrame]>([])
    private let isClosed = NIOLockedValueBox(false)
    private var channel: (any Channel)?
    private var server: (any Channel)?

    static func connect(port: Int, tls: LinkTLS, expecting fingerprint: SPKIFingerprint, group: any EventLoopGroup) async throws -> RawLinkPeer {
        let peer = RawLinkPeer()
        let channel = try await ClientBootstrap(group: group).channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(try tls.makeClientHandler(allowing: [fingerprint]))
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LinkFrameDecoder()))
                try channel.pipeline.syncOperations.addHandler(peer)
            }
        }.connect(host: "127.0.0.1", port: port).get()
        peer.channel = channel
        return peer
    }

    /// Listens as site B would: the first connection (site A dialling) gets this peer.
    static func listen(tls: LinkTLS, allowing fingerprint: SPKIFingerprint, group: any EventLoopGroup) async throws -> (RawLinkPeer, port: Int) {
        let peer = RawLinkPeer()
        let server = try await ServerBootstrap(group: group).childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                guard peer.channel == nil else { throw ChannelError.ioOnClosedChannel }
                peer.channel = channel
                try channel.pipeline.syncOperations.addHandler(tls.makeServerHandler(allowing: [fingerprint]))
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LinkFrameDecoder()))
                try channel.pipeline.syncOperations.addHandler(peer)
            }
        }.bind(host: "127.0.0.1", port: 0).get()
        peer.server = server
        return (peer, server.localAddress!.port!)
    }

    /// The link's greeting: waits for the other site's HELLO, then answers with ours.
    func exchangeHello(as name: String, _ identity: SiteIdentity) async throws {
        try await expect("the other site's HELLO") { $0.kind == .hello }
        send(LinkHello(name: name, fingerprint: identity.fingerprint).frame)
    }

    static func openPayload(service: String) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeShortString(service)
        payload.writeShortString("raw test peer")
        return payload
    }

    var closed: Bool { isClosed.withLockedValue { $0 } }

    func send(_ frame: LinkFrame) { send([frame]) }

    /// Several frames in one write, so that the other side reads them together.
    func send(_ frames: [LinkFrame]) {
        var bytes = ByteBuffer()
        for frame in frames { frame.write(to: &bytes) }
        send(bytes)
    }

    func send(_ bytes: ByteBuffer) { channel?.writeAndFlush(bytes, promise: nil) }

    /// Waits for a received frame that matches (and consumes the frames up to it).
    func expect(_ what: String, timeout: Double = 30, _ matches: @escaping @Sendable (LinkFrame) -> Bool) async throws {
        func take() -> Bool {
            received.withLockedValue { frames -> Bool in
                guard let index = frames.firstIndex(where: matches) else { return false }
                frames.removeFirst(index + 1)
                return true
            }
        }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if take() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        // This task may resume only after the deadline: one last look.
        if take() { return }
        throw TestFailure("no \(what); received \(received.withLockedValue { $0.map { "\($0.kind) on \($0.stream): \(String(buffer: $0.payload))" } })")
    }

    func stop() {
        channel?.close(promise: nil)
        server?.close(promise: nil)
    }

    func waitClosed(timeout: Double = 10) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !closed {
            if Date() > deadline { throw TestFailure("the link was not closed") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        // Answered here, on the event loop, as a real peer would: the test's own task can be
        // held up for seconds when every suite runs at once, and a peer silent for three
        // keepalive intervals is (rightly) declared dead by the other site.
        if frame.kind == .ping {
            var bytes = ByteBuffer()
            LinkFrame(.pong, payload: frame.payload).write(to: &bytes)
            context.writeAndFlush(NIOAny(bytes), promise: nil)
        }
        received.withLockedValue { $0.append(frame) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed.withLockedValue { $0 = true }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}
