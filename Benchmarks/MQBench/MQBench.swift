import ArgumentParser

@main
struct MQBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqbridge-bench",
        abstract: "mqbridge benchmarks. Each prints a table; run from a release build (make bench BENCH=...).",
        subcommands: [CodecBenchmark.self, ACLBenchmark.self, ProxyBenchmark.self, LinkBenchmark.self, RelayBenchmark.self, LoadCommand.self]
    )
}
