import ArgumentParser
import Bridge
import Foundation
import TopicACL

struct ACLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "acl",
        abstract: "Ask an acl_file (mosquitto format) what it allows, and why.",
        subcommands: [Check.self, Narrow.self, Diff.self]
    )

    /// Who is asking: the same identity the proxy derives from CONNECT (or from a peer's key).
    struct IdentityOptions: ParsableArguments {
        @Option(help: "The acl_file (mosquitto format).")
        var acl: String

        @Option(help: "MQTT username; omit for an anonymous client.")
        var username: String?

        @Option(name: .customLong("client-id"), help: "MQTT client id; pattern lines (%c) need it.")
        var clientID: String?

        @Option(help: "Decide for a paired site (peer block) instead of an MQTT client.")
        var peer: String?

        func validate() throws {
            if peer != nil && (username != nil || clientID != nil) {
                throw ValidationError("--peer cannot be combined with --username or --client-id: a peer is identified by its key alone")
            }
        }

        var identity: Identity {
            if let peer { return .peer(peer) }
            return .client(username: username, clientID: clientID)
        }

        func load() throws -> CompiledACL {
            try loadACL(path: acl)
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print ALLOW or DENY with the deciding rule. Exit 0 allowed, 1 denied, 2 error."
        )

        enum AccessOption: String, ExpressibleByArgument, CaseIterable {
            case read, write, subscribe
        }

        @OptionGroup var who: IdentityOptions

        @Option(help: "The topic (read, write) or topic filter (subscribe).")
        var topic: String

        @Option(help: "read, write or subscribe.")
        var access: AccessOption

        func run() throws {
            let acl = try who.load()
            let policy = acl.policy(for: who.identity)
            switch access {
            case .read, .write:
                if TopicFilterSyntax.hasWildcard(topic) {
                    throw fail("--topic \(topic) contains a wildcard; use --access subscribe to ask about a filter")
                }
                let decision = policy.decide(topic: topic, access: access == .read ? .read : .write)
                print("\(decision.isAllowed ? "ALLOW" : "DENY") \(access.rawValue) \(topic) for \(who.identity)")
                print("  \(decision)")
                if !decision.isAllowed { throw ExitCode(1) }
            case .subscribe:
                let decision = policy.subscribe(filter: topic)
                switch decision {
                case .allowed(_, let rule):
                    print("ALLOW subscribe \(topic) for \(who.identity)")
                    print("  every topic it matches is readable: \(rule)")
                case .narrowed(let list):
                    print("DENY subscribe \(topic) for \(who.identity)")
                    print("  only part is readable; the proxy narrows it to:")
                    for item in list { print("    \(item.filter)  (\(item.rule))") }
                    throw ExitCode(1)
                case .denied(let denial):
                    print("DENY subscribe \(topic) for \(who.identity)")
                    print("  \(denial)")
                    throw ExitCode(1)
                }
            }
        }
    }

    struct Narrow: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the permitted filters a subscription narrows to, one a line (none if denied). Exit 0 if any, 1 if none, 2 error."
        )

        @OptionGroup var who: IdentityOptions

        @Option(help: "The topic filter a client subscribes to.")
        var filter: String

        func run() throws {
            let decision = try who.load().policy(for: who.identity).subscribe(filter: filter)
            if case .denied(.invalidFilter(let why)) = decision {
                throw fail("--filter \(filter) is not a valid topic filter: \(why)")
            }
            for permitted in decision.permittedFilters { print(permitted) }
            if decision.permittedFilters.isEmpty { throw ExitCode(1) }
        }
    }

    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show which identity gains or loses which access between two acl_files (what a reload would log)."
        )

        @Argument(help: "The current acl_file.") var old: String
        @Argument(help: "The new acl_file.") var new: String

        func run() throws {
            let before = try loadACL(path: old)
            let after = try loadACL(path: new)
            print(ACLDiff(from: before.file, to: after.file))
        }
    }
}

/// Reads and compiles an acl_file, turning every problem into the CLI's error form.
func loadACL(path: String) throws -> CompiledACL {
    do {
        let acl = try ACLStore.load(path: path)
        for warning in acl.file.warnings {
            FileHandle.standardError.write(Data("mqbridge: \(warning)\n".utf8))
        }
        return acl
    } catch {
        throw fail("\(error)")
    }
}

enum TopicFilterSyntax {
    static func hasWildcard(_ topic: String) -> Bool {
        topic.utf8.contains { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }
    }
}
