// libFuzzer entry point for FuzzBrokerLog: the body is AMQPScopeFuzzing.FuzzEntry (replayed by the test suite too).
import AMQPScopeFuzzing

/// The entry libFuzzer calls with each input (C name LLVMFuzzerTestOneInput).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEntry(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzEntry.run("FuzzBrokerLog", UnsafeRawBufferPointer(start: start, count: count))
    return 0
}
