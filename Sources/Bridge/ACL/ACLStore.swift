import Foundation
import NIOConcurrencyHelpers
import Synchronization
public import TopicACL

/// The ACL in force, swapped atomically on reload.
///
/// A reload parses and compiles the whole new file first; only a valid file replaces the
/// current one (never a partial ACL). Connections hold the `CompiledACL` they were given and
/// compare `generation` to notice a swap and rebuild their policy.
public final class ACLStore: Sendable {
    public struct Snapshot: Sendable {
        public let acl: CompiledACL
        /// Increases by one on every successful reload.
        public let generation: Int
    }

    private let state: NIOLockedValueBox<Snapshot>
    /// `current.generation`, readable without the lock: every packet a connection decides
    /// checks it, and only a change makes it take the snapshot.
    private let latestGeneration = Atomic<Int>(0)
    /// The file this store reloads from, if any.
    public let path: String?

    public init(_ acl: CompiledACL, path: String? = nil) {
        self.state = NIOLockedValueBox(Snapshot(acl: acl, generation: 0))
        self.path = path
    }

    /// Loads and compiles `path`, failing with the file's error (file:line — fix).
    public convenience init(path: String) throws {
        self.init(try Self.load(path: path), path: path)
    }

    public var current: Snapshot { state.withLockedValue { $0 } }

    /// The generation of `current` (never older than a snapshot taken before this call).
    public var generation: Int { latestGeneration.load(ordering: .acquiring) }

    /// Replaces the ACL with `new` and returns what changed.
    @discardableResult
    public func replace(with new: CompiledACL) -> ACLDiff {
        state.withLockedValue { snapshot in
            let diff = ACLDiff(from: snapshot.acl.file, to: new.file)
            snapshot = Snapshot(acl: new, generation: snapshot.generation + 1)
            latestGeneration.store(snapshot.generation, ordering: .releasing)
            return diff
        }
    }

    /// Re-reads the file this store was loaded from. On any error the current ACL stays.
    public func reload() throws -> ACLDiff {
        guard let path else { throw ACLLoadError(path: "(none)", message: "this ACL was not loaded from a file") }
        return replace(with: try Self.load(path: path))
    }

    /// Reads, validates and compiles an acl_file.
    public static func load(path: String) throws -> CompiledACL {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ACLLoadError(path: path, message: FileManager.default.fileExists(atPath: path) ? "cannot read the file (permissions?)" : "no such file")
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw ACLLoadError(path: path, message: "not valid UTF-8 — save the file as UTF-8 (topics are UTF-8 on the wire)")
        }
        do {
            return try CompiledACL(parsing: text, source: path)
        } catch {
            throw ACLLoadError(path: path, message: error.description, parseError: error)
        }
    }
}

/// Why an acl_file could not be used.
public struct ACLLoadError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public var parseError: ACLParseError?

    public var description: String { parseError?.description ?? "\(path): \(message)" }
}
