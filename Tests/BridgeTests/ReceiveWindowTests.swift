@testable import Bridge
import NIOCore
import Testing

@Suite("A stream's receive window: credit at half, growth over distance")
struct ReceiveWindowTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let kib = 1 << 10

    @Test("Credit goes back once half the window is consumed, and not before; without a round-trip time it never grows")
    func creditAtHalf() {
        var window = ReceiveWindow(initial: 256 * kib, maximum: 16 << 20, now: start)
        let accepted = window.received(256 * kib)
        let early = window.consumed(100 * kib, now: start, roundTrip: nil) { _ in true }
        #expect(accepted)
        #expect(early == nil)
        let credit = window.consumed(28 * kib, now: start + .microseconds(10), roundTrip: nil) { _ in true }
        #expect(credit?.increment == 128 * kib)
        #expect(credit?.grew == 0)
        #expect(window.size == 256 * kib)
        #expect(window.unconsumed == 128 * kib)
    }

    @Test("Half a window in under two round trips doubles it, up to the maximum and no further")
    func growsToMaximum() {
        var window = ReceiveWindow(initial: 256 * kib, maximum: 1 << 20, now: start)
        let rtt = TimeAmount.milliseconds(20)
        var now = start
        var sizes: [Int] = []
        var increments: [Int] = []
        for _ in 0..<4 {
            let half = window.size / 2
            let accepted = window.received(half)
            #expect(accepted)
            now = now + .milliseconds(5)
            let credit = window.consumed(half, now: now, roundTrip: rtt) { _ in true }
            increments.append(credit?.increment ?? -1)
            sizes.append(window.size)
        }
        // The increment is what was consumed plus the growth, so the sender's window becomes the new size.
        #expect(increments == [128 * kib + 256 * kib, 256 * kib + 512 * kib, 512 * kib, 512 * kib])
        #expect(sizes == [512 * kib, 1 << 20, 1 << 20, 1 << 20])
        #expect(window.growth == 768 * kib)
    }

    @Test("A consumer slower than the round trip, or a link whose budget is spent, keeps the window as it is")
    func staysWhenNotWindowLimited() {
        var slow = ReceiveWindow(initial: 256 * kib, maximum: 16 << 20, now: start)
        _ = slow.received(128 * kib)
        // 128 KiB in 100 ms with a 20 ms round trip: 4 × 0.5 × 20 = 40 ms would have been fast.
        let credit = slow.consumed(128 * kib, now: start + .milliseconds(100), roundTrip: .milliseconds(20)) { _ in true }
        #expect(credit?.increment == 128 * kib && credit?.grew == 0)
        #expect(slow.size == 256 * kib)

        var refused = ReceiveWindow(initial: 256 * kib, maximum: 16 << 20, now: start)
        _ = refused.received(128 * kib)
        var asked: [Int] = []
        let none = refused.consumed(128 * kib, now: start + .milliseconds(1), roundTrip: .milliseconds(20)) { asked.append($0); return false }
        #expect(asked == [256 * kib])
        #expect(none?.increment == 128 * kib && none?.grew == 0)
        #expect(refused.size == 256 * kib)
    }

    @Test("A peer that sends beyond twice the window plus one read is refused")
    func overrun() {
        var window = ReceiveWindow(initial: 256 * kib, maximum: 16 << 20, now: start)
        let withinSlack = window.received(512 * kib + 64 * kib)
        let beyond = window.received(1)
        #expect(withinSlack)
        #expect(!beyond)
    }
}
