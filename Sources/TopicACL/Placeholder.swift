public enum TopicACLPlaceholder {}
