import ArgumentParser
import Foundation
import TestSupport

/// The proxy against direct broker access, same broker, same run: throughput with 4 publishers
/// at QoS 0 and 1, latency at a fixed rate, CPU per message, RSS per idle proxied connection.
struct ProxyBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "proxy", abstract: "mqbridge proxy vs direct mosquitto (libmosquitto load generator).")

    @Option(help: "Seconds per throughput measurement.") var seconds: Double = 3
    @Option(help: "Rounds; each case reports the median.") var rounds: Int = 3
    @Option(help: "Messages per second for the latency cases.") var rate: Int = 5000
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
        if pin {
            // All threads of each process: the load generator and the broker share CPU 0.
            for (pid, cpu) in [(getpid(), 0), (broker.pid, 0), (bridge.process.pid, 1)] {
                let r = try TestEnvironment.run(["taskset", "-a", "-p", "-c", "\(cpu)", "\(pid)"])
                guard r.status == 0 else { throw BenchError("taskset failed: \(r.stderr)") }
            }
        }
        let direct = broker.port, proxy = bridge.port
        print("mqbridge proxy benchmark — mosquitto \(mosquittoVersion()) on 127.0.0.1, \(ProcessInfo.processInfo.activeProcessorCount) cores, median of \(rounds) rounds")
        print("direct: 127.0.0.1:\(direct)   proxy: 127.0.0.1:\(proxy) → \(direct)   64-byte payloads")
        print(pin ? "layout: load generator + mosquitto pinned to CPU 0; mqbridge (1 event loop) pinned to CPU 1"
                  : "layout: all processes share all cores (the proxy competes with the load generator and the broker)")
        print("")

        var rows: [(String, String, String, String, String)] = []
        for qos in [Int32(0), 1] {
            var directRates: [Double] = [], proxyRates: [Double] = []
            var bridgeCPU: [Double] = [], brokerCPUDirect: [Double] = [], brokerCPUProxy: [Double] = []
            for _ in 0..<rounds {
                let b0 = ProcessStats.cpuSeconds(broker.pid)
                let d = try Load.throughput(host: "127.0.0.1", port: direct, qos: qos, publishers: 4, seconds: seconds)
                let b1 = ProcessStats.cpuSeconds(broker.pid)
                directRates.append(d.messagesPerSecond)
                brokerCPUDirect.append((b1 - b0) / Double(max(d.messages, 1)))
                let p0 = ProcessStats.cpuSeconds(bridge.process.pid), b2 = ProcessStats.cpuSeconds(broker.pid)
                let p = try Load.throughput(host: "127.0.0.1", port: proxy, qos: qos, publishers: 4, seconds: seconds)
                let p1 = ProcessStats.cpuSeconds(bridge.process.pid), b3 = ProcessStats.cpuSeconds(broker.pid)
                proxyRates.append(p.messagesPerSecond)
                bridgeCPU.append((p1 - p0) / Double(max(p.messages, 1)))
                brokerCPUProxy.append((b3 - b2) / Double(max(p.messages, 1)))
            }
            let d = median(directRates), p = median(proxyRates)
            rows.append(("QoS \(qos) throughput, 4 publishers (msg/s)", format(d, 0), format(p, 0), "\(format(p / d, 2))×", qos == 0 ? "≥ 0.95×" : "—"))
            rows.append(("  CPU per message, mqbridge (µs)", "—", format(median(bridgeCPU) * 1e6, 2), "", ""))
            rows.append(("  CPU per message, mosquitto (µs)", format(median(brokerCPUDirect) * 1e6, 2), format(median(brokerCPUProxy) * 1e6, 2), "", ""))
        }
        for qos in [Int32(0), 1] {
            // Two layouts through the proxy: both clients behind it (a message crosses it twice:
            // publisher → proxy → broker → proxy → subscriber), and only the publisher behind
            // it (once; e.g. legacy devices publishing to a historian on the broker).
            var d50: [Double] = [], d99: [Double] = [], p50: [Double] = [], p99: [Double] = [], o50: [Double] = [], o99: [Double] = []
            for _ in 0..<rounds {
                let d = try Load.latency(host: "127.0.0.1", port: direct, qos: qos, rate: rate, seconds: 2)
                let p = try Load.latency(host: "127.0.0.1", port: proxy, qos: qos, rate: rate, seconds: 2)
                let o = try Load.latency(host: "127.0.0.1", port: proxy, subscribePort: direct, qos: qos, rate: rate, seconds: 2)
                d50.append(d.p50); d99.append(d.p99); p50.append(p.p50); p99.append(p.p99); o50.append(o.p50); o99.append(o.p99)
            }
            for (label, x50, x99) in [("both clients via mqbridge", p50, p99), ("publisher only via mqbridge", o50, o99)] {
                rows.append(("QoS \(qos) latency p50 @\(rate)/s, \(label) (µs)", format(median(d50), 1), format(median(x50), 1),
                             "+\(format(median(x50) - median(d50), 1)) µs", qos == 0 ? "≤ +40 µs" : "—"))
                rows.append(("QoS \(qos) latency p99 @\(rate)/s, \(label) (µs)", format(median(d99), 1), format(median(x99), 1),
                             "+\(format(median(x99) - median(d99), 1)) µs", ""))
            }
        }
        let perConnection = try idleMemory(proxyPort: proxy, bridgePID: bridge.process.pid, count: idleConnections)
        rows.append(("RSS per idle proxied connection (KiB)", "—", format(perConnection, 2), "", "≤ 8 KiB"))

        print(pad("case", 66) + pad("direct", 14) + pad("via mqbridge", 14) + pad("ratio/delta", 14) + "target")
        print(String(repeating: "-", count: 120))
        for row in rows { print(pad(row.0, 66) + pad(row.1, 14) + pad(row.2, 14) + pad(row.3, 14) + row.4) }
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

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

func mosquittoVersion() -> String {
    var major: Int32 = 0, minor: Int32 = 0, revision: Int32 = 0
    mosquitto_lib_version(&major, &minor, &revision)
    return "\(major).\(minor).\(revision)"
}
