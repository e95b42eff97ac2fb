@testable import Bridge
import Foundation
import Logging
import MetricsTestKit
import MQTTCodec
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TestSupport
import Testing
import TopicACL

@Suite("Receive coalescing: the broker socket's low watermark at high rates")
struct ReceiveCoalescingTests {
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static func at(_ microseconds: Int64) -> NIODeadline { start + .microseconds(microseconds) }

    @Test("Raised once small reads bring 4,096 bytes within one 500 µs interval, not before")
    func raisesAtTheRate() {
        var coalescing = ReceiveCoalescing()
        // 100-byte reads every 10 µs (10 MB/s): the 41st brings the interval to 4,100 bytes.
        for i in 0..<40 {
            #expect(coalescing.read(100, at: Self.at(Int64(i) * 10)) == .none, "read \(i)")
        }
        #expect(coalescing.read(100, at: Self.at(400)) == .start(watermark: 256))
        #expect(coalescing.isRaised)
        // Further reads change nothing until the check.
        #expect(coalescing.read(100, at: Self.at(410)) == .none)
    }

    @Test("Not raised by a slower stream of small reads: each interval starts counting again")
    func slowStreamStaysLow() {
        var coalescing = ReceiveCoalescing()
        // 100 bytes every 50 µs is 2 MB/s: at most 1,000 bytes in any interval.
        for i in 0..<1000 {
            #expect(coalescing.read(100, at: Self.at(Int64(i) * 50)) == .none, "read \(i)")
        }
        #expect(!coalescing.isCoalescing)
    }

    @Test("Not raised by large reads alone, where a watermark of 256 bytes would change nothing")
    func largeReadsStayLow() {
        var coalescing = ReceiveCoalescing()
        for i in 0..<100 {
            #expect(coalescing.read(4096, at: Self.at(Int64(i) * 10)) == .none, "read \(i)")
        }
        // A small read in the same interval, with the rate that high, does raise it.
        #expect(coalescing.read(10, at: Self.at(995)) == .start(watermark: 256))
    }

    @Test("An interval without a read releases it until the next read; two quiet intervals in a row end it; then it must qualify again")
    func releaseAndLower() {
        var coalescing = ReceiveCoalescing()
        #expect(coalescing.check() == .none, "not coalescing: nothing to check")
        #expect(coalescing.read(4000, at: Self.at(0)) == .none)
        #expect(coalescing.read(100, at: Self.at(5)) == .start(watermark: 256))
        #expect(coalescing.read(2000, at: Self.at(100)) == .none)
        #expect(coalescing.check() == .checkAgain, "2,100 bytes read: not quiet")
        // A burst's last packets lie below the watermark: nothing is read in the next interval.
        #expect(coalescing.check() == .release, "quiet once, and no read")
        #expect(!coalescing.isRaised && coalescing.isCoalescing)
        #expect(coalescing.read(3000, at: Self.at(1200)) == .raise(watermark: 256), "raised again by the next read")
        #expect(coalescing.check() == .checkAgain)
        #expect(coalescing.check() == .release)
        #expect(coalescing.check() == .lower, "a second quiet interval in a row")
        #expect(!coalescing.isCoalescing && !coalescing.isRaised)
        #expect(coalescing.check() == .none)
        // Nothing read before counts towards raising it again.
        #expect(coalescing.read(100, at: Self.at(3000)) == .none)
        #expect(coalescing.read(3995, at: Self.at(3010)) == .none)
        #expect(coalescing.read(1, at: Self.at(3020)) == .start(watermark: 256))
    }

    @Test("A stream that slows below 4 MB/s ends it although every interval still reads")
    func slowingStreamLowers() {
        var coalescing = ReceiveCoalescing()
        #expect(coalescing.read(4096, at: Self.at(0)) == .none)
        #expect(coalescing.read(90, at: Self.at(1)) == .start(watermark: 256))
        #expect(coalescing.check() == .checkAgain, "quiet once, but it read")
        #expect(coalescing.read(1000, at: Self.at(600)) == .none)
        #expect(coalescing.check() == .lower)
    }

