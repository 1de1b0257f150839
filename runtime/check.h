// The two ways bnforge throws (as c10's TORCH_CHECK / TORCH_INTERNAL_ASSERT):
// BNF_CHECK for what the caller got wrong, BNF_ASSERT for bnforge's own
// invariants. Both throw bnforge::Error with a streamed message; neither aborts.
#pragma once
#include <bnforge/error.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace bnforge::detail {

std::string format_shape(const std::vector<int64_t>& shape);

}  // namespace bnforge::detail

#define BNF_CHECK(cond, msg)                                    \
    do {                                                        \
        if (!(cond)) {                                          \
            std::ostringstream bnf_check_stream_;               \
            bnf_check_stream_ << msg;                           \
            throw ::bnforge::Error(bnf_check_stream_.str());    \
        }                                                       \
    } while (0)

// `msg` says what was expected: "internal: expected <msg> (file:line)".
#define BNF_ASSERT(cond, msg)                                                                   \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            std::ostringstream bnf_assert_stream_;                                              \
            bnf_assert_stream_ << "internal: expected " << msg << " (" << __FILE__ << ":" << __LINE__ << ")"; \
            throw ::bnforge::Error(bnf_assert_stream_.str());                                   \
        }                                                                                       \
    } while (0)
