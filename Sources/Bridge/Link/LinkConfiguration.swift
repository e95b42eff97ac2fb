public import NIOCore

/// A paired site.
public struct PeerConfiguration: Sendable, Hashable {
    public var name: String
    /// The pinned SPKI fingerprint (nil when the operator's CA is the trust root).
    public var fingerprint: SPKIFingerprint?
    /// Where to dial this peer; nil if the peer dials us.
    public var connect: HostPort?

    public init(name: String, fingerprint: SPKIFingerprint?, connect: HostPort? = nil) {
        self.name = name
        self.fingerprint = fingerprint
        self.connect = connect
    }
}

/// Something this site offers to paired sites over the link.
public struct ServiceConfiguration: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        /// Bytes to and from `target`: any TCP protocol (HTTP/1.1 included).
        case tcp
        /// MQTT clients of the peer reach the broker at `target` through this site's
        /// MQTT-aware proxy, so this site's ACL decides.
        case mqtt
    }

    public var name: String
    public var kind: Kind
    /// Where this site connects for each stream. Never chosen by the peer.
    public var target: HostPort
    /// Peers allowed to open the service; empty means none.
    public var peers: Set<String>
    /// `tcp` services: a stream with nothing read or written at this site for this long is
    /// reset, so connections whose client vanished (no FIN: a NAT dropped it, a host died) do
    /// not hold a stream and a target connection for ever. MQTT has its own keepalive.
    public var idleTimeout: TimeAmount

    public static let defaultIdleTimeout = TimeAmount.hours(1)

    public init(name: String, kind: Kind, target: HostPort, peers: Set<String>, idleTimeout: TimeAmount = ServiceConfiguration.defaultIdleTimeout) {
        self.name = name
        self.kind = kind
        self.target = target
        self.peers = peers
        self.idleTimeout = idleTimeout
    }
}

/// A local plaintext listener whose connections go to a named service of a peer.
public struct RemoteListenerConfiguration: Sendable, Hashable {
    public var listen: HostPort
    public var peer: String
    public var service: String
    /// Local connections open at once; more are closed at once (counted, logged).
    public var maximumConnections: Int

    public init(listen: HostPort, peer: String, service: String, maximumConnections: Int = 10_000) {
        self.listen = listen
        self.peer = peer
        self.service = service
        self.maximumConnections = maximumConnections
    }
}

/// How the other site's certificate is judged.
public enum LinkTrust: Sendable, Hashable {
    /// Each peer's SPKI fingerprint is pinned (the default; `mqbridge pair` sets it up).
    case pins
    /// Certificates issued by the operator's CA (PEM file); the peer is named by its
    /// certificate's common name, which must be a configured peer.
    case certificateAuthority(path: String)
}

/// Everything about the link between this site and its peers.
public struct LinkConfiguration: Sendable {
    public var identityDirectory: String
    /// Accept paired sites here (optional: a site may only dial).
    public var listen: HostPort?
    public var trust: LinkTrust
    public var peers: [PeerConfiguration]
    public var services: [ServiceConfiguration]
    public var remotes: [RemoteListenerConfiguration]
    /// A PING goes out this often; a link silent for three intervals is dead.
    public var keepalive: TimeAmount
    /// TLS handshake plus HELLO must finish within this.
    public var handshakeTimeout: TimeAmount
    /// Reconnect backoff: doubles from `initial` up to `maximum`, with full jitter.
    public var reconnectInitial: TimeAmount
    public var reconnectMaximum: TimeAmount
    /// Per-stream flow-control window (bytes in flight each way) that both ends start from.
    public var streamWindow: Int
    /// How far a stream's receive window may grow over a distant link (`ReceiveWindow`); the
    /// growth of all streams of one link together is bounded by four times this.
    public var maximumStreamWindow: Int
    /// Streams open at once on one link (both directions): a peer's OPEN beyond this is
    /// refused, so a peer cannot make this site open connections to its services without bound.
    public var maximumStreams: Int
    /// Accepted link connections that have not yet proved who they are (TLS handshake and
    /// HELLO, up to `handshakeTimeout`), in all and from one address: beyond either, a new
    /// connection is closed before any TLS, so nobody can hold this site's descriptors and
    /// memory with connections that never finish a handshake, and one address cannot take
    /// every place from the peers (they redial with backoff).
    public var maximumHandshakes: Int
    public var maximumHandshakesPerAddress: Int

    public init(identityDirectory: String, listen: HostPort? = nil, trust: LinkTrust = .pins, peers: [PeerConfiguration] = [],
                services: [ServiceConfiguration] = [], remotes: [RemoteListenerConfiguration] = [], keepalive: TimeAmount = .seconds(2),
                handshakeTimeout: TimeAmount = .seconds(10), reconnectInitial: TimeAmount = .milliseconds(250), reconnectMaximum: TimeAmount = .seconds(30),
                streamWindow: Int = 256 << 10, maximumStreamWindow: Int = 16 << 20, maximumStreams: Int = 10_000, maximumHandshakes: Int = 64, maximumHandshakesPerAddress: Int = 8) {
        self.identityDirectory = identityDirectory
        self.listen = listen
        self.trust = trust
        self.peers = peers
        self.services = services
        self.remotes = remotes
        self.keepalive = keepalive
        self.handshakeTimeout = handshakeTimeout
        self.reconnectInitial = reconnectInitial
        self.reconnectMaximum = reconnectMaximum
        self.streamWindow = streamWindow
        self.maximumStreamWindow = maximumStreamWindow
        self.maximumStreams = maximumStreams
        self.maximumHandshakes = maximumHandshakes
        self.maximumHandshakesPerAddress = maximumHandshakesPerAddress
    }
}
