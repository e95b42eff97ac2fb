import ArgumentParser
import Bridge
import Foundation
import Logging
import NIOCore
import TopicACL

/// Where `run` and `check` get their configuration: a file, or flags for one proxy.
struct ConfigurationOptions: ParsableArguments {
    @Option(help: "The YAML configuration file (see conf/README.md).")
    var config: String?

    @Option(help: "Without --config: the address legacy clients connect to (host:port).")
    var listen: String?

    @Option(help: "Without --config: the plaintext broker behind the proxy (host:port).")
    var broker: String?

    @Option(help: "Without --config: the mosquitto-format acl_file.")
    var acl: String?

    @Option(help: "Without --config: serve Prometheus /metrics here (host:port).")
    var metrics: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (overrides log_level).")
    var logLevel: String?

    @Option(help: "Event loop threads (overrides threads; default: one per CPU core).")
    var threads: Int?

    func validate() throws {
        let flags = [("--listen", listen), ("--broker", broker), ("--acl", acl), ("--metrics", metrics)].filter { $0.1 != nil }.map(\.0)
        if config != nil {
            if !flags.isEmpty {
                throw ValidationError("\(flags.joined(separator: ", ")) cannot be combined with --config: put them in the file, or drop --config")
            }
        } else {
            let missing = [("--listen", listen), ("--broker", broker), ("--acl", acl)].filter { $0.1 == nil }.map(\.0)
            if !missing.isEmpty {
                throw ValidationError("give --config FILE, or all of --listen, --broker and --acl (missing: \(missing.joined(separator: ", ")))")
            }
        }
        if let logLevel, Logger.Level(rawValue: logLevel.lowercased()) == nil {
            throw ValidationError("--log-level \(logLevel) is not one of trace, debug, info, notice, warning, error, critical")
        }
    }

    /// The configuration, or the CLI's error exit with every problem listed.
    func load() throws -> BridgeConfiguration {
        var configuration: BridgeConfiguration
        if let config {
            do {
                configuration = try BridgeConfiguration.load(path: config)
            } catch {
                throw fail("invalid configuration:\n\(error)")
            }
        } else {
            func address(_ flag: String, _ value: String?) throws -> HostPort? {
                guard let value else { return nil }
                do { return try HostPort(parsing: value) } catch { throw fail("\(flag): \(error)") }
            }
            let proxy = ProxyConfiguration(name: "proxy", listen: try address("--listen", listen)!, broker: try address("--broker", broker)!)
            configuration = BridgeConfiguration(metrics: try address("--metrics", metrics), aclPath: acl!, proxies: [proxy])
        }
        if let logLevel { configuration.logLevel = Logger.Level(rawValue: logLevel.lowercased())! }
        if let threads {
            guard (1...1024).contains(threads) else { throw fail("--threads \(threads) is not between 1 and 1024") }
            configuration.threads = threads
        }
        let problems = configuration.validateReferences()
        if !problems.isEmpty { throw fail("invalid configuration:\n" + problems.joined(separator: "\n")) }
        return configuration
    }
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the bridge: MQTT-aware proxies with topic ACLs. SIGTERM/SIGINT drain and stop; SIGHUP reloads the ACL."
    )

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        BridgeRuntime.unblockControlSignals()
        let configuration = try options.load()
        let level = configuration.logLevel
        LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
        let logger = Logger(label: "mqbridge")
        do {
            try await BridgeRuntime.run(configuration, logger: logger)
        } catch {
            logger.critical("stopped on error: \(error)", metadata: ["event": "fatal"])
            throw ExitCode(2)
        }
    }
}

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a configuration (files readable, ACL parses, addresses parse) and print a summary. Exit 0 if valid, 2 if not."
    )

    @OptionGroup var options: ConfigurationOptions

    func run() throws {
        let configuration = try options.load()
        print("configuration \(configuration.source ?? "(command line)"): OK")
        if let aclPath = configuration.aclPath {
            let file = try loadACL(path: aclPath).file
            var users = Set<String>()
            for rule in file.rules { if case .user(let name) = rule.scope { users.insert(name) } }
            print("  acl: \(aclPath) — \(file.rules.count) rules, \(users.count) users, \(file.patterns.count) patterns, \(file.warnings.count) warnings")
        }
        for proxy in configuration.proxies {
            print("  proxy \"\(proxy.name)\": listen \(proxy.listen) → broker \(proxy.broker); connect timeout \(proxy.connectTimeout.nanoseconds / 1_000_000) ms, "
                  + "max packet \(proxy.maximumPacketSize) B, max connections \(proxy.maximumConnections), anonymous \(proxy.allowAnonymous ? "allowed" : "refused"), "
                  + "broker reads \(proxy.coalescesBrokerReads ? "coalesced at high rates" : "never coalesced")")
        }
        if let link = configuration.link, let identity = try? SiteIdentity.load(from: link.identityDirectory) {
            print("  identity: \(identity.name) \(identity.fingerprint)")
            print("  link: \(link.listen.map { "listen \($0)" } ?? "no listener"), trust \(link.trust == .pins ? "pinned keys" : "CA"), max streams \(link.maximumStreams) per link, "
                  + "max handshakes \(link.maximumHandshakes) (\(link.maximumHandshakesPerAddress) per address) of at most \(link.handshakeTimeout.nanoseconds / 1_000_000) ms, "
                  + "stream window \(link.streamWindow >> 10) KiB growing to \(link.maximumStreamWindow >> 10) KiB over a distant link")
            for peer in link.peers { print("  peer \"\(peer.name)\": \(peer.fingerprint.map { "\($0)" } ?? "CA-issued")\(peer.connect.map { ", dial \($0)" } ?? "")") }
            for service in link.services {
                let idle = service.kind == .tcp ? ", idle timeout \(service.idleTimeout.nanoseconds / 1_000_000) ms" : ""
                print("  service \"\(service.name)\" (\(service.kind.rawValue)) → \(service.target) for \(service.peers.sorted().joined(separator: ", "))\(idle)")
            }
            for remote in link.remotes { print("  remote \(remote.listen) → \(remote.peer)/\(remote.service), max connections \(remote.maximumConnections)") }
        }
        if let relay = configuration.relay {
            print("  relay: broker \(relay.broker) (MQTT \(relay.protocolLevel == 5 ? "5" : "3.1.1")), queue \(relay.queueDirectory) "
                  + "(max \(relay.maximumQueueBytes) B, when full: \(relay.whenFull.rawValue), max age \(relay.maximumAge.nanoseconds / 1_000_000_000) s, replay \(relay.replayRate)/s), "
                  + "broker reads \(relay.coalescesBrokerReads ? "coalesced at high rates" : "never coalesced")")
            for rule in relay.rules {
                let local = rule.localPrefix + rule.filter, wire = rule.remotePrefix + rule.filter
                let arrow = switch rule.direction { case .out: "→"; case .in: "←"; case .both: "↔" }
                print("  relay rule: \(local) \(arrow) \(rule.peer) as \(wire), QoS ≤ \(rule.qos)")
            }
        }
        print("  metrics: \(configuration.metrics.map { "http://\($0)/metrics" } ?? "off")")
        print("  log level: \(configuration.logLevel)")
    }
}
