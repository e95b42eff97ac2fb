public import Foundation

/// A child process started with posix_spawn, with the signal mask cleared and default signal
/// dispositions, so SIGTERM / SIGINT / SIGHUP sent by a test actually arrive. (Foundation's
/// Process spawns from a thread whose mask blocks them, and the child inherits the mask.)
/// Output goes to a log file. Stopped by PID.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    public let logURL: URL
    private var exitStatus: Int32?
    private let lock = NSLock()

    public init(_ arguments: [String], log logURL: URL, environment: [String: String] = [:]) throws {
        self.logURL = logURL
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 1, logURL.path, O_WRONLY | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&fileActions, 1, 2)
        // Nothing else of ours: a child must not inherit a test's sockets. One that did (a
        // TCPTestClient socket, spawned by a parallel test at the wrong moment) kept that
        // connection open after the test closed it, for as long as the child (a broker) lived:
        // the proxy then rightly saw no close (issue 4's "slot stays taken" under full runs).
        _ = Self.addCloseFrom?(&fileActions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGUSR1, SIGUSR2, SIGQUIT] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, arguments[0], &fileActions, &attributes, argv, envp)
        guard rc == 0 else { throw TestError("posix_spawnp \(arguments[0]) failed: \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    /// glibc ≥ 2.34 has posix_spawn_file_actions_addclosefrom_np, but Swift's Glibc module does
    /// not declare it; looked up once by name.
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
        .map { unsafeBitCast($0, to: AddCloseFrom.self) }

    public var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// Whether the process has exited (reaps it if so).
    public var hasExited: Bool {
        lock.lock()
        defer { lock.unlock() }
        if exitStatus != nil { return true }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            exitStatus = status
            return true
        }
        return false
    }

    public func signal(_ signal: Int32) {
        if !hasExited { kill(pid, signal) }
    }

    /// Waits for exit up to `timeout` seconds; returns the raw wait status, or nil on timeout.
    @discardableResult
    public func wait(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if hasExited { return lock.withLock { exitStatus } }
            usleep(10_000)
        }
        return nil
    }

    /// The exit code if the process exited normally.
    public var exitCode: Int32? {
        guard let status = lock.withLock({ exitStatus }) else { return nil }
        return status & 0x7F == 0 ? (status >> 8) & 0xFF : nil
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace` seconds.
    public func stop(grace: Double = 5) {
        signal(SIGTERM)
        if wait(timeout: grace) == nil {
            signal(SIGKILL)
            wait(timeout: 5)
        }
    }

    deinit {
        if !hasExited {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }
}
