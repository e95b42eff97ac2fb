import ArgumentParser
import Foundation
import TestSupport

/// The proxy against direct broker access and against haproxy in TCP mode (a proxy that parses
/// nothing), same broker, same run: throughput with 4 publishers at QoS 0 and 1, latency at a
/// fixed rate, CPU per message, RSS per idle proxied connection.
struct ProxyBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "proxy", abstract: "mqbridge proxy vs direct mosquitto (libmosquitto load generator).")

    @Option(help: "Seconds per throughput measurement.") var seconds: Double = 3
    @Option(help: "Rounds; each case reports the median.") var rounds: Int = 3
    @Option(help: "Messages per second for the latency cases.") var rate: Int = 5000
    @Option(help: Load.windowHelp) var window: Int?
    @Option(help: "Idle connections for the memory case.") var idleConnections: Int = 2000
    @Flag(help: "Give mqbridge a core of its own: the load generator and mosquitto on CPU 0, mqbridge (1 thread) on CPU 1.")
    var pin = false

    func run() throws {
        TestEnvironment.raiseFileLimit()
        mosquitto_lib_init_once()
        let broker = try MosquittoBroker(extraConfiguration: ["max_queued_messages 100000", "max_inflight_messages 100", "log_type error"])
        defer { broker.stop() }
        let acl = try TestEnvironment.temporaryFile("user bench\ntopic readwrite bench/#\n", name: "bench.acl")
        let bridge = try BridgeProcess(["run", "--listen", "127.0.0.1:0", "--broker", "127.0.0.1:\(broker.port)", "--acl", acl, "--log-level", "notice"]
            + (pin ? ["--threads", "1"] : []))
        defer { bridge.stop() }
        // The baseline for "what any TCP proxy costs here": haproxy in TCP mode, which copies
        // bytes between the two sockets and parses nothing. On a small machine the extra hop
        // (another process to wake, two more sockets per message) costs throughput and
        // latency whatever the proxy does; mqbridge's own cost is the gap to haproxy.
        let work = try BenchWorkspace(name: "proxy")
        defer { work.remove() }
        let haproxyPort = try TestEnvironment.freePort()
        try """
        global
            maxconn 1000
        defaults
            mode tcp
            timeout connect 5s
            timeout client 1h
            timeout server 1h
        frontend mqtt
            bind 127.0.0.1:\(haproxyPort)
            default_backend broker
        backend broker
            server mosquitto 127.0.0.1:\(broker.port)

        """.write(toFile: work.path("haproxy.cfg"), atomically: true, encoding: .utf8)
        let haproxy = try ChildProcess(["haproxy", "-db", "-f", work.path("haproxy.cfg")], log: URL(fileURLWithPath: work.path("haproxy.log")))
        defer { haproxy.stop() }
        try TestEnvironment.waitUntilListening(haproxyPort)
        if pin {
            // All threads of each process: the load generator and the broker share CPU 0, the
            // two proxies (measured one at a time) CPU 1.
            for (pid, cpu) in [(getpid(), 0), (broker.pid, 0), (bridge.process.pid, 1), (haproxy.pid, 1)] {
                let r = try TestEnvironment.run(["taskset", "-a", "-p", "-c", "\(cpu)", "\(pid)"])
                guard r.status == 0 else { throw BenchError("taskset failed: \(r.stderr)") }
            }
        }

        let direct = broker.port, proxy = bridge.port
        print("mqbridge proxy benchmark — mosquitto \(mosquittoVersion()) on 127.0.0.1, \(ProcessInfo.processInfo.activeProcessorCount) cores, median of \(rounds) rounds")
        print("direct: 127.0.0.1:\(direct)   mqbridge: 127.0.0.1:\(proxy) → \(direct)   haproxy (TCP mode, no parsing): 127.0.0.1:\(haproxyPort) → \(direct)   64-byte payloads")
        let closedLoopWindow = Load.window(roundTripMilliseconds: 0, base: window)
        print("throughput: closed loop, at most \(closedLoopWindow) messages unreceived")
        print(pin ? "layout: load generator + mosquitto pinned to CPU 0; mqbridge (1 event loop) and haproxy pinned to CPU 1"
                  : "layout: all processes share all cores (the proxy competes with the load generator and the broker)")
        print("")

        // Each case is measured on the three paths in turn within a round, so that they see
        // the same machine; the median of the rounds is reported.
        let paths: [(name: String, port: Int, pid: Int32?)] = [("direct", direct, nil), ("mqbridge", proxy, bridge.process.pid), ("haproxy", haproxyPort, haproxy.pid)]
        func column(_ values: [String: [Double]], _ decimals: Int) -> [String] {
            paths.map { values[$0.name].map { format(median($0), decimals) } ?? "—" }
        }
        var rows: [[String]] = []
        for qos in [Int32(0), 1] {
            var rates: [String: [Double]] = [:], proxyCPU: [String: [Double]] = [:], brokerCPU: [String: [Double]] = [:]
            for _ in 0..<rounds {
                for path in paths {
                    let p0 = path.pid.map(ProcessStats.cpuSeconds) ?? 0, b0 = ProcessStats.cpuSeconds(broker.pid)
                    let r = try Load.throughput(host: "127.0.0.1", port: path.port, qos: qos, publishers: 4, seconds: seconds, window: closedLoopWindow)
                    let p1 = path.pid.map(ProcessStats.cpuSeconds) ?? 0, b1 = ProcessStats.cpuSeconds(broker.pid)
                    let messages = Double(max(r.messages, 1))
                    rates[path.name, default: []].append(r.messagesPerSecond)
                    if path.pid != nil { proxyCPU[path.name, default: []].append((p1 - p0) / messages * 1e6) }
                    brokerCPU[path.name, default: []].append((b1 - b0) / messages * 1e6)
                }
            }
            let d = median(rates["direct"]!), m = median(rates["mqbridge"]!), h = median(rates["haproxy"]!)
            rows.append(["QoS \(qos) throughput, 4 publishers (msg/s)"] + column(rates, 0)
                        + ["\(format(m / d, 2))× direct, \(format(m / h, 2))× haproxy", qos == 0 ? "≥ 0.95× direct" : "—"])
            rows.append(["  range over the rounds (msg/s; ratio within a round)"] + paths.map { spread(rates[$0.name]!) }
                        + ["\(roundRatios(rates["mqbridge"]!, rates["direct"]!)) direct", ""])
            rows.append(["  CPU per message, the proxy (µs)"] + column(proxyCPU, 2) + ["", ""])
            rows.append(["  CPU per message, mosquitto (µs)"] + column(brokerCPU, 2) + ["", ""])
        }
        for qos in [Int32(0), 1] {
            // Two layouts through the proxy: both clients behind it (a message crosses it twice:
            // publisher → proxy → broker → proxy → subscriber), and only the publisher behind
            // it (once; e.g. legacy devices publishing to a historian on the broker).
            var p50: [String: [Double]] = [:], p99: [String: [Double]] = [:], o50: [String: [Double]] = [:], o99: [String: [Double]] = [:]
            for _ in 0..<rounds {
                for path in paths {
                    let both = try Load.latency(host: "127.0.0.1", port: path.port, qos: qos, rate: rate, seconds: 2)
                    p50[path.name, default: []].append(both.p50); p99[path.name, default: []].append(both.p99)
                    guard path.pid != nil else { continue }
                    let one = try Load.latency(host: "127.0.0.1", port: path.port, subscribePort: direct, qos: qos, rate: rate, seconds: 2)
                    o50[path.name, default: []].append(one.p50); o99[path.name, default: []].append(one.p99)
                }
            }
            o50["direct"] = p50["direct"]; o99["direct"] = p99["direct"]
            let d50 = median(p50["direct"]!)
            for (label, x50, x99) in [("both clients via the proxy", p50, p99), ("publisher only via the proxy", o50, o99)] {
                let m = median(x50["mqbridge"]!) - d50, h = median(x50["haproxy"]!) - d50
                rows.append(["QoS \(qos) latency p50 @\(rate)/s, \(label) (µs)"] + column(x50, 1)
                            + ["\(signed(m)) µs (haproxy \(signed(h)))", qos == 0 ? "≤ +40 µs" : "—"])
                rows.append(["QoS \(qos) latency p99 @\(rate)/s, \(label) (µs)"] + column(x99, 1) + ["", ""])
            }
        }
        // A device publishing a few readings at once: through a proxy that leaves ACKs to the
        // kernel (and directly) the last PUBACK of each burst waits for a delayed ACK.
        let burst = try Load.burstAcknowledgements(paths: paths.map { ($0.name, $0.port) }, rounds: rounds, bursts: 100)
        rows.append(["3 QoS 1 publishes at once, every 10 ms: last PUBACK p50 (µs)"] + column(burst.p50, 1) + ["", "—"])
        rows.append(["3 QoS 1 publishes at once, every 10 ms: last PUBACK p99 (µs)"] + column(burst.p99, 1) + ["", "—"])
        let perConnection = try idleMemory(proxyPort: proxy, bridgePID: bridge.process.pid, count: idleConnections)
        rows.append(["RSS per idle proxied connection (KiB)", "—", format(perConnection, 2), "—", "", "≤ 8 KiB"])

        let widths = [62, 17, 17, 17, 36]
        print(zip(["case", "direct", "mqbridge", "haproxy", "mqbridge vs direct (haproxy)"], widths).map { pad($0, $1) }.joined() + "target")
        print(String(repeating: "-", count: 168))
        for row in rows { print(zip(row, widths).map { pad($0, $1) }.joined() + row.last!) }
    }

    /// Opens `count` idle MQTT connections through the proxy (CONNECT answered) and returns the
    /// growth of mqbridge's RSS per connection; each holds a client and a broker connection.
    func idleMemory(proxyPort: Int, bridgePID: Int32, count: Int) throws -> Double {
        func open(_ i: Int) throws -> Int32 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(proxyPort).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
            guard ok else { throw BenchError("connect failed at connection \(i)") }
            let id = Array("idle-\(i)".utf8), user = Array("bench".utf8)
            let body: [UInt8] = [0, 4] + Array("MQTT".utf8) + [4, 0x82, 0, 0] + [0, UInt8(id.count)] + id + [0, UInt8(user.count)] + user
            let packet: [UInt8] = [0x10, UInt8(body.count)] + body
            _ = packet.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            var reply = [UInt8](repeating: 0, count: 4)
            var got = 0
            while got < 4 {
                let n = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, 4 - got, 0) }
                guard n > 0 else { throw BenchError("no CONNACK on connection \(i)") }
                got += n
            }
            guard reply == [0x20, 0x02, 0x00, 0x00] else { throw BenchError("CONNACK \(reply) on connection \(i)") }
            return fd
        }
        var sockets = try (0..<100).map(open)  // warm-up: allocator arenas, event loop buffers
        usleep(500_000)
        let before = ProcessStats.rssKiB(bridgePID)
        for i in 100..<(100 + count) { sockets.append(try open(i)) }
        usleep(1_000_000)
        let after = ProcessStats.rssKiB(bridgePID)
        for fd in sockets { close(fd) }
        return Double(after - before) / Double(count)
    }

}

import CMosquitto

func mosquitto_lib_init_once() { _ = mosquitto_lib_init() }

/// "+12.3" or "-4.5": a difference from direct.
func signed(_ value: Double) -> String { (value < 0 ? "" : "+") + format(value, 1) }

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

/// "min–max" of the rounds: on 2 loopback cores a path's rate can swing by a third from
/// one round to the next, and a median alone hides that.
func spread(_ values: [Double], _ decimals: Int = 0) -> String {
    guard let low = values.min(), let high = values.max() else { return "—" }
    return "\(format(low, decimals))–\(format(high, decimals))"
}

/// "min–max×": the ratio of `measured` to `baseline` within each round (the two ran one after
/// the other, on the same machine state).
func roundRatios(_ measured: [Double], _ baseline: [Double]) -> String {
    spread(zip(measured, baseline).map { $0 / max($1, 1) }, 2) + "×"
}

func mosquittoVersion() -> String {
    var major: Int32 = 0, minor: Int32 = 0, revision: Int32 = 0
    mosquitto_lib_version(&major, &minor, &revision)
    return "\(major).\(minor).\(revision)"
}
