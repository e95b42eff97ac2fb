import Logging
public import NIOCore
import NIOConcurrencyHelpers

/// Settings of one proxy listener (one `proxies:` entry).
public struct ProxyConfiguration: Sendable, Equatable {
    public var name: String
    public var listen: HostPort
    public var broker: HostPort
    /// A client must send CONNECT within this time.
    public var connectTimeout: TimeAmount
    /// Largest packet accepted from either side (whole packet).
    public var maximumPacketSize: Int
    /// Largest first packet (CONNECT) from a client.
    public var maximumConnectPacketSize: Int
    /// Further connections are closed on accept.
    public var maximumConnections: Int
    /// On shutdown, how long sessions may finish in-flight acknowledgements.
    public var drainTimeout: TimeAmount
    public var allowAnonymous: Bool
    /// At most this many broker filters a client may hold through narrowing (see
    /// `ProxySession.Configuration`).
    public var maximumNarrowedFilters: Int
    /// The broker socket's receive low watermark at high rates (`ReceiveCoalescing`); nil: never.
    var receiveCoalescing: ReceiveCoalescing.Configuration? = .init()
    /// Whether reads of the broker socket are coalesced at high rates (`coalesce_broker_reads`).
    public var coalescesBrokerReads: Bool { receiveCoalescing != nil }

    public init(name: String = "proxy", listen: HostPort, broker: HostPort, connectTimeout: TimeAmount = .seconds(10),
                maximumPacketSize: Int = 1 << 20, maximumConnectPacketSize: Int = 128 << 10, maximumConnections: Int = 10_000,
                drainTimeout: TimeAmount = .seconds(5), allowAnonymous: Bool = true, maximumNarrowedFilters: Int = 1000) {
        self.name = name
        self.listen = listen
        self.broker = broker
        self.connectTimeout = connectTimeout
        self.maximumPacketSize = maximumPacketSize
        self.maximumConnectPacketSize = maximumConnectPacketSize
        self.maximumConnections = maximumConnections
        self.drainTimeout = drainTimeout
        self.allowAnonymous = allowAnonymous
        self.maximumNarrowedFilters = maximumNarrowedFilters
    }
}

/// What every connection of one listener shares. Sendable: read from every event loop.
struct ProxyEnvironment: Sendable {
    let configuration: ProxyConfiguration
    let aclStore: ACLStore
    let metrics: BridgeMetrics
    let logger: Logger
    let registry: ConnectionRegistry
    /// Narrowed filters of persistent sessions, shared by the connections that can resume them.
    var narrowingLedger = NarrowingLedger()
}

/// The open client connections of a listener: for max_connections and for draining.
final class ConnectionRegistry: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
    /// Connections refused because the listener was full, for the log.
    private let refusals = RefusalReport()

    /// A new connection of the listener: registered until it closes, or — with `limit` open
    /// already — closed at once after `refused` is called (with the count to log if a
    /// line is due, see `RefusalReport`). True if admitted.
    func admit(_ channel: any Channel, limit: Int, refused: (_ toReport: Int?) -> Void) -> Bool {
        let admitted = channels.withLockedValue { channels in
            guard channels.count < limit else { return false }
            channels[ObjectIdentifier(channel)] = channel
            return true
        }
        guard admitted else {
            refused(refusals.refused())
            channel.close(promise: nil)
            return false
        }
        channel.closeFuture.whenComplete { _ in self.remove(channel) }
        return true
    }

    private func remove(_ channel: any Channel) {
        _ = channels.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    var count: Int { channels.withLockedValue { $0.count } }
    var all: [any Channel] { channels.withLockedValue { Array($0.values) } }
}

/// Sent down a client pipeline to start a graceful close.
struct ProxyShutdownEvent: Sendable {
    let deadline: NIODeadline
}
