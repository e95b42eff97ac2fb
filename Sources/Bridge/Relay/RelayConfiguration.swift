import Foundation
public import NIOCore

/// One relay rule, in the spirit of mosquitto's bridge `topic` lines, seen from this site.
///
/// `out`: local messages matching `localPrefix + filter` go to the peer as
/// `remotePrefix + rest`. `in`: messages arriving from the peer are accepted if they match
/// `remotePrefix + filter`, and published here as `localPrefix + rest` — if this site's ACL
/// also lets the peer write there (each site decides what it accepts). `both`: both.
public struct RelayRule: Sendable, Hashable {
    public enum Direction: String, Sendable, Hashable { case `in`, out, both }

    public var peer: String
    public var filter: String
    public var direction: Direction
    public var qos: UInt8
    public var localPrefix: String
    public var remotePrefix: String

    public init(peer: String, filter: String, direction: Direction, qos: UInt8, localPrefix: String = "", remotePrefix: String = "") {
        self.peer = peer
        self.filter = filter
        self.direction = direction
        self.qos = qos
        self.localPrefix = localPrefix
        self.remotePrefix = remotePrefix
    }

    var sends: Bool { direction != .in }
    var accepts: Bool { direction != .out }
    /// The local subscription of an `out` rule.
    var localFilter: String { localPrefix + filter }
}

public struct RelayConfiguration: Sendable, Equatable {
    public enum WhenFull: String, Sendable { case block, dropOldest = "drop_oldest" }

    /// The local broker the relay publishes to and subscribes at.
    public var broker: HostPort
    /// 4 (3.1.1) or 5.
    public var protocolLevel: UInt8
    /// The relay's MQTT client id (a persistent session: the broker keeps messages for it
    /// while the bridge is down).
    public var clientID: String
    public var username: String?
    public var queueDirectory: String
    public var maximumQueueBytes: Int
    /// Queued messages older than this are dropped (counted and logged) instead of sent.
    public var maximumAge: TimeAmount
    /// Messages per second when replaying a backlog after an outage.
    public var replayRate: Int
    public var whenFull: WhenFull
    /// How long the queue's writer gathers appends before one write + fsync. QoS 1 leaves for
    /// the peer before its fsync, so this adds nothing to its latency; it delays only the
    /// acknowledgement to the local broker (and QoS 2), and it saves the disk (and the CPU
    /// its journal commits take) one fsync per message.
    public var commitInterval: TimeAmount
    public var rules: [RelayRule]
    /// The broker socket's receive low watermark at high rates (`ReceiveCoalescing`), as for
    /// a proxy's broker socket; nil: never. The relay's subscription is one such socket:
    /// mosquitto writes each message it delivers on its own, and at full QoS 0 load relay A
    /// woke for most of them.
    var receiveCoalescing: ReceiveCoalescing.Configuration? = .init()
    /// Whether reads of the broker socket are coalesced at high rates (`coalesce_broker_reads`).
    public var coalescesBrokerReads: Bool { receiveCoalescing != nil }

    public init(broker: HostPort, protocolLevel: UInt8 = 4, clientID: String, username: String? = nil, queueDirectory: String,
                maximumQueueBytes: Int = 256 << 20, maximumAge: TimeAmount = .hours(24), replayRate: Int = 20_000, whenFull: WhenFull = .block,
                commitInterval: TimeAmount = .milliseconds(2), rules: [RelayRule]) {
        self.broker = broker
        self.protocolLevel = protocolLevel
        self.clientID = clientID
        self.username = username
        self.queueDirectory = queueDirectory
        self.maximumQueueBytes = maximumQueueBytes
        self.maximumAge = maximumAge
        self.replayRate = replayRate
        self.whenFull = whenFull
        self.commitInterval = commitInterval
        self.rules = rules
    }
}

enum TopicMapping {
    /// Strips `prefix` from `topic` (nil if it does not start with it) and adds `replacement`.
    static func remap(_ topic: String, from prefix: String, to replacement: String) -> String? {
        guard topic.utf8.starts(with: prefix.utf8) else { return nil }
        return replacement + String(Substring(topic.utf8.dropFirst(prefix.utf8.count)))
    }
}

/// The relay cannot use its queue directory: named by its key, with the fix.
public struct RelayQueueDirectoryError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var reason: String
    public var description: String {
        "relay.queue_dir: cannot use \(path): \(reason) — point queue_dir at a writable directory on a local disk (the relay keeps its queues and delivery ledgers there)"
    }

    /// Creates the directory if needed and checks that a file can be written in it.
    public static func check(_ path: String) throws(RelayQueueDirectoryError) {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw RelayQueueDirectoryError(path: path, reason: (error as NSError).localizedDescription)
        }
        let probe = URL(fileURLWithPath: path).appendingPathComponent(".mqbridge-write-check-\(getpid())").path
        guard FileManager.default.createFile(atPath: probe, contents: Data()) else {
            throw RelayQueueDirectoryError(path: path, reason: "not writable")
        }
        try? FileManager.default.removeItem(atPath: probe)
    }
}
