#if canImport(Glibc)
import Glibc
#endif
import NIOCore

extension Channel {
    /// Asks the kernel to acknowledge received TCP segments at once instead of delaying the
    /// ACK (up to 40 ms) in the hope of piggybacking it on data.
    ///
    /// For connections on which this side often has nothing to send right after a read,
    /// because the answer comes from further away: a QoS 0 subscriber's traffic from the
    /// broker, a client's PUBLISH whose PUBACK comes from the broker (or the other site), the
    /// relay waiting for its fsync before acknowledging. A peer that leaves Nagle on
    /// (mosquitto's default, `set_tcp_nodelay false`; libmosquitto clients) holds its next
    /// small packet until the previous one is ACKed, so a delayed ACK becomes a stall of up to
    /// 40 ms (measured: a 14 ms QoS 1 median at the relay at 200 msg/s). Linux clears the
    /// flag again after a while, so callers set it after every read burst. A no-op where
    /// TCP_QUICKACK does not exist.
    func acknowledgeSegmentsPromptly() {
        #if os(Linux)
        try? syncOptions?.setOption(ChannelOptions.Types.SocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: SocketOptionName(TCP_QUICKACK)), value: 1)
        #endif
    }
}
