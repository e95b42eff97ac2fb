@testable import Bridge
import Logging
import MetricsTestKit
import MQTTCodec
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// The relay's MQTT client against a scripted broker that goes away between PUBREC and
/// PUBREL of a QoS 2 publication, and comes back with or without the relay's session.
@Suite("Relay broker client: a QoS 2 exchange across a broker that went away")
struct RelayBrokerClientTests {
    /// Answers CONNECT with CONNACK (Session Present on the second connection when `keepsSession`),
    /// PUBLISH with PUBREC, PUBREL with PUBCOMP, except the first PUBREL of the first
    /// connection, which it drops with the connection, as a broker that restarts then would.
    final class ScriptedBroker: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let connection: Int
        let keepsSession: Bool
        /// The first connection drops at the first PUBREL.
        var dropsFirstRelease = true
        let seen: NIOLockedValueBox<[String]>
        private var buffer = ByteBuffer()

        init(connection: Int, keepsSession: Bool, dropsFirstRelease: Bool = true, seen: NIOLockedValueBox<[String]>) {
            self.connection = connection
            self.keepsSession = keepsSession
            self.dropsFirstRelease = dropsFirstRelease
            self.seen = seen
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            buffer.writeBuffer(&bytes)
            while let (type, body) = nextPacket() {
                let names = ["CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE"]
                let name = names.indices.contains(Int(type >> 4) - 1) ? names[Int(type >> 4) - 1] : "type \(type >> 4)"
                seen.withLockedValue { $0.append("\(connection): \(name)") }
                switch type >> 4 {
                case 1: write(context, [0x20, 0x02, (connection > 1 || !dropsFirstRelease) && keepsSession ? 0x01 : 0x00, 0x00])
                case 3:
                    // Topic length, topic, then the packet id.
                    let topicLength = Int(body[0]) << 8 | Int(body[1])
                    write(context, [0x50, 0x02, body[2 + topicLength], body[3 + topicLength]])
                case 6:
                    if connection == 1 && dropsFirstRelease {
                        context.close(promise: nil)
                        return
                    }
                    write(context, [0x70, 0x02, body[0], body[1]])
                default: break
                }
            }
        }

        private func write(_ context: ChannelHandlerContext, _ bytes: [UInt8]) {
            context.writeAndFlush(NIOAny(ByteBuffer(bytes: bytes)), promise: nil)
        }

        /// One whole packet (first byte, body) off the front of what was read.
        private func nextPacket() -> (UInt8, [UInt8])? {
            guard buffer.readableBytes >= 2, let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
            var length = 0
            var shift = 0
            var index = buffer.readerIndex + 1
            while true {
                guard let byte = buffer.getInteger(at: index, as: UInt8.self) else { return nil }
                length |= Int(byte & 0x7F) << shift
                shift += 7
                index += 1
                if byte & 0x80 == 0 { break }
            }
            guard buffer.writerIndex - index >= length, let body = buffer.getBytes(at: index, length: length) else { return nil }
            buffer.moveReaderIndex(to: index + length)
            return (first, body)
        }
    }

    /// What the scripted broker saw, in order; whether the publication was acknowledged to
    /// its publisher; and the client's `onSessionLost` calls.
    struct Run {
        var seen: [String]
        var acknowledged: Bool
        var sessionsLost: [Bool]
    }

    /// Starts a scripted broker and a real client, hands the client to `publish` on its loop,
    /// and waits (bounded) for the publication's acknowledgement.
    static func run(keepsSession: Bool, dropsFirstRelease: Bool, publish: @escaping @Sendable (RelayBrokerClient, @escaping () -> Void) -> Void) async throws -> Run {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let seen = NIOLockedValueBox<[String]>([])
        let connections = NIOLockedValueBox(0)
        let broker = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                let connection = connections.withLockedValue { $0 += 1; return $0 }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ScriptedBroker(connection: connection, keepsSession: keepsSession,
                                                                                  dropsFirstRelease: dropsFirstRelease, seen: seen))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let configuration = RelayConfiguration(broker: HostPort(host: "127.0.0.1", port: broker.localAddress!.port!), clientID: "relay-qos2",
                                               queueDirectory: "unused", rules: [])
        let acknowledged = NIOLockedValueBox(false)
        let lost = NIOLockedValueBox<[Bool]>([])
        let eventLoop = group.next()
        let client = try await eventLoop.submit {
            let client = RelayBrokerClient(configuration: configuration, subscriptions: [], eventLoop: eventLoop,
                                           logger: Logger(label: "test"), metrics: RelayMetrics(factory: TestMetrics()))
            client.onSessionLost = { first in lost.withLockedValue { $0.append(first) } }
            client.start()
            publish(client) { acknowledged.withLockedValue { $0 = true } }
            return NIOLoopBound(client, eventLoop: eventLoop)
        }.get()
        _ = await ReceiveCoalescingTests.wait { acknowledged.withLockedValue { $0 } ? true : nil }
        // Taken before the stop, whose DISCONNECT is not part of the exchange.
        let run = Run(seen: seen.withLockedValue { $0 }, acknowledged: acknowledged.withLockedValue { $0 }, sessionsLost: lost.withLockedValue { $0 })
        try await eventLoop.submit { client.value.stop() }.get()
        try await broker.close()
        try await group.shutdownGracefully()
        return run
    }

    static func publication() -> Publish {
        Publish(qos: .exactlyOnce, retain: false, topic: "t/1", packetIdentifier: nil, properties: [], payload: ByteBuffer(string: "once"))
    }

    @Test("After PUBREC the broker goes away: with its session back, only PUBREL is sent again; without it (restarted without persistence), the message is published again, since the broker forgot it",
          arguments: [true, false])
    func qos2AcrossLostBroker(keepsSession: Bool) async throws {
        let run = try await Self.run(keepsSession: keepsSession, dropsFirstRelease: true) { client, acknowledged in
            client.publish(Self.publication(), onAcknowledged: acknowledged)
        }
        #expect(run.acknowledged, "PUBCOMP reached the publisher: \(run.seen)")
        #expect(run.seen.filter { $0.hasPrefix("1: ") } == ["1: CONNECT", "1: PUBLISH", "1: PUBREL"])
        #expect(run.seen.filter { $0.hasPrefix("2: ") } == (keepsSession ? ["2: CONNECT", "2: PUBREL"] : ["2: CONNECT", "2: PUBLISH", "2: PUBREL"]))
        // The first connection is a new session too: it says so, as the first.
        #expect(run.sessionsLost == (keepsSession ? [true] : [true, false]))
    }

    @Test("An exchange released in an earlier run (from the ledger) is resumed with PUBREL where the broker kept the session, and published again where it did not",
          arguments: [true, false])
    func resumedExchange(keepsSession: Bool) async throws {
        let run = try await Self.run(keepsSession: keepsSession, dropsFirstRelease: false) { client, acknowledged in
            client.reserve([5])
            var outgoing = RelayBrokerClient.Outgoing(publish: Self.publication(), onAcknowledged: acknowledged)
            outgoing.packetID = 5
            outgoing.released = true
            client.publish(outgoing)
        }
        #expect(run.acknowledged, "PUBCOMP reached the publisher: \(run.seen)")
        #expect(run.seen == (keepsSession ? ["1: CONNECT", "1: PUBREL"] : ["1: CONNECT", "1: PUBLISH", "1: PUBREL"]))
    }
}
