public import CoreMetrics
import Foundation
import Logging
import MQTTCodec
import NIOCore
import TopicACL

/// Counters of the relay (no topic or peer labels: bounded cardinality, nothing sensitive).
public final class RelayMetrics: Sendable {
    let queued: Counter
    let sent: Counter
    let resent: Counter
    let settled: Counter
    let published: Counter
    let duplicates: Counter
    let refusedByPeer: Counter
    let refusedHere: Counter
    let droppedAge: Counter
    let droppedExpired: Counter
    let droppedFull: Counter
    let droppedNoLink: Counter
    let droppedBacklogFull: Counter
    let droppedTooLarge: Counter
    let queueFull: Counter
    let queueWriteErrors: Counter
    let ledgerWriteErrors: Counter
    let brokerSessionsLost: Counter
    let echoSuppressed: Counter
    let queueMessages: Meter
    /// The same series as the proxies' (`BridgeMetrics`): every broker socket of the process.
    let readCoalescing: ReceiveCoalescingCounters

    public init(factory: any MetricsFactory) {
        queued = Counter(label: "mqbridge_relay_queued_total", factory: factory)
        readCoalescing = ReceiveCoalescingCounters(factory: factory)
        sent = Counter(label: "mqbridge_relay_sent_total", factory: factory)
        resent = Counter(label: "mqbridge_relay_resent_total", factory: factory)
        settled = Counter(label: "mqbridge_relay_settled_total", factory: factory)
        published = Counter(label: "mqbridge_relay_published_total", factory: factory)
        duplicates = Counter(label: "mqbridge_relay_duplicates_suppressed_total", factory: factory)
        refusedByPeer = Counter(label: "mqbridge_relay_refused_total", dimensions: [("by", "peer")], factory: factory)
        refusedHere = Counter(label: "mqbridge_relay_refused_total", dimensions: [("by", "this_site")], factory: factory)
        droppedAge = Counter(label: "mqbridge_relay_dropped_total", dimensions: [("reason", "max_age")], factory: factory)
        droppedExpired = Counter(label: "mqbridge_relay_dropped_total", dimensions: [("reason", "message_expiry")], factory: factory)
        droppedFull = Counter(label: "mqbridge_relay_dropped_total", dimensions: [("reason", "queue_full")], factory: factory)
        droppedNoLink = Counter(label: "mqbridge_relay_dropped_total", dimensions: [("reason", "qos0_no_link")], factory: factory)
        droppedBacklogFull = Counter(label: "mqbridge_relay_dropped_total", dimensions: [("reason", "qos0_backlog_full")], factory: factory)
        droppedTooLarge = Counter(label: "mqbridge_relay_dropped_total", dimensions: [("reason", "too_large")], factory: factory)
        queueFull = Counter(label: "mqbridge_relay_queue_full_total", factory: factory)
        queueWriteErrors = Counter(label: "mqbridge_relay_queue_write_errors_total", factory: factory)
        ledgerWriteErrors = Counter(label: "mqbridge_relay_ledger_write_errors_total", factory: factory)
        brokerSessionsLost = Counter(label: "mqbridge_relay_broker_sessions_lost_total", factory: factory)
        echoSuppressed = Counter(label: "mqbridge_relay_echo_suppressed_total", factory: factory)
        queueMessages = Meter(label: "mqbridge_relay_queue_messages", factory: factory)
    }
}

/// The relay of one site: one MQTT client to the local broker, and per peer an outbound
/// durable queue (for `out` rules) and a delivery ledger (for `in` rules).
///
/// Outbound, QoS ≥ 1: broker → queue (fsync) → PUBACK/PUBREC to the broker → relay stream →
/// the peer publishes at its broker, the broker acknowledges, the peer records it in its
/// ledger and acknowledges → removed from the queue. Every step that can be interrupted is
/// redone after a restart or reconnect, and the ledger turns a redo into an acknowledgement
/// instead of a second publication. QoS 0 goes straight to the link, never to disk (in memory,
/// bounded, while the stream's window is shut).
///
/// Everything runs on the link node's event loop.
final class RelayService {
    /// The stream name a dialling site opens on every link to carry the relay.
    static let streamName = "_relay"

    let configuration: RelayConfiguration
    let eventLoop: any EventLoop
    let logger: Logger
    let metrics: RelayMetrics
    let aclStore: ACLStore?
    let broker: RelayBrokerClient
    private(set) var peers: [String: RelayPeer] = [:]
    /// Local filters of the `out` rules: a message the relay publishes on a topic they match
    /// comes back through its own subscription.
    private let outFilters: [TopicFilter]
    /// Echo suppression for 3.1.1 brokers (which have no No Local): topic and payload of
    /// what the relay published, counted, until seen coming back or expired.
    private var echoes: [EchoKey: (count: Int, expires: NIODeadline)] = [:]
    private var echoSweep = NIODeadline.now()

    struct EchoKey: Hashable {
        var topic: String
        var payload: ByteBuffer
    }

    var version: ProtocolVersion { configuration.protocolLevel == 5 ? .v5 : .v3_1_1 }

