@testable import Bridge
import NIOCore
import Testing

@Suite("Denial log limits")
struct DenialLogLimitTests {
    static let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)

    @Test("Per connection: 10 lines a second, the rest counted, the first of them asking for a report when the second ends")
    func perConnection() {
        var window = DenialLogWindow()
        let budget = DenialLogBudget(perSecond: 1_000)
        var actions: [DenialLogWindow.Action] = []
        for i in 0..<25 { actions.append(window.denial(at: Self.t0 + .milliseconds(Int64(i)), perSecond: 10, budget: budget)) }
        #expect(actions == Array(repeating: .log, count: 10) + [.suppressFirst(reportAt: Self.t0 + .seconds(1))]
            + Array(repeating: .suppress, count: 14))
        #expect(window.takeSuppressed() == 15)
        #expect(window.takeSuppressed() == 0)
        // A new second: lines again; after a report, the next suppressed one asks for another.
        let t1 = Self.t0 + .seconds(1)
        actions = (0..<12).map { window.denial(at: t1 + .milliseconds(Int64($0)), perSecond: 10, budget: budget) }
        #expect(actions == Array(repeating: .log, count: 10) + [.suppressFirst(reportAt: t1 + .seconds(1)), .suppress])
        #expect(window.takeSuppressed() == 2)
    }

    @Test("Process-wide: connections share one budget a second")
    func processBudget() {
        let budget = DenialLogBudget(perSecond: 15)
        var a = DenialLogWindow(), b = DenialLogWindow()
        let fromA = (0..<10).map { _ in a.denial(at: Self.t0, perSecond: 10, budget: budget) }
        let fromB = (0..<10).map { _ in b.denial(at: Self.t0, perSecond: 10, budget: budget) }
        #expect(fromA.filter { $0 == .log }.count == 10)
        #expect(fromB.filter { $0 == .log }.count == 5)
        #expect(b.takeSuppressed() == 5)
        // The next second of uptime starts a new budget.
        #expect(b.denial(at: Self.t0 + .seconds(1), perSecond: 10, budget: budget) == .log)
    }
}
