// zerodiff/core/FaultInjection.h — named points where a test can kill the process, to prove that a crash at that
// instant loses nothing (docs/reliability.md).
//
// Design rules: off unless the environment variable ZERODIFF_FAULT is set, and then only at the one point it names;
// an unarmed point costs a function call and an empty-string test. The fault is SIGKILL, raised by the process itself: no handler,
// no destructor, no buffered write runs, exactly as after `kill -9` or the kernel's out-of-memory killer. The
// idea follows RocksDB's SyncPoint / etcd's gofail: deterministic crash points instead of racing a timer.
#pragma once

namespace zerodiff {

/// Kills the process with SIGKILL when ZERODIFF_FAULT is "<name>" (the first time the point is reached) or
/// "<name>@<n>" (the n-th time, n >= 1). Does nothing otherwise. The variable is read once, at the first call of
/// any point; a malformed value ("name@x", "name@0") or an unknown point name throws zerodiff::ConfigError naming
/// it. Thread-safe.
/// Points (see docs/reliability.md): "atomic_file.mid_write" (once per file: half of its first write written),
/// "atomic_dir.before_rename" (a folder's files all written and synced, not yet renamed into place).
void fault_point(const char* name);

/// Reads ZERODIFF_FAULT now (zerodiff-train calls it at start-up) so that a malformed value fails the run before
/// it starts rather than at its first checkpoint. Throws zerodiff::ConfigError naming the value.
void check_fault_injection();

}  // namespace zerodiff