    init(configuration: RelayConfiguration, eventLoop: any EventLoop, logger: Logger, metrics: RelayMetrics, aclStore: ACLStore?) throws {
        self.configuration = configuration
        self.eventLoop = eventLoop
        var logger = logger
        logger[metadataKey: "component"] = "relay"
        self.logger = logger
        self.metrics = metrics
        self.aclStore = aclStore
        var subscriptions: [String: UInt8] = [:]
        for rule in configuration.rules where rule.sends {
            subscriptions[rule.localFilter] = max(subscriptions[rule.localFilter] ?? 0, rule.qos)
        }
        outFilters = subscriptions.keys.compactMap { try? TopicFilter($0) }
        broker = RelayBrokerClient(configuration: configuration,
                                   subscriptions: subscriptions.sorted { $0.key < $1.key }.map { ($0.key, QoS(rawValue: $0.value) ?? .atLeastOnce) },
                                   eventLoop: eventLoop, logger: logger, metrics: metrics)
        let base = URL(fileURLWithPath: configuration.queueDirectory)
        try RelayQueueDirectoryError.check(base.path)
        for name in Set(configuration.rules.map(\.peer)).sorted() {
            let rules = configuration.rules.filter { $0.peer == name }
            let safe = String(name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." ? $0 : "_" })
            let queue = try rules.contains(where: \.sends)
                ? DurableQueue(configuration: .init(directory: base.appendingPathComponent("to-\(safe)").path, maximumBytes: configuration.maximumQueueBytes,
                                                  maximumBatchDelay: configuration.commitInterval)) {
                    [logger] milliseconds, records in
                    logger.warning("relay queue fsync took \(Int(milliseconds)) ms (\(records) records waiting on it): the disk is slow, the relay waits for it",
                                   metadata: ["event": "relay_slow_sync", "peer": "\(name)"])
                }
                : nil
            let ledger = try rules.contains(where: \.accepts) ? DeliveryLedger(path: base.appendingPathComponent("from-\(safe).ledger").path) : nil
            peers[name] = RelayPeer(service: self, name: name, rules: rules, queue: queue, ledger: ledger)
            if let queue, queue.depth.messages > 0 {
                logger.notice("relay queue recovered \(queue.depth.messages) unsettled messages for \(name)",
                              metadata: ["event": "relay_recovered", "peer": "\(name)", "messages": "\(queue.depth.messages)", "bytes": "\(queue.depth.bytes)"])
            }
        }
        updateDepth()
    }

    func start() {
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        broker.onMessage = { loopBound.value.fromBroker($0) }
        broker.onRelease = { id, complete in loopBound.value.released(packetID: id, complete: complete) }
        broker.onOversized = { publish in
            let service = loopBound.value
            service.metrics.droppedTooLarge.increment()
            service.logger.error("relay dropped a message of \(publish.size) bytes on \"\(publish.topic)\": larger than the relay's limit (\(RelayBrokerClient.maximumPacketSize) bytes); acknowledged to the broker so it does not block the session",
                                 metadata: ["event": "relay_dropped", "reason": "too_large", "topic": "\(publish.topic)", "bytes": "\(publish.size)"])
        }
        for peer in peers.values {
            broker.reserve(peer.recoveredPacketIDs)
            peer.start()
        }
        broker.onSessionLost = { loopBound.value.sessionLost(firstConnection: $0) }
        broker.onConnected = {
            let service = loopBound.value
            service.logger.notice("relay connected to the local broker", metadata: ["event": "relay_broker_connected", "broker": "\(service.configuration.broker)"])
        }
        broker.start()
        logger.notice("relay started", metadata: ["event": "relay_started", "rules": "\(configuration.rules.count)", "peers": "\(peers.keys.sorted().joined(separator: ","))"])
    }

    func stop() {
        broker.stop()
        for peer in peers.values { peer.queue?.close() }
    }

    func updateDepth() {
        metrics.queueMessages.set(Int64(peers.values.reduce(0) { $0 + ($1.queue?.depth.messages ?? 0) }))
    }

    // MARK: Link

    /// A link to `peer` came up and we dialled it: open the relay stream.
    func linkUp(_ link: LinkConnection, peer name: String) {
        guard let peer = peers[name] else { return }
        let endpoint = RelayStreamEndpoint(peer: peer)
        endpoint.attach(link.openStream(service: Self.streamName, origin: "relay", endpoint: endpoint))
    }

    /// The peer opened the relay stream on a link it dialled.
    func accept(_ stream: LinkStream, peer name: String) -> Bool {
        guard let peer = peers[name] else { return false }
        let endpoint = RelayStreamEndpoint(peer: peer)
        endpoint.attach(stream)
        stream.endpoint = endpoint
        return true
    }

    // MARK: From the local broker

    private func fromBroker(_ incoming: RelayBrokerClient.Incoming) {
        let publish = incoming.publish
        if version == .v3_1_1 && consumeEcho(topic: publish.topic, payload: publish.payload) {
            metrics.echoSuppressed.increment()
            incoming.acknowledge()
            return
        }
        var targets: [(RelayPeer, RelayRule, String)] = []
        for peer in peers.values {
            if let (rule, wire) = peer.outgoing(publish.topic) { targets.append((peer, rule, wire)) }
        }
        guard !targets.isEmpty else {
            incoming.acknowledge()
            return
        }
        // A QoS 2 delivery is recognised by its packet id until the broker's PUBREL: a
        // redelivery (after our restart or reconnect) of one already queued only needs PUBREC.
        let brokerPacketID = publish.qos == .exactlyOnce ? publish.packetIdentifier ?? 0 : 0
        if brokerPacketID != 0 && publish.dup {
            targets.removeAll { $0.0.queue?.holdsUnreleased(packetID: brokerPacketID) ?? false }
        }
        guard !targets.isEmpty else {
            metrics.duplicates.increment()
            incoming.acknowledge()
            return
        }
        let intake = RelayIntake(remaining: targets.count, acknowledge: incoming.acknowledge)
        let now = Self.nowMilliseconds()
        for (peer, rule, wire) in targets {
            var expiry: UInt32 = 0
            var carried = Properties()
            for property in publish.properties {
                switch property {
                case .messageExpiryInterval(let seconds): expiry = max(seconds, 1)
                case .responseTopic(let topic):
                    carried.append(.responseTopic(TopicMapping.remap(topic, from: rule.localPrefix, to: rule.remotePrefix) ?? topic))
                case .payloadFormatIndicator, .contentType, .correlationData, .userProperty: carried.append(property)
                default: break  // topic alias, subscription identifiers: meaningful on this hop only
                }
            }
            var block = ByteBuffer()
            if !carried.isEmpty { carried.write(to: &block) }
            let qos = min(publish.qos.rawValue, rule.qos)
            let message = RelayMessage(sequence: 0, topic: wire, qos: qos, retain: publish.retain, properties: block, payload: publish.payload,
                                       queuedAt: now, expirySeconds: expiry, brokerPacketID: brokerPacketID)
            peer.enqueue(message, intake: intake)
        }
    }

    /// The broker kept no session for the relay. While the relay runs, that means the broker
    /// restarted without persistence (or expired the session): what it received on relayed
    /// topics while the relay was not connected was not kept for it, and nothing says how
    /// much. At the first connection it is only news when the queues still held the broker's
    /// QoS 2 deliveries (the relay ran before, and the broker has since forgotten it).
    private func sessionLost(firstConnection: Bool) {
        let forgotten = peers.values.reduce(0) { $0 + ($1.queue?.forgetUnreleased() ?? 0) }
        guard !firstConnection || forgotten > 0 else { return }
        metrics.brokerSessionsLost.increment()
        logger.warning("the local broker kept no session for the relay (restarted without persistence, or the session expired): messages it received on relayed topics while the relay was not connected were not kept for it\(forgotten > 0 ? "; \(forgotten) QoS 2 deliveries it had not released are forgotten" : "") — give the broker `persistence true` (mosquitto) so that a restart keeps them",
                       metadata: ["event": "relay_broker_session_lost", "forgotten_qos2": "\(forgotten)"])
    }

    /// The broker released a QoS 2 packet id: record it in every queue holding it, then PUBCOMP.
    /// If a record cannot be written, no PUBCOMP: the queue holds the id again, and the
    /// broker, after the reconnect, sends the PUBREL again. (A PUBCOMP would let the broker
    /// reuse the id while the disk still shows it held: after a restart its next message
    /// with that id would be taken for the old one, and lost.)
    private func released(packetID: UInt16, complete: @escaping () -> Void) {
        let writes = peers.values.compactMap { $0.queue?.release(packetID: packetID, on: eventLoop) }
        guard !writes.isEmpty else {
            complete()
            return
        }
        let loopBound = NIOLoopBound((self, complete), eventLoop: eventLoop)
        EventLoopFuture.whenAllComplete(writes, on: eventLoop).whenSuccess { results in
            let (service, complete) = loopBound.value
            for case .failure(let error) in results {
                // No PUBCOMP: after the reconnect the broker sends the PUBREL again.
                service.queueWriteFailed(error, peer: nil, what: "could not record a QoS 2 release (packet id \(packetID))")
                return
            }
            service.queueWriteSucceeded()
            complete()
        }
    }

    // MARK: Queue write failures

    /// Failed queue writes: since the disk last took a write, and the holds (which set the
    /// next one's length) since the last failure-free half minute.
    private var writeFailures = (sinceSuccess: 0, holds: 0, first: NIODeadline?.none, last: NIODeadline.uptimeNanoseconds(0))
    private var writeFailureLog = OccasionalLog(interval: .seconds(60))
    private var holdingBrokerUntil = NIODeadline.uptimeNanoseconds(0)

    /// A queue write failed (a full or failing disk). What it held was not acknowledged to
    /// the broker, which keeps it for the relay's session: stay away from the broker for a
    /// while (1, 2, 4, 8, then every 10 s) instead of reconnecting at once into the same
    /// failure, and say so at most once a minute, with a count, not once per batch. (A
    /// full disk flaps: each settled message frees room that the next redelivery fills.)
    func queueWriteFailed(_ error: any Error, peer: String?, what: String = "write failed") {
        metrics.queueWriteErrors.increment()
        let now = NIODeadline.now()
        if now - writeFailures.last > .seconds(30) { writeFailures.holds = 0 }
        writeFailures.last = now
        writeFailureLog.occurred()
        writeFailures.sinceSuccess += 1
        if writeFailures.first == nil { writeFailures.first = now }
        // Batches that were on their way when the hold began fail too: one hold covers them.
        guard now >= holdingBrokerUntil else { return }
        writeFailures.holds += 1
        let hold = TimeAmount.milliseconds(Int64(min(10_000, 1_000 << min(writeFailures.holds - 1, 4))))
        holdingBrokerUntil = now + hold
        if let failed = writeFailureLog.due(at: now) {
            var metadata: Logger.Metadata = ["event": "relay_queue_error", "failed_writes": "\(failed)", "retry_ms": "\(hold.nanoseconds / 1_000_000)"]
            if let peer { metadata["peer"] = "\(peer)" }
            logger.error("relay queue \(what): \(error); the local broker keeps the messages for this relay's session; reconnecting to it in \(hold.nanoseconds / 1_000_000) ms (said at most once a minute: failed_writes counts since the last time)",
                         metadata: metadata)
        }
        broker.reconnect(holdingUntil: holdingBrokerUntil)
    }

    private var ledgerFailureLog = OccasionalLog(interval: .seconds(60))

    /// The delivery ledger could not be written: acknowledgements to the peer wait for it (a
    /// message acknowledged but not recorded would be published again after a restart).
    /// Counted; said at most once a minute.
    func ledgerWriteFailed(_ error: String, peer: String) {
        metrics.ledgerWriteErrors.increment()
        ledgerFailureLog.occurred()
        guard let failed = ledgerFailureLog.due(at: .now()) else { return }
        logger.error("relay delivery ledger write failed: \(error); acknowledgements to \(peer) wait until it succeeds (retried every second; said at most once a minute)",
                     metadata: ["event": "relay_ledger_error", "peer": "\(peer)", "failed_writes": "\(failed)"])
    }

    func ledgerWriteSucceeded(peer: String) {
        guard ledgerFailureLog.hasSaid else { return }
        logger.notice("relay delivery ledger writes succeed again", metadata: ["event": "relay_ledger_recovered", "peer": "\(peer)"])
        ledgerFailureLog.reset()
    }

    /// A queue write succeeded: says that writes work again after failing, and for how long they had.
    func queueWriteSucceeded() {
        guard let first = writeFailures.first else { return }
        let seconds = String(format: "%.1f", Double((NIODeadline.now() - first).nanoseconds) / 1e9)
        logger.notice("relay queue writes succeed again, after \(writeFailures.sinceSuccess) failed writes over \(seconds) s",
                      metadata: ["event": "relay_queue_recovered", "failed_writes": "\(writeFailures.sinceSuccess)", "seconds": "\(seconds)"])
        writeFailures.sinceSuccess = 0
        writeFailures.first = nil
    }

    /// Notes a publication of ours that our own subscription will deliver back (3.1.1).
    func expectEcho(topic: String, payload: ByteBuffer) {
        guard version == .v3_1_1, outFilters.contains(where: { $0.matches(topic) }) else { return }
        let now = NIODeadline.now()
        if now > echoSweep {
            echoes = echoes.filter { $0.value.expires > now }
            echoSweep = now + .seconds(10)
        }
        // Kept for up to a minute: a copy, not a slice that would pin a whole read buffer.
        let key = EchoKey(topic: topic, payload: ByteBuffer(copying: payload))
        echoes[key] = ((echoes[key]?.count ?? 0) + 1, now + .seconds(60))
    }

    private func consumeEcho(topic: String, payload: ByteBuffer) -> Bool {
        guard !echoes.isEmpty else { return false }
        let key = EchoKey(topic: topic, payload: payload)
        guard let entry = echoes[key], entry.expires > .now() else { return false }
        echoes[key] = entry.count > 1 ? (entry.count - 1, entry.expires) : nil
        return true
    }

    static func nowMilliseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }
}

