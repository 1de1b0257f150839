// bnforge::Error — the one exception type every public call throws.
#pragma once
#include <stdexcept>
#include <string>

namespace bnforge {

// Thrown for every failure: bad arguments, unsupported combinations, corrupt
// files, and errors reported by the generated Halide kernels. Messages name the
// argument and give the expected and the actual value. A call that throws
// leaves every module it was given exactly as it was.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace bnforge
