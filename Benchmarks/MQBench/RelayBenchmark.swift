import ArgumentParser
import Foundation
import Synchronization
import TestSupport

/// The topic relay against mosquitto's own bridge over TLS, same run, same load: publishers
/// at broker A, the subscriber at broker B; between them either two mqbridge relays (durable
/// queue, pinned TLS 1.3 link) or broker A's `connection` bridge to a TLS 1.3 listener of B
/// with client certificates. With `--rtt`, both ways between the sites cross a delay line
/// (`DelayLine`): the two sites as far apart as a WAN makes them.
struct RelayBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "relay", abstract: "Topic relay between two brokers vs mosquitto's TLS bridge.")

    @OptionGroup var measurement: MeasurementOptions
    var seconds: Double { measurement.seconds }
    var rounds: Int { measurement.rounds }
    @Option(help: "Messages per second for the latency cases.") var rate: Int = 2000
    @Option(help: "Every broker's max_inflight_messages (mosquitto's default is 20): how many QoS 1 messages a broker sends a relay or bridge before it waits for acknowledgements.")
    var brokerInflight: Int = 100
    @Flag(help: "TCP_NODELAY outside the bridges too: on the load clients and on every broker (`set_tcp_nodelay true`). By default both leave Nagle on, and a QoS 0 message that nothing answers can wait for a delayed ACK at broker A and at the subscriber, on both paths alike; with this flag the latency rows show what the bridges add.")
    var noDelay = false
    @Option(help: "Round-trip time between the sites in milliseconds: both paths' site-to-site connection crosses a delay line that holds each byte rtt/2 each way (0: direct on loopback).")
    var rtt: Double = 0

    func run() throws {
        let workspace = try BenchWorkspace(name: "relaybench")
        defer { workspace.remove() }
        func path(_ p: String) -> String { workspace.path(p) }
        func sh(_ command: String) throws { try workspace.sh(command) }
        // The same broker settings on every broker: nothing dropped for a slow consumer.
        // Between the sites: loopback, or a delay line (its own thread, in no path's CPU column).
        let distance = SiteDistance(roundTripMilliseconds: rtt)
        defer { distance.stop() }
        let common = ["max_queued_messages 0", "max_inflight_messages \(brokerInflight)"] + (noDelay ? ["set_tcp_nodelay true"] : [])

        // mqbridge: a relay at each site.
        let relayA = try MosquittoBroker(extraConfiguration: common)
        let relayB = try MosquittoBroker(extraConfiguration: common)
        defer { relayA.stop(); relayB.stop() }
        let fingerprintA = try TestEnvironment.createIdentity(in: path("a/identity"), name: "site-a")
        let fingerprintB = try TestEnvironment.createIdentity(in: path("b/identity"), name: "site-b")
        try "peer site-a\ntopic write bench/#\n".write(toFile: path("b/acl.conf"), atomically: true, encoding: .utf8)
        try """
        identity: identity
        acl: acl.conf
        link:
          listen: 127.0.0.1:0
        peers:
          - name: site-a
            fingerprint: \(fingerprintA)
        relay:
          broker: 127.0.0.1:\(relayB.port)
          rules:
            - {peer: site-a, filter: "bench/#", direction: in, qos: 2}

        """.write(toFile: path("b/mqbridge.yaml"), atomically: true, encoding: .utf8)
        let b = try BridgeProcess(["run", "--config", path("b/mqbridge.yaml"), "--log-level", "notice"], readyEvents: ["link_listening", "relay_broker_connected"])
        defer { b.stop() }
        try "".write(toFile: path("a/acl.conf"), atomically: true, encoding: .utf8)
        try """
        identity: identity
        acl: acl.conf
        peers:
          - name: site-b
            fingerprint: \(fingerprintB)
            connect: 127.0.0.1:\(try distance.across(b.port(event: "link_listening")!))
        relay:
          broker: 127.0.0.1:\(relayA.port)
          rules:
            - {peer: site-b, filter: "bench/#", direction: out, qos: 2}

        """.write(toFile: path("a/mqbridge.yaml"), atomically: true, encoding: .utf8)
        let a = try BridgeProcess(["run", "--config", path("a/mqbridge.yaml"), "--log-level", "notice"], readyEvents: ["relay_stream_up", "relay_broker_connected"])
        defer { a.stop() }

        // mosquitto's bridge: A connects to B's TLS 1.3 listener with a client certificate.
        try sh("for s in ma mb; do openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $s.key -out $s.pem -days 30 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null; done; chmod 644 *.key *.pem")
        let tlsPort = try TestEnvironment.freePort()
        let bridgeB = try MosquittoBroker(extraConfiguration: common + [
            "listener \(tlsPort) 127.0.0.1", "certfile \(path("mb.pem"))", "keyfile \(path("mb.key"))", "cafile \(path("ma.pem"))",
            "require_certificate true", "tls_version tlsv1.3",
        ])
        defer { bridgeB.stop() }
        let bridgeA = try MosquittoBroker(extraConfiguration: common + [
            "connection to-b", "address 127.0.0.1:\(try distance.across(tlsPort))", "topic bench/# out 2", "cleansession false",
            "bridge_cafile \(path("mb.pem"))", "bridge_certfile \(path("ma.pem"))", "bridge_keyfile \(path("ma.key"))", "bridge_tls_version tlsv1.3",
        ])
        defer { bridgeA.stop() }
        // Wait until the mosquitto bridge carries messages.
        let probe = try MosquittoClient(id: "probe", host: "127.0.0.1", port: bridgeB.port, username: "bench")
        let seen = Receiver(capacity: 0, recordLatency: false)
        probe.onMessage = { seen.record($0) }
        probe.subscribe("bench/probe", qos: 1)
        let prober = try MosquittoClient(id: "prober", host: "127.0.0.1", port: bridgeA.port, username: "bench")
        let deadline = Date().addingTimeInterval(15)
        while seen.received.load(ordering: .acquiring) == 0 && Date() < deadline {
            [UInt8](repeating: 1, count: 8).withUnsafeBytes { prober.publish("bench/probe", payload: $0, qos: 1) }
            usleep(200_000)
        }
        guard seen.received.load(ordering: .acquiring) > 0 else { throw BenchError("mosquitto's bridge did not come up: \(bridgeA.log)") }

        print("mqbridge relay benchmark — mosquitto \(mosquittoVersion()), \(ProcessInfo.processInfo.activeProcessorCount) cores, median of \(rounds) rounds, 64-byte payloads")
        print("publishers → broker A → {mqbridge A → link → mqbridge B | mosquitto bridge over TLS 1.3} → broker B → subscriber")
        print("mqbridge QoS 1 is durable (fsync before the broker is acknowledged); mosquitto's bridge keeps its queue in memory")
        print(rtt > 0 ? "between the sites: \(format(rtt, 1)) ms round trip (a delay line, both paths)" : "between the sites: loopback")
        print("throughput: closed loop, at most \(Load.window(roundTripMilliseconds: rtt, base: measurement.window)) messages unreceived")
        print("every broker: max_inflight_messages \(brokerInflight), max_queued_messages 0 (unlimited)\(noDelay ? ", set_tcp_nodelay true; load clients with TCP_NODELAY" : "")")
        print("")
        let paths: [(String, Int, Int, [Int32])] = [
            ("mqbridge", relayA.port, relayB.port, [a.process.pid, b.process.pid, relayA.pid, relayB.pid]),
            ("mosquitto", bridgeA.port, bridgeB.port, [bridgeA.pid, bridgeB.pid]),
        ]
        var table: [[String]] = []
        for qos in [Int32(0), 1] {
            var rates: [String: [Double]] = [:], cpu: [String: [Double]] = [:], split: [[Double]] = []
            for _ in 0..<rounds {
                for (name, publishPort, subscribePort, pids) in paths {
                    let before = pids.map(ProcessStats.cpuSeconds)
                    let t = try Load.throughput(host: "127.0.0.1", port: publishPort, subscribePort: subscribePort, qos: qos, publishers: 4, seconds: seconds,
                                                 window: Load.window(roundTripMilliseconds: rtt, base: measurement.window))
                    let perMessage = zip(pids.map(ProcessStats.cpuSeconds), before).map { ($0 - $1) / Double(max(t.messages, 1)) * 1e6 }
                    rates[name, default: []].append(t.messagesPerSecond)
                    cpu[name, default: []].append(perMessage.reduce(0, +))
                    if name == "mqbridge" { split.append(perMessage) }
                    usleep(1_500_000)  // let the previous run drain before the next one counts
                }
            }
            let m = median(rates["mqbridge"]!), q = median(rates["mosquitto"]!)
            table.append(["QoS \(qos) end-to-end throughput, 4 publishers (msg/s)", format(m, 0), format(q, 0), "\(format(m / q, 2))×", qos == 0 ? "≥ 2×" : "≥ 1.5×"])
            table.append(["  range over the rounds (ratio within a round)", spread(rates["mqbridge"]!), spread(rates["mosquitto"]!),
                          roundRatios(rates["mqbridge"]!, rates["mosquitto"]!), ""])
            table.append(["  CPU per message, brokers and bridges (µs)", format(median(cpu["mqbridge"]!), 2), format(median(cpu["mosquitto"]!), 2), "", ""])
            // Where the mqbridge path spends it: the relays' share against the brokers'.
            let parts = (0..<4).map { i in format(median(split.map { $0[i] }), 1) }
            table.append(["    relay A / relay B / broker A / broker B (µs)", parts.joined(separator: " / "), "", "", ""])
            // The most any relay could reach here: the rate if both relays cost nothing and the
            // brokers beside them spent what they did (an upper bound: the load generator's
            // CPU, the same on both paths, would bring it closer to 1).
            let bounds = zip(cpu["mosquitto"]!, split).map { $0 / max($1[2] + $1[3], 0.001) }
            table.append(["    with relays that cost nothing, at most", "", "", "\(format(median(bounds), 2))×", ""])
        }
        for qos in [Int32(0), 1, 2] {
            var p50: [String: [Double]] = [:], p99: [String: [Double]] = [:]
            for _ in 0..<rounds {
                for (name, publishPort, subscribePort, _) in paths {
                    let l = try Load.latency(host: "127.0.0.1", port: publishPort, subscribePort: subscribePort, qos: qos, rate: rate, seconds: 2, noDelay: noDelay)
                    p50[name, default: []].append(l.p50)
                    p99[name, default: []].append(l.p99)
                    usleep(500_000)
                }
            }
            table.append(["QoS \(qos) latency p50 @\(rate)/s (µs)", format(median(p50["mqbridge"]!), 1), format(median(p50["mosquitto"]!), 1), "", ""])
            let m99 = median(p99["mqbridge"]!), q99 = median(p99["mosquitto"]!)
            table.append(["QoS \(qos) latency p99 @\(rate)/s (µs)", format(m99, 1), format(q99, 1), "\(format(m99 / q99, 2))×", "≤ 0.5×"])
        }
        table.append(["RSS after the run, both bridges (MiB)", format(Double(ProcessStats.rssKiB(a.process.pid) + ProcessStats.rssKiB(b.process.pid)) / 1024, 1), "—", "", ""])

        print(pad("case", 56) + pad("mqbridge", 17) + pad("mosquitto", 17) + pad("ratio", 14) + "target")
        print(String(repeating: "-", count: 116))
        for row in table { print(pad(row[0], 56) + pad(row[1], 17) + pad(row[2], 17) + pad(row[3], 14) + row[4]) }
    }
}