@available(*, unavailable)
extension RelayService: Sendable {}

/// One message from the local broker going to one or more peers: acknowledged to the broker
/// once every copy is on disk.
final class RelayIntake {
    private var remaining: Int
    private var acknowledge: (() -> Void)?

    init(remaining: Int, acknowledge: @escaping () -> Void) {
        self.remaining = remaining
        self.acknowledge = acknowledge
    }

    func done() {
        remaining -= 1
        if remaining == 0, let acknowledge {
            self.acknowledge = nil
            acknowledge()
        }
    }
}

@available(*, unavailable)
extension RelayIntake: Sendable {}

/// The relay with one peer: the sending half (queue, stream, pacing) and the receiving half
/// (rules, ACL, ledger).
final class RelayPeer {
    private struct Key: Hashable {
        var epoch: UInt64
        var sequence: UInt64
    }

    unowned let service: RelayService
    let name: String
    private let outRules: [(rule: RelayRule, filter: TopicFilter)]
    /// `in` rules with the filter as it appears on the wire (`remotePrefix + filter`).
    private let inRules: [(rule: RelayRule, filter: TopicFilter)]
    let queue: DurableQueue?
    private let ledger: DeliveryLedger?
    private var streams: [RelayStreamEndpoint] = []
    private var current: RelayStreamEndpoint? { streams.last }
    /// QoS 0 messages that came while the stream could not take them (its window shut or the
    /// link not writable): sent, in order, once it can. Dropping them instead lost 24,692 of a
    /// 40,000-message burst on a healthy link (RelayTests.qos0Burst); mosquitto's bridge keeps
    /// them in its socket's queue. Bounded: beyond `maximumBacklogBytes` new ones are dropped
    /// (counted, `qos0_backlog_full`), and with no stream at all they are (`qos0_no_link`).
    private var backlog = CircularBuffer<RelayMessage>()
    private var backlogBytes = 0
    static let maximumBacklogBytes = 8 << 20
    /// Highest sequence sent on the current stream; reset when the stream changes.
    private var sentUpTo: UInt64 = 0
    /// Messages up to this sequence were queued before the stream came up: paced.
    private var replayUntil: UInt64 = 0
    private var tokens = 0.0
    private var lastRefill = NIODeadline.now()
    private lazy var pumpRequest = CoalescedAction<RelayPeer>(on: service.eventLoop) { $0.pump() }
    /// Queued messages not yet on disk, in sequence order, with their broker acknowledgement.
    private var awaitingDisk: [(sequence: UInt64, intake: RelayIntake)] = []
    private var awaitingDiskHead = 0
    /// `when_full: block`: messages waiting for room (their broker acknowledgement waits too).
    private var blocked: [(RelayMessage, RelayIntake)] = []
    private var inProgress: Set<Key> = []
    private var pendingAcknowledgements: [UInt64: [(sequence: UInt64, outcome: RelayRecord.Outcome)]] = [:]
    private var ledgerRetryScheduled = false
    private lazy var acknowledgementRequest = CoalescedAction<RelayPeer>(on: service.eventLoop) { $0.sendAcknowledgements() }
    private var policy: (generation: Int, policy: ACLPolicy)?
    /// Per topic from the local broker: the index of the `out` rule taking it, and the wire topic.
    private var outgoingMemo = TopicMemo<(Int, String)?>()
    private enum Acceptance {
        case accepted(rule: Int, local: String)
        case noRule
        case denied(local: String)
    }
    /// Per wire topic from the peer: accepted (rule index, local topic) or refused.
    private var acceptanceMemo = TopicMemo<Acceptance>()
    private var acceptanceGeneration = -1
    /// Remembers the topic of the last refusal it left out.
    private var refusalLog = DenialLogWindow<String>()

