// State dicts and safetensors files.
#pragma once
#include <bnforge/tensor.h>

#include <map>
#include <string>

namespace bnforge {

// Ordered by name; names as PyTorch/MegEngine write them ("weight", "running_mean", ...).
using StateDict = std::map<std::string, Tensor>;

// safetensors format: 8-byte little-endian header length, a JSON header
// {name: {"dtype", "shape", "data_offsets"}}, then raw little-endian data.
// Tensors are written densely in logical (row-major) order; CPU tensors only.
// The save is atomic (a temporary file beside `path`, synced, renamed over
// it, the directory synced): a crash leaves the old file or the new one.
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// Every malformed file (truncated, bad JSON, offsets out of range or
// overlapping, unknown dtype, size mismatch) is a bnforge::Error.
StateDict load_safetensors(const std::string& path);
// The "__metadata__" entries of a file.
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

}  // namespace bnforge
