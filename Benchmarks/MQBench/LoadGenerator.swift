import ArgumentParser
import CMosquitto
import Foundation
import Synchronization
import TestSupport

/// A load generator on libmosquitto: publishers and a subscriber in this process, talking to
/// a broker (directly or through mqbridge). Payloads carry the send time (CLOCK_MONOTONIC), so
/// the subscriber measures one-way latency on the same clock.
final class MosquittoClient: @unchecked Sendable {
    let handle: OpaquePointer
    let connected = Atomic<Bool>(false)
    /// QoS 1 and 2 publications the broker has acknowledged (PUBACK / PUBCOMP).
    let acknowledged = Atomic<Int>(0)
    var onMessage: ((UnsafePointer<mosquitto_message>) -> Void)?

    /// `noDelay` sets TCP_NODELAY, as paho-mqtt and most newer clients do; libmosquitto's
    /// default (Nagle on) is what old firmware does.
    init(id: String, host: String, port: Int, username: String?, maxInflight: UInt32 = 100, noDelay: Bool = false) throws {
        guard let handle = mosquitto_new(id, true, nil) else { throw BenchError("mosquitto_new failed") }
        self.handle = handle
        mosquitto_user_data_set(handle, Unmanaged.passUnretained(self).toOpaque())
        if let username { mosquitto_username_pw_set(handle, username, nil) }
        mosquitto_max_inflight_messages_set(handle, maxInflight)
        if noDelay { mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1) }
        mosquitto_connect_callback_set(handle) { _, object, rc in
            let client = Unmanaged<MosquittoClient>.fromOpaque(object!).takeUnretainedValue()
            if rc == 0 { client.connected.store(true, ordering: .releasing) }
        }
        mosquitto_publish_callback_set(handle) { _, object, _ in
            Unmanaged<MosquittoClient>.fromOpaque(object!).takeUnretainedValue().acknowledged.wrappingAdd(1, ordering: .releasing)
        }
        mosquitto_message_callback_set(handle) { _, object, message in
            let client = Unmanaged<MosquittoClient>.fromOpaque(object!).takeUnretainedValue()
            client.onMessage?(message!)
        }
        guard mosquitto_connect(handle, host, Int32(port), 60) == MOSQ_ERR_SUCCESS.rawValue else {
            throw BenchError("mosquitto_connect to \(host):\(port) failed")
        }
        mosquitto_loop_start(handle)
        let deadline = Date().addingTimeInterval(10)
        while !connected.load(ordering: .acquiring) {
            if Date() > deadline { throw BenchError("no CONNACK from \(host):\(port)") }
            usleep(1000)
        }
    }

    func subscribe(_ filter: String, qos: Int32) {
        mosquitto_subscribe(handle, nil, filter, qos)
    }

    func publish(_ topic: String, payload: UnsafeRawBufferPointer, qos: Int32) {
        mosquitto_publish(handle, nil, topic, Int32(payload.count), payload.baseAddress, qos, false)
    }

    deinit {
        mosquitto_disconnect(handle)
        mosquitto_loop_stop(handle, false)
        mosquitto_destroy(handle)
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Closed-loop publishers wait here, asleep, until the subscriber has caught up. They used to
/// spin on `sched_yield` instead: on two cores four spinning publishers took CPU from the
/// broker and the proxy they were waiting for, the more so the longer the path, and the
/// direct rate itself swung between ~125,000 and ~180,000 msg/s with the generator's CPU
/// per message (11 µs against 6.4 µs).
final class WindowGate: @unchecked Sendable {
    private let condition = NSCondition()
    /// The lowest count a waiter waits for (Int.max: nobody waits). Read by the subscriber's
    /// thread for every message: one relaxed load.
    private let target = Atomic<Int>(Int.max)

    /// Blocks until `count` reaches `goal` or `stop` is set (a broker that drops messages
    /// never lets the count get there). The timed wait is a safety net for a wake-up lost
    /// between two waiters' goals and for `stop`; it is not what normally wakes a waiter.
    func wait(until goal: Int, count: borrowing Atomic<Int>, stop: borrowing Atomic<Bool>) {
        condition.lock()
        defer { condition.unlock() }
        while count.load(ordering: .acquiring) < goal && !stop.load(ordering: .relaxed) {
            target.store(min(target.load(ordering: .relaxed), goal), ordering: .relaxed)
            _ = condition.wait(until: Date(timeIntervalSinceNow: 0.002))
        }
    }

    /// The subscriber got its `count`th message.
    func received(_ count: Int) {
        guard count >= target.load(ordering: .relaxed) else { return }
        condition.lock()
        target.store(Int.max, ordering: .relaxed)
        condition.broadcast()
        condition.unlock()
    }
}

/// Counts and latencies recorded by the subscriber.
final class Receiver: @unchecked Sendable {
    let received = Atomic<Int>(0)
    let latencies: UnsafeMutablePointer<UInt64>
    let capacity: Int
    let recordLatency: Bool

    init(capacity: Int, recordLatency: Bool) {
        self.capacity = capacity
        self.recordLatency = recordLatency
        latencies = .allocate(capacity: capacity)
    }

    /// Where closed-loop publishers wait while their window is full.
    let gate = WindowGate()

    func record(_ message: UnsafePointer<mosquitto_message>) {
        let now = monotonicNanoseconds()
        let index = received.wrappingAdd(1, ordering: .relaxed).oldValue
        gate.received(index + 1)
        if recordLatency, index < capacity, message.pointee.payloadlen >= 8 {
            let sent = message.pointee.payload.loadUnaligned(as: UInt64.self)
            latencies[index] = now &- sent
        }
    }

    func percentiles() -> (p50: Double, p99: Double) {
        let count = min(received.load(ordering: .acquiring), capacity)
        guard count > 0 else { return (0, 0) }
        let sorted = UnsafeBufferPointer(start: latencies, count: count).sorted()
        return (Double(sorted[count / 2]) / 1000, Double(sorted[min(count - 1, count * 99 / 100)]) / 1000)
    }

    deinit { latencies.deallocate() }
}

enum Load {
    struct Throughput {
        var messagesPerSecond: Double
        var messages: Int
        var seconds: Double
    }

    /// The closed loop's window with the sites `rtt` milliseconds apart: what is in flight
    /// across the distance must not be what limits the rate (200 per millisecond of round
    /// trip, with the messages half a round trip on their way, allows 400,000 msg/s at any
    /// distance), on top of the window that suits loopback.
    static func window(roundTripMilliseconds rtt: Double, base: Int? = nil) -> Int { (base ?? defaultWindow) + Int(rtt * 200) }
    /// Large enough that every path saturates both cores on loopback: at 2,000 (the window
    /// until 2026-11-27) the proxy path left ~10 % of the CPU idle, waiting on its own latency,
    /// so the rate measured the path's latency more than its cost.
    static let defaultWindow = 20_000
    static let windowHelp: ArgumentHelp = "Closed loop: at most this many messages published and not yet received (default 20,000, plus 200 per millisecond of --rtt). With too small a window a longer path waits on its own latency and leaves CPU idle."


    /// Closed-loop throughput: `publishers` clients publish as fast as they can while at most
    /// `window` messages are unreceived, for `seconds`; the rate is what the subscriber got.
    /// `subscribeHost`, `subscribePort`: where the subscriber connects, if not `host`, `port`
    /// (a relay between brokers).
    /// `publisherInflight`: QoS 1 and 2 messages each publisher leaves unacknowledged before
    /// libmosquitto holds the next ones back (its own default is 20).
    static func throughput(host: String, port: Int, subscribeHost: String? = nil, subscribePort: Int? = nil, qos: Int32, publishers: Int, seconds: Double, payloadSize: Int = 64,
                           window: Int = defaultWindow, publisherInflight: UInt32 = 100) throws -> Throughput {
        let receiver = Receiver(capacity: 0, recordLatency: false)
        let subscriber = try MosquittoClient(id: "bench-sub-\(UUID().uuidString.prefix(8))", host: subscribeHost ?? host, port: subscribePort ?? port, username: "bench")
        subscriber.onMessage = { receiver.record($0) }
        subscriber.subscribe("bench/t/#", qos: qos)
        usleep(200_000)
        let clients = try (0..<publishers).map { i in
            try MosquittoClient(id: "bench-pub-\(i)-\(UUID().uuidString.prefix(8))", host: host, port: port, username: "bench", maxInflight: publisherInflight)
        }
        let published = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let start = monotonicNanoseconds()
        let threads = clients.enumerated().map { index, client in
            Thread {
                var payload = [UInt8](repeating: 0x5A, count: payloadSize)
                let topic = "bench/t/\(index)"
                while !stop.load(ordering: .relaxed) {
                    let sent = published.load(ordering: .relaxed)
                    if sent - receiver.received.load(ordering: .relaxed) >= window {
                        // Until half the window has drained: one wake-up per half window.
                        receiver.gate.wait(until: sent - window / 2, count: receiver.received, stop: stop)
                        continue
                    }
                    payload.withUnsafeMutableBytes { $0.storeBytes(of: monotonicNanoseconds(), as: UInt64.self) }
                    payload.withUnsafeBytes { client.publish(topic, payload: $0, qos: qos) }
                    published.wrappingAdd(1, ordering: .relaxed)
                }
            }
        }
        threads.forEach { $0.start() }
        usleep(UInt32(seconds * 1_000_000))
        let got = receiver.received.load(ordering: .acquiring)
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        stop.store(true, ordering: .relaxed)
        while threads.contains(where: { !$0.isFinished }) { usleep(1000) }
        usleep(300_000)
        _ = clients
        return Throughput(messagesPerSecond: Double(got) / elapsed, messages: got, seconds: elapsed)
    }

    /// Open-loop latency: one publisher at a fixed rate for `seconds`.
    static func latency(host: String, port: Int, subscribeHost: String? = nil, subscribePort: Int? = nil, qos: Int32, rate: Int, seconds: Double,
                        noDelay: Bool = false) throws -> (p50: Double, p99: Double, received: Int, sent: Int) {
        let total = Int(Double(rate) * seconds)
        let receiver = Receiver(capacity: total, recordLatency: true)
        let subscriber = try MosquittoClient(id: "lat-sub-\(UUID().uuidString.prefix(8))", host: subscribeHost ?? host, port: subscribePort ?? port, username: "bench", noDelay: noDelay)
        subscriber.onMessage = { receiver.record($0) }
        subscriber.subscribe("bench/lat", qos: qos)
        let publisher = try MosquittoClient(id: "lat-pub-\(UUID().uuidString.prefix(8))", host: host, port: port, username: "bench", noDelay: noDelay)
        usleep(200_000)
        var payload = [UInt8](repeating: 0x41, count: 64)
        let interval = 1_000_000_000 / UInt64(rate)
        let start = monotonicNanoseconds()
        for i in 0..<total {
            // Sleep until the send time (no busy wait: on a small machine a spinning
            // publisher would steal the CPU that the broker and the proxy need).
            let due = start + UInt64(i) * interval
            var wake = timespec(tv_sec: Int(due / 1_000_000_000), tv_nsec: Int(due % 1_000_000_000))
            while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &wake, nil) == EINTR {}
            payload.withUnsafeMutableBytes { $0.storeBytes(of: monotonicNanoseconds(), as: UInt64.self) }
            payload.withUnsafeBytes { publisher.publish("bench/lat", payload: $0, qos: qos) }
        }
        let deadline = Date().addingTimeInterval(5)
        while receiver.received.load(ordering: .acquiring) < total && Date() < deadline { usleep(1000) }
        let (p50, p99) = receiver.percentiles()
        return (p50, p99, receiver.received.load(ordering: .acquiring), total)
    }
}

