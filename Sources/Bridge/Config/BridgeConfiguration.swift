import Foundation
public import Logging
import NIOCore
import TopicACL
import Yams

/// Everything `mqbridge run` needs, from one YAML file or from command-line flags.
///
/// Keys (see conf/README.md for the full reference):
///
/// - `log_level` (string, optional, default `info`): trace, debug, info, notice, warning, error, critical.
/// - `metrics` (host:port, optional, default none): where `GET /metrics` is served.
/// - `acl` (path, required): the mosquitto-format acl_file, relative to this file.
/// - `allow_anonymous` (bool, optional, default true): refuse clients without a username if false.
/// - `threads` (integer, optional, default: the number of CPU cores): event loop threads.
/// - `proxies` (list, optional): one entry per listener, each with `listen` and `broker`
///   (host:port, required), `name`, `connect_timeout` (default 10s), `max_packet_size`
///   (default 1048576), `max_connect_packet_size` (default 131072), `max_connections`
///   (default 10000), `drain_timeout` (default 5s), `max_narrowed_filters` (default 1000),
///   `coalesce_broker_reads` (default true).
/// - `identity` (path): this site's key and certificate (`mqbridge identity init`); needed
///   for `link`, `peers`, `services` and `remote`. Peers written by `mqbridge pair` are kept
///   in `peers.yaml` beside them and added to `peers`.
/// - `link` (mapping, optional): `listen` (host:port), `trust` (`pins`, default, or `ca`),
///   `ca_file` (path, with trust ca), `keepalive` (duration, default 2s), `reconnect_max`
///   (duration, default 30s: the longest wait between two dial attempts), `max_streams`,
///   `max_handshakes`, `max_handshakes_per_address`, `handshake_timeout`, `max_stream_window`
///   (bytes, default 16 MiB: how far a stream's receive window may grow over a distant link).
/// - `peers` (list): `name`, `fingerprint` (`SHA256:…`, required with pins), `connect` (host:port, optional).
/// - `services` (list): what peers may reach here: `name`, `kind` (`mqtt` or `tcp`), `target`
///   (host:port), `peers` (list of peer names allowed; required).
/// - `remote` (list): local listeners to a peer's service: `listen`, `peer`, `service`.
/// - `relay` (mapping, optional): topic relay with peers — `broker` (host:port, required),
///   `protocol` (`3.1.1` default, or `5`), `client_id`, `username`, `queue_dir` (default
///   `relay-queue`), `max_queue_bytes`, `max_age`, `replay_rate`, `when_full` (`block` or
///   `drop_oldest`), `commit_interval` (group-commit window of the queue, default 2ms), `rules` (list of `peer`, `filter`, `direction` in/out/both, `qos`,
///   `local_prefix`, `remote_prefix`).
public struct BridgeConfiguration: Sendable {
    /// The file it was read from, if any.
    public var source: String?
    public var logLevel: Logger.Level
    public var metrics: HostPort?
    /// Absolute or relative to the working directory (already resolved against the file).
    /// Required when there are proxies or `mqtt` services.
    public var aclPath: String?
    public var proxies: [ProxyConfiguration]
    /// Event loop threads; nil means one per CPU core.
    public var threads: Int?
    /// The link to paired sites, if configured.
    public var link: LinkConfiguration?
    /// The topic relay with paired sites, if configured.
    public var relay: RelayConfiguration?

    public init(source: String? = nil, logLevel: Logger.Level = .info, metrics: HostPort? = nil, aclPath: String?, proxies: [ProxyConfiguration],
                threads: Int? = nil, link: LinkConfiguration? = nil, relay: RelayConfiguration? = nil) {
        self.source = source
        self.logLevel = logLevel
        self.metrics = metrics
        self.aclPath = aclPath
        self.proxies = proxies
        self.threads = threads
        self.link = link
        self.relay = relay
    }

    static let topLevelKeys = ["log_level", "metrics", "acl", "allow_anonymous", "threads", "proxies", "identity", "link", "peers", "services", "remote", "relay"]
    static let proxyKeys = ["name", "listen", "broker", "connect_timeout", "max_packet_size", "max_connect_packet_size", "max_connections", "drain_timeout",
                            "max_narrowed_filters", "coalesce_broker_reads"]

