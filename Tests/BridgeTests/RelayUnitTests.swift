@testable import Bridge
import Foundation
import NIOCore
import NIOPosix
import Testing

@Suite("Relay records, delivery ledger and relay configuration")
struct RelayUnitTests {
    func message(_ sequence: UInt64, topic: String = "a/b", payload: String = "x") -> RelayMessage {
        RelayMessage(sequence: sequence, topic: topic, qos: 1, retain: true, properties: ByteBuffer(bytes: [0x03, 0x03, 0x00, 0x01, 0x41]),
                     payload: ByteBuffer(string: payload), queuedAt: 1_700_000_000_000, expirySeconds: 60)
    }

    @Test("Records round-trip, arrive split at any byte, and garbage is a protocol error")
    func records() throws {
        let records: [RelayRecord] = [
            .message(epoch: 7, floor: 3, message(5)),
            .acknowledgement(epoch: 7, [(5, .delivered), (6, .denied), (9, .noRule)]),
            .message(epoch: 7, floor: 0, message(0, topic: "q/0", payload: "")),
        ]
        var wire = ByteBuffer()
        for record in records { record.write(to: &wire) }
        // Exact framing of the acknowledgement: length, type 2, epoch, (sequence, outcome)…
        var ack = ByteBuffer()
        RelayRecord.acknowledgement(epoch: 1, [(2, .denied)]).write(to: &ack)
        #expect(Array(ack.readableBytesView) == [0, 0, 0, 18, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 2])
        for split in 0...wire.readableBytes {
            var first = wire.getSlice(at: 0, length: split)!
            var decoded: [RelayRecord] = []
            while let (record, _) = try RelayRecord.read(from: &first) { decoded.append(record) }
            var rest = first
            rest.writeImmutableBuffer(wire.getSlice(at: split, length: wire.readableBytes - split)!)
            while let (record, _) = try RelayRecord.read(from: &rest) { decoded.append(record) }
            #expect(decoded == records, "split at \(split)")
        }
        var garbage = ByteBuffer(bytes: [0, 0, 0, 2, 9, 9])
        #expect(throws: LinkProtocolError.self) { _ = try RelayRecord.read(from: &garbage) }
        var huge = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: LinkProtocolError.self) { _ = try RelayRecord.read(from: &huge) }
    }

    @Test("A message as large as the relay takes from its broker still fits in one record")
    func largestMessageFits() throws {
        // The largest PUBLISH the relay frames, with a 1 KiB topic and no properties: its
        // payload is what is left after the fixed header (5) and the topic (2 + 1024).
        let topic = String(repeating: "t", count: 1024)
        let payload = ByteBuffer(repeating: 0x41, count: RelayBrokerClient.maximumPacketSize - 5 - 2 - 1024)
        let record = RelayRecord.message(epoch: 1, floor: 0, RelayMessage(sequence: 1, topic: topic, qos: 1, retain: false, payload: payload,
                                                                         queuedAt: 0, expirySeconds: 0))
        var wire = ByteBuffer()
        record.write(to: &wire)
        #expect(wire.readableBytes > RelayBrokerClient.maximumPacketSize)
        let (decoded, size) = try #require(try RelayRecord.read(from: &wire))
        #expect(size > RelayBrokerClient.maximumPacketSize)
        #expect(decoded == record)
    }

    @Test("The ledger remembers delivered sequences per epoch across reopening, and forgets below the sender's floor")
    func ledger() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var ledger: DeliveryLedger? = try DeliveryLedger(path: path)
        for sequence: UInt64 in [1, 2, 3, 7, 9] { ledger!.record(epoch: 42, sequence: sequence) }
        ledger!.record(epoch: 43, sequence: 1)
        #expect(ledger!.contains(epoch: 42, sequence: 3))
        #expect(!ledger!.contains(epoch: 42, sequence: 4))
        #expect(!ledger!.contains(epoch: 44, sequence: 1))
        ledger = nil
        let reopened = try DeliveryLedger(path: path)
        #expect([1, 2, 3, 7, 9].allSatisfy { reopened.contains(epoch: 42, sequence: $0) })
        #expect(![4, 5, 6, 8, 10].contains { reopened.contains(epoch: 42, sequence: $0) })
        #expect(reopened.contains(epoch: 43, sequence: 1) && !reopened.contains(epoch: 43, sequence: 2))
        reopened.forget(epoch: 42, below: 9)
        #expect((1...9).allSatisfy { reopened.contains(epoch: 42, sequence: $0) })
        #expect(!reopened.contains(epoch: 42, sequence: 10))
        reopened.flush()  // records are gathered until the relay flushes (before it acknowledges)
        #expect(try DeliveryLedger(path: path).contains(epoch: 42, sequence: 8))
    }

    @Test("A ledger write the disk refuses halfway is cut back to whole records and kept for the next flush: reopened, the ledger reads every record, none shifted")
    func ledgerTornWrite() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var ledger: DeliveryLedger? = try DeliveryLedger(path: path)
        for sequence: UInt64 in 1...3 { ledger!.record(epoch: 42, sequence: sequence) }
        #expect(ledger!.flush())
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)

        // Full after 10 bytes: a torn record, which must not stay in the file.
        ledger!.injectedWriteLimit = 10
        ledger!.record(epoch: 42, sequence: 5)
        ledger!.record(epoch: 42, sequence: 6)
        #expect(!ledger!.flush())
        #expect(ledger!.lastWriteError == String(cString: strerror(ENOSPC)))
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int == size)

        ledger!.injectedWriteLimit = nil
        ledger!.record(epoch: 42, sequence: 9)
        #expect(ledger!.flush())
        ledger = nil
        let reopened = try DeliveryLedger(path: path)
        #expect([1, 2, 3, 5, 6, 9].allSatisfy { reopened.contains(epoch: 42, sequence: $0) })
        #expect(![4, 7, 8, 10].contains { reopened.contains(epoch: 42, sequence: $0) })
        #expect(!reopened.contains(epoch: 43, sequence: 1))
    }

    @Test("The durable queue hands out in sequence order, and drop_oldest frees exactly enough room")
    func queueDurabilityAndDropOldest() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("queue-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let group = MultiThreadedEventLoopGroupHolder.group
        let one = message(0, payload: String(repeating: "p", count: 1000)).encodedSize
        let queue = try DurableQueue(configuration: .init(directory: directory, maximumBytes: one * 3))
        defer { queue.close() }
        var futures: [EventLoopFuture<Void>] = []
        for i in 1...3 {
            guard case .success(let (_, written)) = queue.tryAppend(message(0, payload: String(repeating: "p", count: 999) + "\(i % 10)"), on: group.next()) else {
                Issue.record("append \(i) refused")
                return
            }
            futures.append(written)
        }
        try EventLoopFuture.andAllSucceed(futures, on: group.next()).wait()
        #expect(queue.pending(after: 0, limit: 10).map(\.sequence) == [1, 2, 3])
        guard case .failure(.full) = queue.tryAppend(message(0, payload: String(repeating: "p", count: 1000)), on: group.next()) else {
            Issue.record("a fourth message should not fit")
            return
        }
        let dropped = queue.dropOldest(toFit: one)
        #expect(dropped.map(\.sequence) == [1])
        #expect(queue.floor == 2)
    }

    func configuration(_ relay: String) throws -> BridgeConfiguration {
        let yaml = """
        identity: id
        acl: acl.conf
        peers:
          - name: site-b
            fingerprint: SHA256:\(String(repeating: "A", count: 43))=
        relay:
        \(relay)
        """
        return try BridgeConfiguration(yaml: yaml, file: "/etc/mqbridge/site.yaml")
    }

    @Test("relay: keys parse with their defaults; mistakes name the file, line, key and the fix")
    func relayConfiguration() throws {
        let parsed = try configuration("""
          broker: 127.0.0.1:1883
          protocol: 5
          max_age: 2h
          when_full: drop_oldest
          commit_interval: 5ms
          rules:
            - {peer: site-b, filter: "sensors/#", direction: out, qos: 1, remote_prefix: site-a/}
            - {peer: site-b, filter: "cmd/+", direction: in, qos: 2, local_prefix: from-b/}
        """)
        let relay = try #require(parsed.relay)
        #expect(relay.broker == HostPort(host: "127.0.0.1", port: 1883))
        #expect(relay.protocolLevel == 5)
        #expect(relay.maximumAge == .hours(2))
        #expect(relay.whenFull == .dropOldest)
        #expect(relay.queueDirectory == "/etc/mqbridge/relay-queue")
        #expect(relay.replayRate == 20_000)
        #expect(relay.commitInterval == .milliseconds(5))
        #expect(relay.receiveCoalescing == ReceiveCoalescing.Configuration())
        #expect(try #require(configuration("  broker: 127.0.0.1:1883\n  coalesce_broker_reads: false\n  rules: [{peer: site-b, filter: \"a/#\", direction: out}]").relay).receiveCoalescing == nil)
        for zero in ["0", "0s", "0ms"] {
            #expect(try #require(configuration("  broker: 127.0.0.1:1883\n  commit_interval: \(zero)\n  rules: [{peer: site-b, filter: \"a/#\", direction: out}]").relay).commitInterval == .zero)
        }
        #expect(try #require(configuration("  broker: 127.0.0.1:1883\n  rules: [{peer: site-b, filter: \"a/#\", direction: out}]").relay).commitInterval == .milliseconds(2))
        #expect(relay.rules == [
            RelayRule(peer: "site-b", filter: "sensors/#", direction: .out, qos: 1, localPrefix: "", remotePrefix: "site-a/"),
            RelayRule(peer: "site-b", filter: "cmd/+", direction: .in, qos: 2, localPrefix: "from-b/", remotePrefix: ""),
        ])
        do {
            _ = try configuration("""
              broker: 127.0.0.1:1883
              when_full: explode
              commit_interval: 2s
              coalesce_broker_reads: often
              rules:
                - {peer: site-c, filter: "a/#", direction: sideways}
                - {peer: site-b, filter: "a/#/b", direction: out, local_prefix: "x/+/"}
            """)
            Issue.record("accepted a bad relay section")
        } catch {
            let text = "\(error)"
            #expect(text.contains("/etc/mqbridge/site.yaml:8: relay.when_full: \"explode\" is not a policy — write `when_full: block`"))
            #expect(text.contains("/etc/mqbridge/site.yaml:9: relay.commit_interval: \"2s\" is not a duration from 0 to 1s — write e.g. `commit_interval: 2ms`"))
            #expect(text.contains("/etc/mqbridge/site.yaml:10: relay.coalesce_broker_reads: \"often\" is not true or false — write true or false"))
            #expect(text.contains("relay.rules[0].peer: \"site-c\" is not a configured peer"))
            #expect(text.contains("relay.rules[0].direction: \"sideways\" is not in, out or both"))
            #expect(text.contains("relay.rules[1].local_prefix: a prefix cannot contain wildcards"))
            #expect(text.contains("relay.rules[1].filter: local_prefix + filter \"x/+/a/#/b\" is not a valid topic filter"))
        }
    }

    @Test("Durations read the same in the configuration and on the command line; nonsense is refused, never trapped on")
    func durations() {
        #expect(parseDuration("500ms") == .milliseconds(500))
        #expect(parseDuration("10") == .seconds(10))
        #expect(parseDuration("0.5s") == .milliseconds(500))
        #expect(parseDuration("2m") == .seconds(120))
        #expect(parseDuration("24h") == .hours(24))
        for bad in ["", "0", "-1s", "soon", "inf", "nan", "1e300h", "10 s"] { #expect(parseDuration(bad) == nil, "\(bad)") }
    }

    @Test("Topic remapping strips one prefix and adds the other, and refuses topics outside the prefix")
    func remap() {
        #expect(TopicMapping.remap("sensors/t1", from: "", to: "site-a/") == "site-a/sensors/t1")
        #expect(TopicMapping.remap("site-a/sensors/t1", from: "site-a/", to: "from-a/") == "from-a/sensors/t1")
        #expect(TopicMapping.remap("site-b/sensors/t1", from: "site-a/", to: "") == nil)
    }
}

/// One shared event loop group for tests that need futures.
enum MultiThreadedEventLoopGroupHolder {
    static let group: any EventLoopGroup = NIOSingletons.posixEventLoopGroup
}
