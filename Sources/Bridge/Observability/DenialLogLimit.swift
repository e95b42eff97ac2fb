import NIOConcurrencyHelpers
import NIOCore

/// How many denials are written to the log one by one.
///
/// Every denial is counted (`mqbridge_denials_total`) and, up to these rates, logged as its own
/// line. A client that floods denied packets (a QoS 1 PUBLISH of 7 bytes is one denial) would
/// otherwise write a few hundred bytes of log per few bytes it sends: gigabytes in a minute,
/// and the bridge busy formatting them. Past the rates a connection's further denials are
/// counted, and reported as one `denials_suppressed` line (count, identity, last topic) when
/// its one-second window ends or the connection closes — nothing is left out of the log.
enum DenialLogLimit {
    /// Lines per connection (or link stream) per second.
    static let perConnectionPerSecond = 10
    /// Lines per second for the whole process, so many flooding connections are bounded too.
    static let processPerSecond = 200
}

/// The process-wide share of denial lines: at most `perSecond` in any second of uptime.
final class DenialLogBudget: Sendable {
    static let process = DenialLogBudget(perSecond: DenialLogLimit.processPerSecond)

    let perSecond: Int
    private let state = NIOLockedValueBox<(second: UInt64, used: Int)>((0, 0))

    init(perSecond: Int) {
        self.perSecond = perSecond
    }

    /// Whether one more line may be written at `now`.
    func take(at now: NIODeadline) -> Bool {
        let second = now.uptimeNanoseconds / 1_000_000_000
        return state.withLockedValue { state in
            if state.second != second { state = (second, 0) }
            guard state.used < perSecond else { return false }
            state.used += 1
            return true
        }
    }
}

/// One connection's denial lines: decides for each denial whether it gets its own line, and
/// keeps the count of those that did not, with the last of them (`Last`: what its report
/// names), until it is reported.
struct DenialLogWindow<Last> {
    enum Action: Equatable {
        case log
        /// The first denial left out since the last report: report at `deadline`.
        case suppressFirst(reportAt: NIODeadline)
        case suppress
    }

    private var start: NIODeadline = .uptimeNanoseconds(0)
    private var logged = 0
    private var suppressed = 0
    private var last: Last?
    private var started = false

    mutating func denial(_ denial: Last, at now: NIODeadline, perSecond: Int, budget: DenialLogBudget) -> Action {
        if !started || now - start >= .seconds(1) {
            started = true
            start = now
            logged = 0
        }
        if logged < perSecond, budget.take(at: now) {
            logged += 1
            return .log
        }
        suppressed += 1
        last = denial
        return suppressed == 1 ? .suppressFirst(reportAt: start + .seconds(1)) : .suppress
    }

    /// How many were left out since the last report, and the last of them; starts counting anew.
    mutating func takeSuppressed() -> (count: Int, last: Last)? {
        defer {
            suppressed = 0
            last = nil
        }
        guard suppressed > 0, let last else { return nil }
        return (suppressed, last)
    }
}

/// Refusals at a limit (max_connections, max_streams): each is counted in its metric, but a
/// line is logged at most once a second, saying how many there were since the last one —
/// whoever is at a limit may well keep trying, and must not fill the log by it.
final class RefusalReport: Sendable {
    private let state = NIOLockedValueBox<(last: NIODeadline?, count: Int)>((nil, 0))

    /// Counts one refusal at `now`; returns how many to report if a line is due, else nil.
    func refused(at now: NIODeadline = .now()) -> Int? {
        state.withLockedValue { state in
            state.count += 1
            if let last = state.last, now - last < .seconds(1) { return nil }
            defer { state = (now, 0) }
            return state.count
        }
    }
}