    init(service: RelayService, name: String, rules: [RelayRule], queue: DurableQueue?, ledger: DeliveryLedger?) {
        self.service = service
        self.name = name
        self.queue = queue
        self.ledger = ledger
        outRules = rules.filter(\.sends).compactMap { rule in (try? TopicFilter(rule.localFilter)).map { (rule, $0) } }
        inRules = rules.filter(\.accepts).compactMap { rule in (try? TopicFilter(rule.remotePrefix + rule.filter)).map { (rule, $0) } }
    }

    private var logger: Logger { service.logger }
    private var metrics: RelayMetrics { service.metrics }

    /// The first `out` rule for a local topic, and the topic on the wire.
    func outgoing(_ topic: String) -> (RelayRule, String)? {
        let found = outgoingMemo.value(for: topic) { () -> (Int, String)? in
            for (index, (rule, filter)) in outRules.enumerated() where filter.matches(topic) {
                if let wire = TopicMapping.remap(topic, from: rule.localPrefix, to: rule.remotePrefix) { return (index, wire) }
            }
            return nil
        }
        return found.map { (outRules[$0.0].rule, $0.1) }
    }

    // MARK: Sending

    func enqueue(_ message: RelayMessage, intake: RelayIntake) {
        guard message.qos > 0 else {
            sendUnqueued(message)
            intake.done()
            return
        }
        guard queue != nil else {
            intake.done()
            return
        }
        // Keep order: while anything is blocked, newcomers wait behind it.
        if !blocked.isEmpty || !tryAppend(message, intake: intake) {
            if blocked.isEmpty {
                metrics.queueFull.increment()
                logger.warning("relay queue to \(name) is full (\(service.configuration.maximumQueueBytes) bytes): holding new messages at the local broker until the peer catches up",
                               metadata: ["event": "relay_queue_full", "peer": "\(name)", "policy": "block"])
            }
            blocked.append((message, intake))
        }
    }

