import Foundation
import TestSupport
import Testing

/// Two sites as real processes on loopback: site B owns a mosquitto and an HTTP server and
/// offers them as services; site A dials B over the pinned TLS 1.3 link and has local
/// listeners for them. Legacy clients at A reach B's broker (B's ACL decides) and B's web
/// server, and nothing else.
struct TwoSiteLab {
    let directory: URL
    let broker: MosquittoBroker
    let http: ChildProcess
    let httpPort: Int
    var b: BridgeProcess!
    var a: BridgeProcess!
    var linkPort = 0
    /// Site B's ACL (for the peer's clients), written when B starts.
    var aclText = TwoSiteLab.aclB
    /// Extra keys of B's `link` section and of A's remote listener for `web`, e.g. limits.
    var linkOptionsB: [String] = []
    var webOptionsA: [String] = []
    /// Extra keys of B's `web` service.
    var webServiceOptionsB: [String] = []

    static let aclB = """
    user alice
    topic readwrite sensors/#
    user mallory
    topic write mallory/#

    """

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-2site-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        broker = try MosquittoBroker()
        http = try ChildProcess(["python3", TestEnvironment.script("http_service.py")], log: directory.appendingPathComponent("http.log"))
        httpPort = try http.reportedPort()
        fingerprints = ["a": try TestEnvironment.createIdentity(in: directory.appendingPathComponent("a/identity").path, name: "site-a"),
                        "b": try TestEnvironment.createIdentity(in: directory.appendingPathComponent("b/identity").path, name: "site-b")]
    }

    func path(_ relative: String) -> String { directory.appendingPathComponent(relative).path }

    var fingerprints: [String: String] = [:]
    func fingerprint(_ site: String) throws -> String { fingerprints[site]! }

    /// Starts B (listening on a free port), then A dialing it.
    mutating func start(linkPort fixed: Int? = nil) throws {
        try aclText.write(toFile: path("b/acl.conf"), atomically: true, encoding: .utf8)
        let configB = """
        identity: identity
        acl: acl.conf
        metrics: 127.0.0.1:0
        link:
          listen: 127.0.0.1:\(fixed ?? 0)
          keepalive: 500ms\(linkOptionsB.map { "\n  \($0)" }.joined())
        peers:
          - name: site-a
            fingerprint: \(try fingerprint("a"))
        services:
          - name: broker
            kind: mqtt
            target: 127.0.0.1:\(broker.port)
            peers: [site-a]
          - name: web
            kind: tcp
            target: 127.0.0.1:\(httpPort)
            peers: [site-a]\(webServiceOptionsB.map { "\n    \($0)" }.joined())

        """
        try configB.write(toFile: path("b/mqbridge.yaml"), atomically: true, encoding: .utf8)
        b = try BridgeProcess(["run", "--config", path("b/mqbridge.yaml")], expectMetrics: true, readyEvents: ["link_listening"])
        linkPort = b.port(event: "link_listening")!
        try startA()
    }

    /// `readyEvents`: what A's log must show before this returns (by default, its link is up).
    mutating func startA(readyEvents: [String] = ["remote_listening", "link_up"]) throws {
        let configA = """
        identity: identity
        metrics: 127.0.0.1:0
        link:
          keepalive: 500ms
        peers:
          - name: site-b
            fingerprint: \(try fingerprint("b"))
            connect: 127.0.0.1:\(linkPort)
        remote:
          - listen: 127.0.0.1:0
            peer: site-b
            service: broker
          - listen: 127.0.0.1:0
            peer: site-b
            service: web\(webOptionsA.map { "\n    \($0)" }.joined())
          - listen: 127.0.0.1:0
            peer: site-b
            service: secret

        """
        try configA.write(toFile: path("a/mqbridge.yaml"), atomically: true, encoding: .utf8)
        a = try BridgeProcess(["run", "--config", path("a/mqbridge.yaml")], expectMetrics: true, readyEvents: readyEvents)
    }

    /// Sends GET /hello on a keep-alive connection to the `web` service; whether site B's web
    /// server answered it (the body is the last thing read).
    static func webAnswers(_ client: TCPTestClient) throws -> Bool {
        let body = Array("hello from site B\n".utf8)
        try client.send(Array("GET /hello HTTP/1.1\r\nHost: b\r\n\r\n".utf8))
        return client.receive { $0.suffix(body.count).elementsEqual(body) }.received.suffix(body.count).elementsEqual(body)
    }

    func remotePort(_ service: String) -> Int { a.port(event: "remote_listening", matching: ["service": service])! }

    /// Restarts site B on the link port it had (after it was killed).
    mutating func restartB() throws {
        let config = try String(contentsOfFile: path("b/mqbridge.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "listen: 127.0.0.1:0\n  keepalive", with: "listen: 127.0.0.1:\(linkPort)\n  keepalive")
        try config.write(toFile: path("b/mqbridge.yaml"), atomically: true, encoding: .utf8)
        b = try BridgeProcess(["run", "--config", path("b/mqbridge.yaml")], expectMetrics: true, readyEvents: ["link_listening"])
    }

    func stop() {
        a?.stop()
        b?.stop()
        broker.stop()
        http.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite("Two sites over the link (real processes)", .serialized)
struct TwoSiteTests {
    @Test("A legacy MQTT client at A reaches B's broker; B's ACL decides; both links are TLS 1.3 with pinned peers")
    func remoteMQTT() async throws {
        try await TestEnvironment.blocking {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            try lab.start()
            #expect(lab.a.lines(event: "link_up").first?["tls"] == "TLSv1.3")
            // A is up when B's HELLO arrives; B logs its side when A's HELLO arrives, a moment later.
            _ = TestEnvironment.waitUntil(timeout: 30) { !lab.b.lines(event: "link_up").isEmpty }
            #expect(lab.b.lines(event: "link_up").first?["peer"] == "site-a")
            let port = "\(lab.remotePort("broker"))"
            // No time limit on the subscriber (a loaded machine can take seconds per process): it
            // is stopped once the sentinel published after everything else has come through.
            let sub = try lab.broker.awaitSubscription(to: "#") {
                try ChildProcess(["mosquitto_sub", "-h", "127.0.0.1", "-p", "\(lab.broker.port)", "-t", "#", "-v"],
                                 log: lab.directory.appendingPathComponent("direct.log"))
            }
            defer { sub.stop() }
            for qos in ["0", "1", "2"] {
                let r = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", "alice", "-t", "sensors/remote", "-m", "from-A-qos\(qos)", "-q", qos])
                #expect(r.status == 0, "\(r.stderr)")
            }
            _ = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", "mallory", "-t", "sensors/remote", "-m", "evil", "-q", "1"])
            // A client at A subscribed through the link gets what B's broker delivers.
            let remoteSub = try lab.broker.awaitSubscription(to: "sensors/back") {
                try ChildProcess(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-u", "alice", "-t", "sensors/back", "-C", "1", "-v"],
                                 log: lab.directory.appendingPathComponent("remote-sub.log"))
            }
            defer { remoteSub.stop() }
            _ = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", "\(lab.broker.port)", "-t", "sensors/back", "-m", "to-A"])
            #expect(remoteSub.wait(timeout: 30) != nil)
            #expect(remoteSub.log == "sensors/back to-A\n")
            _ = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", "\(lab.broker.port)", "-t", "sentinel", "-m", "last"])
            #expect(TestEnvironment.waitUntil(timeout: 30) { sub.log.contains("sentinel last\n") })
            let seen = sub.log.split(separator: "\n").map(String.init)
            #expect(seen.filter { $0.hasPrefix("sensors/remote") }.sorted() == ["sensors/remote from-A-qos0", "sensors/remote from-A-qos1", "sensors/remote from-A-qos2"])
            #expect(!seen.contains("sensors/remote evil"))
            // The denial was decided and logged at B, the site that owns the broker.
            #expect(lab.b.lines(event: "denied").contains { $0["username"] == "mallory" && $0["kind"] == "publish" })
        }
    }

    @Test("HTTP through the passthrough: keep-alive, 100 MiB down and up with backpressure, half-close")
    func http() async throws {
        try await TestEnvironment.blocking {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            try lab.start()
            let r = try TestEnvironment.python("http_client.py", ["\(lab.remotePort("web"))", "100"], timeout: 300)
            guard r.status == 0, let result = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
                throw TestError("http_client.py failed: \(r.stderr)")
            }
            #expect(result["hello"] as? String == "hello from site B\n")
            #expect(result["hello_again"] as? String == "hello from site B\n")
            #expect(result["same_connection"] as? Bool == true)
            #expect(result["download_bytes"] as? Int == 100 << 20)
            #expect(result["download_ok"] as? Bool == true)
            #expect(result["upload_ok"] as? Bool == true)
            // Backpressure bounds memory: 100 MiB passed through, neither process grew anywhere near it.
            for site in [lab.a!, lab.b!] {
                let status = try String(contentsOfFile: "/proc/\(site.process.pid)/status", encoding: .utf8)
                let rss = Int(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }!.split(separator: " ", omittingEmptySubsequences: true)[1])!
                #expect(rss < 80 * 1024, "RSS \(rss) KiB")
            }
            // A service B does not offer to A is refused at B; nothing is reachable by name guessing.
            // The client learns that by a reset, not by an orderly end that would look like an empty answer.
            let refused = try TestEnvironment.tcpExchangeWithEnding(port: lab.remotePort("secret"), send: Array("GET / HTTP/1.0\r\n\r\n".utf8), halfClose: true)
            #expect(refused.received == [] && refused.ending == .reset)
            #expect(lab.b.lines(event: "stream_refused").first?["service"] == "secret")
        }
    }

    @Test("The client half-closes, the service answers and closes: every byte arrives and the stream ends with FIN both ways, not a reset")
    func halfCloseThenServiceCloses() async throws {
        try await TestEnvironment.blocking {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            try lab.start()
            // HTTP/1.0: the service closes after its answer, which comes after site B has shut
            // its output (the client's FIN). NIO reports that EOF as a full close; it used to go
            // to site A as a RESET, which closes A's client at once, dropping what A had not yet
            // written to it.
            let size = 4 << 20
            let (response, ending) = try TestEnvironment.tcpExchangeWithEnding(port: lab.remotePort("web"), send: Array("GET /bytes/\(size) HTTP/1.0\r\n\r\n".utf8),
                                                                               halfClose: true, timeout: 60)
            #expect(ending == .eof)
            let separator = Array("\r\n\r\n".utf8)
            let headerEnd = try #require((0...(response.count - separator.count)).first { Array(response[$0..<($0 + separator.count)]) == separator })
            let body = response[(headerEnd + separator.count)...]
            #expect(body.count == size)
            #expect(body.enumerated().allSatisfy { $0.element == UInt8(truncatingIfNeeded: $0.offset) })
            for site in [lab.a!, lab.b!] {
                #expect(try site.metric(#"mqbridge_link_stream_resets_total{direction="sent"}"#) == 0)
                #expect(try site.metric(#"mqbridge_link_stream_resets_total{direction="received"}"#) == 0)
            }
        }
    }

    @Test("Limits: A's remote listener closes connections beyond its max_connections, B refuses streams beyond link.max_streams; counted and logged")
    func limits() async throws {
        try await TestEnvironment.blocking {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            lab.linkOptionsB = ["max_streams: 3"]
            lab.webOptionsA = ["max_connections: 2"]
            try lab.start()
            // Two keep-alive connections to web are open (two streams at B).
            let first = try TCPTestClient(port: lab.remotePort("web"), timeout: 10)
            let second = try TCPTestClient(port: lab.remotePort("web"), timeout: 10)
            #expect(try TwoSiteLab.webAnswers(first))
            #expect(try TwoSiteLab.webAnswers(second))
            // A third to web is closed by A at once: no stream is opened for it.
            let third = try TCPTestClient(port: lab.remotePort("web"), timeout: 10)
            #expect(third.receive().ending == .eof)
            #expect(try lab.a.metric("mqbridge_remote_connections_refused_total") == 1)
            #expect(lab.a.lines(event: "max_connections").first?["service"] == "web")
            // The broker listener has no such limit at A; its first connection is B's third stream,
            // its second is refused by B, and A resets that client.
            let mqtt = try TCPTestClient(port: lab.remotePort("broker"), timeout: 10)
            try mqtt.send(MQTTTestPackets.connect311(clientID: "l1", username: "alice"))
            #expect(mqtt.receive(atMost: 4).received == MQTTTestPackets.connackAccepted311)
            let beyond = try TCPTestClient(port: lab.remotePort("broker"), timeout: 10)
            #expect(beyond.receive().ending == .reset)
            #expect(try lab.b.metric("mqbridge_link_streams_refused_total") == 1)
            #expect(lab.b.lines(event: "stream_refused").first { $0["reason"] == "max_streams" }?["refused"] == "1")
            // Below the limits again, connections work as before.
            second.close()
            #expect(TestEnvironment.waitUntil(timeout: 30) { (try? TwoSiteLab.webAnswers(TCPTestClient(port: lab.remotePort("web"), timeout: 10))) == true })
        }
    }

    @Test("Link handshakes: connections that never finish one are limited in all and per address; beyond, reset on accept, counted, logged; the peer gets in once places free")
    func handshakeLimits() async throws {
        try await TestEnvironment.blocking {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            // A long handshake timeout: the silent connections must hold their places for the
            // whole test, however slowly a loaded machine restarts site A.
            lab.linkOptionsB = ["max_handshakes: 6", "max_handshakes_per_address: 4", "handshake_timeout: 120s"]
            try lab.start()
            let refused = #"mqbridge_link_refused_total{reason="max_handshakes"}"#
            // Four silent TCP connections from 127.0.0.2 take that address's places: a fifth from
            // it is reset at once, before any TLS.
            var silent = try (0..<4).map { _ in try TCPTestClient(port: lab.linkPort, timeout: 10, from: "127.0.0.2") }
            #expect(try TCPTestClient(port: lab.linkPort, timeout: 5, from: "127.0.0.2").receive().ending == .reset)
            // Two from 127.0.0.3 fill the six; then even a new address is reset.
            silent += try (0..<2).map { _ in try TCPTestClient(port: lab.linkPort, timeout: 10, from: "127.0.0.3") }
            #expect(try TCPTestClient(port: lab.linkPort, timeout: 5, from: "127.0.0.4").receive().ending == .reset)
            #expect(try lab.b.metric(refused) == 2)
            let line = lab.b.lines(event: "link_refused").first { $0["reason"]?.hasPrefix("max_handshakes") == true }
            #expect(line?["reason"] == "max_handshakes_per_address" && line?["remote"]?.hasPrefix("127.0.0.2:") == true && line?["refused"] == "1",
                    "\(String(describing: line))")
            // The link that is up is not affected.
            #expect(try TwoSiteLab.webAnswers(TCPTestClient(port: lab.remotePort("web"), timeout: 10)))
            // Site A restarted now is refused too (it redials with backoff) until the places free.
            lab.a.stop()
            try lab.startA(readyEvents: ["remote_listening"])
            #expect(TestEnvironment.waitUntil(timeout: 10) { ((try? lab.b.metric(refused)) ?? 0) >= 3 })
            #expect(lab.a.lines(event: "link_up").isEmpty)
            for client in silent { client.close() }
            try lab.a.waitFor(event: "link_up", timeout: 20)
            #expect(try TwoSiteLab.webAnswers(TCPTestClient(port: lab.remotePort("web"), timeout: 10)))
        }
    }

    @Test("link.handshake_timeout: a connection that never finishes its handshake is closed after it, counted and logged; the peer's link is unaffected")
    func handshakeTimeout() async throws {
        try await TestEnvironment.blocking {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            lab.linkOptionsB = ["handshake_timeout: 1s"]
            try lab.start()
            let silent = try TCPTestClient(port: lab.linkPort, timeout: 15, from: "127.0.0.2")
            let opened = Date()
            #expect(silent.receive().ending == .eof)
            let after = Date().timeIntervalSince(opened)
            #expect(after > 0.8 && after < 10, "closed after \(after) s")
            #expect(TestEnvironment.waitUntil(timeout: 10) {
                lab.b.lines(event: "link_refused").contains { $0["reason"] == "timeout" && $0["remote"]?.hasPrefix("127.0.0.2:") == true }
            })
            #expect(try lab.b.metric(#"mqbridge_link_refused_total{reason="tls"}"#) == 1)
            #expect(try TwoSiteLab.webAnswers(TCPTestClient(port: lab.remotePort("web"), timeout: 10)))
        }
    }

    @Test("idle_timeout: a passthrough connection with no traffic is reset at both ends; one in use is not")
    func idleTimeout() async throws {
        try await TestEnvironment.blocking {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            lab.webServiceOptionsB = ["idle_timeout: 2s"]
            try lab.start()
            // Each connection's first request right after it is made: under a loaded full run, one
            // request can take a second, and a connection waiting for it would be idle meanwhile.
            let busy = try TCPTestClient(port: lab.remotePort("web"), timeout: 10)
            #expect(try TwoSiteLab.webAnswers(busy))
            let idle = try TCPTestClient(port: lab.remotePort("web"), timeout: 10)
            #expect(try TwoSiteLab.webAnswers(idle))
            // For 4 s the busy connection makes a request every 250 ms; the idle one sends nothing.
            for _ in 0..<16 {
                #expect(try TwoSiteLab.webAnswers(busy))
                usleep(250_000)
            }
            // The idle one was reset, at B (towards the web server) and at A (towards the client).
            #expect(idle.receive().ending == .reset)
            #expect(lab.b.lines(event: "stream_idle").count == 1)
            #expect(try lab.b.metric(#"mqbridge_link_stream_resets_total{direction="sent"}"#) == 1)
            #expect(try lab.a.metric(#"mqbridge_link_stream_resets_total{direction="received"}"#) == 1)
            #expect(try TwoSiteLab.webAnswers(busy))
        }
    }

    @Test("Refused at the link: plaintext, TLS 1.2, and an unknown key; counted")
    func refusals() async throws {
        try await TestEnvironment.blocking {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            try lab.start()
            let before = try lab.b.metric("mqbridge_link_refused_total{reason=\"tls\"}") ?? 0
            // Plaintext MQTT to the link port.
            _ = try? TestEnvironment.tcpExchange(port: lab.linkPort, send: MQTTTestPackets.connect311(clientID: ""), halfClose: false, timeout: 2)
            // TLS 1.2 only.
            let tls12 = try TestEnvironment.run(["sh", "-c", "echo | openssl s_client -connect 127.0.0.1:\(lab.linkPort) -tls1_2 2>&1"])
            #expect(!String(decoding: tls12.stdout, as: UTF8.self).contains("Cipher is ECDHE"))
            // TLS 1.3 with a key B does not know.
            _ = try TestEnvironment.run([TestEnvironment.mqbridgeBinary, "identity", "init", "--dir", lab.path("c"), "--name", "site-c"])
            let stranger = try TestEnvironment.run(["sh", "-c", "echo | openssl s_client -connect 127.0.0.1:\(lab.linkPort) -tls1_3 -cert \(lab.path("c/cert.pem")) -key \(lab.path("c/key.pem")) 2>&1"])
            _ = stranger
            usleep(500_000)
            let after = try lab.b.metric("mqbridge_link_refused_total{reason=\"tls\"}") ?? 0
            #expect(after - before >= 3, "refusals counted: \(after - before)")
            #expect(lab.b.lines(event: "link_refused").count >= 3)
        }
    }

    @Test("A dead link is detected within seconds and re-established with backoff when the peer returns")
    func reconnect() async throws {
        try await TestEnvironment.blocking {
            var lab = try TwoSiteLab()
            defer { lab.stop() }
            try lab.start()
            // A frozen peer sends nothing, not even a reset: only the keepalive can tell.
            lab.b.process.signal(SIGSTOP)
            let frozenAt = Date()
            try lab.a.waitFor(event: "link_dead", timeout: 10)
            // 1.5 s by design (three silent intervals); the margin is for a loaded CI machine. Without
            // the keepalive a stopped peer is never noticed (TCP sees nothing wrong).
            #expect(Date().timeIntervalSince(frozenAt) < 6, "silent link noticed after \(Date().timeIntervalSince(frozenAt))s (keepalive 500ms)")
            lab.b.process.signal(SIGCONT)
            let resumeDeadline = Date().addingTimeInterval(15)
            while lab.a.lines(event: "link_up").count < 2 && Date() < resumeDeadline { usleep(50_000) }
            #expect(lab.a.lines(event: "link_up").count == 2)
            lab.b.process.signal(SIGKILL)
            let killedAt = Date()
            try lab.a.waitFor(event: "link_down", timeout: 10)
            #expect(Date().timeIntervalSince(killedAt) < 8, "dead link noticed after \(Date().timeIntervalSince(killedAt))s")
            try lab.restartB()
            _ = TestEnvironment.waitUntil(timeout: 20) { lab.a.lines(event: "link_up").count >= 3 }
            #expect(lab.a.lines(event: "link_up").count == 3)
            #expect(!lab.a.lines(event: "link_reconnect").isEmpty)
            let r = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", "\(lab.remotePort("broker"))", "-u", "alice", "-t", "sensors/again", "-m", "x", "-q", "1"])
            #expect(r.status == 0, "\(r.stderr)")
        }
    }
}

