// Precompiled header for every zerodiff target (library, tests, examples): the LibTorch headers,
// which dominate compile time. Only stable third-party headers belong here.
#pragma once
#include <torch/torch.h>
