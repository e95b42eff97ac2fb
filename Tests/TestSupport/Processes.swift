public import Foundation

/// Test helpers for real processes: free loopback ports, mosquitto brokers, scripts.
/// Everything started here is stopped by PID.
public enum TestEnvironment {
    /// The repository root, found from this file's path (tests run from any directory).
    public static let repositoryRoot = URL(fileURLWithPath: #filePath)  // Tests/TestSupport/Processes.swift
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static func script(_ name: String) -> String {
        repositoryRoot.appendingPathComponent("Tests/IntegrationTests/Scripts/\(name)").path
    }

    /// A port that was free on 127.0.0.1 a moment ago (bind to port 0, read it, close).
    public static func freePort() throws -> Int {
        let fd = tcpSocket()
        guard fd >= 0 else { throw TestError("socket() failed") }
        defer { close(fd) }
        var address = loopbackAddress(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = address.withSockaddr { bind(fd, $0, $1) == 0 && getsockname(fd, $0, &length) == 0 }
        guard bound else { throw TestError("bind() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A TCP socket closed on exec: no child process spawned meanwhile (by this or a parallel
    /// test) may keep a connection open after the test closed it (see ChildProcess).
    public static func tcpSocket() -> Int32 { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }

    /// `host:port` as a socket address; `host` is a 127.0.0.0/8 address.
    public static func loopbackAddress(_ host: String = "127.0.0.1", port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(host)
        return address
    }

    /// Whether something accepts TCP connections on 127.0.0.1:port.
    public static func isListening(_ port: Int) -> Bool {
        let fd = tcpSocket()
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopbackAddress(port: port)
        return address.withSockaddr { connect(fd, $0, $1) == 0 }
    }

    public static func waitUntilListening(_ port: Int, timeout: Double = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !isListening(port) {
            if Date() > deadline { throw TestError("nothing listening on 127.0.0.1:\(port) after \(timeout)s") }
            usleep(20_000)
        }
    }

    /// Runs a program to completion with stdin, returning stdout (stderr is appended to errors).
    public static func run(_ arguments: [String], stdin: Data = Data(), timeout: Double = 120) throws -> (status: Int32, stdout: Data, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let input = Pipe(), output = Pipe()
        // stderr goes to a file so that neither pipe can fill while we read the other.
        let errorURL = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-stderr-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: errorURL) }
        let errorHandle = try FileHandle(forWritingTo: errorURL)
        defer { try? errorHandle.close() }
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errorHandle
        try process.run()
        let timer = DispatchSource.makeTimerSource()
        timer.schedule(deadline: .now() + timeout)
        timer.setEventHandler { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        timer.resume()
        defer { timer.cancel() }
        input.fileHandleForWriting.write(stdin)
        try? input.fileHandleForWriting.close()
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let errorData = (try? Data(contentsOf: errorURL)) ?? Data()
        return (process.terminationStatus, outputData, String(decoding: errorData, as: UTF8.self))
    }
}

public struct TestError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A real mosquitto on a free loopback port, with a configuration written to a temporary
/// directory. Stopped by PID in `stop()` (and by ChildProcess's deinit as a safety net).
public final class MosquittoBroker: @unchecked Sendable {
    public let port: Int
    public let directory: URL
    public let process: ChildProcess

    /// - Parameter extraConfiguration: lines added after the listener (e.g. `acl_file $DIR/acl`);
    ///   `$DIR` is the broker's temporary directory.
    public init(extraConfiguration: [String] = [], files: [String: String] = [:], port fixedPort: Int? = nil) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-mosquitto-\(UUID().uuidString)")
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // mosquitto started as root drops to the user "mosquitto": let it write here.
        _ = chmod(directory.path, 0o777)
        for (name, contents) in files {
            try contents.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try fixedPort ?? TestEnvironment.freePort()
            // The default log types plus `subscribe`, so a test can tell when a subscriber is in
            // place (`awaitSubscription`) instead of sleeping and hoping.
            let config = ["listener \(port) 127.0.0.1", "allow_anonymous true", "log_dest stdout"]
                + ["error", "warning", "notice", "information", "subscribe"].map { "log_type \($0)" }
                + extraConfiguration.map { $0.replacingOccurrences(of: "$DIR", with: directory.path) }
            let configURL = directory.appendingPathComponent("mosquitto.conf")
            try config.joined(separator: "\n").appending("\n").write(to: configURL, atomically: true, encoding: .utf8)
            // mosquitto block-buffers stdout into a file; line buffering makes its log current.
            let process = try ChildProcess(["stdbuf", "-oL", "mosquitto", "-c", configURL.path], log: directory.appendingPathComponent("mosquitto-\(port).log"))
            // Up once it says "running" (after every listener is open) and accepts on the
            // port; a mosquitto that exits has lost the race for the port or refused the
            // configuration.
            var exited = false
            let up = TestEnvironment.waitUntil(timeout: 15) {
                exited = process.hasExited
                return exited || (process.log.contains(" running") && TestEnvironment.isListening(port))
            }
            if up && !exited {
                self.port = port
                self.process = process
                return
            }
            process.stop(grace: 0)
            lastError = TestError("mosquitto did not start on 127.0.0.1:\(port); log: \(process.log)")
            // Only a port someone else took is worth another try.
            if exited && !process.log.contains("Address already in use") { break }
        }
        throw lastError ?? TestError("mosquitto did not start")
    }

    public var pid: Int32 { process.pid }
    public var log: String { process.log }

    /// How many subscriptions to exactly `filter` the broker has logged
    /// ("<time>: <client id> <qos> <filter>").
    public func subscriptions(to filter: String) -> Int {
        log.split(separator: "\n").filter { line in (0...2).contains { line.hasSuffix(" \($0) \(filter)") } }.count
    }

    /// Runs `start` (which starts a subscriber to `filter`, directly or through a bridge) and
    /// returns once the broker has logged the new subscription. mosquitto handles one packet at
    /// a time, so whatever is published after that reaches the subscriber.
    public func awaitSubscription<T>(to filter: String, timeout: Double = 30, _ start: () throws -> T) throws -> T {
        let before = subscriptions(to: filter)
        let started = try start()
        guard TestEnvironment.waitUntil(timeout: timeout, { subscriptions(to: filter) > before }) else {
            throw TestError("no subscription to \(filter) within \(timeout) s; broker log: \(log.suffix(2000))")
        }
        return started
    }

    public func stop() {
        process.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { process.stop(grace: 1) }
}

extension TestEnvironment {
    /// The mqbridge binary built next to the test bundle (`swift build --build-tests` builds it).
    public static var mqbridgeBinary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("mqbridge").path
    }

    public static func temporaryFile(_ contents: String, name: String = "file") throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-\(UUID().uuidString)-\(name)").path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

extension TestEnvironment {
    /// Connects to 127.0.0.1:port, sends `send`, optionally half-closes, and returns what comes
    /// back until EOF (or until as many bytes as were sent when not half-closing).
    public static func tcpExchange(port: Int, send bytes: [UInt8], halfClose: Bool, timeout: Double = 10) throws -> [UInt8] {
        try tcpExchangeWithEnding(port: port, send: bytes, halfClose: halfClose, timeout: timeout).received
    }

    /// How a connection's input ended.
    public enum TCPEnding: Sendable, Equatable {
        /// An orderly end (FIN).
        case eof
        /// A TCP reset.
        case reset
        /// Neither: the read timed out, or enough bytes came (not half-closing).
        case other
    }

    /// `tcpExchange`, and how the input ended.
    public static func tcpExchangeWithEnding(port: Int, send bytes: [UInt8], halfClose: Bool, timeout: Double = 10) throws -> (received: [UInt8], ending: TCPEnding) {
        let client = try TCPTestClient(port: port, timeout: timeout)
        defer { client.close() }
        do {
            try client.send(bytes)
        } catch is TCPTestClient.ResetWhileSending {
            // Reset before the request was out (a refused stream can be that quick): send saw
            // the reset (and took its error), so it is the ending; bytes before it still count.
            return (client.receive().received, .reset)
        }
        if halfClose { client.halfClose() }
        return client.receive(atMost: halfClose ? nil : bytes.count)
    }
}

/// A blocking TCP connection to 127.0.0.1 for tests that hold connections open.
public final class TCPTestClient {
    private var fd: Int32

    /// `source`: the local address to connect from (another 127.0.0.0/8 address, to look
    /// like a second host).
    public init(port: Int, timeout: Double = 10, from source: String? = nil) throws {
        fd = TestEnvironment.tcpSocket()
        if let source {
            var local = TestEnvironment.loopbackAddress(source, port: 0)
            guard local.withSockaddr({ bind(fd, $0, $1) == 0 }) else {
                close()
                throw TestError("bind to \(source) failed")
            }
        }
        var address = TestEnvironment.loopbackAddress(port: port)
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard address.withSockaddr({ connect(fd, $0, $1) == 0 }) else {
            close()
            throw TestError("connect to 127.0.0.1:\(port) failed")
        }
    }

    deinit { close() }

    /// The other end reset the connection while we were sending.
    public struct ResetWhileSending: Error {}

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            // MSG_NOSIGNAL: a reset peer makes send fail with EPIPE instead of killing the test.
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 && (errno == ECONNRESET || errno == EPIPE) { throw ResetWhileSending() }
            guard n > 0 else { throw TestError("send failed") }
            offset += n
        }
    }

    public func halfClose() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until the input ends (or `atMost` bytes came, or the read timed out).
    public func receive(atMost limit: Int? = nil) -> (received: [UInt8], ending: TestEnvironment.TCPEnding) {
        receive { received in limit.map { received.count >= $0 } ?? false }
    }

    /// Reads until `enough` holds for what came (or the input ends, or the read timed out).
    public func receive(until enough: ([UInt8]) -> Bool) -> (received: [UInt8], ending: TestEnvironment.TCPEnding) {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return (received, .eof) }
            if n < 0 { return (received, errno == ECONNRESET ? .reset : .other) }
            received.append(contentsOf: buffer[0..<n])
            if enough(received) { return (received, .other) }
        }
    }

