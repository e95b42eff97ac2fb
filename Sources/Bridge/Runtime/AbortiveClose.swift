#if canImport(Glibc)
import Glibc
#endif
import NIOCore

extension Channel {
    /// Closes with a TCP reset (SO_LINGER 0) instead of a FIN: the other end learns that the
    /// connection failed rather than ended. What was written but not yet sent is dropped.
    func closeWithReset() {
        guard let sockets = self as? any SocketOptionProvider else {
            close(promise: nil)
            return
        }
        sockets.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in self.close(promise: nil) }
    }
}
