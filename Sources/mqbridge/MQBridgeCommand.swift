import ArgumentParser
import Foundation

@main
struct MQBridgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqbridge",
        abstract: "An MQTT-aware secure bridge: topic ACLs for legacy clients, and a pinned TLS 1.3 link between sites.",
        subcommands: [RunCommand.self, CheckCommand.self, IdentityCommand.self, PairCommand.self, ACLCommand.self, DecodeCommand.self]
    )

    /// Exit codes are part of the interface: 0 success / allowed, 1 denied, 2 any error
    /// (usage included; ArgumentParser's default would be 64), message on stderr.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        }
    }
}

/// Prints to stderr and exits 2: the CLI's one way of reporting an error.
func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data(("mqbridge: " + message + "\n").utf8))
    return ExitCode(2)
}