    public func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }
}

extension TestEnvironment {
    /// Runs long blocking work (waiting on processes, sleeping) on a thread of its own, so it
    /// does not hold one of the few threads the in-process async tests share.
    public static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }
}

extension TestEnvironment {
    /// Polls `condition` until it holds or `timeout` seconds pass; returns its last value.
    public static func waitUntil(timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return true }
            usleep(20_000)
        }
        return try condition()
    }
}

extension ChildProcess {
    /// The port a helper script printed as the first line of its output (it binds port 0).
    public func reportedPort(timeout: Double = 10) throws -> Int {
        var port: Int?
        _ = TestEnvironment.waitUntil(timeout: timeout) {
            port = log.split(separator: "\n").first.flatMap { Int($0) }
            return port != nil
        }
        guard let port else { throw TestError("\(logURL.lastPathComponent): no port reported: \(log)") }
        return port
    }
}

/// MQTT packets written by hand for tests that speak to a raw socket.
public enum MQTTTestPackets {
    /// A 3.1.1 CONNECT with clean session (unless `cleanSession` is false), keepalive 60 s,
    /// and a username if given.
    public static func connect311(clientID: String, username: String? = nil, cleanSession: Bool = true) -> [UInt8] {
        connect(level: 4, properties: [], clientID: clientID, username: username, cleanSession: cleanSession)
    }

