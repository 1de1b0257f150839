// Argument checks that throw bnforge::Error with a streamed message.
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
