#if canImport(Glibc)
import Glibc
#endif
import CoreMetrics
import NIOCore

/// When the kernel should wake us for the broker's socket only once a few packets are there
/// (SO_RCVLOWAT, the receive low watermark), decided from how that socket is being read.
///
/// Why: mosquitto writes each packet it delivers with a write of its own, and a proxy with CPU
/// to spare wakes for each. At high rates a share of the reads then carry one packet (at site
/// B of the link bench, 780 of 1,723 reads of the subscriber's broker socket were under 100
/// bytes), and each such read is a flush to the client side: over the link a TLS record, a
/// system call and a wake-up of site A, which then writes one packet to its client. The whole
/// chain runs a packet at a time. With a watermark of a few packets the kernel holds the
/// socket's readability until they are there, the reads grow on their own (168 packets per
/// read in the same run) and both sites spent 0.85 instead of 2.9 µs per QoS 0 message.
///
/// The watermark costs latency only while it is raised, so it is raised only while the rate
/// is high enough to fill it within tens of microseconds, and only when a read was smaller
/// than it (otherwise it changes nothing). While raised it is checked every `interval`:
/// - after an interval without a read it is released (back to 1) until the next read raises
///   it again. Lowering it makes Linux report what is waiting at once (`tcp_set_rcvlowat`
///   calls `tcp_data_ready`), so the last packets of a burst, lying below it, wait at most
///   about one `interval` longer than they would have;
/// - `quietIntervals` intervals in a row under `keepAtBytes` end it: the rate has fallen.
///
/// Measured on loopback, QoS 0 at full load: a watermark that never came down took the local
/// proxy to 0.65 µs per message (from 2.7). Going back to 1 whenever an interval read less
/// (a first version) kept 1.4: at full load the reads come in bunches ~0.5–1 ms apart, so it
/// went down 1,750 times a second and the reads went back to a packet each until it was
/// raised again. Releasing only until the next read: 1.1 with a 250 µs interval, 0.9 with
/// 500, 0.8 with 1 ms. 500 µs bounds the wait of a burst's last packets; releasing only when
/// TCP_INFO showed bytes waiting measured the same, so it is not asked.
/// This is the moderation a network card applies to its interrupts.
struct ReceiveCoalescing {
    struct Configuration: Sendable, Equatable {
        /// SO_RCVLOWAT while raised: about three 64-byte PUBLISHes. Larger gained nothing
        /// measurable (256 to 8,192 gave the same rate), and a smaller one fills sooner.
        var watermark = 256
        /// How often a raised watermark is checked: the longest a packet waits below it.
        var interval = TimeAmount.microseconds(500)
        /// Raised once a read smaller than the watermark comes with this many bytes read
        /// within one interval (8 MB/s: the watermark fills in 32 µs at that rate).
        var raiseAtBytes = 4096
        /// An interval that reads less than this (4 MB/s) is quiet.
        var keepAtBytes = 2048
        /// This many quiet intervals in a row end the coalescing (1 ms).
        var quietIntervals = 2
    }

    enum Action: Equatable {
        case none
        /// Coalescing starts: set SO_RCVLOWAT to this and call `check()` every `interval`.
        case start(watermark: Int)
        /// Set SO_RCVLOWAT to this again after a release (the checks go on).
        case raise(watermark: Int)
        /// Call `check()` again after another `interval`.
        case checkAgain
        /// Set SO_RCVLOWAT to 1 for now (what waits is read at once) and check again.
        case release
        /// Set SO_RCVLOWAT back to 1 and stop checking.
        case lower
    }

    let configuration: Configuration
    /// Coalescing: the watermark is raised, or released until the next read.
    private(set) var isCoalescing = false
    /// The watermark is set (not released).
    private(set) var isRaised = false
    /// Start of the interval whose bytes are being counted (while not coalescing).
    private var intervalStart = NIODeadline.uptimeNanoseconds(0)
    /// Bytes read in the current interval (none: the interval had no read).
    private var bytes = 0
    /// Quiet intervals in a row (while coalescing).
    private var quiet = 0