    /// Parses the YAML text of `file`. Paths in it are resolved against the file's directory.
    public init(yaml text: String, file: String) throws(ConfigErrors) {
        var reader = ConfigReader(file: file)
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigErrors(errors: [ConfigError(file: file, line: nil, key: "", problem: "the file is empty", fix: "see conf/mqbridge.yaml for an example")])
            }
            root = node
        } catch let error as ConfigErrors {
            throw error
        } catch let error as YamlError {
            throw ConfigErrors(errors: [ConfigError(file: file, line: Self.line(of: error), key: "", problem: "not valid YAML: \(Self.summary(of: error))", fix: "check indentation and quoting near that line")])
        } catch {
            throw ConfigErrors(errors: [ConfigError(file: file, line: nil, key: "", problem: "not valid YAML: \(error)", fix: "check indentation and quoting")])
        }
        let directory = URL(fileURLWithPath: file).deletingLastPathComponent()
        var logLevel = Logger.Level.info
        var metrics: HostPort?
        var aclPath: String?
        var allowAnonymous = true
        var threads: Int?
        var proxies: [ProxyConfiguration] = []
        var link: LinkConfiguration?
        var relay: RelayConfiguration?
        if let top = reader.mapping(root, at: "", known: Self.topLevelKeys) {
            if let (_, node) = top["log_level"], let text = reader.string(node, "log_level") {
                if let level = Logger.Level(rawValue: text.lowercased()) { logLevel = level } else {
                    reader.fail(node, "log_level", "\"\(text)\" is not a log level", fix: "use trace, debug, info, notice, warning, error or critical")
                }
            }
            if let (_, node) = top["metrics"] { metrics = reader.hostPort(node, "metrics") }
            if let (_, node) = top["allow_anonymous"], let value = reader.bool(node, "allow_anonymous") { allowAnonymous = value }
            if let (_, node) = top["threads"] { threads = reader.integer(node, "threads", range: 1...1024) }
            if let (_, node) = top["acl"], let path = reader.string(node, "acl") {
                aclPath = Self.resolve(path, directory)
            }
            if let (_, node) = top["proxies"], let items = reader.sequence(node, "proxies") {
                for (index, item) in items.enumerated() {
                    if var proxy = Self.proxy(item, index: index, reader: &reader) {
                        proxy.allowAnonymous = allowAnonymous
                        proxies.append(proxy)
                    }
                }
            }
            link = Self.link(top, root: root, directory: directory, reader: &reader)
            if let (_, node) = top["relay"] {
                relay = Self.relay(node, link: link, directory: directory, reader: &reader)
                if link == nil {
                    reader.fail(node, "relay", "a relay needs paired peers", fix: "add `identity:` and `peers:` (or pair with `mqbridge pair`)")
                }
            }
            let hasMQTTService = link?.services.contains { $0.kind == .mqtt } ?? false
            let acceptsRelay = relay?.rules.contains { $0.direction != .out } ?? false
            if aclPath == nil && (!proxies.isEmpty || hasMQTTService || acceptsRelay) {
                reader.fail(root, "acl", "missing", fix: "add `acl: <path to a mosquitto acl_file>` (proxies, mqtt services and relay `in` rules enforce it)")
            }
            if proxies.isEmpty && (link?.services.isEmpty ?? true) && (link?.remotes.isEmpty ?? true) && relay == nil {
                reader.fail(root, "proxies", "nothing to do", fix: "add `proxies:` (local MQTT clients), or `services:` / `remote:` for a paired site")
            }
            var seen: [HostPort: Int] = [:]
            for (index, proxy) in proxies.enumerated() {
                if let other = seen[proxy.listen] {
                    reader.fail(nil, "proxies[\(index)].listen", "\(proxy.listen) is also the listen address of proxies[\(other)]", fix: "give each proxy its own port")
                }
                seen[proxy.listen] = index
            }
        }
        if !reader.errors.isEmpty { throw ConfigErrors(errors: reader.errors) }
        self.init(source: file, logLevel: logLevel, metrics: metrics, aclPath: aclPath, proxies: proxies, threads: threads, link: link, relay: relay)
    }

    static func resolve(_ path: String, _ directory: URL) -> String {
        path.hasPrefix("/") ? path : directory.appendingPathComponent(path).path
    }

    static let linkKeys = ["listen", "trust", "ca_file", "keepalive", "reconnect_max", "max_streams", "max_handshakes", "max_handshakes_per_address", "handshake_timeout", "max_stream_window"]
    static let peerKeys = ["name", "fingerprint", "connect"]
    static let serviceKeys = ["name", "kind", "target", "peers", "idle_timeout"]
    static let remoteKeys = ["listen", "peer", "service", "max_connections"]

    /// The link part: identity, link, peers (plus identity/peers.yaml), services, remote.
    private static func link(_ top: [String: (key: Node, value: Node)], root: Node, directory: URL, reader: inout ConfigReader) -> LinkConfiguration? {
        let linkKeysPresent = ["identity", "link", "peers", "services", "remote"].filter { top[$0] != nil }
        guard !linkKeysPresent.isEmpty else { return nil }
        guard let (_, identityNode) = top["identity"], let identityText = reader.string(identityNode, "identity") else {
            reader.fail(root, "identity", "missing (needed by \(linkKeysPresent.joined(separator: ", ")))", fix: "add `identity: <dir>` created with `mqbridge identity init --dir <dir> --name <site>`")
            return nil
        }
        var configuration = LinkConfiguration(identityDirectory: resolve(identityText, directory))
        var trustCA = false
        if let (_, node) = top["link"], let map = reader.mapping(node, at: "link", known: linkKeys) {
            if let (_, n) = map["listen"] { configuration.listen = reader.hostPort(n, "link.listen") }
            if let (_, n) = map["keepalive"], let d = reader.duration(n, "link.keepalive") { configuration.keepalive = d }
            if let (_, n) = map["max_streams"], let v = reader.integer(n, "link.max_streams", range: 1...10_000_000) { configuration.maximumStreams = v }
            if let (_, n) = map["max_stream_window"], let v = reader.integer(n, "link.max_stream_window", range: (256 << 10)...(1 << 30)) {
                configuration.maximumStreamWindow = v
            }
            if let (_, n) = map["handshake_timeout"], let d = reader.duration(n, "link.handshake_timeout") { configuration.handshakeTimeout = d }
            if let (_, n) = map["max_handshakes"], let v = reader.integer(n, "link.max_handshakes", range: 1...100_000) { configuration.maximumHandshakes = v }
            if let (_, n) = map["max_handshakes_per_address"], let v = reader.integer(n, "link.max_handshakes_per_address", range: 1...100_000) {
                configuration.maximumHandshakesPerAddress = v
            }
            if let (_, n) = map["reconnect_max"], let d = reader.duration(n, "link.reconnect_max") {
                configuration.reconnectMaximum = d
                configuration.reconnectInitial = min(configuration.reconnectInitial, configuration.reconnectMaximum)
            }
            if let (_, n) = map["trust"], let text = reader.string(n, "link.trust") {
                switch text {
                case "pins": break
                case "ca": trustCA = true
                default: reader.fail(n, "link.trust", "\"\(text)\" is not pins or ca", fix: "write `trust: pins` (default) or `trust: ca` with `ca_file`")
                }
            }
            if trustCA {
                if let (_, n) = map["ca_file"], let path = reader.string(n, "link.ca_file") {
                    configuration.trust = .certificateAuthority(path: resolve(path, directory))
                } else {
                    reader.fail(node, "link.ca_file", "missing with trust: ca", fix: "add `ca_file: <PEM file of your CA>`")
                }
            }
        }
        var peers: [PeerConfiguration] = []
        if let (_, node) = top["peers"], let items = reader.sequence(node, "peers") {
            for (index, item) in items.enumerated() {
                let key = "peers[\(index)]"
                guard let map = reader.mapping(item, at: key, known: peerKeys) else { continue }
                guard let (_, n) = map["name"], let name = reader.string(n, "\(key).name") else {
                    reader.fail(item, "\(key).name", "missing", fix: "add `name: <the peer's site name>`")
                    continue
                }
                var fingerprint: SPKIFingerprint?
                if let (_, f) = map["fingerprint"], let text = reader.string(f, "\(key).fingerprint") {
                    do { fingerprint = try SPKIFingerprint(parsing: text) } catch { reader.fail(f, "\(key).fingerprint", error.description, fix: "copy it from `mqbridge identity show` at the peer, or use `mqbridge pair`") }
                } else if !trustCA {
                    reader.fail(item, "\(key).fingerprint", "missing (trust is pins)", fix: "add `fingerprint: SHA256:…` from the peer's `mqbridge identity show`, or pair with `mqbridge pair`")
                }
                var connect: HostPort?
                if let (_, c) = map["connect"] { connect = reader.hostPort(c, "\(key).connect") }
                peers.append(PeerConfiguration(name: name, fingerprint: fingerprint, connect: connect))
            }
        }
        // Peers recorded by `mqbridge pair`.
        let pairedFile = URL(fileURLWithPath: configuration.identityDirectory).appendingPathComponent("peers.yaml").path
        if let text = try? String(contentsOfFile: pairedFile, encoding: .utf8) {
            for peer in PairedPeers.parse(text) where !peers.contains(where: { $0.name == peer.name }) { peers.append(peer) }
        }
        configuration.peers = peers
        let peerNames = Set(peers.map(\.name))
        if let (_, node) = top["services"], let items = reader.sequence(node, "services") {
            for (index, item) in items.enumerated() {
                let key = "services[\(index)]"
                guard let map = reader.mapping(item, at: key, known: serviceKeys) else { continue }
                let name = map["name"].flatMap { reader.string($0.value, "\(key).name") }
                let kindText = map["kind"].flatMap { reader.string($0.value, "\(key).kind") }
                let target = map["target"].flatMap { reader.hostPort($0.value, "\(key).target") }
                var allowed: [String] = []
                if let (_, n) = map["peers"], let list = reader.sequence(n, "\(key).peers") {
                    for entry in list {
                        if let peer = reader.string(entry, "\(key).peers") {
                            if !peerNames.contains(peer) { reader.fail(entry, "\(key).peers", "\"\(peer)\" is not a configured peer", fix: "list it under `peers:` (or pair with it) first") }
                            allowed.append(peer)
                        }
                    }
                } else {
                    reader.fail(item, "\(key).peers", "missing", fix: "list the peers allowed to use this service (nobody is by default)")
                }
                if name == nil { reader.fail(item, "\(key).name", "missing", fix: "add `name: <service name>`") }
                if let name, name.hasPrefix("_") {
                    reader.fail(map["name"]?.value, "\(key).name", "names starting with '_' are reserved (the relay uses _relay)", fix: "rename the service")
                }
                if target == nil && map["target"] == nil { reader.fail(item, "\(key).target", "missing", fix: "add `target: host:port` (where this site connects for the peer)") }
                let kind = kindText.flatMap(ServiceConfiguration.Kind.init(rawValue:))
                if kind == nil { reader.fail(map["kind"]?.value ?? item, "\(key).kind", kindText.map { "\"\($0)\" is not mqtt or tcp" } ?? "missing", fix: "write `kind: mqtt` or `kind: tcp`") }
                let idleTimeout = map["idle_timeout"].flatMap { reader.duration($0.value, "\(key).idle_timeout") }
                if kind == .mqtt, let (_, n) = map["idle_timeout"] {
                    reader.fail(n, "\(key).idle_timeout", "applies to tcp services only", fix: "remove it: MQTT clients have their keepalive, which the broker enforces")
                }
                if let name, let kind, let target {
                    var service = ServiceConfiguration(name: name, kind: kind, target: target, peers: Set(allowed))
                    if let idleTimeout { service.idleTimeout = idleTimeout }
                    configuration.services.append(service)
                }
            }
        }
        if let (_, node) = top["remote"], let items = reader.sequence(node, "remote") {
            for (index, item) in items.enumerated() {
                let key = "remote[\(index)]"
                guard let map = reader.mapping(item, at: key, known: remoteKeys) else { continue }
                let listen = map["listen"].flatMap { reader.hostPort($0.value, "\(key).listen") }
                let peer = map["peer"].flatMap { reader.string($0.value, "\(key).peer") }
                let service = map["service"].flatMap { reader.string($0.value, "\(key).service") }
                for (field, present) in [("listen", map["listen"] != nil), ("peer", map["peer"] != nil), ("service", map["service"] != nil)] where !present {
                    reader.fail(item, "\(key).\(field)", "missing", fix: "a remote listener needs listen, peer and service")
                }
                if let peer, !peerNames.contains(peer) {
                    reader.fail(map["peer"]?.value, "\(key).peer", "\"\(peer)\" is not a configured peer", fix: "list it under `peers:` (or pair with it) first")
                }
                let maximumConnections = map["max_connections"].flatMap { reader.integer($0.value, "\(key).max_connections", range: 1...10_000_000) }
                if let listen, let peer, let service {
                    var remote = RemoteListenerConfiguration(listen: listen, peer: peer, service: service)
                    if let maximumConnections { remote.maximumConnections = maximumConnections }
                    configuration.remotes.append(remote)
                }
            }
        }
        return configuration
    }

    static let relayKeys = ["broker", "protocol", "client_id", "username", "queue_dir", "max_queue_bytes", "max_age", "replay_rate", "when_full", "commit_interval", "coalesce_broker_reads", "rules"]
    static let relayRuleKeys = ["peer", "filter", "direction", "qos", "local_prefix", "remote_prefix"]

    private static func relay(_ node: Node, link: LinkConfiguration?, directory: URL, reader: inout ConfigReader) -> RelayConfiguration? {
        guard let map = reader.mapping(node, at: "relay", known: relayKeys) else { return nil }
        var broker: HostPort?
        if let (_, n) = map["broker"] { broker = reader.hostPort(n, "relay.broker") } else {
            reader.fail(node, "relay.broker", "missing", fix: "add `broker: 127.0.0.1:1883` (the local broker the relay subscribes to and publishes at)")
        }
        var configuration = RelayConfiguration(broker: broker ?? HostPort(host: "", port: 0), clientID: "",
                                               queueDirectory: resolve("relay-queue", directory), rules: [])
        if let (_, n) = map["protocol"], let text = reader.string(n, "relay.protocol") {
            switch text {
            case "3.1.1", "4": configuration.protocolLevel = 4
            case "5", "5.0": configuration.protocolLevel = 5
            default: reader.fail(n, "relay.protocol", "\"\(text)\" is not an MQTT version the relay speaks", fix: "write `protocol: 3.1.1` or `protocol: 5`")
            }
        }
        if let (_, n) = map["client_id"], let text = reader.string(n, "relay.client_id") {
            if text.isEmpty || text.utf8.count > 65535 { reader.fail(n, "relay.client_id", "must be 1 to 65535 bytes", fix: "write a client id unique at the broker") }
            configuration.clientID = text
        }
        if let (_, n) = map["username"] { configuration.username = reader.string(n, "relay.username") }
        if let (_, n) = map["queue_dir"], let text = reader.string(n, "relay.queue_dir") { configuration.queueDirectory = resolve(text, directory) }
        if let (_, n) = map["max_queue_bytes"], let v = reader.integer(n, "relay.max_queue_bytes", range: 65536...(1 << 40)) { configuration.maximumQueueBytes = v }
        if let (_, n) = map["max_age"], let d = reader.duration(n, "relay.max_age") { configuration.maximumAge = d }
        if let (_, n) = map["replay_rate"], let v = reader.integer(n, "relay.replay_rate", range: 1...10_000_000) { configuration.replayRate = v }
        if let (_, n) = map["coalesce_broker_reads"], let v = reader.bool(n, "relay.coalesce_broker_reads") { configuration.receiveCoalescing = v ? .init() : nil }
        if let (_, n) = map["commit_interval"], let text = reader.string(n, "relay.commit_interval") {
            if let d = parseDuration(text, allowingZero: true), d <= .seconds(1) {
                configuration.commitInterval = d
            } else {
                reader.fail(n, "relay.commit_interval", "\"\(text)\" is not a duration from 0 to 1s",
                            fix: "write e.g. `commit_interval: 2ms` (0: fsync as soon as a message is queued)")
            }
        }
        if let (_, n) = map["when_full"], let text = reader.string(n, "relay.when_full") {
            if let policy = RelayConfiguration.WhenFull(rawValue: text) { configuration.whenFull = policy } else {
                reader.fail(n, "relay.when_full", "\"\(text)\" is not a policy", fix: "write `when_full: block` (hold messages at the broker) or `when_full: drop_oldest`")
            }
        }
        let peerNames = Set(link?.peers.map(\.name) ?? [])
        if let (_, n) = map["rules"], let items = reader.sequence(n, "relay.rules") {
            for (index, item) in items.enumerated() {
                let key = "relay.rules[\(index)]"
                guard let rule = reader.mapping(item, at: key, known: relayRuleKeys) else { continue }
                let peer = rule["peer"].flatMap { reader.string($0.value, "\(key).peer") }
                let filter = rule["filter"].flatMap { reader.string($0.value, "\(key).filter") }
                if rule["peer"] == nil { reader.fail(item, "\(key).peer", "missing", fix: "name the paired site this rule relays with") }
                if rule["filter"] == nil { reader.fail(item, "\(key).filter", "missing", fix: "add `filter: <topic filter>`, e.g. sensors/#") }
                if let peer, !peerNames.contains(peer) {
                    reader.fail(rule["peer"]?.value, "\(key).peer", "\"\(peer)\" is not a configured peer", fix: "list it under `peers:` (or pair with it) first")
                }
                var direction = RelayRule.Direction.out
                if let (_, d) = rule["direction"], let text = reader.string(d, "\(key).direction") {
                    if let value = RelayRule.Direction(rawValue: text) { direction = value } else {
                        reader.fail(d, "\(key).direction", "\"\(text)\" is not in, out or both", fix: "write `direction: out` (to the peer), `in` (from it) or `both`")
                    }
                } else {
                    reader.fail(item, "\(key).direction", "missing", fix: "write `direction: out`, `in` or `both`")
                }
                var qos = 1
                if let (_, q) = rule["qos"], let v = reader.integer(q, "\(key).qos", range: 0...2) { qos = v }
                var prefixes = ["local_prefix": "", "remote_prefix": ""]
                for name in prefixes.keys.sorted() {
                    guard let (_, p) = rule[name], let text = reader.string(p, "\(key).\(name)") else { continue }
                    if text.contains("+") || text.contains("#") || text.contains("\u{0}") {
                        reader.fail(p, "\(key).\(name)", "a prefix cannot contain wildcards", fix: "write a plain topic prefix such as `site-a/`")
                    }
                    prefixes[name] = text
                }
                if let filter {
                    for (side, prefix) in [("local_prefix", prefixes["local_prefix"]!), ("remote_prefix", prefixes["remote_prefix"]!)] {
                        do { _ = try TopicFilter(prefix + filter) } catch {
                            reader.fail(rule["filter"]?.value, "\(key).filter", "\(side) + filter \"\(prefix + filter)\" is not a valid topic filter: \(error)",
                                        fix: "use levels separated by '/', with + and # only as whole levels (# last)")
                        }
                    }
                }
                if let peer, let filter {
                    configuration.rules.append(RelayRule(peer: peer, filter: filter, direction: direction, qos: UInt8(qos),
                                                         localPrefix: prefixes["local_prefix"]!, remotePrefix: prefixes["remote_prefix"]!))
                }
            }
        }
        if configuration.rules.isEmpty && map["rules"] == nil {
            reader.fail(node, "relay.rules", "missing", fix: "add `rules:` with at least one `peer`, `filter`, `direction` entry")
        }
        return broker == nil ? nil : configuration
    }

    private static func proxy(_ node: Node, index: Int, reader: inout ConfigReader) -> ProxyConfiguration? {
        let key = "proxies[\(index)]"
        guard let map = reader.mapping(node, at: key, known: proxyKeys) else { return nil }
        var listen: HostPort?
        var broker: HostPort?
        if let (_, n) = map["listen"] { listen = reader.hostPort(n, "\(key).listen") } else {
            reader.fail(node, "\(key).listen", "missing", fix: "add `listen: 0.0.0.0:1883` (where legacy clients connect)")
        }
        if let (_, n) = map["broker"] { broker = reader.hostPort(n, "\(key).broker") } else {
            reader.fail(node, "\(key).broker", "missing", fix: "add `broker: 127.0.0.1:1883` (the plaintext broker behind the proxy)")
        }
        // Read every other key even if an address was bad, so all problems are reported at once.
        var proxy = ProxyConfiguration(name: "proxy-\(index)", listen: listen ?? HostPort(host: "", port: 0), broker: broker ?? HostPort(host: "", port: 0))
        if let (_, n) = map["name"], let name = reader.string(n, "\(key).name") { proxy.name = name }
        if let (_, n) = map["connect_timeout"], let d = reader.duration(n, "\(key).connect_timeout") { proxy.connectTimeout = d }
        if let (_, n) = map["drain_timeout"], let d = reader.duration(n, "\(key).drain_timeout") { proxy.drainTimeout = d }
        if let (_, n) = map["max_packet_size"], let v = reader.integer(n, "\(key).max_packet_size", range: 16...268_435_460) { proxy.maximumPacketSize = v }
        if let (_, n) = map["max_connect_packet_size"], let v = reader.integer(n, "\(key).max_connect_packet_size", range: 16...268_435_460) {
            proxy.maximumConnectPacketSize = v
        }
        if let (_, n) = map["max_connections"], let v = reader.integer(n, "\(key).max_connections", range: 1...10_000_000) { proxy.maximumConnections = v }
        if let (_, n) = map["max_narrowed_filters"], let v = reader.integer(n, "\(key).max_narrowed_filters", range: 1...1_000_000) { proxy.maximumNarrowedFilters = v }
        if let (_, n) = map["coalesce_broker_reads"], let v = reader.bool(n, "\(key).coalesce_broker_reads") { proxy.receiveCoalescing = v ? .init() : nil }
        return listen != nil && broker != nil ? proxy : nil
    }

    private static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): mark.line
        default: nil
        }
    }

    private static func summary(of error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): problem
        default: "\(error)"
        }
    }

    /// Reads and parses a configuration file.
    public static func load(path: String) throws(ConfigErrors) -> BridgeConfiguration {
        guard let data = FileManager.default.contents(atPath: path), let text = String(validating: data, as: UTF8.self) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw ConfigErrors(errors: [ConfigError(file: path, line: nil, key: "", problem: exists ? "cannot read the file, or it is not UTF-8" : "no such file",
                                                    fix: exists ? "check permissions and encoding" : "pass the path of an existing configuration file")])
        }
        return try BridgeConfiguration(yaml: text, file: path)
    }

    /// Checks what the file refers to: the acl_file must load (file:line errors otherwise).
    public func validateReferences() -> [String] {
        var problems: [String] = []
        if let aclPath {
            do {
                _ = try ACLStore.load(path: aclPath)
            } catch {
                problems.append("\(source.map { "\($0): acl: " } ?? "--acl: ")\(error)")
            }
        }
        if let relay {
            do {
                try RelayQueueDirectoryError.check(relay.queueDirectory)
            } catch {
                problems.append("\(source.map { "\($0): " } ?? "")\(error)")
            }
        }
        if let link {
            do {
                _ = try LinkTLS(identity: try SiteIdentity.load(from: link.identityDirectory), trust: link.trust)
            } catch {
                problems.append("\(source.map { "\($0): identity: " } ?? "")\(error)")
            }
        }
        return problems
    }
}
