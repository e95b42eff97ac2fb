import MQTTCodec

/// One direction's MQTT 5.0 topic aliases (§3.3.2.3.4): alias → topic, set by a PUBLISH that
/// carries both, used by a PUBLISH that carries only the alias.
///
/// The proxy resolves every alias itself so the ACL always sees the real topic. It forwards a
/// packet unchanged only when the topic it resolved is allowed; a denied PUBLISH that sets an
/// alias is dropped, and any later alias-only PUBLISH resolves to that same denied topic, so the
/// receiver's map and ours agree whenever a packet is forwarded.
struct TopicAliasMap {
    /// The largest alias the receiver accepts (its Topic Alias Maximum; 0 = none).
    var maximum: UInt16
    private var topics: [UInt16: String] = [:]

    init(maximum: UInt16) {
        self.maximum = maximum
    }

    enum Resolution: Equatable {
        case topic(String)
        /// Alias 0 or above the maximum: Topic Alias invalid (0x94).
        case aliasOutOfRange(UInt16)
        /// Alias-only PUBLISH for an alias never set: a protocol error (0x82).
        case unknownAlias(UInt16)
    }

    /// Resolves (and records) the topic of a PUBLISH.
    mutating func resolve(topic: String, alias: UInt16?) -> Resolution {
        guard let alias else { return .topic(topic) }
        guard alias >= 1 && alias <= maximum else { return .aliasOutOfRange(alias) }
        if topic.isEmpty {
            guard let known = topics[alias] else { return .unknownAlias(alias) }
            return .topic(known)
        }
        topics[alias] = topic
        return .topic(topic)
    }
}
