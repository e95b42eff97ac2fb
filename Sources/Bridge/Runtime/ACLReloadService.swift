import CoreMetrics
public import Logging
public import ServiceLifecycle
import TopicACL
import UnixSignals

/// Reloads the acl_file on SIGHUP. A file that does not parse is refused whole and the
/// current ACL stays in force; a good one is swapped in atomically and its diff logged, one
/// line per gained or lost access.
public final class ACLReloadService: Service, Sendable {
    let store: ACLStore
    let metrics: BridgeMetrics
    let logger: Logger

    public init(store: ACLStore, metrics: BridgeMetrics, logger: Logger) {
        self.store = store
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            reload()
        }
    }

    /// One reload, as SIGHUP triggers it.
    public func reload() {
        do {
            let diff = try store.reload()
            metrics.aclReloads.increment()
            logger.notice("acl reloaded", metadata: ["event": "acl_reloaded", "path": "\(store.path ?? "")", "changes": "\(diff.changes.count)",
                                                     "generation": "\(store.current.generation)"])
            for change in diff.changes {
                logger.notice("acl change", metadata: [
                    "event": "acl_change", "scope": "\(change.scope)", "change": "\(change.direction.rawValue)", "access": "\(change.capability.rawValue)",
                    "filter": "\(change.filter)", "rule": "\(change.location)",
                ])
            }
        } catch {
            metrics.aclReloadFailures.increment()
            logger.error("acl reload refused, keeping the current ACL: \(error)", metadata: ["event": "acl_reload_failed"])
        }
    }
}
