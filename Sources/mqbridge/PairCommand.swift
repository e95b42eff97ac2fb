import ArgumentParser
import Bridge
import Foundation
import Logging
import NIOCore
import NIOPosix

struct PairCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pair",
        abstract: "Pair two sites: one invites (prints a one-time code), the other joins with it; each pins the other's key.",
        discussion: """
        Site A:  mqbridge pair invite --identity DIR --listen 0.0.0.0:8884 [--address a.example:8884]
        Site B:  mqbridge pair join --identity DIR --code mqbp1-…
        Both print the same six-digit comparison code; compare them (by phone). The peer is
        written to DIR/peers.yaml, which `mqbridge run` reads with the configuration.
        The code ends in a check: one that was not copied whole is refused before anything
        is dialled, and does not count as one of the inviter's three wrong attempts.
        """,
        subcommands: [Invite.self, Join.self]
    )

    struct Invite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a one-time pairing code and wait for the other site to join.")

        @Option(help: "This site's identity directory.") var identity: String
        @Option(help: "Where to listen for the joining site (host:port).") var listen: String
        @Option(help: "The address the joining site should dial for pairing, if not --listen (host:port).") var address: String?
        @Option(name: .customLong("link-address"), help: "Where the joining site should dial this site's link afterwards (host:port); omit if this site dials.")
        var linkAddress: String?
        @Option(help: "How long the code is valid (e.g. 10m, 90s).") var expires: String = "10m"

        func run() async throws {
            BridgeRuntime.unblockControlSignals()
            let site: SiteIdentity
            let listenAddress: HostPort
            var advertise: HostPort?
            var link: HostPort?
            do {
                site = try SiteIdentity.load(from: identity)
                listenAddress = try HostPort(parsing: listen)
                advertise = try address.map { try HostPort(parsing: $0) }
                link = try linkAddress.map { try HostPort(parsing: $0) }
            } catch {
                throw fail("\(error)")
            }
            guard let lifetime = parseDuration(expires) else { throw fail("--expires \(expires) is not a duration (e.g. 10m, 90s)") }
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: .warning) }
            let group = MultiThreadedEventLoopGroup.singleton
            let directory = identity
            do {
                let result = try await Pairing.invite(identity: site, identityDirectory: directory, listen: listenAddress, advertise: advertise, linkAddress: link, lifetime: lifetime,
                                                      group: group, logger: Logger(label: "mqbridge")) { code in
                    // Written unbuffered: the operator (or a script) needs the code now.
                    let text = """
                    pairing code for \(site.name) (one use, valid until \(code.expires)):

                      \(code)

                    on the other site run:  mqbridge pair join --identity <its identity dir> --code \(code)
                    waiting for it on \(code.address) ...

                    """
                    FileHandle.standardOutput.write(Data(text.utf8))
                }
                print("paired with \(result.peer.name) (\(result.peer.fingerprint.map { "\($0)" } ?? "-"))")
                print("comparison: \(result.comparison) — check that the other site shows the same digits")
                print("recorded in \(URL(fileURLWithPath: directory).appendingPathComponent("peers.yaml").path)")
            } catch {
                throw fail("\(error)")
            }
        }
    }

    struct Join: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pair with the site that printed --code.")

        @Option(help: "This site's identity directory.") var identity: String
        @Option(help: "The code printed by `mqbridge pair invite` at the other site.") var code: String

        func run() async throws {
            let site: SiteIdentity
            let pairingCode: PairingCode
            do {
                site = try SiteIdentity.load(from: identity)
                pairingCode = try PairingCode(parsing: code)
            } catch {
                throw fail("\(error)")
            }
            let group = MultiThreadedEventLoopGroup.singleton
            do {
                let result = try await Pairing.join(identity: site, identityDirectory: identity, code: pairingCode, group: group)
                print("paired with \(result.peer.name) (\(result.peer.fingerprint.map { "\($0)" } ?? "-"))\(pairingCode.linkAddress.map { "; its link: \($0)" } ?? "; it will dial this site")")
                print("comparison: \(result.comparison) — check that the other site shows the same digits")
                print("recorded in \(URL(fileURLWithPath: identity).appendingPathComponent("peers.yaml").path)")
            } catch {
                throw fail("\(error)")
            }
        }
    }
}
