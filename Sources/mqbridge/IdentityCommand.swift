import ArgumentParser
import Bridge

struct IdentityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity",
        abstract: "Create or show this site's key and certificate (what paired sites pin).",
        subcommands: [Init.self, Show.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a P-256 key (mode 0600) and a self-signed certificate. Never overwrites.")

        @Option(help: "Directory for key.pem and cert.pem.") var dir: String
        @Option(help: "This site's name (letters, digits, '-', '_', '.').") var name: String

        func run() throws {
            do {
                let identity = try SiteIdentity.create(in: dir, name: name)
                print("created identity \"\(identity.name)\" in \(dir)")
                print("fingerprint: \(identity.fingerprint)")
            } catch {
                throw fail("\(error)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the site name and the SPKI SHA-256 fingerprint.")

        @Option(help: "Directory holding key.pem and cert.pem.") var dir: String

        func run() throws {
            do {
                let identity = try SiteIdentity.load(from: dir)
                print("name: \(identity.name)")
                print("fingerprint: \(identity.fingerprint)")
            } catch {
                throw fail("\(error)")
            }
        }
    }
}