extension Load {
    /// A device's reporting pattern: `size` QoS 1 publications at once, then quiet until the
    /// next burst `interval` later. Returns the p50 and p99 (µs) of the time from the first
    /// PUBLISH of a burst to the PUBACK of its last. With Nagle on at the broker (mosquitto's
    /// default) the last PUBACK waits for the client's delayed ACK of the one before it.
    static func burstAcknowledgement(host: String, port: Int, bursts: Int, size: Int = 3, interval: Double = 0.01) throws -> (p50: Double, p99: Double) {
        let client = try MosquittoClient(id: "burst-\(UUID().uuidString.prefix(8))", host: host, port: port, username: "bench")
        let payload = [UInt8](repeating: 0x42, count: 64)
        var times: [Double] = []
        for burst in 0..<bursts {
            let start = monotonicNanoseconds()
            for _ in 0..<size { payload.withUnsafeBytes { client.publish("bench/burst", payload: $0, qos: 1) } }
            let deadline = start + 1_000_000_000
            while client.acknowledged.load(ordering: .acquiring) < (burst + 1) * size {
                guard monotonicNanoseconds() < deadline else { throw BenchError("no PUBACK within 1 s from \(host):\(port)") }
                usleep(20)
            }
            times.append(Double(monotonicNanoseconds() - start) / 1000)
            usleep(UInt32(interval * 1_000_000))
        }
        times.sort()
        return (times[times.count / 2], times[min(times.count - 1, times.count * 99 / 100)])
    }

