import NIOCore

/// The receiving half of a stream's flow control: how many bytes the peer may have sent that
/// the local end has not consumed, and when to credit it with WINDOW.
///
/// Credit goes back once half the window was consumed. Over a distant link that alone caps a
/// stream at about one window per round trip (256 KiB at 20 ms is 12.8 MB/s, whatever the
/// bandwidth), so the window tunes itself as QUIC implementations do: when half of it was
/// consumed in less than about two round trips, the window, not the consumer, is what holds
/// the stream back, and it doubles, up to `maximum` and within what the link may still grant
/// (`mayGrow`). A stream on a near link (its half window takes far longer than a round trip)
/// or with a slow consumer (which consumes late) never grows, so memory is spent only where
/// distance needs it. Growth is sent as a larger WINDOW increment: a peer needs no support for
/// it, and both ends still start from the same initial window.
struct ReceiveWindow {
    /// The window both ends start from (the protocol's, the same at both).
    let initial: Int
    let maximum: Int
    private(set) var size: Int
    /// Received and not yet consumed.
    private(set) var unconsumed = 0
    private var consumedSinceCredit = 0
    private var epochStart: NIODeadline

    init(initial: Int, maximum: Int, now: NIODeadline) {
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.size = initial
        self.epochStart = now
    }

    /// Bytes beyond the initial window, which the link's budget lent this stream.
    var growth: Int { size - initial }

    /// The peer sent `count` bytes. False if that overran the window by more than one read's
    /// worth of slack (credit in flight can make a correct peer look a little ahead): a peer
    /// that ignores our window is broken.
    mutating func received(_ count: Int) -> Bool {
        unconsumed += count
        return unconsumed <= size * 2 + (64 << 10)
    }

    /// What to send after the local end consumed `count` bytes: nil while less than half the
    /// window waits for credit; otherwise the WINDOW increment, and by how much the window grew.
    /// `roundTrip` is the link's (nil before it was measured: no growth); `mayGrow` reserves
    /// growth from the link's budget. `now` and `roundTrip` are read only when a credit is due:
    /// this runs for every packet or record an endpoint consumes.
    mutating func consumed(_ count: Int, now currentTime: @autoclosure () -> NIODeadline, roundTrip currentRoundTrip: @autoclosure () -> TimeAmount?,
                           mayGrow: (Int) -> Bool) -> (increment: Int, grew: Int)? {
        unconsumed -= count
        consumedSinceCredit += count
        guard consumedSinceCredit >= size / 2 else { return nil }
        let now = currentTime()
        var grew = 0
        if size < maximum, let roundTrip = currentRoundTrip() {
            // quic-go's test: the fraction of the window consumed this epoch, against the time
            // it took; half a window in under two round trips means the sender was waiting.
            let fraction = Double(consumedSinceCredit) / Double(size)
            let elapsed = Double((now - epochStart).nanoseconds)
            if elapsed < 4 * fraction * Double(roundTrip.nanoseconds) {
                let wanted = min(size, maximum - size)
                if mayGrow(wanted) {
                    size += wanted
                    grew = wanted
                }
            }
        }
        let increment = consumedSinceCredit + grew
        consumedSinceCredit = 0
        epochStart = now
        return (increment, grew)
    }
}
