@testable import Bridge
import NIOCore
import Testing

@Suite("Denial log limits")
struct DenialLogLimitTests {
    static let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)

    @Test("Per connection: 10 lines a second, the rest counted, the first of them asking for a report when the second ends")
    func perConnection() {
        var window = DenialLogWindow<Int>()
        let budget = DenialLogBudget(perSecond: 1_000)
        var actions: [DenialLogWindow<Int>.Action] = []
        for i in 0..<25 { actions.append(window.denial(i, at: Self.t0 + .milliseconds(Int64(i)), perSecond: 10, budget: budget)) }
        #expect(actions == Array(repeating: .log, count: 10) + [.suppressFirst(reportAt: Self.t0 + .seconds(1))]
            + Array(repeating: .suppress, count: 14))
        // The report: 15 left out, the last of them denial 24.
        #expect(window.takeSuppressed().map { [$0.count, $0.last] } == [15, 24])
        #expect(window.takeSuppressed() == nil)
        // A new second: lines again; after a report, the next suppressed one asks for another.
        let t1 = Self.t0 + .seconds(1)
        actions = (0..<12).map { window.denial($0, at: t1 + .milliseconds(Int64($0)), perSecond: 10, budget: budget) }
        #expect(actions == Array(repeating: .log, count: 10) + [.suppressFirst(reportAt: t1 + .seconds(1)), .suppress])
        #expect(window.takeSuppressed().map { [$0.count, $0.last] } == [2, 11])
    }

    @Test("Process-wide: connections share one budget a second")
    func processBudget() {
        let budget = DenialLogBudget(perSecond: 15)
        var a = DenialLogWindow<Int>(), b = DenialLogWindow<Int>()
        let fromA = (0..<10).map { a.denial($0, at: Self.t0, perSecond: 10, budget: budget) }
        let fromB = (0..<10).map { b.denial($0, at: Self.t0, perSecond: 10, budget: budget) }
        #expect(fromA.filter { $0 == .log }.count == 10)
        #expect(fromB.filter { $0 == .log }.count == 5)
        #expect(b.takeSuppressed()?.count == 5)
        // The next second of uptime starts a new budget.
        #expect(b.denial(10, at: Self.t0 + .seconds(1), perSecond: 10, budget: budget) == .log)
    }

    @Test("Refusals at a limit: the first is reported, then at most one line a second with the count since")
    func refusals() {
        let report = RefusalReport()
        #expect(report.refused(at: Self.t0) == 1)
        let within = (1...3).map { report.refused(at: Self.t0 + .milliseconds(Int64($0 * 200))) }
        #expect(within == [nil, nil, nil])
        // A second after the last line: the three above and this one.
        #expect(report.refused(at: Self.t0 + .seconds(1)) == 4)
        #expect(report.refused(at: Self.t0 + .milliseconds(1_500)) == nil)
        #expect(report.refused(at: Self.t0 + .seconds(5)) == 2)
    }
}
