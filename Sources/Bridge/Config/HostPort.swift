import NIOCore

/// A `host:port` address as written in configuration or on the command line:
/// `127.0.0.1:1883`, `[::1]:1883`, `broker.local:1883`.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Why a string is not a `host:port`.
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public var value: String
        public var problem: String
        public var description: String { "\"\(value)\" is not a host:port address: \(problem) (write e.g. 127.0.0.1:1883 or [::1]:1883)" }
    }

    public init(parsing text: String) throws(ParseError) {
        let value = text.trimmingSpaces()
        let hostPart: Substring
        let portPart: Substring
        if value.hasPrefix("[") {
            guard let close = value.firstIndex(of: "]") else { throw ParseError(value: text, problem: "missing ']' after an IPv6 address") }
            hostPart = value[value.index(after: value.startIndex)..<close]
            let rest = value[value.index(after: close)...]
            guard rest.hasPrefix(":") else { throw ParseError(value: text, problem: "missing ':port' after ']'") }
            portPart = rest.dropFirst()
        } else {
            guard let colon = value.lastIndex(of: ":") else { throw ParseError(value: text, problem: "missing ':port'") }
            hostPart = value[..<colon]
            portPart = value[value.index(after: colon)...]
            if hostPart.contains(":") { throw ParseError(value: text, problem: "an IPv6 address must be written in brackets") }
        }
        guard !hostPart.isEmpty else { throw ParseError(value: text, problem: "empty host") }
        guard let port = Int(portPart), (0...65535).contains(port) else {
            throw ParseError(value: text, problem: "port \"\(portPart)\" is not a number from 0 to 65535")
        }
        self.host = String(hostPart)
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension String {
    func trimmingSpaces() -> Substring {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}

extension SocketAddress {
    /// How logs and errors name an address: `192.0.2.7:40112`, `[2001:db8::7]:40112`, or a
    /// socket path, rather than NIO's `[IPv4]host/ip:port` description, so that a log line
    /// can be matched against firewall and broker logs as written.
    var logDescription: String {
        guard let ipAddress else { return pathname ?? "unix socket" }
        return HostPort(host: ipAddress, port: port ?? 0).description
    }
}