    /// The same in 5.0 (Clean Start, no properties).
    public static func connect5(clientID: String, username: String? = nil) -> [UInt8] {
        connect(level: 5, properties: [0], clientID: clientID, username: username)
    }

    private static func connect(level: UInt8, properties: [UInt8], clientID: String, username: String?, cleanSession: Bool = true) -> [UInt8] {
        let flags: UInt8 = (cleanSession ? 0x02 : 0) | (username == nil ? 0 : 0x80)
        return packet(0x10, string("MQTT") + [level, flags, 0, 60] + properties + string(clientID) + (username.map(string) ?? []))
    }

    /// CONNACK, 3.1.1, accepted, no session present.
    public static let connackAccepted311: [UInt8] = [0x20, 0x02, 0x00, 0x00]

    /// A 3.1.1 SUBSCRIBE of `filters`, each at `qos`.
    public static func subscribe311(id: UInt16, filters: [String], qos: UInt8 = 0) -> [UInt8] {
        packet(0x82, [UInt8(id >> 8), UInt8(id & 0xFF)] + filters.flatMap { string($0) + [qos] })
    }

    /// A 3.1.1 UNSUBSCRIBE of `filters`.
    public static func unsubscribe311(id: UInt16, filters: [String]) -> [UInt8] {
        packet(0xA2, [UInt8(id >> 8), UInt8(id & 0xFF)] + filters.flatMap { string($0) })
    }

