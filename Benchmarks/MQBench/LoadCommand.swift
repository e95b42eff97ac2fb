import ArgumentParser
import Foundation

/// Load against any MQTT listener, for profiling a running mqbridge (or a broker) by hand:
/// `mqbridge-bench load --port P --qos 0 --seconds 10`; also the load in the compose labs.
struct LoadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "load", abstract: "Closed-loop publish load against HOST:PORT; prints the rate.")

    @Option(help: "Host to connect to.") var host = "127.0.0.1"
    @Option(help: "Port the publishers (and, without --subscribe-port, the subscriber) connect to.") var port: Int
    @Option(help: "Host the subscriber connects to, if not --host (e.g. the other site's broker).") var subscribeHost: String?
    @Option(help: "Port the subscriber connects to.") var subscribePort: Int?
    @Option(help: "QoS of the publications.") var qos: Int32 = 0
    @Option(help: "Publishers.") var publishers = 4
    @Option(help: "Seconds.") var seconds: Double = 5
    @Option(help: Load.windowHelp) var window = Load.defaultWindow
    @Flag(help: "Set TCP_NODELAY on the clients (libmosquitto leaves Nagle on).") var noDelay = false
    @Option(help: "QoS 1 and 2 messages each publisher may leave unacknowledged (closed loop only).") var publisherInflight: UInt32 = 100
    @Option(help: "Open loop at this many messages per second (one publisher); prints latency p50/p99 instead of the rate.") var rate: Int?

    func run() throws {
        mosquitto_lib_init_once()
        if let rate {
            let l = try Load.latency(host: host, port: port, subscribeHost: subscribeHost, subscribePort: subscribePort, qos: qos, rate: rate, seconds: seconds, noDelay: noDelay)
            print("latency p50 \(String(format: "%.1f", l.p50)) µs, p99 \(String(format: "%.1f", l.p99)) µs (\(l.received)/\(l.sent) received)")
            return
        }
        let t = try Load.throughput(host: host, port: port, subscribeHost: subscribeHost, subscribePort: subscribePort, qos: qos, publishers: publishers, seconds: seconds, window: window,
                                    publisherInflight: publisherInflight)
        print("\(Int(t.messagesPerSecond)) msg/s (\(t.messages) messages in \(String(format: "%.2f", t.seconds)) s)")
    }
}