/// The operator's own CA instead of pins: certificates issued by the CA are accepted and the
/// peer is named by its certificate's common name; a certificate from another CA is refused.
@Suite("Link with an operator CA", .serialized)
struct CATrustTests {
    @Test("Sites with CA-issued certificates link up; a certificate from another CA does not")
    func caTrust() async throws {
        try await TestEnvironment.blocking {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-ca-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            func sh(_ command: String) throws {
                let r = try TestEnvironment.run(["sh", "-c", "cd '\(dir.path)' && \(command)"])
                guard r.status == 0 else { throw TestError("\(command): \(r.stderr)") }
            }
            // An operator CA, and one certificate per site (plus a stranger from another CA).
            try sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 30 -subj /CN=operator-ca 2>/dev/null")
            try sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.pem -days 30 -subj /CN=other-ca 2>/dev/null")
            for (site, ca) in [("site-a", "ca"), ("site-b", "ca"), ("site-x", "other")] {
                try sh("mkdir -p \(site) && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout \(site)/key.pem -out \(site)/req.csr -subj /CN=\(site) 2>/dev/null"
                       + " && printf 'extendedKeyUsage=serverAuth,clientAuth\\n' > \(site)/ext && openssl x509 -req -in \(site)/req.csr -CA \(ca).pem -CAkey \(ca).key -CAcreateserial -out \(site)/cert.pem -days 30 -extfile \(site)/ext 2>/dev/null"
                       + " && chmod 600 \(site)/key.pem")
            }
            let broker = try MosquittoBroker()
            defer { broker.stop() }
            try "user u\ntopic readwrite t/#\n".write(to: dir.appendingPathComponent("acl.conf"), atomically: true, encoding: .utf8)
            try """
            identity: site-b
            acl: acl.conf
            link:
              listen: 127.0.0.1:0
              trust: ca
              ca_file: ca.pem
            peers:
              - name: site-a
            services:
              - name: broker
                kind: mqtt
                target: 127.0.0.1:\(broker.port)
                peers: [site-a]

            """.write(to: dir.appendingPathComponent("b.yaml"), atomically: true, encoding: .utf8)
            let b = try BridgeProcess(["run", "--config", dir.appendingPathComponent("b.yaml").path], readyEvents: ["link_listening"])
            defer { b.stop() }
            func site(_ name: String) throws -> BridgeProcess {
                try """
                identity: \(name)
                link:
                  trust: ca
                  ca_file: ca.pem
                peers:
                  - name: site-b
                    connect: 127.0.0.1:\(b.port(event: "link_listening")!)
                remote:
                  - listen: 127.0.0.1:0
                    peer: site-b
                    service: broker

                """.write(to: dir.appendingPathComponent("\(name).yaml"), atomically: true, encoding: .utf8)
                return try BridgeProcess(["run", "--config", dir.appendingPathComponent("\(name).yaml").path], readyEvents: ["remote_listening"])
            }
            let a = try site("site-a")
            defer { a.stop() }
            try a.waitFor(event: "link_up", matching: ["peer": "site-b"])
            let pub = try TestEnvironment.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", "\(a.port(event: "remote_listening")!)", "-u", "u", "-t", "t/ca", "-m", "ok", "-q", "1"])
            #expect(pub.status == 0)
            // A certificate from another CA never gets a link.
            let x = try site("site-x")
            defer { x.stop() }
            try b.waitFor(event: "link_refused", timeout: 10)
            usleep(500_000)
            #expect(x.lines(event: "link_up").isEmpty)
        }
    }
}