    /// Hears from the queue's writer thread how far the disk has caught up.
    func start() {
        guard let queue else { return }
        let loopBound = NIOLoopBound(self, eventLoop: service.eventLoop)
        let eventLoop = service.eventLoop
        queue.onDurable { upTo, error in
            eventLoop.execute { loopBound.value.madeDurable(upTo: upTo, error: error) }
        }
    }

    /// Messages up to `upTo` are on disk: acknowledge them to the broker, and let QoS 2 go to
    /// the peer (see DurableQueue.pending). On a write error they are not acknowledged, so
    /// they are not lost: the broker still holds them for our session, and reconnecting (after
    /// a hold: `RelayService.queueWriteFailed`) makes it send them again.
    private func madeDurable(upTo: UInt64, error: DurableQueue.AppendError?) {
        var index = awaitingDiskHead
        while index < awaitingDisk.count && awaitingDisk[index].sequence <= upTo {
            if error == nil { awaitingDisk[index].intake.done() }
            index += 1
        }
        awaitingDiskHead = index
        if awaitingDiskHead > 1024 && awaitingDiskHead * 2 > awaitingDisk.count {
            awaitingDisk.removeFirst(awaitingDiskHead)
            awaitingDiskHead = 0
        }
        if let error {
            service.queueWriteFailed(error, peer: name)
        } else {
            service.queueWriteSucceeded()
            schedulePump()
        }
    }

    /// Appends; false when the queue is full under the `block` policy.
    private func tryAppend(_ message: RelayMessage, intake: RelayIntake) -> Bool {
        guard let queue else { return true }
        var result = queue.tryAppend(message)
        if case .failure(.full) = result, service.configuration.whenFull == .dropOldest {
            let dropped = queue.dropOldest(toFit: message.encodedSize)
            metrics.droppedFull.increment(by: Int64(dropped.count))
            metrics.queueFull.increment()
            logger.warning("relay queue to \(name) is full: dropped the \(dropped.count) oldest messages (when_full: drop_oldest)",
                           metadata: ["event": "relay_dropped", "reason": "queue_full", "peer": "\(name)", "count": "\(dropped.count)",
                                      "oldest_topic": "\(dropped.first?.topic ?? "")"])
            result = queue.tryAppend(message)
            if case .failure(.full) = result {
                metrics.droppedFull.increment()
                logger.warning("relay message of \(message.encodedSize) bytes is larger than the whole queue: dropped",
                               metadata: ["event": "relay_dropped", "reason": "queue_full", "peer": "\(name)", "topic": "\(message.topic)"])
                intake.done()
                return true
            }
        }
        switch result {
        case .success(let sequence):
            metrics.queued.increment()
            // QoS 1 may leave before it is on disk (see DurableQueue.pending).
            if message.qos == 1 { schedulePump() }
            // Acknowledged to the broker once on disk (`madeDurable`).
            awaitingDisk.append((sequence, intake))
            return true
        case .failure(.full):
            return false
        case .failure(let error):
            logger.error("relay queue refused a message: \(error)", metadata: ["event": "relay_queue_error", "peer": "\(name)"])
            service.broker.reconnect()
            return true
        }
    }

    private func retryBlocked() {
        while let (message, intake) = blocked.first {
            guard tryAppend(message, intake: intake) else { return }
            blocked.removeFirst()
        }
    }

    private func sendUnqueued(_ message: RelayMessage) {
        guard let stream = current, stream.isOpen else {
            metrics.droppedNoLink.increment()
            return
        }
        if backlog.isEmpty && stream.canSend {
            sendUnqueued(message, on: stream)
        } else if backlogBytes + message.encodedSize <= Self.maximumBacklogBytes {
            // Copies, not slices: a slice kept until the window opens pins the broker's read buffer.
            var message = message
            message.properties = ByteBuffer(copying: message.properties)
            message.payload = ByteBuffer(copying: message.payload)
            backlog.append(message)
            backlogBytes += message.encodedSize
        } else {
            metrics.droppedBacklogFull.increment()
        }
        // One flush for everything this event-loop turn produced (the pump flushes).
        schedulePump()
    }

    /// Sends the QoS 0 backlog while the stream takes it.
    private func drainBacklog(_ stream: RelayStreamEndpoint) {
        while stream.canSend, let message = backlog.popFirst() {
            backlogBytes -= message.encodedSize
            sendUnqueued(message, on: stream)
        }
    }

