import Testing
import TopicACL

func acl(_ text: String) throws -> CompiledACL {
    try CompiledACL(parsing: text, source: "acl.conf")
}

func client(_ username: String? = nil, id: String? = "c1") -> Identity {
    .client(username: username, clientID: id)
}

func allowed(_ acl: CompiledACL, _ identity: Identity, _ topic: String, _ access: Access) -> Bool {
    acl.decide(identity, topic: topic, access: access).isAllowed
}
