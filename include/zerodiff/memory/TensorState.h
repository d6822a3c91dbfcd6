// zerodiff/memory/TensorState.h — the life cycle of a parameter inside a chunk (ZeRO-3 / Gemini), after
// ColossalAI's chunk tensor states (colossalai/zero/gemini/chunk/chunk.py):
//
//   FREE ──gather──> HOLD ──unit starts──> COMPUTE ──unit ends (forward)──> HOLD ──release──> FREE
//                              COMPUTE / HOLD ──its gradient arrives──> HOLD_AFTER_BWD
//   HOLD_AFTER_BWD ──every gradient of the chunk is in──> READY_FOR_REDUCE ──reduce-scattered──> HOLD
#pragma once

#include <string_view>

namespace zerodiff::memory {

enum class TensorState {
  FREE,              ///< the chunk is released: only this rank's shard exists, the parameter has no data
  COMPUTE,           ///< gathered and used by a running unit (forward or backward)
  HOLD,              ///< gathered, not in use
  HOLD_AFTER_BWD,    ///< its gradient of this backward is in; the chunk waits for the others
  READY_FOR_REDUCE,  ///< every gradient of the chunk is in; being reduce-scattered
};

std::string_view state_name(TensorState s);

/// Whether `from` -> `to` is a legal transition (the diagram above; a state to itself is legal for COMPUTE,
/// HOLD and FREE: a unit entered twice, a repeated release).
bool legal_transition(TensorState from, TensorState to);

}  // namespace zerodiff::memory
