public import NIOCore
import Yams

/// A configuration problem: `file:line: key: what is wrong — how to fix`.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    /// The key path, e.g. `proxies[0].broker`.
    public var key: String
    public var problem: String
    public var fix: String

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        return "\(location): \(key.isEmpty ? "" : "\(key): ")\(problem) — \(fix)"
    }
}

/// Every problem found in one file, reported together.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

/// Reads YAML nodes with their line numbers, collecting errors instead of stopping at the
/// first, and rejecting unknown keys (a typo must not silently fall back to a default).
struct ConfigReader {
    let file: String
    private(set) var errors: [ConfigError] = []

    init(file: String) { self.file = file }

    mutating func fail(_ node: Node?, _ key: String, _ problem: String, fix: String) {
        errors.append(ConfigError(file: file, line: node?.mark.map { $0.line }, key: key, problem: problem, fix: fix))
    }

    /// The mapping at `node`, checking its keys against `known`.
    mutating func mapping(_ node: Node, at key: String, known: [String]) -> [String: (key: Node, value: Node)]? {
        guard case .mapping(let mapping) = node else {
            fail(node, key, "expected a mapping (key: value lines)", fix: "indent the keys under \(key.isEmpty ? "the top level" : key)")
            return nil
        }
        var result: [String: (Node, Node)] = [:]
        for (k, v) in mapping {
            guard let name = k.string else {
                fail(k, key, "a key must be a plain string", fix: "write one of: \(known.joined(separator: ", "))")
                continue
            }
            let path = key.isEmpty ? name : "\(key).\(name)"
            if !known.contains(name) {
                let suggestion = known.min { editDistance($0, name) < editDistance($1, name) }
                let hint = suggestion.flatMap { editDistance($0, name) <= 3 ? "did you mean '\($0)'? " : nil } ?? ""
                fail(k, path, "unknown key", fix: "\(hint)known keys here: \(known.joined(separator: ", "))")
                continue
            }
            if result[name] != nil {
                fail(k, path, "the key appears twice", fix: "keep one of them")
                continue
            }
            result[name] = (k, v)
        }
        return result
    }

    mutating func string(_ node: Node, _ key: String) -> String? {
        guard case .scalar(let scalar) = node else {
            fail(node, key, "expected a single value", fix: "write \(key.split(separator: ".").last ?? ""): <value>")
            return nil
        }
        return scalar.string
    }

    mutating func hostPort(_ node: Node, _ key: String) -> HostPort? {
        guard let text = string(node, key) else { return nil }
        do {
            return try HostPort(parsing: text)
        } catch {
            fail(node, key, error.description, fix: "use host:port")
            return nil
        }
    }

    mutating func integer(_ node: Node, _ key: String, range: ClosedRange<Int>) -> Int? {
        guard let text = string(node, key) else { return nil }
        guard let value = Int(text.replacingUnderscores()), range.contains(value) else {
            fail(node, key, "\"\(text)\" is not a whole number from \(range.lowerBound) to \(range.upperBound)", fix: "write a number in that range")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node, _ key: String) -> Bool? {
        guard let text = string(node, key) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            fail(node, key, "\"\(text)\" is not true or false", fix: "write true or false")
            return nil
        }
    }

    /// A duration: a number of seconds (`10`, `0.5`) or a number with a unit (`500ms`, `10s`, `2m`).
    mutating func duration(_ node: Node, _ key: String) -> TimeAmount? {
        guard let text = string(node, key) else { return nil }
        guard let value = parseDuration(text) else {
            fail(node, key, "\"\(text)\" is not a positive duration", fix: "write seconds (10) or a number with a unit (500ms, 10s, 2m)")
            return nil
        }
        return value
    }

    /// The items of a sequence.
    mutating func sequence(_ node: Node, _ key: String) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            fail(node, key, "expected a list", fix: "write each item on its own line starting with '- '")
            return nil
        }
        return Array(sequence)
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var previous = Array(0...b.count)
    for (i, ca) in a.enumerated() {
        var current = [i + 1]
        for (j, cb) in b.enumerated() {
            current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1)))
        }
        previous = current
    }
    return previous[b.count]
}

extension String {
    fileprivate func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}

/// A positive duration written as seconds (`10`, `0.5`) or with a unit (`500ms`, `10s`, `2m`,
/// `2h`), to the millisecond; nil for anything else. The configuration file and the command
/// line (`pair invite --expires`) read durations the same way. `allowingZero`: also `0`, `0s`,
/// `0ms`… (for the one key where zero means "at once").
public func parseDuration(_ text: String, allowingZero: Bool = false) -> TimeAmount? {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    var number = Substring(text)
    var scale = 1.0
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        number = text.dropLast(suffix.count)
        scale = factor
        break
    }
    // Finite and within range: `inf` or `1e300` must be refused, not trap on conversion.
    guard let value = Double(number), value > 0 || (allowingZero && value == 0), value.isFinite else { return nil }
    let milliseconds = (value * scale * 1000).rounded()
    guard milliseconds < Double(Int64.max / 1_000_000) else { return nil }
    return .milliseconds(Int64(milliseconds))
}
