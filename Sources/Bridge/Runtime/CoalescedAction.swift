import NIOCore

/// Runs an action once, later in this event-loop turn, however often it was requested before
/// then: a burst of messages costs one pump, one flush, one batch of acknowledgements.
///
/// The action gets its owner from each request instead of capturing it: the owner holds this
/// object, so a capture would have to be weak, and a weakly referenced object keeps its
/// reference counts in a side table, which made every retain and release of the link (per
/// frame) and of a relay peer (per message) take the runtime's slow path (measured: ~14 % of
/// a site's CPU on the remote proxy path, with the link streams' weak references). A pending
/// request keeps its owner alive until it has run; every action is harmless on a closed owner.
final class CoalescedAction<Owner: AnyObject> {
    private let eventLoop: any EventLoop
    private let action: (Owner) -> Void
    private var requested = false

    init(on eventLoop: any EventLoop, _ action: @escaping (Owner) -> Void) {
        self.eventLoop = eventLoop
        self.action = action
    }

    func request(for owner: Owner) {
        guard !requested else { return }
        requested = true
        let loopBound = NIOLoopBound((self, owner), eventLoop: eventLoop)
        eventLoop.execute {
            let (coalesced, owner) = loopBound.value
            coalesced.requested = false
            coalesced.action(owner)
        }
    }
}

@available(*, unavailable)
extension CoalescedAction: Sendable {}
