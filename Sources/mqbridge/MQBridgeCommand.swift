import ArgumentParser

@main
struct MQBridgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqbridge",
        abstract: "An MQTT-aware secure bridge: topic ACLs for legacy clients, and a pinned TLS 1.3 link between sites.",
        subcommands: [DecodeCommand.self]
    )
}