    private func sendUnqueued(_ message: RelayMessage, on stream: RelayStreamEndpoint) {
        stream.send(.message(epoch: queue?.epoch ?? 0, floor: 0, message))
        metrics.sent.increment()
    }

    func schedulePump() { pumpRequest.request(for: self) }

    /// Sends queued messages the peer has not seen on this stream, while the stream has window.
    private func pump() {
        guard let stream = current, stream.isOpen else { return }
        drainBacklog(stream)
        guard let queue else {
            stream.flush()
            return
        }
        let configuration = service.configuration
        let now = RelayService.nowMilliseconds()
        let maximumAge = UInt64(configuration.maximumAge.nanoseconds / 1_000_000)
        let floor = queue.floor
        var settledHere: [UInt64] = []
        var droppedAge = 0
        var droppedExpired = 0
        var paced = false
        outer: while stream.canSend {
            let batch = queue.pending(after: sentUpTo, limit: 128)
            if batch.isEmpty { break }
            for var message in batch {
                let age = now > message.queuedAt ? now - message.queuedAt : 0
                if age > maximumAge {
                    settledHere.append(message.sequence)
                    sentUpTo = message.sequence
                    droppedAge += 1
                    continue
                }
                if message.expirySeconds > 0 {
                    // Send the remaining lifetime, as a broker does when it forwards.
                    let remaining = Int64(message.expirySeconds) - Int64(age / 1000)
                    if remaining <= 0 {
                        settledHere.append(message.sequence)
                        sentUpTo = message.sequence
                        droppedExpired += 1
                        continue
                    }
                    message.expirySeconds = UInt32(remaining)
                }
                if message.sequence <= replayUntil {
                    let clock = NIODeadline.now()
                    let rate = Double(max(configuration.replayRate, 1))
                    tokens = min(rate / 10, tokens + Double((clock - lastRefill).nanoseconds) / 1e9 * rate)
                    lastRefill = clock
                    if tokens < 1 {
                        paced = true
                        break outer
                    }
                    tokens -= 1
                    metrics.resent.increment()
                }
                stream.send(.message(epoch: queue.epoch, floor: floor, message))
                sentUpTo = message.sequence
                metrics.sent.increment()
                if !stream.canSend { break outer }
            }
        }
        stream.flush()
        if !settledHere.isEmpty {
            queue.acknowledge(settledHere)
            metrics.droppedAge.increment(by: Int64(droppedAge))
            metrics.droppedExpired.increment(by: Int64(droppedExpired))
            logger.warning("relay dropped \(droppedAge) messages older than max_age and \(droppedExpired) past their message expiry",
                           metadata: ["event": "relay_dropped", "reason": "age", "peer": "\(name)", "max_age": "\(droppedAge)", "expired": "\(droppedExpired)"])
            retryBlocked()
            service.updateDepth()
        }
        if paced {
            let loopBound = NIOLoopBound(self, eventLoop: service.eventLoop)
            service.eventLoop.scheduleTask(in: .milliseconds(10)) { loopBound.value.schedulePump() }
        }
    }

    // MARK: Stream events

    func streamOpened(_ stream: RelayStreamEndpoint) {
        streams.append(stream)
        // A new stream starts from the oldest unsettled message: the peer's ledger turns
        // anything it already published into a plain acknowledgement.
        sentUpTo = 0
        replayUntil = queue?.lastSequence ?? 0
        tokens = 0
        lastRefill = .now()
        logger.notice("relay stream to \(name) open", metadata: ["event": "relay_stream_up", "peer": "\(name)",
                                                                  "backlog": "\(queue?.depth.messages ?? 0)"])
        schedulePump()
    }

    func streamClosed(_ stream: RelayStreamEndpoint, reason: String) {
        let wasCurrent = current === stream
        streams.removeAll { $0 === stream }
        guard stream.wasOpen else {
            logger.warning("relay stream to \(name) not accepted: \(reason)", metadata: ["event": "relay_stream_refused", "peer": "\(name)"])
            return
        }
        logger.notice("relay stream to \(name) closed: \(reason)", metadata: ["event": "relay_stream_down", "peer": "\(name)"])
        if current == nil, !backlog.isEmpty {
            // At most once: with no stream left, what waited for the window is gone.
            metrics.droppedNoLink.increment(by: Int64(backlog.count))
            backlog.removeAll()
            backlogBytes = 0
        }
        if wasCurrent, current != nil {
            sentUpTo = 0
            replayUntil = queue?.lastSequence ?? 0
            schedulePump()
        }
    }

    func windowOpened(_ stream: RelayStreamEndpoint) {
        if stream === current { schedulePump() }
    }

    // MARK: Receiving

    func received(_ record: RelayRecord, size: Int, from stream: RelayStreamEndpoint) {
        switch record {
        case .acknowledgement(let epoch, let entries):
            stream.consumed(size)
            guard let queue, epoch == queue.epoch else { return }
            var refused: [RelayRecord.Outcome: Int] = [:]
            for entry in entries where entry.outcome != .delivered { refused[entry.outcome, default: 0] += 1 }
            queue.acknowledge(entries.map(\.sequence))
            metrics.settled.increment(by: Int64(entries.count))
            if !refused.isEmpty {
                metrics.refusedByPeer.increment(by: Int64(refused.values.reduce(0, +)))
                logger.warning("\(name) refused \(refused.values.reduce(0, +)) relayed messages (no in rule: \(refused[.noRule] ?? 0), its ACL: \(refused[.denied] ?? 0))",
                               metadata: ["event": "relay_refused_by_peer", "peer": "\(name)"])
            }
            retryBlocked()
            service.updateDepth()
            schedulePump()
        case .message(let epoch, let floor, let message):
            receive(message, epoch: epoch, floor: floor, size: size, from: stream)
        }
    }