    /// `burstAcknowledgement` on every path, `rounds` times: each path's p50s and p99s.
    static func burstAcknowledgements(paths: [(name: String, port: Int)], rounds: Int, bursts: Int) throws
        -> (p50: [String: [Double]], p99: [String: [Double]]) {
        var p50: [String: [Double]] = [:], p99: [String: [Double]] = [:]
        for _ in 0..<rounds {
            for path in paths {
                let b = try burstAcknowledgement(host: "127.0.0.1", port: path.port, bursts: bursts)
                p50[path.name, default: []].append(b.p50)
                p99[path.name, default: []].append(b.p99)
            }
        }
        return (p50, p99)
    }
}

/// CPU time and RSS of a process, from /proc.
enum ProcessStats {
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        let utime = Double(fields[11]) ?? 0, stime = Double(fields[12]) ?? 0
        return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func rssKiB(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return 0
    }
}

/// A benchmark's scratch directory (readable by a broker that dropped to user mosquitto),
/// with the set-up every process benchmark needs done.
struct BenchWorkspace {
    let directory: URL

    init(name: String) throws {
        TestEnvironment.raiseFileLimit()
        mosquitto_lib_init_once()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        _ = chmod(directory.path, 0o755)
    }

    func path(_ relative: String) -> String { directory.appendingPathComponent(relative).path }

    func sh(_ command: String) throws {
        let r = try TestEnvironment.run(["sh", "-c", "cd '\(directory.path)' && \(command)"])
        guard r.status == 0 else { throw BenchError("\(command): \(r.stderr)") }
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}

/// How long and how often each case of a process benchmark is measured.
struct MeasurementOptions: ParsableArguments {
    @Option(help: "Seconds per measurement.") var seconds: Double = 3
    @Option(help: "Rounds; each case reports the median.") var rounds: Int = 3
    @Option(help: Load.windowHelp) var window: Int?
}
