import Foundation
import TestSupport

/// One Python client script run twice at the same time on one broker: against mosquitto
/// directly and through mqbridge. Each run prints its observations as a JSON line last; the
/// interop and the adversarial suites compare the two.
enum ScriptParity {
    /// mosquitto with mqbridge's local proxy in front (ACL `acl`): `body` gets the proxy's
    /// port, the broker's port and a scratch directory.
    static func localProxy<T>(acl: String, _ body: (_ bridgedPort: Int, _ brokerPort: Int, _ directory: URL) throws -> T) throws -> T {
        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let aclPath = try TestEnvironment.temporaryFile(acl, name: "allow.acl")
        let bridge = try BridgeProcess(["run", "--listen", "127.0.0.1:0", "--broker", "127.0.0.1:\(broker.port)", "--acl", aclPath])
        defer { bridge.stop() }
        return try body(bridge.port, broker.port, FileManager.default.temporaryDirectory)
    }

    /// Two sites (site B owns the broker, with ACL `acl`): `body` gets site A's remote
    /// listener for it, the broker's port and the lab's directory.
    static func remoteProxy<T>(acl: String, _ body: (_ bridgedPort: Int, _ brokerPort: Int, _ directory: URL) throws -> T) throws -> T {
        var lab = try TwoSiteLab()
        defer { lab.stop() }
        lab.aclText = acl
        try lab.start()
        return try body(lab.remotePort("broker"), lab.broker.port, lab.directory)
    }

    /// Runs `script` against `directPort` and `bridgedPort` at once, with the arguments
    /// `arguments(port, run name)`, and returns the JSON line each printed last.
    static func runBoth(_ script: String, directPort: Int, bridgedPort: Int, directory: URL, timeout: Double,
                        arguments: (_ port: Int, _ run: String) -> [String]) throws -> (direct: String, bridged: String) {
        let tag = UUID().uuidString.prefix(6)
        func start(_ port: Int, _ run: String) throws -> ChildProcess {
            try ChildProcess(["python3", TestEnvironment.script(script)] + arguments(port, run),
                             log: directory.appendingPathComponent("\(script)-\(run).log"))
        }
        let direct = try start(directPort, "d\(tag)"), bridged = try start(bridgedPort, "b\(tag)")
        defer { direct.stop(); bridged.stop() }
        func output(_ process: ChildProcess) throws -> String {
            guard process.wait(timeout: timeout) == 0 else { throw TestError("\(script) failed:\n\(process.log)") }
            guard let line = process.log.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
                throw TestError("no observations in:\n\(process.log)")
            }
            return String(line)
        }
        return (try output(direct), try output(bridged))
    }

    /// A run's JSON line as an object.
    static func object(_ line: String) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { throw TestError("not an object: \(line)") }
        return object
    }
}
