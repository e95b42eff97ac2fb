import Foundation
import TestSupport
import Testing

/// `mqbridge check` and `mqbridge run` on configuration files, as an operator meets them.
@Suite("Configuration files")
struct ConfigCommandTests {
    func mqbridge(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let result = try TestEnvironment.run([TestEnvironment.mqbridgeBinary] + arguments)
        return (result.status, String(decoding: result.stdout, as: UTF8.self), result.stderr)
    }

    func directory(_ files: [String: String]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-conf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return dir
    }

    @Test("The shipped example passes check and is summarized")
    func example() async throws {
        try await TestEnvironment.blocking {
            let config = TestEnvironment.repositoryRoot.appendingPathComponent("conf/mqbridge.yaml").path
            let r = try mqbridge(["check", "--config", config])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("configuration \(config): OK"))
            #expect(r.stdout.contains("proxy \"plant-floor\": listen 0.0.0.0:1883 → broker 127.0.0.1:11883"))
            #expect(r.stdout.contains("anonymous allowed, broker reads coalesced at high rates\n"))
            #expect(r.stdout.contains("metrics: http://127.0.0.1:9464/metrics"))
        }
    }

    /// The unit's command lines, by key (`ExecStart`, `ExecStartPre`, ...), split at spaces.
    static func unitCommands() throws -> [String: [String]] {
        let unit = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("conf/mqbridge.service"), encoding: .utf8)
        var commands: [String: [String]] = [:]
        for line in unit.split(separator: "\n") where line.hasPrefix("Exec") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            commands[String(line[..<equals])] = line[line.index(after: equals)...].split(separator: " ").map(String.init)
        }
        return commands
    }

    @Test("The shipped systemd unit checks the configuration before it runs it, with the CLI's own subcommands and flags")
    func systemdUnitCommands() async throws {
        try await TestEnvironment.blocking {
            let commands = try Self.unitCommands()
            let installed = "/etc/mqbridge/mqbridge.yaml"
            #expect(commands["ExecStartPre"] == ["/usr/local/bin/mqbridge", "check", "--config", installed])
            #expect(commands["ExecStart"] == ["/usr/local/bin/mqbridge", "run", "--config", installed])
            #expect(commands["ExecReload"] == ["/bin/kill", "-HUP", "$MAINPID"])
            // The same arguments, with the shipped example where the unit has the installed file.
            let example = TestEnvironment.repositoryRoot.appendingPathComponent("conf/mqbridge.yaml").path
            let checked = try mqbridge(try #require(commands["ExecStartPre"]).dropFirst().map { $0 == installed ? example : $0 })
            #expect(checked.status == 0, "\(checked.stderr)")
            #expect(checked.stdout.contains("configuration \(example): OK"))
            // `run` takes `--config` (and says SIGHUP reloads the ACL, which ExecReload sends).
            let help = try mqbridge(["run", "--help"])
            #expect(help.stdout.contains("--config"))
            #expect(help.stdout.contains("SIGHUP reloads the ACL"))
        }
    }

    @Test("The shipped systemd unit passes systemd-analyze verify (every key known, every command executable)",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze"), "systemd-analyze is not installed (package systemd)"))
    func systemdUnitVerifies() async throws {
        try await TestEnvironment.blocking {
            let dir = try directory([:])
            defer { try? FileManager.default.removeItem(at: dir) }
            // The built binary where the unit has the installed one: verify checks that it exists.
            let unit = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("conf/mqbridge.service"), encoding: .utf8)
                .replacingOccurrences(of: "/usr/local/bin/mqbridge", with: TestEnvironment.mqbridgeBinary)
            let path = dir.appendingPathComponent("mqbridge.service").path
            try unit.write(toFile: path, atomically: true, encoding: .utf8)
            let verified = try TestEnvironment.run(["/usr/bin/systemd-analyze", "verify", path])
            #expect(verified.status == 0, "\(verified.stderr)")
            // Unknown keys are only warnings (exit 0): any line about the unit fails the test.
            #expect(!verified.stderr.contains("mqbridge.service"), "\(verified.stderr)")
        }
    }

    @Test("Every problem in a file is reported with file:line, key and fix; exit 2")
    func errors() async throws {
        try await TestEnvironment.blocking {
            let dir = try directory(["acl.conf": "topic read a\n", "bad.yaml": """
            log_level: chatty
            acl: acl.conf
            metrcs: 127.0.0.1:9464
            proxies:
              - listen: 0.0.0.0
                broker: 127.0.0.1:99999
                connect_timeout: soon
              - broker: 127.0.0.1:1883

            """])
            let path = dir.appendingPathComponent("bad.yaml").path
            let r = try mqbridge(["check", "--config", path])
            #expect(r.status == 2)
            let lines = r.stderr.split(separator: "\n").map(String.init)
            #expect(lines.contains("\(path):1: log_level: \"chatty\" is not a log level — use trace, debug, info, notice, warning, error or critical"))
            #expect(lines.contains { $0.hasPrefix("\(path):3: metrcs: unknown key — did you mean 'metrics'?") })
            #expect(lines.contains { $0.hasPrefix("\(path):5: proxies[0].listen: \"0.0.0.0\" is not a host:port address: missing ':port'") })
            #expect(lines.contains { $0.hasPrefix("\(path):6: proxies[0].broker: \"127.0.0.1:99999\" is not a host:port address") })
            #expect(lines.contains { $0.hasPrefix("\(path):7: proxies[0].connect_timeout: \"soon\" is not a positive duration") })
            #expect(lines.contains { $0.hasPrefix("\(path):8: proxies[1].listen: missing — add `listen: 0.0.0.0:1883`") })
        }
    }

    @Test("Link limits are checked with file:line: link.max_streams, max_handshakes, handshake_timeout, remote[].max_connections, services[].idle_timeout")
    func linkLimits() async throws {
        try await TestEnvironment.blocking {
            let dir = try directory(["bad.yaml": """
            identity: identity
            link:
              max_streams: 0
              max_handshakes: -1
              handshake_timeout: never
              max_stream_window: 1000
            peers:
              - name: site-b
                fingerprint: SHA256:Xm/LGv/hD5XQ/xz8UBqm7DZ/H+o9TAF02MZZtwAfbk8
                connect: 127.0.0.1:8883
            remote:
              - listen: 127.0.0.1:1884
                peer: site-b
                service: web
                max_connections: many
            services:
              - name: broker
                kind: mqtt
                target: 127.0.0.1:1883
                peers: [site-b]
                idle_timeout: 10m

            """])
            let path = dir.appendingPathComponent("bad.yaml").path
            let r = try mqbridge(["check", "--config", path])
            #expect(r.status == 2)
            let lines = r.stderr.split(separator: "\n").map(String.init)
            #expect(lines.contains { $0.hasPrefix("\(path):3: link.max_streams: \"0\" is not a whole number from 1 to 10000000") })
            #expect(lines.contains { $0.hasPrefix("\(path):4: link.max_handshakes: \"-1\" is not a whole number from 1 to 100000") })
            #expect(lines.contains { $0.hasPrefix("\(path):5: link.handshake_timeout: \"never\" is not a positive duration") })
            #expect(lines.contains { $0.hasPrefix("\(path):6: link.max_stream_window: \"1000\" is not a whole number from 262144 to 1073741824") })
            #expect(lines.contains { $0.hasPrefix("\(path):15: remote[0].max_connections: \"many\" is not a whole number from 1 to 10000000") })
            #expect(lines.contains { $0.hasPrefix("\(path):21: services[0].idle_timeout: applies to tcp services only") })
        }
    }

    @Test("check prints the link's limits as configured, link.max_stream_window among them")
    func linkSummary() async throws {
        try await TestEnvironment.blocking {
            let dir = try directory(["good.yaml": """
            identity: identity
            link:
              listen: 127.0.0.1:0
              max_streams: 50
              max_stream_window: 1048576
            peers:
              - name: site-b
                fingerprint: SHA256:Xm/LGv/hD5XQ/xz8UBqm7DZ/H+o9TAF02MZZtwAfbk8
            services:
              - name: web
                kind: tcp
                target: 127.0.0.1:8080
                peers: [site-b]

            """])
            _ = try TestEnvironment.createIdentity(in: dir.appendingPathComponent("identity").path, name: "site-a")
            let r = try mqbridge(["check", "--config", dir.appendingPathComponent("good.yaml").path])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("max streams 50 per link"), "\(r.stdout)")
            #expect(r.stdout.contains("stream window 256 KiB growing to 1024 KiB over a distant link"), "\(r.stdout)")
        }
    }

    @Test("A bad acl_file stops run and check before anything listens, naming file:line")
    func badACL() async throws {
        try await TestEnvironment.blocking {
            let dir = try directory(["acl.conf": "user a\ntopic reed x\n", "c.yaml": "acl: acl.conf\nproxies:\n  - listen: 127.0.0.1:0\n    broker: 127.0.0.1:1\n"])
            let acl = dir.appendingPathComponent("acl.conf").path
            for command in ["check", "run"] {
                let r = try mqbridge([command, "--config", dir.appendingPathComponent("c.yaml").path])
                #expect(r.status == 2)
                #expect(r.stderr.contains("\(acl):2: invalid access type \"reed\""), "\(r.stderr)")
            }
        }
    }

    @Test("Invalid YAML names its line")
    func invalidYAML() async throws {
        try await TestEnvironment.blocking {
            let dir = try directory(["c.yaml": "acl: a\nproxies:\n  - listen: [\n"])
            let r = try mqbridge(["check", "--config", dir.appendingPathComponent("c.yaml").path])
            #expect(r.status == 2)
            #expect(r.stderr.contains("c.yaml:4: not valid YAML") || r.stderr.contains("c.yaml:3: not valid YAML"), "\(r.stderr)")
        }
    }

    @Test("Flags: --config with --listen is ambiguous; the one-site flags need --listen, --broker and --acl")
    func flags() async throws {
        try await TestEnvironment.blocking {
            #expect(try mqbridge(["run", "--config", "x.yaml", "--listen", "127.0.0.1:1"]).stderr.contains("cannot be combined with --config"))
            let r = try mqbridge(["run", "--listen", "127.0.0.1:0"])
            #expect(r.status == 2)
            #expect(r.stderr.contains("missing: --broker, --acl"))
        }
    }

    @Test("A relay section is summarized rule by rule; an `in` rule without an ACL is refused with the fix")
    func relay() async throws {
        try await TestEnvironment.blocking {
            let dir = try directory(["acl.conf": "peer site-b\ntopic write in/#\n"])
            defer { try? FileManager.default.removeItem(at: dir) }
            try TestEnvironment.createIdentity(in: dir.appendingPathComponent("id").path, name: "site-a")
            let relay = """
            identity: id
            peers:
              - name: site-b
                fingerprint: SHA256:Yr9zdYoLyvyiXxTT1pVc3nA0wyB85jQkVxs0/TXRvX4
                connect: 127.0.0.1:8883
            relay:
              broker: 127.0.0.1:1883
              protocol: 5
              rules:
                - {peer: site-b, filter: "out/#", direction: out, qos: 1, remote_prefix: site-a/}
                - {peer: site-b, filter: "in/#", direction: in, qos: 2}

            """
            try ("acl: acl.conf\n" + relay).write(to: dir.appendingPathComponent("relay.yaml"), atomically: true, encoding: .utf8)
            let r = try mqbridge(["check", "--config", dir.appendingPathComponent("relay.yaml").path])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("relay: broker 127.0.0.1:1883 (MQTT 5), queue \(dir.appendingPathComponent("relay-queue").path)"))
            #expect(r.stdout.contains("replay 20000/s), broker reads coalesced at high rates\n"))
            #expect(r.stdout.contains("relay rule: out/# → site-b as site-a/out/#, QoS ≤ 1"))
            #expect(r.stdout.contains("relay rule: in/# ← site-b as in/#, QoS ≤ 2"))
            try relay.write(to: dir.appendingPathComponent("noacl.yaml"), atomically: true, encoding: .utf8)
            let refused = try mqbridge(["check", "--config", dir.appendingPathComponent("noacl.yaml").path])
            #expect(refused.status == 2)
            #expect(refused.stderr.contains("acl: missing — add `acl: <path to a mosquitto acl_file>` (proxies, mqtt services and relay `in` rules enforce it)"))
            // A queue directory that cannot be written: refused before anything starts.
            try ("acl: acl.conf\n" + relay.replacingOccurrences(of: "  protocol: 5\n", with: "  protocol: 5\n  queue_dir: /proc/no-such-dir\n"))
                .write(to: dir.appendingPathComponent("badqueue.yaml"), atomically: true, encoding: .utf8)
            let badQueue = try mqbridge(["run", "--config", dir.appendingPathComponent("badqueue.yaml").path])
            #expect(badQueue.status == 2)
            #expect(badQueue.stderr.contains("relay.queue_dir: cannot use /proc/no-such-dir"))
            #expect(badQueue.stderr.contains("point queue_dir at a writable directory"))
        }
    }
}
