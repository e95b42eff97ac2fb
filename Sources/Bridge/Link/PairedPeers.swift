import Foundation

/// `peers.yaml` in an identity directory: the peers `mqbridge pair` recorded. A plain list
/// the configuration reader merges into `peers` (entries in the main file win).
public enum PairedPeers {
    /// Reads the entries; lines it does not understand are skipped (the file is written by
    /// mqbridge, and a hand edit must not stop the site).
    public static func parse(_ text: String) -> [PeerConfiguration] {
        var peers: [PeerConfiguration] = []
        var current: [String: String] = [:]
        func flush() {
            if let name = current["name"] {
                let fingerprint = current["fingerprint"].flatMap { try? SPKIFingerprint(parsing: $0) }
                let connect = current["connect"].flatMap { try? HostPort(parsing: $0) }
                peers.append(PeerConfiguration(name: name, fingerprint: fingerprint, connect: connect))
            }
            current = [:]
        }
        for rawLine in text.split(separator: "\n") {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("- ") {
                flush()
                line = String(line.dropFirst(2))
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            current[key] = value
        }
        flush()
        return peers
    }

    /// Adds or replaces a peer in `directory/peers.yaml`.
    public static func record(_ peer: PeerConfiguration, in directory: String) throws {
        let path = URL(fileURLWithPath: directory).appendingPathComponent("peers.yaml").path
        var peers = (try? String(contentsOfFile: path, encoding: .utf8)).map(parse) ?? []
        peers.removeAll { $0.name == peer.name }
        peers.append(peer)
        var text = "# Written by `mqbridge pair`: peers this site has paired with. Merged into `peers:`.\n"
        for p in peers {
            text += "- name: \(p.name)\n"
            if let fingerprint = p.fingerprint { text += "  fingerprint: \(fingerprint)\n" }
            if let connect = p.connect { text += "  connect: \(connect)\n" }
        }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
