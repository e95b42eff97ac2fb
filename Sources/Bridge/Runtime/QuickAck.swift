#if canImport(Glibc)
import Glibc
#endif
import MQTTCodec
import NIOCore

extension Channel {
    /// Asks the kernel to acknowledge received TCP segments at once instead of delaying the
    /// ACK (up to 40 ms) in the hope of piggybacking it on data.
    ///
    /// For reads that nothing will answer soon: a broker's deliveries to a QoS 0 subscriber
    /// through the proxy, a client's QoS 0 PUBLISHes, the relay waiting for its fsync before
    /// acknowledging. A peer that leaves Nagle on (mosquitto's default `set_tcp_nodelay
    /// false`, libmosquitto clients) holds its next small packet until the previous one is
    /// ACKed, so a delayed ACK becomes a stall of up to 40 ms (measured: QoS 0 p99 24.6 ms
    /// direct to mosquitto, 0.45 ms through the proxy; a 14 ms QoS 1 median at the relay at
    /// 200 msg/s). Linux goes back to delaying ACKs once this end sends data soon after
    /// receiving, so callers set it again after such a read burst if they wrote to the socket
    /// since the last time (`QuickAckArming`). A no-op where TCP_QUICKACK does not exist.
    ///
    /// Not after reads that get an answer (a QoS 1 PUBLISH, PINGREQ…): the answer carries the
    /// ACK, and extra ACKs release a Nagle-batching peer's packets one by one (on the link's
    /// raw TCP sockets, where packets are not decoded, that cost 30 % of QoS 0 throughput).
    func acknowledgeSegmentsPromptly() {
        #if os(Linux)
        try? syncOptions?.setOption(ChannelOptions.Types.SocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: SocketOptionName(TCP_QUICKACK)), value: 1)
        #endif
    }
}

/// Whether a socket's TCP_QUICKACK must be set again after a read burst nothing answers.
///
/// Setting the flag takes the kernel out of its "interactive" mode, in which it delays ACKs;
/// out of it, Linux ACKs a small pushed segment as soon as the application has read it. It
/// returns to that mode only when this end sends data soon after receiving some
/// (`tcp_event_data_sent`), so the flag needs setting again only after we wrote to the
/// socket. A QoS 0 publisher's socket and a QoS 0 subscriber's broker connection are never
/// written to, so it is set once for them instead of after every read: at full load that
/// system call was a quarter of the proxy's.
struct QuickAckArming {
    private var armed = false

    /// Data was written to the socket.
    mutating func wrote() { armed = false }

    /// Whether to set the flag now; from then on it counts as set.
    mutating func needsArming() -> Bool {
        defer { armed = true }
        return !armed
    }
}

/// Whether a read burst from an MQTT client held only packets that nothing answers (QoS 0
/// PUBLISHes), so that its ACK should go out at once (see `acknowledgeSegmentsPromptly`).
struct UnansweredBurst {
    private var sawPacket = false
    private var getsAnswer = false

    /// A packet began in this burst; `firstByte` is its fixed header's first byte.
    mutating func packet(_ firstByte: UInt8) {
        sawPacket = true
        if MQTTPacketBoundaryScanner.clientPacketGetsAnswer(firstByte) { getsAnswer = true }
    }

    /// The burst ended: true if it began packets and none of them gets an answer. Resets.
    mutating func end() -> Bool {
        defer { sawPacket = false; getsAnswer = false }
        return sawPacket && !getsAnswer
    }
}