    private func receive(_ message: RelayMessage, epoch: UInt64, floor: UInt64, size: Int, from stream: RelayStreamEndpoint) {
        // The closures below capture `sequence`, never `message`: its payload is a slice of the
        // link's TLS read buffer, which must not be kept (see InlineFramer).
        let sequence = message.sequence
        let key = Key(epoch: epoch, sequence: sequence)
        let queued = sequence != 0
        if queued, let ledger {
            ledger.forget(epoch: epoch, below: floor)
            if ledger.contains(epoch: epoch, sequence: message.sequence) {
                metrics.duplicates.increment()
                acknowledge(key, .delivered)
                stream.consumed(size)
                return
            }
            if inProgress.contains(key) {
                // Resent while the first copy is still on its way to the broker: that one
                // will be acknowledged.
                metrics.duplicates.increment()
                stream.consumed(size)
                return
            }
        }
        let ruleIndex: Int, local: String
        switch acceptance(message.topic) {
        case .accepted(let index, let accepted):
            (ruleIndex, local) = (index, accepted)
        case .noRule:
            refuse(message, key: key, .noRule, "no relay rule of this site accepts \"\(message.topic)\" from \(name)", size: size, stream: stream)
            return
        case .denied(let refused):
            // Refused (rare): ask the policy again for the rule and reason to log.
            guard let policy = currentPolicy() else {
                refuse(message, key: key, .denied, "this site has no ACL, so nothing from peers is accepted", size: size, stream: stream)
                return
            }
            let decision = policy.decide(topic: refused, access: .write)
            refuse(message, key: key, .denied, "\(name) may not write \"\(refused)\": \(decision)", size: size, stream: stream, rule: decision.rule)
            return
        }
        let rule = inRules[ruleIndex].rule
        var properties = Properties()
        if service.version == .v5 {
            if message.properties.readableBytes > 0, let carried = try? Properties.decode(block: message.properties, context: .publish) {
                for property in carried {
                    if case .responseTopic(let topic) = property {
                        properties.append(.responseTopic(TopicMapping.remap(topic, from: rule.remotePrefix, to: rule.localPrefix) ?? topic))
                    } else {
                        properties.append(property)
                    }
                }
            }
            if message.expirySeconds > 0 { properties.append(.messageExpiryInterval(message.expirySeconds)) }
        }
        let qos = QoS(rawValue: min(message.qos, rule.qos)) ?? .atLeastOnce
        // The payload is a slice of the link's TLS read buffer. A QoS 1/2 message is kept until
        // the broker acknowledges it; a slice kept that long would make the TLS handler copy
        // its whole buffer on its next read (copy-on-write), so keep a copy of the payload.
        let payload = qos == .atMostOnce ? message.payload : ByteBuffer(copying: message.payload)
        let publish = Publish(qos: qos, retain: message.retain, topic: local, packetIdentifier: nil, properties: properties, payload: payload)
        service.expectEcho(topic: local, payload: message.payload)
        if queued { inProgress.insert(key) }
        let loopBound = NIOLoopBound(self, eventLoop: service.eventLoop)
        let streamBound = NIOLoopBound(stream, eventLoop: service.eventLoop)
        var outgoing = RelayBrokerClient.Outgoing(publish: publish) {
            let peer = loopBound.value
            peer.metrics.published.increment()
            if queued {
                peer.ledger?.record(epoch: epoch, sequence: sequence)
                peer.inProgress.remove(key)
                peer.acknowledge(key, .delivered)
            }
            streamBound.value.consumed(size)
        }
        if queued, publish.qos == .exactlyOnce, let ledger {
            // Exactly once at this broker too: the packet id is recorded before the PUBLISH
            // and PUBREC before the PUBREL, so a restart resumes the same exchange, which the
            // broker (persistent session) recognises, rather than publishing again.
            if let intent = ledger.intents[DeliveryLedger.Key(epoch: epoch, sequence: message.sequence)] {
                outgoing.packetID = intent.packetID
                outgoing.released = intent.released
            }
            outgoing.beforeSend = { id in loopBound.value.ledger?.recordIntent(epoch: epoch, sequence: sequence, packetID: id) }
            outgoing.beforeRelease = { loopBound.value.ledger?.recordReleased(epoch: epoch, sequence: sequence) }
        }
        service.broker.publish(outgoing)
    }

    /// Packet ids of QoS 2 exchanges this site's ledger recorded before a restart.
    var recoveredPacketIDs: [UInt16] { ledger?.intents.values.map(\.packetID) ?? [] }

    private func refuse(_ message: RelayMessage, key: Key, _ outcome: RelayRecord.Outcome, _ text: String, size: Int, stream: RelayStreamEndpoint, rule: ACLRule? = nil) {
        metrics.refusedHere.increment()
        // Rate-limited as the proxy's denials are: a peer relaying what this site refuses
        // (a misconfiguration as often as an attack) would otherwise log a line per message.
        switch refusalLog.denial(message.topic, at: .now(), perSecond: DenialLogLimit.perConnectionPerSecond, budget: .process) {
        case .log:
            var metadata: Logger.Metadata = ["event": "relay_refused", "peer": "\(name)", "topic": "\(message.topic)",
                                             "reason": "\(outcome == .noRule ? "no_rule" : "acl")"]
            if let rule { metadata["rule"] = "\(rule.location)" }
            logger.warning("refused a relayed message: \(text)", metadata: metadata)
        case .suppressFirst(let deadline):
            let loopBound = NIOLoopBound(self, eventLoop: service.eventLoop)
            service.eventLoop.scheduleTask(deadline: deadline) { loopBound.value.reportSuppressedRefusals() }
        case .suppress:
            break
        }
        if key.sequence != 0 {
            ledger?.record(epoch: key.epoch, sequence: key.sequence)
            acknowledge(key, outcome)
        }
        stream.consumed(size)
    }

    private func reportSuppressedRefusals() {
        guard let (count, lastTopic) = refusalLog.takeSuppressed() else { return }
        logger.warning("refused \(count) more relayed messages than are logged one by one (\(DenialLogLimit.perConnectionPerSecond)/s per peer)",
                       metadata: ["event": "relay_refused_suppressed", "peer": "\(name)", "count": "\(count)", "last_topic": "\(lastTopic)"])
    }

