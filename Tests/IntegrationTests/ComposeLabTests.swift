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

    static let telemetry = "plant/line1/telemetry SECRET-MARKER temp=21.5"
    static let forbidden = "plant/safety/override OPEN-ALL-VALVES"
    static let relayed = "from-a/sensors/boiler/temp 88.1"

    @Test("plain and stunnel carry every topic the client sends, the forbidden one too", arguments: [("plain", "web-b:8080"), ("stunnel", "stunnel-a:8080")])
    func tunnelsCarryEverything(variant: String, web: String) throws {
        guard let lab = try run(variant) else { return }
        #expect(lab.status == 0, "\(lab.all)")
        #expect(lab.output(of: "observer-b") == [Self.telemetry, Self.forbidden], "\(lab.all)")
        #expect(lab.output(of: "client-a").contains("client-a: GET http://\(web)/ -> hello from site B's web server"), "\(lab.all)")
    }

    @Test("mqbridge: pairing, the remote proxy under site B's ACL, the passthrough and the relay")
    func mqbridge() throws {
        guard let lab = try run("mqbridge") else { return }
        #expect(lab.status == 0, "\(lab.all)")
        // Each exactly once, in either order (the relay and the remote proxy are separate paths).
        #expect(lab.output(of: "observer-b").sorted() == [Self.telemetry, Self.relayed].sorted(), "\(lab.all)")
        #expect(lab.output(of: "client-a").contains("client-a: GET http://bridge-a:8080/ -> hello from site B's web server"), "\(lab.all)")
        let digits = ["bridge-a", "bridge-b"].map { site in lab.output(of: site).first { $0.contains("comparison:") }?.split(separator: ":").last }
        #expect(digits[0] != nil && digits[0] == digits[1], "\(lab.all)")
        let denial = lab.output(of: "bridge-b").first { $0.contains("\"event\":\"denied\"") } ?? ""
        #expect(denial.contains("\"topic\":\"plant/safety/override\"") && denial.contains("acl.conf:5\""), "\(lab.all)")
    }

    @Test("mosquitto's bridge relays sensors/# over TLS 1.3")
    func mosquittoBridge() throws {
        guard let lab = try run("mosquitto-bridge") else { return }
        #expect(lab.status == 0, "\(lab.all)")
        #expect(lab.output(of: "observer-b") == [Self.relayed], "\(lab.all)")
    }
}
