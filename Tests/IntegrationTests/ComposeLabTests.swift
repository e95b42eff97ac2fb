import Foundation
import TestSupport
import Testing

/// The compose labs (compose/), run without Docker by compose/run-without-docker.py from the
/// same files: every service in its own network namespace, networks as bridges, service names
/// through hosts files. Checks what each variant lets reach site B's broker.
@Suite("Compose labs, run in network namespaces")
struct ComposeLabTests {
    struct Run {
        var status: Int32
        var lines: [(service: String, text: String)]
        func output(of service: String) -> [String] { lines.filter { $0.service == service }.map(\.text) }
        var all: String { lines.map { "\($0.service) | \($0.text)" }.joined(separator: "\n") }
    }

    /// nil when this machine cannot make network namespaces (the script says so, exit 77).
    func run(_ variant: String) throws -> Run? {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("compose/run-without-docker.py").path
        let bin = URL(fileURLWithPath: TestEnvironment.mqbridgeBinary).deletingLastPathComponent().path
        let prefix = "mq\(String(UInt32.random(in: 0...0xFFFF), radix: 16))-"
        let r = try TestEnvironment.run(["python3", script, variant, "--bin", bin, "--prefix", prefix], timeout: 240)
        let stdout = String(decoding: r.stdout, as: UTF8.self)
        if r.status == 77 {
            print("SKIPPED: compose lab \(variant): \(stdout)")
            return nil
        }
        let lines = stdout.split(separator: "\n").compactMap { line -> (String, String)? in
            guard let bar = line.range(of: " | ") else { return nil }
            return (line[..<bar.lowerBound].trimmingCharacters(in: .whitespaces), String(line[bar.upperBound...]))
        }
        return Run(status: r.status, lines: lines.map { (service: $0.0, text: $0.1) })
    }

    /// One row of compose/lab/expected (the list compose/check-with-docker.sh checks too).
    struct Expectation {
        var service: String
        var check: String
        var text: String
    }

    static func expectations(for variant: String) throws -> [Expectation] {
        let file = TestEnvironment.repositoryRoot.appendingPathComponent("compose/lab/expected")
        return try String(contentsOf: file, encoding: .utf8).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "|", maxSplits: 3, omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard !line.hasPrefix("#"), fields.count == 4, fields[0] == variant else { return nil }
            return Expectation(service: fields[1], check: fields[2], text: fields[3])
        }
    }

    @Test("Each variant shows what compose/lab/expected lists: plain and stunnel carry the forbidden topic too; mqbridge pairs, refuses it under site B's ACL, passes the page and relays; mosquitto's bridge relays",
          arguments: ["plain", "stunnel", "mqbridge", "mosquitto-bridge"])
    func variant(_ variant: String) async throws {
        try await TestEnvironment.blocking {
            let rows = try Self.expectations(for: variant)
            #expect(!rows.isEmpty, "compose/lab/expected lists nothing for \(variant)")
            guard let lab = try run(variant) else { return }
            #expect(lab.status == 0, "\(lab.all)")
            // `exactly`: the service printed these lines, each once, in any order.
            let exact = Dictionary(grouping: rows.filter { $0.check == "exactly" }, by: \.service)
            for (service, wanted) in exact {
                #expect(lab.output(of: service).sorted() == wanted.map(\.text).sorted(), "\(service)\n\(lab.all)")
            }
            for row in rows where row.check != "exactly" {
                switch row.check {
                case "line":
                    let parts = row.text.components(separatedBy: " && ")
                    #expect(lab.output(of: row.service).contains { line in parts.allSatisfy(line.contains) }, "\(row.service): no line with \(row.text)\n\(lab.all)")
                case "pairing":
                    let digits = row.service.split(separator: " ").map { site in
                        lab.output(of: String(site)).first { $0.contains("comparison:") }?.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) }
                    }
                    #expect(digits.count >= 2 && digits[0] != nil && Set(digits).count == 1, "pairing digits \(digits)\n\(lab.all)")
                default:
                    Issue.record("compose/lab/expected: unknown check \(row.check)")
                }
            }
        }
    }
}
