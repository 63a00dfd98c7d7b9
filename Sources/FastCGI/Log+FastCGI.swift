import Glibc
import Lifecycle

extension Log {
    static func acceptFailed(_ code: Int32) {
        Log.error("accept failed", ["error": String(cString: strerror(code))])
    }
}
