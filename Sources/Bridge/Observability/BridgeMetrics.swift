public import CoreMetrics
import MQTTCodec

/// Every counter the bridge exports. Created once with an explicit factory (tests run several
/// bridges in one process, so the global MetricsSystem is not used) and held by reference, so
/// the per-packet path only increments.
///
/// Names and labels are part of mqbridge's exported surface. Labels are bounded sets
/// (direction, packet type, denial kind): a topic is never a label.
public final class BridgeMetrics: Sendable {
    public enum Direction: String, Sendable, CaseIterable {
        case clientToBroker = "client_to_broker"
        case brokerToClient = "broker_to_client"
    }

    public let connectionsTotal: Counter
    public let connectionsActive: Meter
    public let connectionsRefused: Counter
    public let connectTimeouts: Counter
    private let packets: [[Counter]]  // [direction][packet type raw value]
    private let bytes: [Counter]
    private let denials: [DenialEvent.Kind: Counter]
    private let decodeErrors: [Direction: Counter]
    public let upstreamConnectFailures: Counter
    public let upstreamClosed: Counter
    public let aclReloads: Counter
    public let aclReloadFailures: Counter
    /// Coalescing of a broker socket's reads started, and ended (`ReceiveCoalescing`).
    let readCoalescing: ReceiveCoalescingCounters

    public init(factory: any MetricsFactory) {
        connectionsTotal = Counter(label: "mqbridge_connections_total", factory: factory)
        connectionsActive = Meter(label: "mqbridge_connections_active", factory: factory)
        connectionsRefused = Counter(label: "mqbridge_connections_refused_total", dimensions: [("reason", "max_connections")], factory: factory)
        connectTimeouts = Counter(label: "mqbridge_connect_timeouts_total", factory: factory)
        packets = Direction.allCases.map { direction in
            [Counter(label: "mqbridge_packets_total", dimensions: [("direction", direction.rawValue), ("type", "RESERVED")], factory: factory)]
                + PacketType.allCases.map { type in
                    Counter(label: "mqbridge_packets_total", dimensions: [("direction", direction.rawValue), ("type", type.description)], factory: factory)
                }
        }
        bytes = Direction.allCases.map { Counter(label: "mqbridge_bytes_total", dimensions: [("direction", $0.rawValue)], factory: factory) }
        var denials: [DenialEvent.Kind: Counter] = [:]
        for kind in DenialEvent.Kind.allCases {
            denials[kind] = Counter(label: "mqbridge_denials_total", dimensions: [("kind", kind.rawValue)], factory: factory)
        }
        self.denials = denials
        var decodeErrors: [Direction: Counter] = [:]
        for direction in Direction.allCases {
            decodeErrors[direction] = Counter(label: "mqbridge_decode_errors_total", dimensions: [("direction", direction.rawValue)], factory: factory)
        }
        self.decodeErrors = decodeErrors
        upstreamConnectFailures = Counter(label: "mqbridge_upstream_errors_total", dimensions: [("kind", "connect_failed")], factory: factory)
        upstreamClosed = Counter(label: "mqbridge_upstream_errors_total", dimensions: [("kind", "closed_by_broker")], factory: factory)
        aclReloads = Counter(label: "mqbridge_acl_reloads_total", dimensions: [("result", "ok")], factory: factory)
        aclReloadFailures = Counter(label: "mqbridge_acl_reloads_total", dimensions: [("result", "failed")], factory: factory)
        readCoalescing = ReceiveCoalescingCounters(factory: factory)
    }

    @inline(__always)
    func packet(_ direction: Direction, _ type: PacketType, size: Int) {
        let d = direction == .clientToBroker ? 0 : 1
        packets[d][Int(type.rawValue)].increment()
        bytes[d].increment(by: Int64(size))
    }

    func denial(_ kind: DenialEvent.Kind) { denials[kind]?.increment() }
    func decodeError(_ direction: Direction) { decodeErrors[direction]?.increment() }
}