    init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    /// A read of `count` bytes at `now`.
    mutating func read(_ count: Int, at now: NIODeadline) -> Action {
        if isCoalescing {
            bytes += count
            if isRaised { return .none }
            isRaised = true  // released at the last check: raise it again
            return .raise(watermark: configuration.watermark)
        }
        if now - intervalStart >= configuration.interval {
            intervalStart = now
            bytes = 0
        }
        bytes += count
        guard count < configuration.watermark, bytes >= configuration.raiseAtBytes else { return .none }
        isCoalescing = true
        isRaised = true
        bytes = count
        quiet = 0
        return .start(watermark: configuration.watermark)
    }

    /// Every `interval` while coalescing.
    mutating func check() -> Action {
        guard isCoalescing else { return .none }
        quiet = bytes >= configuration.keepAtBytes ? 0 : quiet + 1
        let hadRead = bytes > 0
        bytes = 0
        if quiet >= configuration.quietIntervals {
            isCoalescing = false
            isRaised = false
            intervalStart = .uptimeNanoseconds(0)
            return .lower
        }
        if !hadRead && isRaised {
            isRaised = false
            return .release
        }
        return .checkAgain
    }
}

/// The times coalescing started and ended on any broker socket of the process (not each
/// release): `mqbridge_broker_read_coalescing_total{change}`, one series that the proxies'
/// and the relay's metrics both hold (a registry returns the same counter for the same
/// name and labels).
struct ReceiveCoalescingCounters: Sendable {
    let raised: Counter
    let lowered: Counter

    init(factory: any MetricsFactory) {
        raised = Counter(label: "mqbridge_broker_read_coalescing_total", dimensions: [("change", "raised")], factory: factory)
        lowered = Counter(label: "mqbridge_broker_read_coalescing_total", dimensions: [("change", "lowered")], factory: factory)
    }
}

/// Runs `ReceiveCoalescing` for one socket: sets the watermark it decides and schedules its
/// checks. Used from the channel's event loop only.
final class ReceiveCoalescer {
    private var coalescing: ReceiveCoalescing
    private let counters: ReceiveCoalescingCounters
    private var scheduledCheck: Scheduled<Void>?
    /// Closed, or the watermark cannot be set here: nothing more to do.
    private var stopped = false

    init(configuration: ReceiveCoalescing.Configuration, counters: ReceiveCoalescingCounters) {
        self.coalescing = ReceiveCoalescing(configuration: configuration)
        self.counters = counters
    }

    /// A read of `count` bytes from `channel`.
    func read(_ count: Int, from channel: any Channel) {
        guard !stopped else { return }
        perform(coalescing.read(count, at: .now()), on: channel)
    }

    /// The channel is closing.
    func stop() {
        stopped = true
        scheduledCheck?.cancel()
        scheduledCheck = nil
    }

    private func perform(_ action: ReceiveCoalescing.Action, on channel: any Channel) {
        switch action {
        case .none:
            break
        case .start(let watermark):
            guard channel.setReceiveLowWatermark(watermark) else {
                stopped = true  // not available here: the default watermark stays
                return
            }
            counters.raised.increment()
            scheduleCheck(on: channel)
        case .raise(let watermark):
            _ = channel.setReceiveLowWatermark(watermark)
        case .checkAgain:
            scheduleCheck(on: channel)
        case .release:
            _ = channel.setReceiveLowWatermark(1)
            scheduleCheck(on: channel)
        case .lower:
            scheduledCheck = nil
            counters.lowered.increment()
            _ = channel.setReceiveLowWatermark(1)
        }
    }

    private func scheduleCheck(on channel: any Channel) {
        let loopBound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        scheduledCheck = channel.eventLoop.scheduleTask(in: coalescing.configuration.interval) {
            let coalescer = loopBound.value
            guard !coalescer.stopped else { return }
            coalescer.perform(coalescer.coalescing.check(), on: channel)
        }
    }
}

@available(*, unavailable)
extension ReceiveCoalescer: Sendable {}

extension Channel {
    /// Sets the socket's receive low watermark (SO_RCVLOWAT). Only on Linux, where lowering
    /// it reports data already waiting at once: elsewhere that is not promised, and data
    /// below a watermark could wait for more. False where it was not set.
    func setReceiveLowWatermark(_ bytes: Int) -> Bool {
        #if os(Linux)
        guard let options = syncOptions else { return false }
        do {
            try options.setOption(ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: SO_RCVLOWAT)), value: SocketOptionValue(bytes))
            return true
        } catch {
            return false
        }
        #else
        return false
        #endif
    }
}
