public import Foundation

/// The mqbridge binary running as a real process, with its JSON log parsed for the addresses
/// it bound (tests pass port 0 and read the port back: no fixed ports, no races).
public final class BridgeProcess: @unchecked Sendable {
    public let process: ChildProcess
    public let directory: URL
    /// The first proxy listener's port.
    public private(set) var port: Int = 0
    public private(set) var metricsPort: Int?

    /// Starts `mqbridge <arguments>` and waits until it logs that it is listening (or, with
    /// `readyEvents`, until each of those events has been logged).
    public init(_ arguments: [String], expectMetrics: Bool = false, readyEvents: [String] = ["listening"], timeout: Double = 15) throws {
        TestEnvironment.raiseFileLimit()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        process = try ChildProcess([TestEnvironment.mqbridgeBinary] + arguments, log: directory.appendingPathComponent("mqbridge.log"))
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            // One read of the log per round: a line that lands between two reads would count
            // as ready without its port having been taken.
            let lines = logLines
            for line in lines {
                if line["event"] == "listening", port == 0, let address = line["address"], let p = Int(address.split(separator: ":").last ?? "") { port = p }
                if line["event"] == "metrics_listening", let address = line["address"], let p = Int(address.split(separator: ":").last ?? "") { metricsPort = p }
            }
            let events = Set(lines.compactMap { $0["event"] })
            if readyEvents.allSatisfy(events.contains) && (!expectMetrics || metricsPort != nil) { return }
            if process.hasExited { throw TestError("mqbridge exited early: \(process.log)") }
            usleep(20_000)
        }
        throw TestError("mqbridge did not report listening within \(timeout)s: \(process.log)")
    }

    /// Each JSON log line as a flat [key: string] dictionary.
    public var logLines: [[String: String]] {
        process.log.split(separator: "\n").compactMap { line in
            guard let data = line.data(using: .utf8), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
            return object.mapValues { "\($0)" }
        }
    }

    public func lines(event: String) -> [[String: String]] { logLines.filter { $0["event"] == event } }

    /// How many denials (or refusals) the log accounts for: a line each for `event`, plus the
    /// `count` of each `suppressedEvent` line that stands for those not logged one by one.
    public func loggedCount(event: String, suppressedEvent: String) -> Int {
        let lines = logLines
        return lines.filter { $0["event"] == event }.count
            + lines.filter { $0["event"] == suppressedEvent }.reduce(0) { $0 + (Int($1["count"] ?? "") ?? 0) }
    }

    /// The port in the `address` of the first `event` line whose fields match `matching`.
    public func port(event: String, matching: [String: String] = [:]) -> Int? {
        for line in lines(event: event) where matching.allSatisfy({ line[$0.key] == $0.value }) {
            if let address = line["address"], let port = Int(address.split(separator: ":").last ?? "") { return port }
        }
        return nil
    }

    /// Waits until a line with `event` (and matching fields) is logged.
    public func waitFor(event: String, matching: [String: String] = [:], timeout: Double = 15) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if lines(event: event).contains(where: { line in matching.allSatisfy { line[$0.key] == $0.value } }) { return }
            usleep(20_000)
        }
        throw TestError("no \(event) \(matching) within \(timeout)s: \(process.log.suffix(3000))")
    }

    /// GET /metrics, as text.
    public func scrapeMetrics() throws -> String {
        guard let metricsPort else { throw TestError("metrics are not enabled") }
        let result = try TestEnvironment.run(["python3", "-c", "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:\(metricsPort)/metrics').read().decode())"])
        guard result.status == 0 else { throw TestError("scrape failed: \(result.stderr)") }
        return String(decoding: result.stdout, as: UTF8.self)
    }

    /// The value of one series in a scrape, e.g. `mqbridge_denials_total{kind="publish"}`.
    public func metric(_ series: String) throws -> Double? {
        for line in try scrapeMetrics().split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.split(separator: " ").last ?? "")
        }
        return nil
    }

    public func stop() {
        process.stop()
        // MQBRIDGE_KEEP_LOGS=1 keeps the log for a post-mortem.
        if ProcessInfo.processInfo.environment["MQBRIDGE_KEEP_LOGS"] != nil {
            print("kept mqbridge log: \(directory.appendingPathComponent("mqbridge.log").path)")
        } else {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    deinit { process.stop(grace: 2) }
}

extension TestEnvironment {
    /// Many-connection tests need more descriptors than a default soft limit of 1024.
    public static func raiseFileLimit() {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = min(limit.rlim_max, 65536)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
    }

    /// Runs a script from Tests/IntegrationTests/Scripts with python3.
    public static func python(_ script: String, _ arguments: [String], stdin: Data = Data(), timeout: Double = 120) throws -> (status: Int32, stdout: String, stderr: String) {
        let result = try run(["python3", TestEnvironment.script(script)] + arguments, stdin: stdin, timeout: timeout)
        return (result.status, String(decoding: result.stdout, as: UTF8.self), result.stderr)
    }
}

extension TestEnvironment {
    /// `mqbridge identity init` in `directory`, returning the printed fingerprint (`SHA256:…`).
    @discardableResult
    public static func createIdentity(in directory: String, name: String) throws -> String {
        let created = try run([mqbridgeBinary, "identity", "init", "--dir", directory, "--name", name])
        guard created.status == 0 else { throw TestError("identity init \(name): \(created.stderr)") }
        let shown = String(decoding: try run([mqbridgeBinary, "identity", "show", "--dir", directory]).stdout, as: UTF8.self)
        guard let line = shown.split(separator: "\n").first(where: { $0.hasPrefix("fingerprint: ") }) else { throw TestError("no fingerprint shown") }
        return String(line.dropFirst("fingerprint: ".count))
    }
}