    @Test("coalesce_broker_reads: on by default, off with false, and a wrong value is refused with its line")
    func configurationKey() throws {
        func proxies(_ extra: String) throws(ConfigErrors) -> [ProxyConfiguration] {
            try BridgeConfiguration(yaml: "acl: acl.conf\nproxies:\n  - listen: 127.0.0.1:1883\n    broker: 127.0.0.1:1884\n\(extra)", file: "/etc/mqbridge/site.yaml").proxies
        }
        #expect(try proxies("").first?.receiveCoalescing == ReceiveCoalescing.Configuration())
        #expect(try proxies("    coalesce_broker_reads: true\n").first?.receiveCoalescing == ReceiveCoalescing.Configuration())
        #expect(try proxies("    coalesce_broker_reads: false\n").first?.receiveCoalescing == nil)
        #expect(throws: ConfigErrors.self) { try proxies("    coalesce_broker_reads: sometimes\n") }
        do {
            _ = try proxies("    coalesce_broker_reads: sometimes\n")
        } catch {
            #expect(error.errors.map(\.description) == ["/etc/mqbridge/site.yaml:5: proxies[0].coalesce_broker_reads: \"sometimes\" is not true or false — write true or false"])
        }
    }

    /// A broker that answers CONNECT and then writes `count` 20-byte PUBLISHes, each with a
    /// write of its own (as mosquitto does), and a last one that differs. Later reads (the
    /// relay's SUBSCRIBE) get no answer.
    final class BurstingBroker: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let count: Int
        private var answered = false
        init(count: Int) { self.count = count }

