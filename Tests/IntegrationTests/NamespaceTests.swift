import Foundation
import TestSupport
import Testing

/// Site A and site B in two network namespaces this test creates, joined by a veth pair, with
/// tcpdump on the wire between them. The link must carry no plaintext; a plaintext control
/// run over the same wire must show the marker (so the capture would catch a leak).
@Suite("Two sites in network namespaces", .serialized)
struct NamespaceTests {
    final class Lab {
        let id = String(UInt32.random(in: 0...0xFFFF), radix: 16)
        let subnet = Int.random(in: 2...250)
        var nsA: String { "mqba-\(id)" }
        var nsB: String { "mqbb-\(id)" }
        var vethA: String { "mqa\(id)" }
        var vethB: String { "mqb\(id)" }
        var addressA: String { "10.231.\(subnet).1" }
        var addressB: String { "10.231.\(subnet).2" }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-netns-\(UUID().uuidString)")
        var processes: [ChildProcess] = []

        func sh(_ command: String) throws {
            let r = try TestEnvironment.run(["sh", "-c", command])
            guard r.status == 0 else { throw TestError("\(command): \(r.stderr)") }
        }

        /// Creates the namespaces and the veth pair; returns false if this machine cannot.
        func create() -> Bool {
            do {
                try sh("ip netns add \(nsA) && ip netns add \(nsB)")
                try sh("ip link add \(vethA) type veth peer name \(vethB)")
                try sh("ip link set \(vethA) netns \(nsA) && ip link set \(vethB) netns \(nsB)")
                try sh("ip -n \(nsA) addr add \(addressA)/24 dev \(vethA) && ip -n \(nsA) link set \(vethA) up && ip -n \(nsA) link set lo up")
                try sh("ip -n \(nsB) addr add \(addressB)/24 dev \(vethB) && ip -n \(nsB) link set \(vethB) up && ip -n \(nsB) link set lo up")
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                _ = chmod(directory.path, 0o777)
                return true
            } catch {
                destroy()
                return false
            }
        }

        func spawn(_ ns: String, _ arguments: [String], log: String) throws -> ChildProcess {
            let process = try ChildProcess(["ip", "netns", "exec", ns] + arguments, log: directory.appendingPathComponent(log))
            processes.append(process)
            return process
        }

        func run(_ ns: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            let r = try TestEnvironment.run(["ip", "netns", "exec", ns] + arguments)
            return (r.status, String(decoding: r.stdout, as: UTF8.self), r.stderr)
        }

        func path(_ p: String) -> String { directory.appendingPathComponent(p).path }

        func waitForLog(_ process: ChildProcess, _ text: String, timeout: Double = 15) throws {
            let deadline = Date().addingTimeInterval(timeout)
            while !process.log.contains(text) {
                if Date() > deadline || process.hasExited { throw TestError("no \"\(text)\" in: \(process.log.suffix(2000))") }
                usleep(20_000)
            }
        }

        /// Waits until something accepts connections at host:port inside `ns`.
        func waitForPort(_ ns: String, _ host: String, _ port: Int) throws {
            let r = try run(ns, ["python3", "-c", """
            import socket, sys, time
            for _ in range(300):
                try: socket.create_connection(("\(host)", \(port)), 0.2).close(); sys.exit(0)
                except OSError: time.sleep(0.05)
            sys.exit(1)
            """])
            guard r.status == 0 else { throw TestError("nothing listening on \(host):\(port) in \(ns)") }
        }

