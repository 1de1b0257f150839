// bnforge: batch normalization as PyTorch, MegEngine and OneFlow define it,
// compiled ahead of time by Halide. This header includes the public API but the
// distributed part (process groups, SyncBatchNorm: <bnforge/distributed.h>),
// which brings MPI.
#pragma once
#include <bnforge/batch_norm.h>
#include <bnforge/dtype.h>
#include <bnforge/error.h>
#include <bnforge/functional.h>
#include <bnforge/options.h>
#include <bnforge/runtime.h>
#include <bnforge/state_dict.h>
#include <bnforge/tensor.h>