    /// The first `in` rule accepting a wire topic (its index), and the local topic.
    private func incoming(_ topic: String) -> (index: Int, local: String)? {
        for (index, (rule, filter)) in inRules.enumerated() where filter.matches(topic) {
            if let local = TopicMapping.remap(topic, from: rule.remotePrefix, to: rule.localPrefix) { return (index, local) }
        }
        return nil
    }

    /// Whether a wire topic is accepted (an `in` rule takes it and this site's ACL lets the
    /// peer write the local topic): from the memo, which an ACL reload empties.
    private func acceptance(_ topic: String) -> Acceptance {
        let generation = service.aclStore?.generation ?? -1
        if generation != acceptanceGeneration {
            acceptanceMemo.removeAll()
            acceptanceGeneration = generation
        }
        return acceptanceMemo.value(for: topic) {
            guard let (index, local) = incoming(topic) else { return .noRule }
            guard let policy = currentPolicy(), policy.decide(topic: local, access: .write).isAllowed else { return .denied(local: local) }
            return .accepted(rule: index, local: local)
        }
    }

    private func currentPolicy() -> ACLPolicy? {
        guard let store = service.aclStore else { return nil }
        if let policy, policy.generation == store.generation { return policy.policy }
        let snapshot = store.current
        let fresh = snapshot.acl.policy(for: .peer(name))
        policy = (snapshot.generation, fresh)
        return fresh
    }

    private func acknowledge(_ key: Key, _ outcome: RelayRecord.Outcome) {
        pendingAcknowledgements[key.epoch, default: []].append((key.sequence, outcome))
        acknowledgementRequest.request(for: self)
    }

    private func sendAcknowledgements() {
        // What the acknowledgements report is recorded first; while the disk refuses that,
        // they wait (the sender keeps the messages), and the records are tried again.
        if let ledger, !ledger.flush() {
            service.ledgerWriteFailed(ledger.lastWriteError, peer: name)
            if !ledgerRetryScheduled {
                ledgerRetryScheduled = true
                let loopBound = NIOLoopBound(self, eventLoop: service.eventLoop)
                service.eventLoop.scheduleTask(in: .seconds(1)) {
                    let peer = loopBound.value
                    peer.ledgerRetryScheduled = false
                    peer.sendAcknowledgements()
                }
            }
            return
        }
        service.ledgerWriteSucceeded(peer: name)
        // Any open stream will do; with none the sender resends and the ledger answers.
        guard let stream = streams.last(where: \.isOpen) else {
            pendingAcknowledgements.removeAll()
            return
        }
        for (epoch, entries) in pendingAcknowledgements {
            var index = 0
            while index < entries.count {
                let chunk = Array(entries[index..<min(index + 4096, entries.count)])
                stream.send(.acknowledgement(epoch: epoch, chunk))
                index += chunk.count
            }
        }
        pendingAcknowledgements.removeAll()
        stream.flush()
    }
}

@available(*, unavailable)
extension RelayPeer: Sendable {}

/// The relay's end of a link stream: frames relay records out of the byte stream.
final class RelayStreamEndpoint: LinkStreamEndpoint {
    /// Strong (read for every message; see `MQTTStreamEndpoint.stream`), dropped when the
    /// stream is aborted or finished.
    private(set) var stream: LinkStream?
    unowned let peer: RelayPeer
    private var inbound = ByteBuffer.noBytes
    private var closed = false
    private(set) var wasOpen = false
    private var credit = IncompleteUnitCredit()

    init(peer: RelayPeer) { self.peer = peer }

    /// Not a stream that was aborted already (opening it can close a failing link at once).
    func attach(_ stream: LinkStream) {
        if !closed { self.stream = stream }
    }

    var isOpen: Bool { !closed && (stream?.isOpen ?? false) }
    var canSend: Bool {
        guard isOpen, let stream else { return false }
        return stream.sendWindow > 0 && stream.link.isWritable
    }

    func send(_ record: RelayRecord) {
        // Encoded straight into the link's output buffer.
        stream?.send(size: record.encodedSize) { record.write(to: &$0) }
    }

    func consumed(_ count: Int) { if !closed { stream?.consumed(count) } }
    func flush() { stream?.link.flushIfNeeded() }

    // MARK: LinkStreamEndpoint

    func opened() {
        guard !closed, !wasOpen else { return }
        wasOpen = true
        peer.streamOpened(self)
    }

    func deliver(_ bytes: ByteBuffer, fin: Bool) {
        if inbound.readableBytes == 0 {
            inbound = bytes  // whole records, the common case: read in place, no copy
        } else {
            var bytes = bytes
            inbound.writeBuffer(&bytes)
        }
        do {
            while !closed, let (record, size) = try RelayRecord.read(from: &inbound) {
                peer.received(record, size: credit.taken(size), from: self)
            }
            // Let go of the link's read buffer: the TLS handler reuses it for its next read,
            // and a reference kept here would make it copy the buffer every time. A record
            // still arriving is copied out.
            inbound = inbound.readableBytes == 0 ? .noBytes : ByteBuffer(copying: inbound)
            // A record still arriving (bounded by the record size limit).
            if !closed, inbound.readableBytes > 0 { stream?.consumed(credit.incomplete(buffered: inbound.readableBytes)) }
        } catch {
            stream?.reset("relay protocol error: \(error)")
            return
        }
        if fin { stream?.reset("relay stream ended") }
    }

    func resumeReading() { peer.windowOpened(self) }

    func abort(reason: String) {
        defer { stream = nil }
        guard !closed else { return }
        closed = true
        peer.streamClosed(self, reason: reason)
    }

    func streamFinished() { stream = nil }
}

@available(*, unavailable)
extension RelayStreamEndpoint: Sendable {}
