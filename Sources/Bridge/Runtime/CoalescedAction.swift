import NIOCore

/// Runs an action once, later in this event-loop turn, however often it was requested before
/// then: a burst of messages costs one pump, one flush, one batch of acknowledgements.
final class CoalescedAction {
    private let eventLoop: any EventLoop
    private let action: () -> Void
    private var requested = false

    init(on eventLoop: any EventLoop, _ action: @escaping () -> Void) {
        self.eventLoop = eventLoop
        self.action = action
    }

    func request() {
        guard !requested else { return }
        requested = true
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.execute {
            let coalesced = loopBound.value
            coalesced.requested = false
            coalesced.action()
        }
    }
}

@available(*, unavailable)
extension CoalescedAction: Sendable {}
