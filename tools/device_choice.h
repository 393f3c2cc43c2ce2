// The --device flag shared by the subcommands: its allowed values and how
// "auto" resolves (the GPU when the CUDA backend can run here, else the CPU).
#pragma once

#include <string>
#include <vector>

#include "fastattn/fastattn.h"

namespace fastattn::tools {

inline const std::vector<std::string> kDeviceNames = {"auto", "cpu", "cpu-reference", "cuda"};

// Throws std::runtime_error when the named backend cannot run here.
fa_backend resolve_device(const std::string& name);

// "cpu (AVX3)", "cpu-reference (float64)", "cuda (NVIDIA H100 80GB HBM3)".
std::string device_label(fa_backend backend);

}  // namespace fastattn::tools