    /// The fixed header (type and flags, remaining length) and `body`.
    public static func packet(_ first: UInt8, _ body: [UInt8]) -> [UInt8] {
        var length: [UInt8] = []
        var rest = body.count
        repeat {
            length.append(UInt8(rest % 128) | (rest >= 128 ? 0x80 : 0))
            rest /= 128
        } while rest > 0
        return [first] + length + body
    }

    static func string(_ text: String) -> [UInt8] { [UInt8(text.utf8.count >> 8), UInt8(text.utf8.count & 0xFF)] + Array(text.utf8) }
}

extension sockaddr_in {
    /// Calls `body` with this address as a `sockaddr` and its length (bind, connect, getsockname).
    public mutating func withSockaddr<Result>(_ body: (UnsafeMutablePointer<sockaddr>, socklen_t) -> Result) -> Result {
        withUnsafeMutablePointer(to: &self) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    }
}

/// Runs the jobs of the tasks that prefer it on one thread of its own (SE-0417), so that a
/// test that blocks (waiting on processes and sockets) holds that thread instead of one of
/// Swift's cooperative pool, whose few threads the in-process async tests share. Unlike
/// `offPool`, the test's own task runs there: its task-locals stay, so `#expect` inside is
/// attributed to the test as usual.
public final class DedicatedThreadExecutor: TaskExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var finished = false

    /// Set in the thread's dictionary of the executor's thread (a new Linux thread inherits
    /// its creator's name, so the name cannot tell).
    public static let threadKey = "mqbridge-tests-blocking"

    /// Whether the calling code runs on such a thread.
    public static var onDedicatedThread: Bool { Thread.current.threadDictionary[threadKey] as? Bool == true }

    init() {
        Thread { [self] in
            Thread.current.threadDictionary[Self.threadKey] = true
            run()
        }.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        if finished && jobs.isEmpty {
            // A task created in the body inherits the preference and may outlive it: its jobs
            // still run, each on a thread of its own, never stranded.
            condition.unlock()
            Thread { [self] in job.runSynchronously(on: asUnownedTaskExecutor()) }.start()
            return
        }
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Lets the thread end once the jobs enqueued so far have run.
    func finish() {
        condition.lock()
        finished = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty && !finished { condition.wait() }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

extension TestEnvironment {
    /// Runs a test body that blocks (on processes, sockets, sleeps) on a thread of its own;
    /// see `DedicatedThreadExecutor`.
    public static func blocking<T>(_ body: () throws -> T) async throws -> T {
        let executor = DedicatedThreadExecutor()
        defer { executor.finish() }
        return try await withTaskExecutorPreference(executor) { try body() }
    }
}
