/// Syntax checks on topic names and filters as they arrive on the wire (spec §4.7).
///
/// The codec only decides whether a string is a *valid* name or filter; what a filter matches,
/// and who may use it, is TopicACL's job.
public enum TopicSyntax {
    /// A topic name as used in PUBLISH, a will, or a Response Topic: no wildcards
    /// (MQTT-3.3.2-2, MQTT-3.1.3-11 for wills). Emptiness is checked by the caller because an
    /// empty name is legal with a v5 topic alias.
    @inlinable
    public static func nameContainsWildcard(_ name: String) -> Bool {
        // Scan the contiguous UTF-8 storage: element-wise String.UTF8View iteration was a fifth
        // of PUBLISH decode time.
        let fast = name.utf8.withContiguousStorageIfAvailable { bytes in
            bytes.contains { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }
        }
        if let fast { return fast }
        return name.utf8.contains { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }
    }

    public enum FilterViolation: Hashable, Sendable, CustomStringConvertible {
        case empty
        case misplacedMultiLevelWildcard
        case misplacedSingleLevelWildcard
        case invalidShareName
        case emptySharedFilter

        public var description: String {
            switch self {
            case .empty: "topic filter is empty"
            case .misplacedMultiLevelWildcard: "'#' must be the last character and occupy a whole level (e.g. 'a/#', not 'a/b#')"
            case .misplacedSingleLevelWildcard: "'+' must occupy a whole level (e.g. 'a/+/c', not 'sport+')"
            case .invalidShareName: "shared subscription name must be non-empty and contain no '/', '+' or '#'"
            case .emptySharedFilter: "shared subscription has no topic filter after the share name"
            }
        }

        public var specStatement: String {
            switch self {
            case .empty: "MQTT-4.7.3-1"
            case .misplacedMultiLevelWildcard: "MQTT-4.7.1-1"
            case .misplacedSingleLevelWildcard: "MQTT-4.7.1-2"
            case .invalidShareName: "MQTT-4.8.2-2"
            case .emptySharedFilter: "MQTT-4.8.2-1"
            }
        }
    }

    /// Checks a topic filter, including the `$share/{name}/{filter}` form, which mosquitto
    /// treats as a shared subscription in every protocol version.
    public static func validateFilter(_ filter: String) -> FilterViolation? {
        let bytes = Array(filter.utf8)
        if bytes.isEmpty { return .empty }
        let sharePrefix = Array("$share/".utf8)
        if bytes.starts(with: sharePrefix) {
            let rest = bytes[sharePrefix.count...]
            guard let slash = rest.firstIndex(of: UInt8(ascii: "/")) else {
                return rest.isEmpty ? .invalidShareName : .emptySharedFilter
            }
            let name = rest[rest.startIndex..<slash]
            if name.isEmpty || name.contains(UInt8(ascii: "+")) || name.contains(UInt8(ascii: "#")) {
                return .invalidShareName
            }
            let inner = rest[(slash + 1)...]
            if inner.isEmpty { return .emptySharedFilter }
            return validatePlainFilter(inner)
        }
        return validatePlainFilter(bytes[...])
    }

    static func validatePlainFilter(_ bytes: ArraySlice<UInt8>) -> FilterViolation? {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            let atLevelStart = index == bytes.startIndex || bytes[index - 1] == UInt8(ascii: "/")
            let atLevelEnd = index + 1 == bytes.endIndex || bytes[index + 1] == UInt8(ascii: "/")
            if byte == UInt8(ascii: "#") {
                if !atLevelStart || index + 1 != bytes.endIndex { return .misplacedMultiLevelWildcard }
            } else if byte == UInt8(ascii: "+") {
                if !atLevelStart || !atLevelEnd { return .misplacedSingleLevelWildcard }
            }
            index += 1
        }
        return nil
    }
}