        static func start(count: Int, group: any EventLoopGroup) async throws -> any Channel {
            try await ServerBootstrap(group: group)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(BurstingBroker(count: count)) }
                }
                .bind(host: "127.0.0.1", port: 0).get()
        }

        static func publish(_ payload: String) -> [UInt8] {
            MQTTTestPackets.packet(0x30, [0x00, 0x03] + Array("t/1".utf8) + Array(payload.utf8))
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            // The first read holds the CONNECT (from one client write).
            guard !answered else { return }
            answered = true
            context.writeAndFlush(NIOAny(ByteBuffer(bytes: [0x20, 0x02, 0x00, 0x00])), promise: nil)
            for _ in 0..<count {
                context.writeAndFlush(NIOAny(ByteBuffer(bytes: Self.publish("payload-13byt"))), promise: nil)
            }
            context.writeAndFlush(NIOAny(ByteBuffer(bytes: Self.publish("the-last-one!"))), promise: nil)
        }
    }

    /// How the packets held below the watermark get out in `burstTailIsReleased`.
    enum Ending: String, CaseIterable, Sendable {
        /// The first check ends the coalescing (every interval is quiet).
        case lowered
        /// Checks find intervals without a read and release it (no interval is quiet).
        case released

        /// A watermark larger than the whole burst: once it is raised, every byte after that
        /// waits in the kernel until a check lowers or releases it, so without that the last
        /// packet would never come. (With the defaults a burst like this one may or may not
        /// raise it, depending on how the reads fall.)
        /// Raised by the burst at least once, and lowered at least once where the checks end it.
        func expectCounted(in recorded: TestMetrics, sourceLocation: Testing.SourceLocation = #_sourceLocation) {
            func counted(_ change: String) -> Int64 { (try? recorded.expectCounter("mqbridge_broker_read_coalescing_total", [("change", change)]).totalValue) ?? 0 }
            #expect(counted("raised") >= 1, sourceLocation: sourceLocation)
            #expect(counted("lowered") >= (self == .lowered ? 1 : 0), sourceLocation: sourceLocation)
        }

        var coalescing: ReceiveCoalescing.Configuration {
            switch self {
            case .lowered: .init(watermark: 1 << 16, interval: .milliseconds(50), raiseAtBytes: 512, keepAtBytes: 1 << 30, quietIntervals: 1)
            case .released: .init(watermark: 1 << 16, interval: .milliseconds(50), raiseAtBytes: 512, keepAtBytes: 0, quietIntervals: 1000)
            }
        }
    }

    @Test("Through real sockets: raised under a burst of small deliveries; the packets held below it get out", arguments: Ending.allCases)
    func burstTailIsReleased(ending: Ending) async throws {
        let (brokerGroup, proxyGroup, count) = (MultiThreadedEventLoopGroup(numberOfThreads: 1), MultiThreadedEventLoopGroup(numberOfThreads: 1), 2000)
        let broker = try await BurstingBroker.start(count: count, group: brokerGroup)
        var configuration = ProxyConfiguration(listen: HostPort(host: "127.0.0.1", port: 0), broker: HostPort(host: "127.0.0.1", port: broker.localAddress!.port!))
        configuration.receiveCoalescing = ending.coalescing
        let acl = ACLStore(CompiledACL(try ACLFile(parsing: "topic read t/#\n", source: "acl")))
        let recorded = TestMetrics()
        let metrics = BridgeMetrics(factory: recorded)
        let port = NIOLockedValueBox<Int?>(nil)
        let proxy = ProxyServer(configuration: configuration, aclStore: acl, metrics: metrics, group: proxyGroup, logger: Logger(label: "test"),
                                onBound: { address in port.withLockedValue { $0 = address.port } })
        let running = Task { try await proxy.run() }
        let proxyPort = try #require(await Self.wait { port.withLockedValue { $0 } })

        let expected = [0x20, 0x02, 0x00, 0x00] + Array(repeating: BurstingBroker.publish("payload-13byt"), count: count).flatMap { $0 } + BurstingBroker.publish("the-last-one!")
        let received = try await TestEnvironment.offPool {
            let client = try TCPTestClient(port: proxyPort, timeout: 30)
            defer { client.close() }
            try client.send(MQTTTestPackets.connect311(clientID: "coalesced"))
            return client.receive(atMost: expected.count).received
        }
        let inOrder = received == expected  // compared apart: the expectation would print 40 KB of both
        #expect(received.count == expected.count, "bytes received")
        #expect(inOrder, "every delivery, in order, the last one included")
        // Raised by the burst; and since the watermark exceeds the burst, what came after
        // that could only have been read once a check lowered it.
        ending.expectCounted(in: recorded)
        // Closing the groups closes the listener and the broker, which ends `run`.
        try await proxyGroup.shutdownGracefully()
        try await brokerGroup.shutdownGracefully()
        _ = try? await running.value
    }

    @Test("The relay's connection to its broker: raised under a burst of small deliveries; the messages held below it get out", arguments: Ending.allCases)
    func relayBurstTailIsReleased(ending: Ending) async throws {
        let (brokerGroup, relayGroup, count) = (MultiThreadedEventLoopGroup(numberOfThreads: 1), MultiThreadedEventLoopGroup(numberOfThreads: 1), 2000)
        let broker = try await BurstingBroker.start(count: count, group: brokerGroup)
        var configuration = RelayConfiguration(broker: HostPort(host: "127.0.0.1", port: broker.localAddress!.port!), clientID: "relay-coalesced",
                                               queueDirectory: "unused", rules: [])
        configuration.receiveCoalescing = ending.coalescing
        let settings = configuration
        let recorded = TestMetrics()
        let payloads = NIOLockedValueBox<[String]>([])
        let eventLoop = relayGroup.next()
        let relay = try await eventLoop.submit {
            let client = RelayBrokerClient(configuration: settings, subscriptions: [("t/#", .atMostOnce)], eventLoop: eventLoop,
                                           logger: Logger(label: "test"), metrics: RelayMetrics(factory: recorded))
            client.onMessage = { incoming in payloads.withLockedValue { $0.append(String(buffer: incoming.publish.payload)) } }
            client.start()
            return NIOLoopBound(client, eventLoop: eventLoop)
        }.get()

        let all = try #require(await Self.wait { payloads.withLockedValue { $0.count >= count + 1 ? $0 : nil } })
        #expect(all.count == count + 1, "every delivery")
        #expect(all.dropLast().allSatisfy { $0 == "payload-13byt" })
        #expect(all.last == "the-last-one!", "the last one, which only a check could let out")
        ending.expectCounted(in: recorded)
        try await eventLoop.submit { relay.value.stop() }.get()
        try await relayGroup.shutdownGracefully()
        try await brokerGroup.shutdownGracefully()
    }

    /// Polls `value` for up to 180 s: only a bound on a hang. The in-process server starts on
    /// Swift's cooperative pool, which the integration tests' blocking waits running beside
    /// it can hold for a minute on two cores (a CI run saw the proxy's `run` task start 40 s
    /// after it was created, and unrelated in-process tests stall ~70 s), while its sockets
    /// live on NIO threads of their own.
    static func wait<T>(_ value: () -> T?) async -> T? {
        let deadline = Date().addingTimeInterval(180)
        while Date() < deadline {
            if let v = value() { return v }
            try? await Task.sleep(for: .milliseconds(10))
        }
        // As in `TwoSites.port`: this task may itself resume only after the deadline.
        return value()
    }
}
