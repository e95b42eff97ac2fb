/// Who is asking. Decisions depend only on this and the topic.
public enum Identity: Hashable, Sendable, CustomStringConvertible {
    /// An MQTT client. `username` nil means CONNECT carried no username (the anonymous
    /// block applies). `clientID` nil means the effective client id is not known (an empty
    /// id the broker will replace): pattern lines are then not evaluated, as mosquitto denies
    /// pattern access to a client without an id.
    case client(username: String?, clientID: String?)
    /// A paired site, identified by the TLS key it presented (mqbridge extension).
    case peer(String)

    public var description: String {
        switch self {
        case .client(let username, let clientID):
            "client \(clientID.map { "\"\($0)\"" } ?? "(no id)") \(username.map { "user \"\($0)\"" } ?? "(anonymous)")"
        case .peer(let name): "peer \"\(name)\""
        }
    }
}
