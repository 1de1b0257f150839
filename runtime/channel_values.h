// Reading per-channel parameter and statistic tensors into float64 vectors.
#pragma once
#include <bnforge/tensor.h>

#include <vector>

namespace bnforge::detail {

// The C values of a float tensor holding one value per channel, shaped (C) or
// (1, C, 1, 1); an undefined tensor reads as `fallback` everywhere (affine=False).
std::vector<double> channel_values(const Tensor& t, int64_t channels, double fallback, const char* arg);
// Writes C values (rounded to the tensor's dtype) into such a tensor.
void set_channel_values(Tensor& t, const std::vector<double>& values);

}  // namespace bnforge::detail
