public import CoreMetrics
public import Logging
public import NIOCore
import Synchronization

/// Counters for the link (names are part of the exported surface; no topic or address labels).
public final class LinkMetrics: Sendable {
    public let linksUp: Meter
    public let linkUps: Counter
    public let refusedTLS: Counter
    public let refusedHello: Counter
    /// Link connections closed on accept: max_handshakes (in all or from one address) unfinished.
    public let refusedAtHandshakeLimit: Counter
    public let deadLinks: Counter
    public let protocolErrors: Counter
    public let reconnects: Counter
    public let streamsOpened: Counter
    public let streamsRefused: Counter
    /// Local connections a remote listener closed at once: its max_connections were open.
    public let remoteConnectionsRefused: Counter
    /// Streams ended by a RESET (a local end that failed or closed before both sides sent
    /// FIN), not by FIN both ways: sent by this site, and received from the peer.
    public let streamResetsSent: Counter
    public let streamResetsReceived: Counter
    /// Times a stream's receive window doubled (a distant peer; see `ReceiveWindow`).
    public let streamWindowGrowths: Counter
    public let bytesToPeer: Counter
    public let bytesFromPeer: Counter

    public init(factory: any MetricsFactory) {
        linksUp = Meter(label: "mqbridge_links_up", factory: factory)
        linkUps = Counter(label: "mqbridge_link_established_total", factory: factory)
        refusedTLS = Counter(label: "mqbridge_link_refused_total", dimensions: [("reason", "tls")], factory: factory)
        refusedHello = Counter(label: "mqbridge_link_refused_total", dimensions: [("reason", "hello")], factory: factory)
        refusedAtHandshakeLimit = Counter(label: "mqbridge_link_refused_total", dimensions: [("reason", "max_handshakes")], factory: factory)
        deadLinks = Counter(label: "mqbridge_link_dead_total", factory: factory)
        protocolErrors = Counter(label: "mqbridge_link_protocol_errors_total", factory: factory)
        reconnects = Counter(label: "mqbridge_link_reconnects_total", factory: factory)
        streamsOpened = Counter(label: "mqbridge_link_streams_total", factory: factory)
        streamsRefused = Counter(label: "mqbridge_link_streams_refused_total", factory: factory)
        remoteConnectionsRefused = Counter(label: "mqbridge_remote_connections_refused_total", factory: factory)
        streamResetsSent = Counter(label: "mqbridge_link_stream_resets_total", dimensions: [("direction", "sent")], factory: factory)
        streamResetsReceived = Counter(label: "mqbridge_link_stream_resets_total", dimensions: [("direction", "received")], factory: factory)
        streamWindowGrowths = Counter(label: "mqbridge_link_stream_window_growths_total", factory: factory)
        bytesToPeer = Counter(label: "mqbridge_link_bytes_total", dimensions: [("direction", "to_peer")], factory: factory)
        bytesFromPeer = Counter(label: "mqbridge_link_bytes_total", dimensions: [("direction", "from_peer")], factory: factory)
    }
}

/// What every link, stream and remote listener of a site shares. All link work runs on one
/// event loop, so a link, its streams and their local connections never cross threads.
public final class LinkNode: Sendable {
    public let configuration: LinkConfiguration
    public let tls: LinkTLS
    public let eventLoop: any EventLoop
    public let logger: Logger
    public let metrics: LinkMetrics
    /// For `mqtt` services: the ACL and the proxy settings of the in-process proxy.
    let aclStore: ACLStore?
    let proxyMetrics: BridgeMetrics
    let proxyTemplate: ProxyConfiguration
    /// Narrowed filters of persistent sessions of `mqtt` service clients, across streams.
    let narrowingLedger = NarrowingLedger()
    let registry: NIOLoopBoundBox<LinkRegistry>
    /// The topic relay, if configured; set on the loop before any link is accepted or dialled.
    let relay: NIOLoopBoundBox<RelayService?>
    /// Stream objects alive on this node's links. A stream and its endpoint hold each other
    /// until the stream ends (see `MQTTStreamEndpoint.stream`): the tests check that this
    /// comes back to zero, i.e. that every way a stream ends lets both go.
    let liveStreams = Atomic<Int>(0)

    public init(configuration: LinkConfiguration, identity: SiteIdentity, eventLoop: any EventLoop, logger: Logger, metrics: LinkMetrics,
                aclStore: ACLStore?, proxyMetrics: BridgeMetrics, proxyTemplate: ProxyConfiguration? = nil) throws {
        self.configuration = configuration
        self.tls = try LinkTLS(identity: identity, trust: configuration.trust)
        self.eventLoop = eventLoop
        self.logger = logger
        self.metrics = metrics
        self.aclStore = aclStore
        self.proxyMetrics = proxyMetrics
        self.proxyTemplate = proxyTemplate ?? ProxyConfiguration(name: "link", listen: HostPort(host: "link", port: 0), broker: HostPort(host: "", port: 0))
        // Created off the loop, used only on it.
        self.registry = NIOLoopBoundBox.makeBoxSendingValue(LinkRegistry(), eventLoop: eventLoop)
        self.relay = NIOLoopBoundBox.makeEmptyBox(valueType: RelayService.self, eventLoop: eventLoop)
    }

    public var identity: SiteIdentity { tls.identity }

    func peer(named name: String) -> PeerConfiguration? { configuration.peers.first { $0.name == name } }

    func peer(with fingerprint: SPKIFingerprint) -> PeerConfiguration? { configuration.peers.first { $0.fingerprint == fingerprint } }

    var pinnedFingerprints: Set<SPKIFingerprint> { Set(configuration.peers.compactMap(\.fingerprint)) }
}

/// The links that are up, by peer name. Touched only on the node's event loop.
final class LinkRegistry {
    private var links: [String: [LinkConnection]] = [:]

    func add(_ link: LinkConnection, peer: String) { links[peer, default: []].append(link) }

    func remove(_ link: LinkConnection, peer: String) {
        links[peer]?.removeAll { $0 === link }
    }

    func link(to peer: String) -> LinkConnection? { links[peer]?.first }

    /// Accepted connections still in their TLS handshake or HELLO, by source address.
    private var handshaking: [String: Int] = [:]
    private var handshakingTotal = 0

    /// Takes a handshake place for a connection from `address`, or says which limit is reached.
    func beginHandshake(from address: String, limit: Int, perAddress: Int) -> HandshakeAdmission {
        if handshakingTotal >= limit { return .refused("max_handshakes") }
        if handshaking[address, default: 0] >= perAddress { return .refused("max_handshakes_per_address") }
        handshaking[address, default: 0] += 1
        handshakingTotal += 1
        return .admitted
    }

    func endHandshake(from address: String) {
        guard let count = handshaking[address] else { return }
        handshaking[address] = count > 1 ? count - 1 : nil
        handshakingTotal -= 1
    }

    var all: [LinkConnection] { links.values.flatMap { $0 } }
}

enum HandshakeAdmission: Equatable {
    case admitted
    /// The limit reached, as its configuration key.
    case refused(String)
}

@available(*, unavailable)
extension LinkRegistry: Sendable {}
