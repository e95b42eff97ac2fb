/// What changed between two ACLs, per identity, for the audit log of a reload.
///
/// Decisions depend only on the set of (capability, filter) pairs in each scope (mosquitto
/// checks every deny before any grant, so order within a list changes which rule is reported
/// but never the outcome). Comparing those sets is therefore exact: an empty diff means every
/// decision is unchanged. `readwrite` counts as read plus write, so narrowing a `readwrite`
/// line to `read` reports only the lost write.
public struct ACLDiff: Hashable, Sendable, CustomStringConvertible {
    public enum Capability: String, Hashable, Sendable, Comparable {
        case read, write, deny
        public static func < (a: Capability, b: Capability) -> Bool { a.rawValue < b.rawValue }
    }

    public struct Change: Hashable, Sendable, CustomStringConvertible {
        public enum Direction: String, Hashable, Sendable { case gained, lost }
        public var scope: RuleScope
        public var direction: Direction
        public var capability: Capability
        public var filter: String
        /// Where the rule is: in the new file for gains, in the old file for losses.
        public var location: SourceLocation

        public var description: String {
            let what = capability == .deny ? "a deny on" : "\(capability) on"
            return "\(scope) \(direction) \(what) \(filter) (\(location))"
        }
    }

    public let changes: [Change]
    public var isEmpty: Bool { changes.isEmpty }

    public init(from old: ACLFile, to new: ACLFile) {
        func index(_ file: ACLFile) -> [Key: SourceLocation] {
            var result: [Key: SourceLocation] = [:]
            for rule in file.rules {
                let capabilities: [Capability] = switch rule.access {
                case .read: [.read]
                case .write: [.write]
                case .readwrite: [.read, .write]
                case .deny: [.deny]
                }
                for capability in capabilities {
                    let key = Key(scope: rule.scope, capability: capability, filter: Array(rule.filter.utf8))
                    if result[key] == nil { result[key] = rule.location }
                }
            }
            return result
        }
        let before = index(old)
        let after = index(new)
        var changes: [Change] = []
        for (key, location) in after where before[key] == nil {
            changes.append(Change(scope: key.scope, direction: .gained, capability: key.capability, filter: key.text, location: location))
        }
        for (key, location) in before where after[key] == nil {
            changes.append(Change(scope: key.scope, direction: .lost, capability: key.capability, filter: key.text, location: location))
        }
        self.changes = changes.sorted { ($0.scope.description, $0.filter, $0.capability, $0.direction.rawValue) < ($1.scope.description, $1.filter, $1.capability, $1.direction.rawValue) }
    }

    /// Filters compared by bytes, as the broker compares topics.
    private struct Key: Hashable {
        var scope: RuleScope
        var capability: Capability
        var filter: [UInt8]
        var text: String { String(decoding: filter, as: UTF8.self) }
    }

    public var description: String {
        isEmpty ? "no change in access" : changes.map(\.description).joined(separator: "\n")
    }
}