        func destroy() {
            for process in processes.reversed() { process.stop(grace: 2) }
            _ = try? TestEnvironment.run(["ip", "netns", "del", nsA])
            _ = try? TestEnvironment.run(["ip", "netns", "del", nsB])
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// Captures on A's side of the wire while `body` runs; returns the raw capture.
    func capture(_ lab: Lab, name: String, _ body: () throws -> Void) throws -> Data {
        let file = lab.path("\(name).pcap")
        let tcpdump = try lab.spawn(lab.nsA, ["tcpdump", "-i", lab.vethA, "--immediate-mode", "-U", "-s", "0", "-w", file], log: "\(name)-tcpdump.log")
        try lab.waitForLog(tcpdump, "listening on")
        try body()
        usleep(1_000_000)
        tcpdump.signal(SIGINT)  // tcpdump writes out and closes the file on SIGINT
        tcpdump.wait(timeout: 5)
        return try Data(contentsOf: URL(fileURLWithPath: file))
    }

    @Test("A legacy MQTT client and an HTTP client at A reach B through the link; no frame on the wire contains the payload; plaintext control does")
    func noPlaintextOnTheWire() async throws {
        try await TestEnvironment.blocking {
            let lab = Lab()
            guard lab.create() else {
                print("SKIPPED: cannot create network namespaces here (needs root and iproute2); the loopback two-site tests still ran")
                return
            }
            defer { lab.destroy() }
            let binary = TestEnvironment.mqbridgeBinary
            let fingerprints = ["a": try TestEnvironment.createIdentity(in: lab.path("a/identity"), name: "site-a"),
                                "b": try TestEnvironment.createIdentity(in: lab.path("b/identity"), name: "site-b")]
            func fingerprint(_ site: String) throws -> String { fingerprints[site]! }
            // Site B: broker and web server on its own loopback, mqbridge on the wire address.
            try "listener 1883 127.0.0.1\nlistener 1884 \(lab.addressB)\nallow_anonymous true\nlog_dest stdout\n".write(toFile: lab.path("mosquitto.conf"), atomically: true, encoding: .utf8)
            let broker = try lab.spawn(lab.nsB, ["mosquitto", "-c", lab.path("mosquitto.conf")], log: "mosquitto.log")
            _ = broker
            try lab.waitForPort(lab.nsB, lab.addressB, 1884)
            _ = try lab.spawn(lab.nsB, ["python3", "-m", "http.server", "8080", "--bind", "127.0.0.1", "--directory", lab.path("b")], log: "http.log")
            try "user plc\ntopic readwrite plant/#\n".write(toFile: lab.path("b/acl.conf"), atomically: true, encoding: .utf8)
            try """
            identity: identity
            acl: acl.conf
            link:
              listen: \(lab.addressB):8883
            peers:
              - name: site-a
                fingerprint: \(try fingerprint("a"))
            services:
              - name: broker
                kind: mqtt
                target: 127.0.0.1:1883
                peers: [site-a]
              - name: web
                kind: tcp
                target: 127.0.0.1:8080
                peers: [site-a]

            """.write(toFile: lab.path("b/mqbridge.yaml"), atomically: true, encoding: .utf8)
            let bridgeB = try lab.spawn(lab.nsB, [binary, "run", "--config", lab.path("b/mqbridge.yaml")], log: "b.log")
            try lab.waitForLog(bridgeB, "link_listening")
            try """
            identity: identity
            peers:
              - name: site-b
                fingerprint: \(try fingerprint("b"))
                connect: \(lab.addressB):8883
            remote:
              - listen: 127.0.0.1:1883
                peer: site-b
                service: broker
              - listen: 127.0.0.1:8080
                peer: site-b
                service: web

            """.write(toFile: lab.path("a/mqbridge.yaml"), atomically: true, encoding: .utf8)

            let marker = "MQB-MARKER-\(UUID().uuidString)"
            try "<html>\(marker)</html>\n".write(toFile: lab.path("b/page.html"), atomically: true, encoding: .utf8)
            var bridgeA: ChildProcess?
            let linked = try capture(lab, name: "link") {
                bridgeA = try lab.spawn(lab.nsA, [binary, "run", "--config", lab.path("a/mqbridge.yaml")], log: "a.log")
                try lab.waitForLog(bridgeA!, "\"event\":\"link_up\"")
                let sub = try lab.spawn(lab.nsB, ["mosquitto_sub", "-h", "127.0.0.1", "-p", "1883", "-t", "plant/#", "-C", "1", "-W", "30"], log: "sub.log")
                // Retained: the subscriber gets it even if it subscribes after it arrived.
                let pub = try lab.run(lab.nsA, ["mosquitto_pub", "-h", "127.0.0.1", "-p", "1883", "-u", "plc", "-t", "plant/secret", "-m", marker, "-q", "1", "-r"])
                #expect(pub.status == 0, "\(pub.stderr)")
                sub.wait(timeout: 30)
                #expect(sub.log == marker + "\n", "the MQTT message did not cross the link")
                let page = try lab.run(lab.nsA, ["python3", "-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/page.html').read().decode(), end='')"])
                #expect(page.stdout.contains(marker), "the HTTP response did not cross the link: \(page.stderr)")
            }
            #expect(linked.count > 2000, "the capture saw the link traffic (\(linked.count) bytes)")
            #expect(linked.range(of: Data(marker.utf8)) == nil, "the payload appeared in clear on the wire")
            #expect(bridgeA.map { $0.log.contains("\"tls\":\"TLSv1.3\"") } == true)

            // Control: the same marker sent in plaintext across the same wire is visible.
            let plain = try capture(lab, name: "plain") {
                let r = try lab.run(lab.nsA, ["mosquitto_pub", "-h", lab.addressB, "-p", "1884", "-t", "plant/plain", "-m", marker, "-q", "1"])
                #expect(r.status == 0, "\(r.stderr)")
            }
            #expect(plain.range(of: Data(marker.utf8)) != nil, "the control run did not see the plaintext marker (capture \(plain.count) bytes); the capture is not working")
        }
    }
}
