#include "zerodiff/memory/TensorState.h"

namespace zerodiff::memory {

std::string_view state_name(TensorState s) {
  switch (s) {
    case TensorState::FREE: return "FREE";
    case TensorState::COMPUTE: return "COMPUTE";
    case TensorState::HOLD: return "HOLD";
    case TensorState::HOLD_AFTER_BWD: return "HOLD_AFTER_BWD";
    case TensorState::READY_FOR_REDUCE: return "READY_FOR_REDUCE";
  }
  return "?";
}

bool legal_transition(TensorState from, TensorState to) {
  using S = TensorState;
  switch (from) {
    case S::FREE: return to == S::HOLD || to == S::FREE;
    case S::HOLD: return to == S::COMPUTE || to == S::FREE || to == S::HOLD || to == S::HOLD_AFTER_BWD;
    case S::COMPUTE: return to == S::HOLD || to == S::COMPUTE || to == S::HOLD_AFTER_BWD;
    case S::HOLD_AFTER_BWD: return to == S::READY_FOR_REDUCE || to == S::HOLD_AFTER_BWD || to == S::COMPUTE;
    case S::READY_FOR_REDUCE: return to == S::HOLD;
  }
  return false;
}

}  // namespace zerodiff::memory
