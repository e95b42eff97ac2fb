import Foundation
public import Logging
import NIOCore
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
/// - `proxies` (list, required): one entry per listener, each with `listen` and `broker`
///   (host:port, required), `name`, `connect_timeout` (default 10s), `max_packet_size`
///   (default 1048576), `max_connect_packet_size` (default 131072), `max_connections`
///   (default 10000), `drain_timeout` (default 5s).
public struct BridgeConfiguration: Sendable {
    /// The file it was read from, if any.
    public var source: String?
    public var logLevel: Logger.Level
    public var metrics: HostPort?
    /// Absolute or relative to the working directory (already resolved against the file).
    public var aclPath: String
    public var proxies: [ProxyConfiguration]
    /// Event loop threads; nil means one per CPU core.
    public var threads: Int?

    public init(source: String? = nil, logLevel: Logger.Level = .info, metrics: HostPort? = nil, aclPath: String, proxies: [ProxyConfiguration], threads: Int? = nil) {
        self.source = source
        self.logLevel = logLevel
        self.metrics = metrics
        self.aclPath = aclPath
        self.proxies = proxies
        self.threads = threads
    }

    static let topLevelKeys = ["log_level", "metrics", "acl", "allow_anonymous", "threads", "proxies"]
    static let proxyKeys = ["name", "listen", "broker", "connect_timeout", "max_packet_size", "max_connect_packet_size", "max_connections", "drain_timeout"]

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
                aclPath = path.hasPrefix("/") ? path : directory.appendingPathComponent(path).path
            } else if top["acl"] == nil {
                reader.fail(root, "acl", "missing", fix: "add `acl: <path to a mosquitto acl_file>`")
            }
            if let (_, node) = top["proxies"], let items = reader.sequence(node, "proxies") {
                if items.isEmpty { reader.fail(node, "proxies", "the list is empty", fix: "add at least one entry with listen and broker") }
                for (index, item) in items.enumerated() {
                    if var proxy = Self.proxy(item, index: index, reader: &reader) {
                        proxy.allowAnonymous = allowAnonymous
                        proxies.append(proxy)
                    }
                }
            } else if top["proxies"] == nil {
                reader.fail(root, "proxies", "missing", fix: "add a `proxies:` list with at least one `- listen: … broker: …` entry")
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
        self.init(source: file, logLevel: logLevel, metrics: metrics, aclPath: aclPath!, proxies: proxies, threads: threads)
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
        if let (_, n) = map["connect_timeout"], let d = reader.duration(n, "\(key).connect_timeout") { proxy.connectTimeout = .nanoseconds(Int64(d.nanoseconds)) }
        if let (_, n) = map["drain_timeout"], let d = reader.duration(n, "\(key).drain_timeout") { proxy.drainTimeout = .nanoseconds(Int64(d.nanoseconds)) }
        if let (_, n) = map["max_packet_size"], let v = reader.integer(n, "\(key).max_packet_size", range: 16...268_435_460) { proxy.maximumPacketSize = v }
        if let (_, n) = map["max_connect_packet_size"], let v = reader.integer(n, "\(key).max_connect_packet_size", range: 16...268_435_460) {
            proxy.maximumConnectPacketSize = v
        }
        if let (_, n) = map["max_connections"], let v = reader.integer(n, "\(key).max_connections", range: 1...10_000_000) { proxy.maximumConnections = v }
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
        do {
            _ = try ACLStore.load(path: aclPath)
        } catch {
            problems.append("\(source.map { "\($0): acl: " } ?? "--acl: ")\(error)")
        }
        return problems
    }
}

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
